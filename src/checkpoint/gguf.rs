//! GGUF (versions 2 and 3): the header, metadata and tensor directory, parsed from byte ranges
//! so a multi-gigabyte file is never read whole. Tensor bytes are read on demand.
//!
//! Layout (little-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
//! the metadata key/values, the tensor infos, padding to `general.alignment`, then the data.
//!
//! Every count and length comes from the file, so each is checked against the bytes the file
//! still has before anything is allocated: a hostile header yields an error, never a panic or an
//! allocation larger than a small multiple of the file.

use std::collections::BTreeMap;

use super::source::ByteSource;
use crate::error::{Error, Result};

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions (GGML_MAX_DIMS).
pub const MAX_DIMS: usize = 4;
/// No real metadata string comes near this (chat templates are tens of KB); refusing longer
/// ones bounds the allocation even for a huge file.
pub const MAX_STRING_BYTES: u64 = 64 * 1024 * 1024;
/// Caps on counts, far above any real file (a few thousand tensors, vocabularies of ~256k),
/// so even a huge crafted file cannot make the parser build tens of gigabytes of structures.
pub const MAX_TENSORS: u64 = 1 << 20;
pub const MAX_KV: u64 = 1 << 20;
pub const MAX_ARRAY_LEN: u64 = 1 << 26;
/// Metadata is read in chunks of this size instead of one read per field.
const READ_CHUNK: u64 = 1024 * 1024;

/// A ggml element type, kept as the raw number so unknown types can be named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q5_0: GgmlType = GgmlType(6);
    pub const Q5_1: GgmlType = GgmlType(7);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q8_1: GgmlType = GgmlType(9);
    pub const Q2_K: GgmlType = GgmlType(10);
    pub const Q3_K: GgmlType = GgmlType(11);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const Q8_K: GgmlType = GgmlType(15);
    pub const BF16: GgmlType = GgmlType(30);

    /// (name, elements per block, bytes per block) from ggml's type traits. Types that import
    /// cannot dequantise are listed too, so their byte sizes still validate the file.
    fn traits(self) -> Option<(&'static str, u64, u64)> {
        Some(match self.0 {
            0 => ("F32", 1, 4),
            1 => ("F16", 1, 2),
            2 => ("Q4_0", 32, 18),
            3 => ("Q4_1", 32, 20),
            6 => ("Q5_0", 32, 22),
            7 => ("Q5_1", 32, 24),
            8 => ("Q8_0", 32, 34),
            9 => ("Q8_1", 32, 40),
            10 => ("Q2_K", 256, 84),
            11 => ("Q3_K", 256, 110),
            12 => ("Q4_K", 256, 144),
            13 => ("Q5_K", 256, 176),
            14 => ("Q6_K", 256, 210),
            15 => ("Q8_K", 256, 292),
            16 => ("IQ2_XXS", 256, 66),
            17 => ("IQ2_XS", 256, 74),
            18 => ("IQ3_XXS", 256, 98),
            19 => ("IQ1_S", 256, 50),
            20 => ("IQ4_NL", 32, 18),
            21 => ("IQ3_S", 256, 110),
            22 => ("IQ2_S", 256, 82),
            23 => ("IQ4_XS", 256, 136),
            24 => ("I8", 1, 1),
            25 => ("I16", 1, 2),
            26 => ("I32", 1, 4),
            27 => ("I64", 1, 8),
            28 => ("F64", 1, 8),
            29 => ("IQ1_M", 256, 56),
            30 => ("BF16", 1, 2),
            34 => ("TQ1_0", 256, 54),
            35 => ("TQ2_0", 256, 66),
            39 => ("MXFP4", 32, 17),
            _ => return None,
        })
    }

    pub fn name(self) -> Option<&'static str> {
        self.traits().map(|t| t.0)
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> Option<(u64, u64)> {
        self.traits().map(|t| (t.1, t.2))
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.0),
            None => write!(f, "unknown ggml type {}", self.0),
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(MetaArray),
}

