//! Dequantisation and GGUF parsing against gguf-py: tests/fixtures/gguf/types.gguf holds random
//! tensors in every ggml type moegraft supports and expected.json gguf-py's dequantisation of
//! each (as f32 bits), written by tools/make_gguf_fixtures.py. Equality must be exact.

use std::path::PathBuf;

use moegraft::checkpoint::dequant::dequantize;
use moegraft::checkpoint::gguf::{read_gguf, GgufFile, MetaArray, MetaValue};
use moegraft::checkpoint::source::FileSource;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

fn load() -> (FileSource, GgufFile, Value) {
    let src = FileSource::open(&fixtures().join("types.gguf")).unwrap();
    let gguf = pollster::block_on(read_gguf(&src)).unwrap();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("expected.json")).unwrap()).unwrap();
    (src, gguf, expected)
}

#[test]
fn every_type_matches_gguf_py_bit_for_bit() {
    let (src, gguf, expected) = load();
    let tensors = expected["tensors"].as_object().unwrap();
    assert!(tensors.len() >= 18);
    let mut types = std::collections::BTreeSet::new();
    for (name, exp) in tensors {
        let info = gguf
            .tensor(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            info.ggml_type.0 as u64,
            exp["type_id"].as_u64().unwrap(),
            "{name}"
        );
        let shape: Vec<u64> = exp["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(info.shape(), shape, "{name}");
        let bytes = pollster::block_on(gguf.read_tensor(&src, info)).unwrap();
        let values = dequantize(
            &gguf.file,
            name,
            info.ggml_type,
            &bytes,
            info.numel() as usize,
        )
        .unwrap();
        let want: Vec<u32> = exp["bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u32)
            .collect();
        let got: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got.len(), want.len(), "{name}");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "{name} ({}): element {i} is {} ({:#010x}), gguf-py gives {} ({:#010x})",
                exp["type"],
                values[i],
                got[i],
                f32::from_bits(want[i]),
                want[i]
            );
        }
        types.insert(exp["type"].as_str().unwrap().to_string());
    }
    let all = [
        "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
        "Q5_K", "Q6_K",
    ];
    for t in all {
        assert!(types.contains(t), "no fixture of type {t}");
    }
}

#[test]
fn unsupported_type_is_a_clear_error() {
    let (src, gguf, expected) = load();
    let name = expected["unsupported"]["name"].as_str().unwrap();
    let info = gguf.tensor(name).unwrap();
    let bytes = pollster::block_on(gguf.read_tensor(&src, info)).unwrap();
    let err = dequantize(
        &gguf.file,
        name,
        info.ggml_type,
        &bytes,
        info.numel() as usize,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("types.gguf") && err.contains(name) && err.contains("IQ4_NL (20)"),
        "{err}"
    );
}

#[test]
fn metadata_of_every_value_type_parses() {
    let (_, gguf, expected) = load();
    assert_eq!(gguf.version, 3);
    assert_eq!(gguf.alignment, expected["alignment"].as_u64().unwrap());
    assert!(gguf.tensors.iter().all(|t| t.offset % gguf.alignment == 0));
    let m = &expected["metadata"];
    let get = |k: &str| gguf.get(k).unwrap_or_else(|| panic!("{k} missing"));
    assert_eq!(get("test.u8"), &MetaValue::U8(200));
    assert_eq!(get("test.i8"), &MetaValue::I8(-100));
    assert_eq!(get("test.u16"), &MetaValue::U16(60000));
    assert_eq!(get("test.i16"), &MetaValue::I16(-30000));
    assert_eq!(get("test.u32"), &MetaValue::U32(4_000_000_000));
    assert_eq!(get("test.i32"), &MetaValue::I32(-2_000_000_000));
    assert_eq!(
        get("test.u64"),
        &MetaValue::U64(m["test.u64"].as_u64().unwrap())
    );
    assert_eq!(
        get("test.i64"),
        &MetaValue::I64(m["test.i64"].as_i64().unwrap())
    );
    assert_eq!(
        get("test.f32"),
        &MetaValue::F32(f32::from_bits(m["test.f32"].as_u64().unwrap() as u32))
    );
    assert_eq!(
        get("test.f64"),
        &MetaValue::F64(m["test.f64"].as_f64().unwrap())
    );
    assert_eq!(get("test.bool"), &MetaValue::Bool(true));
    assert_eq!(get("test.string").as_str(), m["test.string"].as_str());
    let strings: Vec<String> = m["test.strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        gguf.get_str_array("test.strings").unwrap().unwrap(),
        strings.as_slice()
    );
    assert_eq!(
        gguf.get_int_array("test.ints").unwrap().unwrap(),
        vec![1, -2, 3]
    );
    assert_eq!(
        get("test.floats"),
        &MetaValue::Array(MetaArray::F32(vec![0.5, -1.25]))
    );
    assert_eq!(
        get("test.nested"),
        &MetaValue::Array(MetaArray::Array(vec![
            MetaArray::I32(vec![1, 2]),
            MetaArray::I32(vec![3]),
        ]))
    );
}
