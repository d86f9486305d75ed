//! GGUF files in the browser: the CLI's `import-gguf` from a picked file into `Blob`s, which
//! the page then loads, grafts or keeps like any Hugging Face directory.

use js_sys::{Array, Function, Object, Reflect};
use serde::Deserialize;
use wasm_bindgen::prelude::*;

use super::files::{picked_files, BlobOutput};
use super::{from_js, init, js_error};
use crate::checkpoint::import::import_gguf_to;
use crate::checkpoint::writer::DEFAULT_MAX_SHARD_BYTES;
use crate::checkpoint::DType;
use crate::error::Error;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebImportOptions {
    /// `f32`, `f16` (default) or `bf16`.
    dtype: Option<String>,
    max_shard_bytes: Option<u64>,
}

/// Converts one GGUF file (a `File` or `{file, path}`) into Hugging Face files. `on_read(what,
/// path, bytes, size)`, if given, follows the reads. Resolves to `{architecture, tensors,
/// layers, dtype, tensor_bytes, files: [{name, blob}]}`; a refused file writes nothing.
#[wasm_bindgen]
pub async fn import_gguf(
    file: JsValue,
    options: JsValue,
    on_read: Option<Function>,
) -> std::result::Result<JsValue, JsError> {
    init();
    let options: WebImportOptions = from_js(options, "import options")?;
    let dtype = match options.dtype.as_deref() {
        None => DType::F16,
        Some(name) => DType::parse(name)
            .ok_or_else(|| JsError::new(&format!("unknown dtype '{name}' (f32, f16 or bf16)")))?,
    };
    // Messages name the file as it was picked: `dir/model.gguf`, or `model.gguf` alone.
    let path = Reflect::get(&file, &"path".into())
        .ok()
        .and_then(|p| p.as_string())
        .unwrap_or_default();
    let folder = path.rsplit_once('/').map_or("", |(dir, _)| dir).to_string();
    let files = picked_files(&Array::of1(&file), Some(folder), "gguf", on_read.as_ref())
        .map_err(js_error)?;
    let name = files
        .names()
        .next()
        .map(str::to_string)
        .ok_or_else(|| js_error(Error::InvalidArgument("no GGUF file was given".into())))?;
    if !name.to_ascii_lowercase().ends_with(".gguf") {
        return Err(JsError::new(&format!(
            "{name}: not a .gguf file (pick a GGUF file, or a Hugging Face folder to load as it is)"
        )));
    }
    let source = files
        .get(&name)
        .ok_or_else(|| JsError::new(&format!("{name}: the file went missing")))?;
    let mut out = BlobOutput::default();
    let model = import_gguf_to(
        source,
        &mut out,
        dtype,
        options.max_shard_bytes.unwrap_or(DEFAULT_MAX_SHARD_BYTES),
    )
    .await
    .map_err(js_error)?;
    let result = Object::new();
    let set = |key: &str, value: JsValue| Reflect::set(&result, &key.into(), &value);
    set("architecture", model.architecture.as_str().into())
        .and(set("tensors", (model.tensors as f64).into()))
        .and(set("layers", (model.layers as f64).into()))
        .and(set("dtype", model.dtype.torch_name().into()))
        .and(set("tensor_bytes", (model.tensor_bytes as f64).into()))
        .and(set("files", out.into_js().into()))
        .map_err(|_| JsError::new("cannot build the import result object"))?;
    Ok(result.into())
}