/// A metadata array, stored by element type: a vocabulary of 150k strings stays compact, and an
/// array of a million u8 costs a million bytes, not a million enum values.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<MetaArray>),
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::F64(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Integer elements widened to i64 (`None` for non-integer arrays or u64 values past i64).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        fn widen<T: Copy + TryInto<i64>>(v: &[T]) -> Option<Vec<i64>> {
            v.iter().map(|x| (*x).try_into().ok()).collect()
        }
        match self {
            MetaArray::U8(v) => widen(v),
            MetaArray::I8(v) => widen(v),
            MetaArray::U16(v) => widen(v),
            MetaArray::I16(v) => widen(v),
            MetaArray::U32(v) => widen(v),
            MetaArray::I32(v) => widen(v),
            MetaArray::U64(v) => widen(v),
            MetaArray::I64(v) => widen(v),
            _ => None,
        }
    }
}

impl MetaValue {
    /// Short type name for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F32(_) => "f32",
            MetaValue::F64(_) => "f64",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
        }
    }

    /// Any integer type, if non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any float type (f32 values are returned exactly widened).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's directory entry, with its absolute byte range already checked against the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: innermost (contiguous) dimension first.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute offset in the file.
    pub offset: u64,
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    pub fn numel(&self) -> u64 {
        // Cannot overflow: checked when the entry was parsed.
        self.dims.iter().product()
    }

    /// The row-major (PyTorch / safetensors) shape: the dims reversed.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file: everything but the tensor data.
#[derive(Debug, Clone)]
pub struct GgufFile {
    /// The file's name for messages.
    pub file: String,
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    /// In file order.
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

impl GgufFile {
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn wrong_type(&self, key: &str, value: &MetaValue, expected: &str) -> Error {
        Error::config(
            &self.file,
            format!(
                "metadata '{key}' is a {}, expected {expected}",
                value.type_name()
            ),
        )
    }

    /// An unsigned integer value; `Ok(None)` if absent, an error if of another type.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, v, "a non-negative integer")),
        }
    }

    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, v, "a float")),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, v, "a string")),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, v, "a bool")),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<Option<&[String]>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(MetaArray::String(v))) => Ok(Some(v)),
            Some(v) => Err(self.wrong_type(key, v, "an array of strings")),
        }
    }

    pub fn get_int_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .and_then(MetaArray::to_i64)
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, v, "an array of integers")),
        }
    }

    /// Reads one tensor's bytes (range already validated at parse time).
    pub async fn read_tensor(
        &self,
        source: &dyn ByteSource,
        info: &GgufTensorInfo,
    ) -> Result<Vec<u8>> {
        self.read_tensor_range(source, info, 0, info.n_bytes).await
    }

    /// Reads `len` bytes starting `start` bytes into a tensor's data (e.g. one expert of a
    /// stacked expert tensor).
    pub async fn read_tensor_range(
        &self,
        source: &dyn ByteSource,
        info: &GgufTensorInfo,
        start: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let end = start.checked_add(len);
        if end.is_none_or(|e| e > info.n_bytes) {
            return Err(Error::tensor_format(
                &self.file,
                &info.name,
                format!(
                    "byte range {start}+{len} lies outside the tensor's {} bytes",
                    info.n_bytes
                ),
            ));
        }
        let len = usize::try_from(len).map_err(|_| {
            Error::tensor_format(&self.file, &info.name, "tensor too large for this platform")
        })?;
        source.read_range(info.offset + start, len).await
    }
}

