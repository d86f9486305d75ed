#!/usr/bin/env python3
"""Write the fuzz seed corpora, fuzz/corpus/<target>/, from the repository's small fixtures
and the hostile corpus (run tools/make_hostile_fixtures.py first). Standard library only:

    python3 tools/make_fuzz_corpus.py

Seeds stay small (libFuzzer's default -max_len is 4096 bytes past the largest seed), so
large fixtures are rebuilt in miniature rather than copied.
"""

import glob
import json
import os
import shutil
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "tests", "fixtures")
HOSTILE = os.path.join(FIX, "hostile")
OUT = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(path):
    with open(path, "rb") as f:
        return f.read()


def safetensors(tensors):
    """A small valid file: [(name, dtype, shape, elem_size)]."""
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, dtype, shape, size in tensors:
        n = size
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n]}
        data += bytes(range(256)) * (n // 256) + bytes(n % 256)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def hostile_files(pattern):
    return sorted(glob.glob(os.path.join(HOSTILE, pattern)))


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    small = safetensors([("a", "F32", [2, 3], 4), ("b", "BF16", [4], 2), ("c", "I64", [1], 8)])
    put("safetensors_header", "valid", small)
    put("safetensors_header", "empty_header", safetensors([]))
    for path in hostile_files("st_*/model.safetensors"):
        put("safetensors_header", os.path.basename(os.path.dirname(path)), read(path))

    shard1 = safetensors([("a", "F32", [2], 4)])
    shard2 = safetensors([("b", "F16", [3], 2)])
    index = {
        "metadata": {"total_size": 14},
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        },
    }
    sep = b"\n--\n"
    put("safetensors_index", "valid", json.dumps(index).encode() + sep + shard1 + sep + shard2)
    for case in ["index_duplicate_tensor", "index_tensor_not_in_shard", "index_bad_json"]:
        d = os.path.join(HOSTILE, case)
        parts = [read(os.path.join(d, "model.safetensors.index.json"))]
        parts += [read(p) for p in sorted(glob.glob(os.path.join(d, "model-*.safetensors")))]
        put("safetensors_index", case, sep.join(parts))

    put("gguf", "types", read(os.path.join(FIX, "gguf", "types.gguf")))
    for path in hostile_files("gguf_*/model.gguf"):
        put("gguf", os.path.basename(os.path.dirname(path)), read(path))

    # The whole import: a SentencePiece vocabulary (small; the Qwen fixtures are 100 KB each,
    # too big a seed) and the hostile GGUFs.
    put("gguf_import", "tiny-spm", read(os.path.join(FIX, "gguf", "tiny-spm.gguf")))
    for path in hostile_files("gguf_*/model.gguf"):
        put("gguf_import", os.path.basename(os.path.dirname(path)), read(path))

    for path in sorted(glob.glob(os.path.join(FIX, "tiny", "*", "config.json"))):
        put("config_json", os.path.basename(os.path.dirname(path)), read(path))
    for path in hostile_files("cfg_*/config.json"):
        put("config_json", os.path.basename(os.path.dirname(path)), read(path))

    put("tokenizer_json", "tiny", read(os.path.join(FIX, "tiny", "tokenizer", "tokenizer.json")))
    for path in hostile_files("tok_*/tokenizer.json"):
        put("tokenizer_json", os.path.basename(os.path.dirname(path)), read(path))

    config = json.load(open(os.path.join(FIX, "tiny", "tokenizer", "tokenizer_config.json")))
    put("chat_template", "chatml", config["chat_template"] + "\0Hello there")
    for path in hostile_files("chat_*/chat_template.jinja"):
        put("chat_template", os.path.basename(os.path.dirname(path)), read(path))


if __name__ == "__main__":
    main()
