//! Checkpoints: a Hugging Face model directory (config.json, safetensors — single or sharded —
//! and tokenizer files), read tensor by tensor from byte ranges. Also GGUF import and the
//! safetensors writer.

pub mod config;
pub mod dequant;
pub mod dtype;
pub mod gguf;
mod gguf_sentencepiece;
mod gguf_tokenizer;
pub mod import;
pub mod moe_layout;
pub mod moegraft_section;
pub mod provenance;
pub mod safetensors;
pub mod source;
pub mod summary;
pub(crate) mod summary_text;
pub mod writer;

use std::collections::BTreeMap;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use dtype::DType;
pub use source::{ByteSource, MemorySource};

use crate::error::{Error, Result};
use safetensors::TensorInfo;

/// Largest config/tokenizer/index file read whole (real tokenizer.json files are < 40 MB).
pub const MAX_METADATA_BYTES: u64 = 256 * 1024 * 1024;

/// The files of one model directory, by base name. Natively read from a folder; in the browser
/// built from the `File` objects a user picked.
pub struct ModelFiles {
    label: String,
    files: BTreeMap<String, Box<dyn ByteSource>>,
}

impl ModelFiles {
    /// `label` names the directory in messages.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            files: BTreeMap::new(),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Adds a file under its base name (a path's directories are dropped).
    pub fn insert(&mut self, name: &str, source: Box<dyn ByteSource>) {
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        self.files.insert(base.to_string(), source);
    }

    pub fn get(&self, name: &str) -> Option<&dyn ByteSource> {
        self.files.get(name).map(|b| b.as_ref())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Path-like name for messages: `dir/file` (the file alone when there is no folder).
    pub fn display_name(&self, file: &str) -> String {
        match self.label.trim_end_matches('/') {
            "" => file.to_string(),
            dir => format!("{dir}/{file}"),
        }
    }

    /// Reads a whole (small) file as UTF-8 text; `Ok(None)` if absent.
    pub async fn read_text(&self, name: &str) -> Result<Option<String>> {
        let Some(bytes) = self.read_bytes(name).await? else {
            return Ok(None);
        };
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::format(self.display_name(name), "file is not valid UTF-8"))
    }

    /// Reads a whole metadata file's bytes (config, tokenizer, index); `Ok(None)` if absent.
    pub async fn read_bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(source) = self.get(name) else {
            return Ok(None);
        };
        // A huge "config.json" must fail, not exhaust memory (or wrap `usize` in wasm32).
        let size = source.size();
        let len = usize::try_from(size)
            .ok()
            .filter(|_| size <= MAX_METADATA_BYTES)
            .ok_or_else(|| {
                Error::format(
                    self.display_name(name),
                    format!("file is {size} bytes, more than the {MAX_METADATA_BYTES} a metadata file may have"),
                )
            })?;
        Ok(Some(source.read_range(0, len).await?))
    }

    /// Every regular file directly inside `dir`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self> {
        let label = dir.display().to_string();
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(&label, e))?;
        let mut files = Self::new(&label);
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&label, e))?;
            let path = entry.path();
            if path.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                files.insert(&name, Box::new(source::FileSource::open(&path)?));
            }
        }
        Ok(files)
    }
}

/// A tensor read into memory, in its stored dtype.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Tensor {
    pub fn to_f32(&self) -> Vec<f32> {
        dtype::to_f32(self.dtype, &self.bytes)
    }

    /// The bytes in `to`: as stored when it is already that, else converted through f32.
    pub fn into_dtype(self, to: DType) -> Vec<u8> {
        if self.dtype == to {
            self.bytes
        } else {
            dtype::from_f32(to, &self.to_f32())
        }
    }
}

/// The tensors whose rows are token ids: a continued-pretrained model may have more of them
/// than the base (an enlarged vocabulary), and only the overlapping rows get Δ.
pub fn is_vocab_tensor(name: &str) -> bool {
    name == "model.embed_tokens.weight" || name == "lm_head.weight"
}

/// An opened model directory: its configuration and where every tensor lives.
pub struct Checkpoint {
    pub files: ModelFiles,
    pub config: ModelConfig,
    tensors: BTreeMap<String, (String, TensorInfo)>,
}

pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const SINGLE_FILE: &str = "model.safetensors";

impl Checkpoint {
    pub async fn open(files: ModelFiles) -> Result<Self> {
        let config_name = files.display_name("config.json");
        let config_text = files.read_text("config.json").await?.ok_or_else(|| {
            Error::config(
                &config_name,
                "config.json is missing from the model directory",
            )
        })?;
        let config = ModelConfig::from_json(&config_text, &config_name)?;
        let (shard_names, weight_map) = shard_names(&files).await?;
        let mut tensors: BTreeMap<String, (String, TensorInfo)> = BTreeMap::new();
        for shard in shard_names {
            let source = files.get(&shard).ok_or_else(|| {
                Error::io(
                    files.display_name(&shard),
                    "listed in the index but not found",
                )
            })?;
            let header = safetensors::read_header(source).await?;
            for (name, info) in header.tensors {
                // Two shards holding one tensor would make which copy loads depend on order.
                if let Some((other, _)) = tensors.get(&name) {
                    return Err(Error::tensor_format(
                        files.display_name(&shard),
                        &name,
                        format!("also stored in {other}"),
                    ));
                }
                tensors.insert(name, (shard.clone(), info));
            }
        }
        // The index must agree with the shards, or a tensor would be silently missing later.
        for (name, shard) in weight_map {
            if tensors.get(&name).is_none_or(|(s, _)| *s != shard) {
                return Err(Error::tensor_format(
                    files.display_name(INDEX_FILE),
                    &name,
                    format!("the index places it in {shard}, which does not hold it"),
                ));
            }
        }
        Ok(Self {
            files,
            config,
            tensors,
        })
    }

    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Where a tensor lives; an error naming the directory and tensor if it is absent.
    pub fn info(&self, name: &str) -> Result<(&str, &TensorInfo)> {
        self.tensors
            .get(name)
            .map(|(f, i)| (f.as_str(), i))
            .ok_or_else(|| Error::MissingTensor {
                file: self.files.label().to_string(),
                tensor: name.to_string(),
            })
    }

