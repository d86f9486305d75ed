//! The safetensors header, parsed and checked by hand so tensors can be read one byte range at
//! a time (from a file natively, from a `Blob` slice in the browser).
//!
//! Layout: u64 little-endian header length N, N bytes of JSON, then the data section.
//! Every offset is checked against the file before anything is read.

use std::collections::BTreeMap;

use serde_json::Value;

use super::dtype::DType;
use super::source::ByteSource;
use crate::error::{Error, Result};

/// Headers larger than this are refused rather than allocated (real ones are a few MB at most).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// One tensor's entry: element type, shape and absolute byte range within its file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// `None` for dtypes moegraft does not load as weights (I64, U8, ...): kept so the
    /// header still validates, refused when read.
    pub dtype: Option<DType>,
    pub dtype_name: String,
    pub shape: Vec<usize>,
    /// Absolute offset in the file.
    pub offset: u64,
    pub len: u64,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The parsed header of one safetensors file.
#[derive(Debug, Clone)]
pub struct SafetensorsHeader {
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

fn dtype_size(name: &str) -> Option<u64> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Reads and validates the header of `source`.
pub async fn read_header(source: &dyn ByteSource) -> Result<SafetensorsHeader> {
    let file = source.name().to_string();
    if source.size() < 8 {
        return Err(Error::format(
            &file,
            format!(
                "not a safetensors file: {} bytes, shorter than the 8-byte header length",
                source.size()
            ),
        ));
    }
    let len_bytes = source.read_range(0, 8).await?;
    let mut le = [0u8; 8];
    le.copy_from_slice(&len_bytes);
    let header_len = u64::from_le_bytes(le);
    if header_len > MAX_HEADER_BYTES {
        return Err(Error::format(
            &file,
            format!("safetensors header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte cap (corrupt or not a safetensors file)"),
        ));
    }
    if 8 + header_len > source.size() {
        return Err(Error::format(
            &file,
            format!(
                "file is truncated: header says {header_len} bytes of JSON but the file has {}",
                source.size()
            ),
        ));
    }
    let json = source.read_range(8, header_len as usize).await?;
    parse_header(&file, &json, source.size())
}

/// Validates a header's JSON against the file size. Public for fuzzing and tests.
pub fn parse_header(file: &str, json: &[u8], file_size: u64) -> Result<SafetensorsHeader> {
    let data_start = 8 + json.len() as u64;
    let data_len = file_size
        .checked_sub(data_start)
        .ok_or_else(|| Error::format(file, "file is shorter than its header"))?;
    let value: Value = serde_json::from_slice(json)
        .map_err(|e| Error::format(file, format!("safetensors header is not valid JSON: {e}")))?;
    let Value::Object(entries) = value else {
        return Err(Error::format(
            file,
            "safetensors header is not a JSON object",
        ));
    };

    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, entry) in entries {
        if name == "__metadata__" {
            if let Value::Object(map) = entry {
                for (k, v) in map {
                    if let Value::String(s) = v {
                        metadata.insert(k, s);
                    }
                }
            }
            continue;
        }
        let info = parse_entry(file, &name, &entry, data_start, data_len)?;
        tensors.insert(name, info);
    }

    // Byte ranges must not overlap (a crafted file could alias two tensors).
    let mut ranges: Vec<&TensorInfo> = tensors.values().collect();
    ranges.sort_by_key(|t| t.offset);
    for pair in ranges.windows(2) {
        if pair[0].offset + pair[0].len > pair[1].offset {
            return Err(Error::tensor_format(
                file,
                &pair[1].name,
                format!("data overlaps tensor '{}'", pair[0].name),
            ));
        }
    }
    Ok(SafetensorsHeader { tensors, metadata })
}

fn parse_entry(
    file: &str,
    name: &str,
    entry: &Value,
    data_start: u64,
    data_len: u64,
) -> Result<TensorInfo> {
    let bad = |msg: String| Error::tensor_format(file, name, msg);
    let dtype_name = entry
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("header entry has no 'dtype' string".into()))?;
    let elem =
        dtype_size(dtype_name).ok_or_else(|| bad(format!("unknown dtype '{dtype_name}'")))?;
    let shape_values = entry
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("header entry has no 'shape' array".into()))?;
    let mut shape = Vec::with_capacity(shape_values.len());
    let mut numel: u64 = 1;
    for dim in shape_values {
        let d = dim
            .as_u64()
            .ok_or_else(|| bad(format!("shape entry {dim} is not a non-negative integer")))?;
        numel = numel
            .checked_mul(d)
            .ok_or_else(|| bad("shape overflows".into()))?;
        shape.push(usize::try_from(d).map_err(|_| bad("shape overflows".into()))?);
    }
    let offsets = entry
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .ok_or_else(|| bad("header entry has no 'data_offsets' pair".into()))?;
    let (start, end) = match (offsets[0].as_u64(), offsets[1].as_u64()) {
        (Some(s), Some(e)) => (s, e),
        _ => return Err(bad("data_offsets are not non-negative integers".into())),
    };
    if end < start {
        return Err(bad(format!("data_offsets [{start}, {end}] are reversed")));
    }
    if end > data_len {
        return Err(bad(format!(
            "data_offsets end {end} lies past the data section ({data_len} bytes): file truncated?"
        )));
    }
    let expected = numel
        .checked_mul(elem)
        .ok_or_else(|| bad("shape × dtype size overflows".into()))?;
    if expected != end - start {
        return Err(bad(format!(
            "shape {shape:?} of {dtype_name} needs {expected} bytes but data_offsets give {}",
            end - start
        )));
    }
    Ok(TensorInfo {
        name: name.to_string(),
        dtype: DType::from_safetensors_name(dtype_name),
        dtype_name: dtype_name.to_string(),
        shape,
        offset: data_start + start,
        len: end - start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str, data: usize) -> Result<SafetensorsHeader> {
        parse_header(
            "t.safetensors",
            json.as_bytes(),
            8 + json.len() as u64 + data as u64,
        )
    }

    #[test]
    fn parses_valid_header() {
        let h = header(
            r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}}"#,
            32,
        )
        .unwrap();
        assert_eq!(h.tensors["a"].shape, vec![2, 3]);
        assert_eq!(h.tensors["b"].dtype, Some(DType::BF16));
        assert_eq!(h.metadata["format"], "pt");
    }

    #[test]
    fn rejects_bad_headers_with_tensor_names() {
        let cases = [
            (
                r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#,
                24,
                "needs 24 bytes",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                12,
                "overlaps",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                4,
                "past the data section",
            ),
            (
                r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
                8,
                "unknown dtype",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,8]}}"#,
                8,
                "overflows",
            ),
            (r#"[1,2]"#, 0, "not a JSON object"),
            (r#"{"a":"#, 0, "not valid JSON"),
        ];
        for (json, data, needle) in cases {
            let err = header(json, data).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
            assert!(err.starts_with("t.safetensors"), "{err}");
        }
    }
}
