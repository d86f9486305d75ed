#!/usr/bin/env python3
"""Write the hostile-file corpus for tests/hostile.rs (and the fuzz seed corpora).

Standard library only. Run from the repository root:

    python3 tools/make_hostile_fixtures.py

Writes tests/fixtures/hostile/<case>/, each a small model directory (or a single file) that is
broken in exactly one way. tests/fixtures/hostile/expected.json (kept by hand, read by
tests/hostile.rs and tests/browser/hostile.test.mjs) lists every case with the file its message
must name and the text it must hold; the files are committed so the tests need no Python.
Rerunning rewrites them identically.
"""

import json
import os
import shutil
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "hostile")
TINY = os.path.join(ROOT, "tests", "fixtures", "tiny", "tiny-llama")


def config():
    with open(os.path.join(TINY, "config.json")) as f:
        return json.load(f)


def write(case, name, data):
    d = os.path.join(OUT, case)
    os.makedirs(d, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(os.path.join(d, name), mode) as f:
        f.write(data)


def model_dir(case, safetensors=None, cfg=None):
    """A directory with a valid config.json (unless `cfg` replaces it) and one weight file."""
    write(case, "config.json", json.dumps(cfg if cfg is not None else config(), indent=1))
    if safetensors is not None:
        write(case, "model.safetensors", safetensors)


def st(header, data_len, header_len=None):
    """A safetensors file: u64 header length, the header JSON (or raw bytes), data bytes."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if header_len is None else header_len
    return struct.pack("<Q", n) + raw + bytes(data_len)


def f32(shape, start, end):
    return {"dtype": "F32", "shape": shape, "data_offsets": [start, end]}


def safetensors_cases():
    model_dir("st_tiny_file", b"\x01\x02\x03")
    model_dir("st_truncated", st({"w": f32([4, 4], 0, 64)}, 10))
    model_dir("st_overlap", st({"a": f32([4], 0, 16), "b": f32([4], 8, 24)}, 24))
    model_dir("st_huge_header_len", st(b"{}", 0, header_len=1 << 62))
    model_dir("st_header_past_eof", st(b"{}", 0, header_len=5000))
    model_dir("st_wrong_shape", st({"w": f32([3, 3], 0, 32)}, 32))
    model_dir("st_bad_json", st(b'{"w": {"dtype": "F32", "shape": [1', 4))
    model_dir(
        "st_unknown_dtype",
        st({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 2]}}, 2),
    )
    model_dir("st_deep_json", st(b"[" * 5000 + b"]" * 5000, 0))
    model_dir(
        "st_shape_overflow",
        st({"w": f32([1 << 40, 1 << 40], 0, 4)}, 4),
    )
    # Sharded: the index names a shard that is not there.
    model_dir("index_missing_shard", None)
    good = st({"a": f32([2], 0, 8)}, 8)
    write("index_missing_shard", "model-00001-of-00002.safetensors", good)
    write(
        "index_missing_shard",
        "model.safetensors.index.json",
        json.dumps(
            {
                "weight_map": {
                    "a": "model-00001-of-00002.safetensors",
                    "b": "model-00002-of-00002.safetensors",
                }
            }
        ),
    )
    model_dir("index_bad_json", None)
    write("index_bad_json", "model.safetensors.index.json", '{"weight_map": {"a": ')
    # The index says tensor b lives in the shard, but the shard does not hold it.
    model_dir("index_tensor_not_in_shard", None)
    write("index_tensor_not_in_shard", "model-00001-of-00001.safetensors", good)
    write(
        "index_tensor_not_in_shard",
        "model.safetensors.index.json",
        json.dumps(
            {
                "weight_map": {
                    "a": "model-00001-of-00001.safetensors",
                    "b": "model-00001-of-00001.safetensors",
                }
            }
        ),
    )
    # Two shards both claim tensor a.
    model_dir("index_duplicate_tensor", None)
    write("index_duplicate_tensor", "model-00001-of-00002.safetensors", good)
    write("index_duplicate_tensor", "model-00002-of-00002.safetensors", good)
    write(
        "index_duplicate_tensor",
        "model.safetensors.index.json",
        json.dumps(
            {
                "weight_map": {
                    "a": "model-00001-of-00002.safetensors",
                    "x": "model-00002-of-00002.safetensors",
                }
            }
        ),
    )


def config_cases():
    base = config()

    def variant(case, **changes):
        cfg = dict(base)
        for k, v in changes.items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        model_dir(case, None, cfg)

    variant("cfg_missing_hidden_size", hidden_size=None)
    variant("cfg_zero_layers", num_hidden_layers=0)
    variant("cfg_negative_vocab", vocab_size=-5)
    variant("cfg_absurd_hidden_size", hidden_size=10**15)
    variant("cfg_heads_not_dividing", hidden_size=66, head_dim=None)
    variant("cfg_float_size", intermediate_size=96.5)
    model_dir("cfg_bad_json", None, None)
    write("cfg_bad_json", "config.json", '{"model_type": "llama", ')
    model_dir("cfg_not_object", None, None)
    write("cfg_not_object", "config.json", "[1, 2, 3]")


# GGUF writer: just enough of the format to break it in one place at a time.
def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(tensors, kv=None, magic=b"GGUF", counts=None, data=b"", pad=True):
    kv = kv if kv is not None else [gstr("general.architecture") + struct.pack("<I", 8) + gstr("llama")]
    n_t, n_kv = counts if counts else (len(tensors), len(kv))
    out = magic + struct.pack("<IQQ", 3, n_t, n_kv) + b"".join(kv)
    for name, dims, ggml_type, offset in tensors:
        out += gstr(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, offset)
    if pad:
        out += bytes(-len(out) % 32)
    return out + data


def gguf_cases():
    ok_tensor = ("w", [4], 0, 0)
    write("gguf_bad_magic", "model.gguf", gguf([ok_tensor], magic=b"GGUX", data=bytes(16)))
    write("gguf_huge_counts", "model.gguf", gguf([], counts=(1 << 60, 1 << 60)))
    long_str = struct.pack("<Q", 1 << 40) + b"abc"
    write(
        "gguf_string_past_eof",
        "model.gguf",
        gguf([], kv=[gstr("general.name") + struct.pack("<I", 8) + long_str], pad=False),
    )
    write(
        "gguf_tensor_past_eof",
        "model.gguf",
        gguf([("w", [4], 0, 4096)], data=bytes(16)),
    )
    write("gguf_unknown_type", "model.gguf", gguf([("w", [4], 99, 0)], data=bytes(64)))
    write("gguf_truncated", "model.gguf", gguf([ok_tensor], data=bytes(16))[:30])


def tokenizer_cases():
    tok = os.path.join(TINY, "tokenizer.json")
    write("tok_bad_json", "tokenizer.json", '{"model": {"type": "BPE", "vocab": ')
    write("tok_wrong_model", "tokenizer.json", json.dumps({"model": {"type": "Nope"}}))
    templates = {
        "chat_infinite_loop": "{% for i in range(100000) %}{% for j in range(100000) %}"
        "{% for k in range(100000) %}{% endfor %}{% endfor %}{% endfor %}",
        "chat_huge_output": "{% set s = 'x' * 50000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}",
        "chat_include": "{% include '/etc/passwd' %}",
        "chat_import": "{% import '../../config.json' as c %}{{ c }}",
        "chat_recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "chat_syntax_error": "{% for message in messages %}{{ message['content'] }",
        # 2^40 bytes from 40 concatenations: the engine charges fuel by the bytes it copies.
        "chat_doubling": "{% set s = 'x' %}" + "{% set s = s ~ s %}" * 40 + "{{ s|length }}",
    }
    for case, template in templates.items():
        d = os.path.join(OUT, case)
        os.makedirs(d, exist_ok=True)
        shutil.copy(tok, os.path.join(d, "tokenizer.json"))
        write(case, "chat_template.jinja", template)


def main():
    # Every case directory is rewritten; expected.json stays.
    if os.path.isdir(OUT):
        for entry in os.listdir(OUT):
            if os.path.isdir(os.path.join(OUT, entry)):
                shutil.rmtree(os.path.join(OUT, entry))
    safetensors_cases()
    config_cases()
    gguf_cases()
    tokenizer_cases()


if __name__ == "__main__":
    main()
