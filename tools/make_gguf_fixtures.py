#!/usr/bin/env python3
"""Write the GGUF dequantisation fixtures for tests/gguf_dequant.rs.

Dev-only (needs gguf-py and numpy, e.g. /opt/refvenv). Outputs, under tests/fixtures/gguf/:

    types.gguf     random tensors in every ggml type moegraft dequantises, metadata of every
                   GGUF value type, a 64-byte general.alignment, and one IQ4_NL tensor (a type
                   moegraft refuses) to check the error
    expected.json  gguf-py's own dequantisation (`gguf.quants.dequantize`) of each tensor, as
                   f32 bit patterns, plus the metadata as written

Types gguf-py can quantize (BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) get a tensor quantized from
random normals *and* one of random raw blocks; the K-quants, which gguf-py only dequantises,
get random raw blocks. Raw blocks keep their f16 scales finite, so NaN payload handling (which
differs between f16 conversion routines) never decides a comparison.

    /opt/refvenv/bin/python tools/make_gguf_fixtures.py [--out tests/fixtures/gguf]

Seeded: re-running reproduces the same bytes.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGML_QUANT_SIZES, GGUFWriter
from gguf.quants import dequantize, quantize

ALIGNMENT = 64
# Byte offsets of the f16 scale fields within one block, for raw random blocks.
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_NL: [0],
}
QUANTIZABLE = [T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
RAW = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]

METADATA = {
    "test.u8": ("add_uint8", 200),
    "test.i8": ("add_int8", -100),
    "test.u16": ("add_uint16", 60000),
    "test.i16": ("add_int16", -30000),
    "test.u32": ("add_uint32", 4000000000),
    "test.i32": ("add_int32", -2000000000),
    "test.u64": ("add_uint64", 18000000000000000000),
    "test.i64": ("add_int64", -9000000000000000000),
    "test.f32": ("add_float32", 0.1),
    "test.f64": ("add_float64", -2.5e-300),
    "test.bool": ("add_bool", True),
    "test.string": ("add_string", "héllo ☃"),
    "test.strings": ("add_array", ["a", "", "ünïcode", "<|im_end|>"]),
    "test.ints": ("add_array", [1, -2, 3]),
    "test.floats": ("add_array", [0.5, -1.25]),
    "test.nested": ("add_array", [[1, 2], [3]]),
}


def raw_blocks(rng, qtype, rows, cols):
    """Random bytes for rows × cols elements of `qtype`, with finite random f16 scales."""
    block, size = GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block
    data = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        scales = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
        scales[0] = np.float16(6.0e-8)  # a subnormal
        data[:, off : off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return data.reshape(rows, cols // block * size)


def float_values(rng, n):
    v = rng.standard_normal(n).astype(np.float32)
    v[:6] = [0.0, -0.0, 6.0e-8, 65504.0, np.inf, -np.inf]
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("tests/fixtures/gguf"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240607)

    # (name, qtype, row-major shape, bytes as uint8 rows, expected f32)
    tensors = []

    def add(name, qtype, data, rows, cols):
        expected = dequantize(data, qtype).astype(np.float32).reshape(rows, cols)
        tensors.append((name, qtype, (rows, cols), data, expected))

    f32 = float_values(rng, 64).reshape(4, 16)
    add("f32", T.F32, f32.view(np.uint8).reshape(4, 64), 4, 16)
    f16 = float_values(rng, 64).astype(np.float16).reshape(4, 16)
    add("f16", T.F16, f16.view(np.uint8).reshape(4, 32), 4, 16)
    for qtype in QUANTIZABLE:
        rows, cols = 4, 64
        values = rng.standard_normal((rows, cols)).astype(np.float32)
        if qtype == T.BF16:
            values = float_values(rng, rows * cols).reshape(rows, cols)
        data = quantize(values, qtype)
        add(f"{qtype.name.lower()}.quantized", qtype, data, rows, cols)
    for qtype in RAW:
        block, _ = GGML_QUANT_SIZES[qtype]
        rows, cols = (2, 256) if block == 256 else (4, 64)
        add(f"{qtype.name.lower()}.raw", qtype, raw_blocks(rng, qtype, rows, cols), rows, cols)

    w = GGUFWriter(args.out / "types.gguf", "test")
    w.add_custom_alignment(ALIGNMENT)
    for key, (method, value) in METADATA.items():
        getattr(w, method)(key, value)
    for name, qtype, (rows, cols), data, _ in tensors:
        w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
    unsupported = raw_blocks(rng, T.IQ4_NL, 2, 32)
    w.add_tensor("unsupported.iq4_nl", unsupported, raw_shape=unsupported.shape, raw_dtype=T.IQ4_NL)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    expected = {
        "alignment": ALIGNMENT,
        "tensors": {
            name: {
                "type": qtype.name,
                "type_id": int(qtype),
                "shape": [rows, cols],
                "bits": exp.view(np.uint32).ravel().tolist(),
            }
            for name, qtype, (rows, cols), _, exp in tensors
        },
        "unsupported": {"name": "unsupported.iq4_nl", "type_id": int(T.IQ4_NL)},
        # f32 metadata as its bit pattern, so the comparison is exact.
        "metadata": {
            k: (int(np.float32(v).view(np.uint32)) if k == "test.f32" else v)
            for k, (_, v) in METADATA.items()
        },
    }
    (args.out / "expected.json").write_text(json.dumps(expected, separators=(",", ":")) + "\n")
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {len(tensors)} tensors + 1 unsupported to {args.out} ({total} bytes)")


if __name__ == "__main__":
    main()