/// Reads the header, metadata and tensor directory of a GGUF file.
pub async fn read_gguf(source: &dyn ByteSource) -> Result<GgufFile> {
    let mut r = Reader::new(source);
    let file = r.file.clone();
    let magic = r.bytes(4).await?;
    if magic != GGUF_MAGIC {
        return Err(Error::format(
            &file,
            format!("not a GGUF file: starts with {magic:02x?}, expected \"GGUF\""),
        ));
    }
    let version = r.u32().await?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(Error::format(
                &file,
                "GGUF version 1 is not supported (only 2 and 3); re-convert the model",
            ))
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(Error::format(
                &file,
                "big-endian GGUF files are not supported",
            ))
        }
        v => {
            return Err(Error::format(
                &file,
                format!("unsupported GGUF version {v} (supported: 2, 3)"),
            ))
        }
    }
    let tensor_count = r.u64().await?;
    let kv_count = r.u64().await?;
    // Smallest encodings: a key/value is a key length (8), a type (4) and ≥1 byte of value; a
    // tensor info is a name length (8), n_dims (4), type (4) and offset (8).
    r.check_count(kv_count, 13, MAX_KV, "metadata entries")?;
    r.check_count(tensor_count, 24, MAX_TENSORS, "tensor infos")?;

    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = r.string().await?;
        let value_type = r.u32().await?;
        let value = r.value(value_type, &key, 0).await?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(Error::format(
                &file,
                format!("duplicate metadata key '{key}'"),
            ));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 30 => a,
            _ => {
                return Err(Error::format(
                    &file,
                    format!("general.alignment {v:?} is not a power of two"),
                ))
            }
        },
    };

    let mut raw = Vec::new();
    for _ in 0..tensor_count {
        let name = r.string().await?;
        let n_dims = r.u32().await?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(Error::tensor_format(
                &file,
                &name,
                format!("has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64().await?);
        }
        let ggml_type = GgmlType(r.u32().await?);
        let offset = r.u64().await?;
        raw.push((name, dims, ggml_type, offset));
    }

    let data_offset = align_up(r.pos, alignment)
        .ok_or_else(|| Error::format(&file, "data section offset overflows"))?;
    let size = source.size();
    let mut tensors: Vec<GgufTensorInfo> = Vec::with_capacity(raw.len());
    let mut seen = std::collections::HashSet::new();
    for (name, dims, ggml_type, rel) in raw {
        if !seen.insert(name.clone()) {
            return Err(Error::tensor_format(
                &file,
                &name,
                "appears twice in the tensor directory",
            ));
        }
        let info = tensor_info(
            &file,
            name,
            dims,
            ggml_type,
            rel,
            alignment,
            data_offset,
            size,
        )?;
        tensors.push(info);
    }
    Ok(GgufFile {
        file,
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

#[allow(clippy::too_many_arguments)]
fn tensor_info(
    file: &str,
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    rel_offset: u64,
    alignment: u64,
    data_offset: u64,
    file_size: u64,
) -> Result<GgufTensorInfo> {
    let bad = |m: String| Error::tensor_format(file, &name, m);
    let (block, type_size) = ggml_type
        .block()
        .ok_or_else(|| bad(format!("has unknown ggml type {}", ggml_type.0)))?;
    let mut numel: u64 = 1;
    for &d in &dims {
        numel = numel
            .checked_mul(d)
            .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    }
    // Blocks run along the innermost dimension, so each row must hold whole blocks.
    if !dims[0].is_multiple_of(block) {
        return Err(bad(format!(
            "innermost dimension {} is not a multiple of the {ggml_type} block size {block}",
            dims[0]
        )));
    }
    let n_bytes = (numel / block)
        .checked_mul(type_size)
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    if !rel_offset.is_multiple_of(alignment) {
        return Err(bad(format!(
            "data offset {rel_offset} is not aligned to {alignment} bytes"
        )));
    }
    let offset = data_offset
        .checked_add(rel_offset)
        .ok_or_else(|| bad("data offset overflows".into()))?;
    match offset.checked_add(n_bytes) {
        Some(end) if end <= file_size => {}
        _ => {
            return Err(bad(format!(
                "data ({n_bytes} bytes at offset {offset}) lies past the end of the file ({file_size} bytes): truncated?"
            )))
        }
    }
    Ok(GgufTensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_bytes,
    })
}

fn align_up(pos: u64, alignment: u64) -> Option<u64> {
    pos.checked_add(alignment - 1)
        .map(|p| p / alignment * alignment)
}

/// Metadata arrays may nest; real files use one level. Deeper nesting is refused so a crafted
/// file cannot recurse without bound.
const MAX_ARRAY_NESTING: u32 = 4;

/// A forward reader over a byte source that fetches `READ_CHUNK`-sized pieces as needed.
struct Reader<'a> {
    source: &'a dyn ByteSource,
    file: String,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_start: u64,
    /// File offset of the next byte to consume.
    pos: u64,
}

impl<'a> Reader<'a> {
    fn new(source: &'a dyn ByteSource) -> Self {
        Self {
            source,
            file: source.name().to_string(),
            buf: Vec::new(),
            buf_start: 0,
            pos: 0,
        }
    }

    fn remaining(&self) -> u64 {
        self.source.size().saturating_sub(self.pos)
    }

    /// Refuses a count above `cap` or whose smallest possible encoding would not fit in the
    /// rest of the file.
    fn check_count(&self, count: u64, min_bytes_each: u64, cap: u64, what: &str) -> Result<()> {
        match count.checked_mul(min_bytes_each) {
            Some(n) if n <= self.remaining() && count <= cap => Ok(()),
            _ => Err(Error::format(
                &self.file,
                format!(
                    "header claims {count} {what} at offset {} but only {} bytes remain, or more than the cap of {cap} (corrupt or truncated)",
                    self.pos,
                    self.remaining()
                ),
            )),
        }
    }

    /// Consumes `n` bytes, reading more of the file if the buffer runs out.
    async fn bytes(&mut self, n: u64) -> Result<&[u8]> {
        if n > self.remaining() {
            return Err(Error::format(
                &self.file,
                format!(
                    "file is truncated: needs {n} bytes at offset {} but has {}",
                    self.pos,
                    self.source.size()
                ),
            ));
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos + n > buf_end {
            let want = n.max(READ_CHUNK).min(self.remaining());
            let want = usize::try_from(want)
                .map_err(|_| Error::format(&self.file, "metadata too large for this platform"))?;
            self.buf = self.source.read_range(self.pos, want).await?;
            self.buf_start = self.pos;
        }
        let start = (self.pos - self.buf_start) as usize;
        self.pos += n;
        Ok(&self.buf[start..start + n as usize])
    }

    async fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N as u64).await?);
        Ok(out)
    }

    async fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array().await?))
    }

    async fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array().await?))
    }

    async fn string(&mut self) -> Result<String> {
        let at = self.pos;
        let len = self.u64().await?;
        if len > MAX_STRING_BYTES || len > self.remaining() {
            return Err(Error::format(
                &self.file,
                format!(
                    "string at offset {at} claims {len} bytes but only {} remain (cap {MAX_STRING_BYTES}): corrupt or truncated",
                    self.remaining()
                ),
            ));
        }
        let bytes = self.bytes(len).await?.to_vec();
        String::from_utf8(bytes).map_err(|_| {
            Error::format(
                &self.file,
                format!("string at offset {at} is not valid UTF-8"),
            )
        })
    }

    /// Reads one value of GGUF value type `t` (`key` names it in errors).
    async fn value(&mut self, t: u32, key: &str, depth: u32) -> Result<MetaValue> {
        Ok(match t {
            0 => MetaValue::U8(self.array::<1>().await?[0]),
            1 => MetaValue::I8(i8::from_le_bytes(self.array().await?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array().await?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array().await?)),
            4 => MetaValue::U32(self.u32().await?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array().await?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array().await?)),
            7 => MetaValue::Bool(self.bool(key).await?),
            8 => MetaValue::String(self.string().await?),
            9 => MetaValue::Array(self.meta_array(key, depth).await?),
            10 => MetaValue::U64(self.u64().await?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array().await?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array().await?)),
            other => {
                return Err(Error::format(
                    &self.file,
                    format!("metadata '{key}' has unknown value type {other}"),
                ))
            }
        })
    }

    async fn bool(&mut self, key: &str) -> Result<bool> {
        match self.array::<1>().await?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(Error::format(
                &self.file,
                format!("metadata '{key}' has bool byte {b}, expected 0 or 1"),
            )),
        }
    }

    /// Reads an array: element type, count, then the elements. Boxed because arrays nest.
    fn meta_array<'s>(
        &'s mut self,
        key: &'s str,
        depth: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<MetaArray>> + 's>> {
        Box::pin(async move {
            if depth >= MAX_ARRAY_NESTING {
                return Err(Error::format(
                    &self.file,
                    format!("metadata '{key}' nests arrays deeper than {MAX_ARRAY_NESTING}"),
                ));
            }
            let elem_type = self.u32().await?;
            let count = self.u64().await?;
            let min_size = match elem_type {
                0 | 1 | 7 => 1,
                2 | 3 => 2,
                4..=6 => 4,
                8 | 10..=12 => 8,
                9 => 12,
                other => {
                    return Err(Error::format(
                        &self.file,
                        format!("metadata '{key}' is an array of unknown value type {other}"),
                    ))
                }
            };
            self.check_count(
                count,
                min_size,
                MAX_ARRAY_LEN,
                &format!("elements in metadata array '{key}'"),
            )?;
            let n = count as usize; // fits: count × min_size ≤ file size
            macro_rules! fixed {
                ($variant:ident, $ty:ty) => {{
                    let raw = self.bytes(count * min_size).await?;
                    MetaArray::$variant(
                        raw.chunks_exact(std::mem::size_of::<$ty>())
                            .map(|c| {
                                let mut b = [0u8; std::mem::size_of::<$ty>()];
                                b.copy_from_slice(c);
                                <$ty>::from_le_bytes(b)
                            })
                            .collect(),
                    )
                }};
            }
            Ok(match elem_type {
                0 => MetaArray::U8(self.bytes(count).await?.to_vec()),
                1 => fixed!(I8, i8),
                2 => fixed!(U16, u16),
                3 => fixed!(I16, i16),
                4 => fixed!(U32, u32),
                5 => fixed!(I32, i32),
                6 => fixed!(F32, f32),
                10 => fixed!(U64, u64),
                11 => fixed!(I64, i64),
                12 => fixed!(F64, f64),
                7 => {
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        v.push(self.bool(key).await?);
                    }
                    MetaArray::Bool(v)
                }
                8 => {
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        v.push(self.string().await?);
                    }
                    MetaArray::String(v)
                }
                _ => {
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        v.push(self.meta_array(key, depth + 1).await?);
                    }
                    MetaArray::Array(v)
                }
            })
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::checkpoint::source::MemorySource;

    /// Builds GGUF bytes for tests (a tiny writer, not part of the crate's API).
    #[derive(Default)]
    pub struct GgufBuilder {
        pub kv: Vec<u8>,
        pub kv_count: u64,
        pub infos: Vec<u8>,
        pub tensor_count: u64,
        pub data: Vec<u8>,
        pub alignment: u64,
    }

    pub fn gguf_string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    impl GgufBuilder {
        pub fn new() -> Self {
            Self {
                alignment: 32,
                ..Default::default()
            }
        }
        fn key(&mut self, key: &str, t: u32) {
            gguf_string(&mut self.kv, key);
            self.kv.extend_from_slice(&t.to_le_bytes());
            self.kv_count += 1;
        }
        pub fn u32(&mut self, key: &str, v: u32) -> &mut Self {
            self.key(key, 4);
            self.kv.extend_from_slice(&v.to_le_bytes());
            self
        }
        pub fn f32(&mut self, key: &str, v: f32) -> &mut Self {
            self.key(key, 6);
            self.kv.extend_from_slice(&v.to_le_bytes());
            self
        }
        pub fn bool(&mut self, key: &str, v: bool) -> &mut Self {
            self.key(key, 7);
            self.kv.push(v as u8);
            self
        }
        pub fn str(&mut self, key: &str, v: &str) -> &mut Self {
            self.key(key, 8);
            gguf_string(&mut self.kv, v);
            self
        }
        pub fn strs(&mut self, key: &str, v: &[&str]) -> &mut Self {
            self.key(key, 9);
            self.kv.extend_from_slice(&8u32.to_le_bytes());
            self.kv.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for s in v {
                gguf_string(&mut self.kv, s);
            }
            self
        }
        pub fn i32s(&mut self, key: &str, v: &[i32]) -> &mut Self {
            self.key(key, 9);
            self.kv.extend_from_slice(&5u32.to_le_bytes());
            self.kv.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for x in v {
                self.kv.extend_from_slice(&x.to_le_bytes());
            }
            self
        }
        pub fn f32s(&mut self, key: &str, v: &[f32]) -> &mut Self {
            self.key(key, 9);
            self.kv.extend_from_slice(&6u32.to_le_bytes());
            self.kv.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for x in v {
                self.kv.extend_from_slice(&x.to_le_bytes());
            }
            self
        }
        /// Adds a tensor with raw data bytes (dims innermost first).
        pub fn tensor(&mut self, name: &str, dims: &[u64], t: u32, bytes: &[u8]) -> &mut Self {
            while !(self.data.len() as u64).is_multiple_of(self.alignment) {
                self.data.push(0);
            }
            gguf_string(&mut self.infos, name);
            self.infos
                .extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                self.infos.extend_from_slice(&d.to_le_bytes());
            }
            self.infos.extend_from_slice(&t.to_le_bytes());
            self.infos
                .extend_from_slice(&(self.data.len() as u64).to_le_bytes());
            self.data.extend_from_slice(bytes);
            self.tensor_count += 1;
            self
        }
        pub fn f32_tensor(&mut self, name: &str, dims: &[u64], values: &[f32]) -> &mut Self {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.tensor(name, dims, 0, &bytes)
        }
        pub fn build(&self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend_from_slice(&3u32.to_le_bytes());
            out.extend_from_slice(&self.tensor_count.to_le_bytes());
            out.extend_from_slice(&self.kv_count.to_le_bytes());
            out.extend_from_slice(&self.kv);
            out.extend_from_slice(&self.infos);
            while !(out.len() as u64).is_multiple_of(self.alignment) {
                out.push(0);
            }
            out.extend_from_slice(&self.data);
            out
        }
    }

    fn parse(bytes: Vec<u8>) -> Result<GgufFile> {
        pollster::block_on(read_gguf(&MemorySource::new("t.gguf", bytes)))
    }

    fn sample() -> GgufBuilder {
        let mut b = GgufBuilder::new();
        b.str("general.architecture", "llama")
            .u32("llama.block_count", 2)
            .f32("llama.rope.freq_base", 10000.0)
            .bool("tokenizer.ggml.add_bos_token", true)
            .strs("tokenizer.ggml.tokens", &["a", "b", "<s>"])
            .i32s("tokenizer.ggml.token_type", &[1, 1, 3])
            .f32_tensor("x.weight", &[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
            .f32_tensor("y.weight", &[4], &[1.0; 4]);
        b
    }

    #[test]
    fn parses_metadata_and_tensors() {
        let bytes = sample().build();
        let g = parse(bytes.clone()).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.get_str("general.architecture").unwrap(), Some("llama"));
        assert_eq!(g.get_u64("llama.block_count").unwrap(), Some(2));
        assert_eq!(g.get_f64("llama.rope.freq_base").unwrap(), Some(10000.0));
        assert_eq!(
            g.get_bool("tokenizer.ggml.add_bos_token").unwrap(),
            Some(true)
        );
        assert_eq!(
            g.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap(),
            &["a", "b", "<s>"]
        );
        assert_eq!(
            g.get_int_array("tokenizer.ggml.token_type")
                .unwrap()
                .unwrap(),
            vec![1, 1, 3]
        );
        let x = g.tensor("x.weight").unwrap();
        assert_eq!(x.shape(), vec![3, 2]);
        assert_eq!(x.n_bytes, 24);
        assert_eq!(x.offset % 32, 0);
        let y = g.tensor("y.weight").unwrap();
        assert_eq!(y.offset, x.offset + 32);
        let src = MemorySource::new("t.gguf", bytes);
        let data = pollster::block_on(g.read_tensor(&src, x)).unwrap();
        assert_eq!(&data[4..8], &1.0f32.to_le_bytes());
        // A wrongly typed key is an error, not a silent default.
        assert!(g.get_u64("general.architecture").is_err());
    }

    fn expect_err(bytes: Vec<u8>, needle: &str) {
        let err = parse(bytes).unwrap_err().to_string();
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
        assert!(err.starts_with("t.gguf"), "{err}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().build();
        for len in 0..bytes.len() - 1 {
            assert!(parse(bytes[..len].to_vec()).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        // Deterministic mutation: overwrite 1–4 bytes at pseudo-random places with extremes or
        // noise; parsing may succeed or fail but must not panic or allocate wildly.
        let base = sample().build();
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut bytes = base.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = match next() % 3 {
                    0 => 0xFF,
                    1 => 0x00,
                    _ => next() as u8,
                };
            }
            let _ = parse(bytes);
        }
    }

    #[test]
    fn rejects_hostile_headers() {
        let mut bad_magic = sample().build();
        bad_magic[0] = b'X';
        expect_err(bad_magic, "not a GGUF file");

        let mut v1 = sample().build();
        v1[4..8].copy_from_slice(&1u32.to_le_bytes());
        expect_err(v1, "version 1");

        let mut big_endian = sample().build();
        big_endian[4..8].copy_from_slice(&3u32.to_be_bytes());
        expect_err(big_endian, "big-endian");

        let mut counts = sample().build();
        counts[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        expect_err(counts, "tensor infos");
        let mut counts = sample().build();
        counts[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        expect_err(counts, "metadata entries");

        // First key's length replaced by a huge one.
        let mut long_key = sample().build();
        long_key[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        expect_err(long_key, "claims");

        // A string array claiming 2^60 elements.
        let mut b = GgufBuilder::new();
        b.key("k", 9);
        b.kv.extend_from_slice(&8u32.to_le_bytes());
        b.kv.extend_from_slice(&(1u64 << 60).to_le_bytes());
        expect_err(b.build(), "elements in metadata array 'k'");

        let mut b = GgufBuilder::new();
        b.key("k", 42);
        b.kv.extend_from_slice(&[0; 16]);
        expect_err(b.build(), "unknown value type 42");

        let mut b = GgufBuilder::new();
        b.key("k", 7);
        b.kv.push(2);
        b.kv.extend_from_slice(&[0; 16]);
        expect_err(b.build(), "bool byte 2");

        // Arrays nested past the cap.
        let mut b = GgufBuilder::new();
        b.key("k", 9);
        for _ in 0..8 {
            b.kv.extend_from_slice(&9u32.to_le_bytes());
            b.kv.extend_from_slice(&1u64.to_le_bytes());
        }
        b.kv.extend_from_slice(&[0; 64]);
        expect_err(b.build(), "nests arrays");

        let mut b = GgufBuilder::new();
        b.str("k", "a").str("k", "b");
        expect_err(b.build(), "duplicate metadata key 'k'");

        let mut b = GgufBuilder::new();
        b.u32("general.alignment", 3).f32_tensor("x", &[1], &[0.0]);
        expect_err(b.build(), "power of two");
    }

    #[test]
    fn rejects_hostile_tensor_infos() {
        let mut b = GgufBuilder::new();
        b.tensor("q", &[32, 2], 99, &[0; 64]);
        expect_err(b.build(), "tensor 'q': has unknown ggml type 99");

        let mut b = GgufBuilder::new();
        b.tensor("q", &[16], 2, &[0; 18]);
        expect_err(b.build(), "not a multiple of the Q4_0 (2) block size 32");

        let mut b = GgufBuilder::new();
        b.tensor("q", &[1 << 40, 1 << 40], 0, &[0; 4]);
        expect_err(b.build(), "overflow");

        let mut b = GgufBuilder::new();
        b.tensor("q", &[64], 0, &[0; 4]);
        expect_err(b.build(), "past the end of the file");

        let mut b = GgufBuilder::new();
        b.tensor("q", &[1, 1, 1, 1, 1], 0, &[0; 4]);
        expect_err(b.build(), "5 dimensions");

        let mut b = GgufBuilder::new();
        b.f32_tensor("q", &[1], &[0.0])
            .f32_tensor("q", &[1], &[0.0]);
        expect_err(b.build(), "appears twice");

        // Offset patched to an unaligned value, then to one past the end.
        let mut b = GgufBuilder::new();
        b.f32_tensor("q", &[1], &[0.0]);
        let n = b.infos.len();
        b.infos[n - 8..].copy_from_slice(&3u64.to_le_bytes());
        expect_err(b.build(), "not aligned");
        b.infos[n - 8..].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
        expect_err(b.build(), "overflows");
    }

    #[test]
    fn tensor_range_reads_are_bounded() {
        let bytes = sample().build();
        let g = parse(bytes.clone()).unwrap();
        let src = MemorySource::new("t.gguf", bytes);
        let x = g.tensor("x.weight").unwrap();
        let err = pollster::block_on(g.read_tensor_range(&src, x, 20, 8)).unwrap_err();
        assert!(err.to_string().contains("outside the tensor"), "{err}");
        assert!(pollster::block_on(g.read_tensor_range(&src, x, u64::MAX, 2)).is_err());
    }
}
