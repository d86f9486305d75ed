#!/usr/bin/env python3
"""A SentencePiece GGUF vocabulary and what transformers' GGUF loader makes of it, for the
SentencePiece tests of src/checkpoint/gguf_tokenizer.rs.

Dev-only (sentencepiece, gguf-py, transformers; /opt/refvenv here). Trains a 500-piece
SentencePiece BPE model with byte fallback on the demo kit's English, Spanish, Italian and
Russian eval text, and writes it as llama.cpp's converter writes a SentencePiece vocabulary
(`tokenizer.ggml.model = llama`: pieces, scores, token types — normal, unknown, control, byte
— no merges, BOS/EOS/UNK ids) into `tests/fixtures/gguf/tiny-spm.gguf` (metadata only). Then it
records, in `tests/fixtures/gguf/tiny-spm.json`, the ids `AutoTokenizer.from_pretrained(...,
gguf_file=...)` gives multilingual text (with and without BOS; characters outside the
vocabulary fall back to bytes) and the text it decodes them to.

    /opt/refvenv/bin/python tools/make_spm_gguf.py
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import sentencepiece as spm
from gguf import GGUFWriter
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/gguf"
TEXTS = ["Hello, world! 123", "  two  spaces and\nnew lines", "El perro duerme en el jardín.",
         "Il cane dorme nel giardino.", "Собака спит в саду.", "日本語 🙂 ünïcödé", "</s> <s> inline"]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.txt"
        corpus.write_text("\n".join((ROOT / f"demo/eval/{l}.txt").read_text()[:20000] for l in ["en", "es", "it", "ru"]))
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp / "sp"), vocab_size=500,
                                       model_type="bpe", byte_fallback=True, character_coverage=0.9995,
                                       unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, seed_sentencepiece_size=100000)
        sp = spm.SentencePieceProcessor(model_file=str(tmp / "sp.model"))
        tokens, scores, types = [], [], []
        for i in range(sp.get_piece_size()):
            tokens.append(sp.id_to_piece(i))
            scores.append(sp.get_score(i))
            # llama.cpp's token types: 1 normal, 2 unknown, 3 control, 6 byte.
            types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1)
        path = OUT / "tiny-spm.gguf"
        w = GGUFWriter(str(path), "llama")
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        w.add_add_space_prefix(True)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        shutil.copy(path, tmp / path.name)
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=path.name)
    cases = []
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        cases.append(dict(text=text, ids=ids, with_bos=tok(text)["input_ids"], decoded=tok.decode(ids)))
        print(f"{text!r}: {len(ids)} tokens")
    (OUT / "tiny-spm.json").write_text(json.dumps(dict(generator="tools/make_spm_gguf.py", vocab=len(tokens), cases=cases),
                                                  indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