    /// Checks a tensor's shape, naming file and tensor on mismatch.
    pub fn expect_shape(&self, name: &str, expected: &[usize]) -> Result<&TensorInfo> {
        let (file, info) = self.info(name)?;
        if info.shape != expected {
            return Err(Error::Shape {
                file: self.files.display_name(file),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                got: info.shape.clone(),
            });
        }
        Ok(info)
    }

    /// Reads one tensor's bytes from its file.
    pub async fn read(&self, name: &str) -> Result<Tensor> {
        let (_, info) = self.info(name)?;
        let (source, dtype) = self.locate(name)?;
        let bytes = source.read_range(info.offset, info.len as usize).await?;
        Ok(Tensor {
            name: name.to_string(),
            dtype,
            shape: info.shape.clone(),
            bytes,
        })
    }

    /// A tensor's element type and element count; an error naming file and tensor if it is
    /// absent or not a float.
    pub fn element_info(&self, name: &str) -> Result<(DType, usize)> {
        let (_, info) = self.info(name)?;
        let (_, dtype) = self.locate(name)?;
        Ok((dtype, info.numel()))
    }

    /// Reads elements `start..` of a tensor as stored, `buf.len()` bytes of them, into `buf`.
    pub async fn read_elements_into(&self, name: &str, start: usize, buf: &mut [u8]) -> Result<()> {
        let (file, info) = self.info(name)?;
        let (source, dtype) = self.locate(name)?;
        let size = dtype.size();
        let end = (start.checked_mul(size)).and_then(|s| s.checked_add(buf.len()));
        if !buf.len().is_multiple_of(size) || end.is_none_or(|end| end as u64 > info.len) {
            return Err(Error::tensor_format(
                self.files.display_name(file),
                name,
                format!(
                    "elements {start}..+{} lie outside its {} elements",
                    buf.len() / size,
                    info.numel()
                ),
            ));
        }
        source
            .read_into(info.offset + (start * size) as u64, buf)
            .await
    }

    /// Reads `count` elements of a tensor from element `start` on, as f32: lets statistics
    /// stream a large tensor (a 150k-row embedding) in bounded slices.
    pub async fn read_f32_range(&self, name: &str, start: usize, count: usize) -> Result<Vec<f32>> {
        let (file, info) = self.info(name)?;
        if start
            .checked_add(count)
            .is_none_or(|end| end > info.numel())
        {
            return Err(Error::tensor_format(
                self.files.display_name(file),
                name,
                format!(
                    "elements {start}..+{count} lie outside its {} elements",
                    info.numel()
                ),
            ));
        }
        let (source, dtype) = self.locate(name)?;
        let size = dtype.size() as u64;
        let bytes = source
            .read_range(info.offset + start as u64 * size, count * dtype.size())
            .await?;
        Ok(dtype::to_f32(dtype, &bytes))
    }

    /// A tensor's file and weight dtype; an error naming both if the dtype is not a float.
    fn locate(&self, name: &str) -> Result<(&dyn ByteSource, DType)> {
        let (file, info) = self.info(name)?;
        let dtype = info.dtype.ok_or_else(|| {
            Error::tensor_format(
                self.files.display_name(file),
                name,
                format!(
                    "dtype {} is not a floating-point weight type (F32, F16, BF16)",
                    info.dtype_name
                ),
            )
        })?;
        let source = self
            .files
            .get(file)
            .ok_or_else(|| Error::io(self.files.display_name(file), "file disappeared"))?;
        Ok((source, dtype))
    }

    pub async fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self.read(name).await?.to_f32())
    }
}

/// The safetensors files of a directory (those of the index, or the single file) and the
/// index's tensor → shard map (empty without an index).
async fn shard_names(files: &ModelFiles) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    if let Some(index) = files.read_text(INDEX_FILE).await? {
        let index_name = files.display_name(INDEX_FILE);
        let value: serde_json::Value = serde_json::from_str(&index)
            .map_err(|e| Error::format(&index_name, format!("not valid JSON: {e}")))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::format(&index_name, "no 'weight_map' object"))?;
        let mut weight_map = BTreeMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                Error::tensor_format(&index_name, tensor, "weight_map entry is not a file name")
            })?;
            weight_map.insert(tensor.clone(), file.to_string());
        }
        let mut shards: Vec<String> = weight_map.values().cloned().collect();
        shards.sort();
        shards.dedup();
        return Ok((shards, weight_map));
    }
    if files.get(SINGLE_FILE).is_some() {
        return Ok((vec![SINGLE_FILE.to_string()], BTreeMap::new()));
    }
    // Accept a lone safetensors file of another name (e.g. a renamed export).
    let others: Vec<String> = files
        .names()
        .filter(|n| n.ends_with(".safetensors"))
        .map(str::to_string)
        .collect();
    if others.is_empty() {
        return Err(Error::io(
            files.display_name(SINGLE_FILE),
            "no model.safetensors or model.safetensors.index.json in the model directory",
        ));
    }
    Ok((others, BTreeMap::new()))
}
