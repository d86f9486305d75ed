"""The demo model kit's build: text from Debian packages and npm, a shared byte-level BPE
tokenizer, synthetic chat tasks, and the base / instruct / cpt-dense / cpt-moe family.

Dev-only (PyTorch + transformers); run through tools/build_demo_kit.py.
"""
