//! The browser API (wasm32 only): model files from `File`/`Blob` objects, the WebGPU adapter,
//! loading and generating — exported through wasm-bindgen for the page's Web Worker.
//!
//! Every entry point returns the library's one-line error as a JS `Error`; none panics on bad
//! input (a panic would still be logged by `console_error_panic_hook`).

use std::rc::Rc;
use std::sync::Once;

use js_sys::{Array, Function, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::checkpoint::source::{check_range, ByteSource, ReadFuture};
use crate::checkpoint::ModelFiles;
use crate::error::{Error, Result};
use crate::generate::{self, GenerateOptions, Generation, SampleSettings};
use crate::gpu::{AdapterSummary, GpuContext, GpuOptions};
use crate::model::open::open_files;
use crate::model::{LoadOptions, Model};
use crate::tokenizer::Tokenizer;

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(console_error_panic_hook::set_once);
}

fn js_error(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// A JS exception or rejection as text.
fn js_text(v: &JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

/// Plain objects (not `Map`s) for JS, so results read naturally in the worker.
fn to_js<T: Serialize + ?Sized>(value: &T) -> std::result::Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&format!("cannot convert the result for JavaScript: {e}")))
}

/// Options objects: `undefined`/`null` mean all defaults; unknown fields are refused.
fn from_js<T: for<'de> Deserialize<'de> + Default>(
    value: JsValue,
    what: &str,
) -> std::result::Result<T, JsError> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    serde_wasm_bindgen::from_value(value).map_err(|e| JsError::new(&format!("{what}: {e}")))
}

/// A `Blob` (or `File`) read by byte range through `Blob.slice().arrayBuffer()`.
pub struct BlobSource {
    name: String,
    blob: web_sys::Blob,
    size: u64,
}

impl BlobSource {
    pub fn new(name: impl Into<String>, blob: web_sys::Blob) -> Self {
        let size = blob.size() as u64;
        Self {
            name: name.into(),
            blob,
            size,
        }
    }
}

impl ByteSource for BlobSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_range(&self, offset: u64, len: usize) -> ReadFuture<'_> {
        Box::pin(async move {
            check_range(self, offset, len)?;
            if len == 0 {
                return Ok(Vec::new());
            }
            let end = offset + len as u64;
            let slice = self
                .blob
                .slice_with_f64_and_f64(offset as f64, end as f64)
                .map_err(|e| Error::io(&self.name, js_text(&e)))?;
            let buffer = JsFuture::from(slice.array_buffer())
                .await
                .map_err(|e| Error::io(&self.name, format!("cannot read: {}", js_text(&e))))?;
            let bytes = Uint8Array::new(&buffer).to_vec();
            if bytes.len() != len {
                return Err(Error::io(
                    &self.name,
                    format!(
                        "read {} bytes at {offset} but asked for {len} (file changed?)",
                        bytes.len()
                    ),
                ));
            }
            Ok(bytes)
        })
    }
}

/// The WebGPU adapter as the runtime sees it (opens and drops a device).
#[wasm_bindgen]
pub async fn adapter_info() -> std::result::Result<JsValue, JsError> {
    init();
    let ctx = GpuContext::new(GpuOptions::default())
        .await
        .map_err(js_error)?;
    to_js(&ctx.summary)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebLoadOptions {
    /// Names the directory in messages; defaults to the first file's folder.
    label: Option<String>,
    max_context: Option<usize>,
    prefill_chunk: Option<usize>,
    /// Cap on one storage binding in bytes (to exercise the chunked-matrix path).
    max_binding: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebGenerateOptions {
    /// Wrap the prompt as one user message in the chat template (text prompts only).
    chat: bool,
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    seed: Option<u64>,
    /// Generate `max_tokens` tokens even past an end-of-sequence id (reference comparisons).
    ignore_eos: bool,
}

#[derive(Serialize)]
struct ModelInfo<'a> {
    label: &'a str,
    architecture: &'a str,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_layers: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    num_experts: usize,
    experts_per_token: usize,
    is_moe: bool,
    max_context: usize,
    tokenizer: bool,
    chat_template: bool,
    stop_ids: Vec<u32>,
    adapter: &'a AdapterSummary,
}

struct Inner {
    label: String,
    model: Model,
    tokenizer: Option<Tokenizer>,
}

/// A loaded model on the page's WebGPU device.
#[wasm_bindgen]
pub struct WebModel {
    inner: Rc<Inner>,
}

/// The path a picked file was given: its folder-relative path when a directory was picked.
fn file_path(file: &web_sys::File) -> String {
    // `webkitRelativePath` is not in web-sys' bindings; read the property directly.
    js_sys::Reflect::get(file, &"webkitRelativePath".into())
        .ok()
        .and_then(|p| p.as_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| file.name())
}

#[wasm_bindgen]
impl WebModel {
    /// Loads a model from the files of a Hugging Face directory (`File` objects, or
    /// `{file, path}` objects where the path was taken before the files were posted to a
    /// worker). `on_progress(done_bytes, total_bytes)` follows the weight upload.
    pub async fn load(
        files: Array,
        options: JsValue,
        on_progress: &Function,
    ) -> std::result::Result<WebModel, JsError> {
        init();
        let options: WebLoadOptions = from_js(options, "load options")?;
        let mut entries: Vec<(String, web_sys::Blob)> = Vec::new();
        for (i, item) in files.iter().enumerate() {
            let (path, blob) = if let Some(file) = item.dyn_ref::<web_sys::File>() {
                (
                    file_path(file),
                    file.clone().unchecked_into::<web_sys::Blob>(),
                )
            } else if item.is_object() {
                let file = js_sys::Reflect::get(&item, &"file".into())
                    .ok()
                    .and_then(|f| f.dyn_into::<web_sys::File>().ok())
                    .ok_or_else(|| {
                        JsError::new(&format!("files[{i}] is neither a File nor {{file, path}}"))
                    })?;
                let path = js_sys::Reflect::get(&item, &"path".into())
                    .ok()
                    .and_then(|p| p.as_string())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| file_path(&file));
                (path, file.unchecked_into::<web_sys::Blob>())
            } else {
                return Err(JsError::new(&format!("files[{i}] is not a File")));
            };
            entries.push((path, blob));
        }
        if entries.is_empty() {
            return Err(JsError::new(
                "no files were given: pick a model directory (config.json, *.safetensors, tokenizer.json)",
            ));
        }
        let label = options.label.clone().unwrap_or_else(|| {
            let first = &entries[0].0;
            match first.rsplit_once('/') {
                Some((dir, _)) => dir.to_string(),
                None => "model".to_string(),
            }
        });
        let mut model_files = ModelFiles::new(&label);
        for (path, blob) in entries {
            let base = path.rsplit(['/', '\\']).next().unwrap_or(&path).to_string();
            let name = model_files.display_name(&base);
            model_files.insert(&base, Box::new(BlobSource::new(name, blob)));
        }
        let mut load = LoadOptions::default();
        if let Some(n) = options.max_context {
            load.max_context = n;
        }
        if let Some(n) = options.prefill_chunk {
            load.prefill_chunk = n;
        }
        let gpu = GpuOptions {
            max_binding_override: options.max_binding,
            ..Default::default()
        };
        let mut progress = |done: u64, total: u64| {
            let _ = on_progress.call2(
                &JsValue::NULL,
                &JsValue::from_f64(done as f64),
                &JsValue::from_f64(total as f64),
            );
        };
        let opened = open_files(model_files, load, gpu, &mut progress)
            .await
            .map_err(js_error)?;
        Ok(WebModel {
            inner: Rc::new(Inner {
                label,
                model: opened.model,
                tokenizer: opened.tokenizer,
            }),
        })
    }

    /// The model's configuration in brief and the adapter it runs on.
    pub fn info(&self) -> std::result::Result<JsValue, JsError> {
        let inner = &self.inner;
        let c = &inner.model.config;
        to_js(&ModelInfo {
            label: &inner.label,
            architecture: c.architecture.model_type(),
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_layers: c.num_layers,
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            num_experts: c.num_experts,
            experts_per_token: c.experts_per_token,
            is_moe: c.is_moe(),
            max_context: inner.model.options.max_context,
            tokenizer: inner.tokenizer.is_some(),
            chat_template: inner
                .tokenizer
                .as_ref()
                .is_some_and(|t| t.chat_template.is_some()),
            stop_ids: generate::stop_ids(&inner.model, inner.tokenizer.as_ref()),
            adapter: &inner.model.ctx.summary,
        })
    }

    /// Generates from a text prompt. `on_token(id, text_piece)` sees each token; returning
    /// `false` stops. Resolves to `{input_ids, output_ids, text, stop_reason}`.
    pub async fn generate(
        &self,
        prompt: String,
        options: JsValue,
        on_token: &Function,
    ) -> std::result::Result<JsValue, JsError> {
        init();
        let inner = self.inner.clone();
        let options: WebGenerateOptions = from_js(options, "generate options")?;
        let tokenizer = inner.tokenizer.as_ref().ok_or_else(|| {
            JsError::new(&format!(
                "{}/tokenizer.json: the model directory has no tokenizer, so it takes token ids only",
                inner.label
            ))
        })?;
        let ids = tokenizer
            .prompt_ids(&prompt, options.chat)
            .map_err(js_error)?;
        run(&inner, &ids, &options, on_token).await
    }

    /// Generates from token ids (no tokenizer needed; text pieces are empty without one).
    pub async fn generate_ids(
        &self,
        ids: Vec<u32>,
        options: JsValue,
        on_token: &Function,
    ) -> std::result::Result<JsValue, JsError> {
        init();
        let inner = self.inner.clone();
        let options: WebGenerateOptions = from_js(options, "generate options")?;
        if options.chat {
            return Err(JsError::new("chat needs a text prompt, not token ids"));
        }
        run(&inner, &ids, &options, on_token).await
    }

    /// Tokenizes a prompt as `generate` would (for display and tests).
    pub fn encode(&self, prompt: String, chat: bool) -> std::result::Result<Vec<u32>, JsError> {
        let tokenizer = self.inner.tokenizer.as_ref().ok_or_else(|| {
            JsError::new(&format!(
                "{}/tokenizer.json: the model directory has no tokenizer",
                self.inner.label
            ))
        })?;
        tokenizer.prompt_ids(&prompt, chat).map_err(js_error)
    }
}

async fn run(
    inner: &Inner,
    ids: &[u32],
    options: &WebGenerateOptions,
    on_token: &Function,
) -> std::result::Result<JsValue, JsError> {
    let defaults = GenerateOptions::default();
    let stop_ids = if options.ignore_eos {
        Vec::new()
    } else {
        generate::stop_ids(&inner.model, inner.tokenizer.as_ref())
    };
    let temperature = options.temperature.unwrap_or(defaults.sampling.temperature);
    let top_p = options.top_p.unwrap_or(defaults.sampling.top_p);
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(JsError::new(&format!(
            "temperature must be a number ≥ 0, got {temperature}"
        )));
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(JsError::new(&format!(
            "top_p must be in (0, 1], got {top_p}"
        )));
    }
    let gen = GenerateOptions {
        max_tokens: options.max_tokens.unwrap_or(defaults.max_tokens),
        sampling: SampleSettings {
            temperature,
            top_k: options.top_k.unwrap_or(defaults.sampling.top_k),
            top_p,
        },
        seed: options.seed.unwrap_or(defaults.seed),
        stop_ids,
    };
    let mut callback_error: Option<JsValue> = None;
    let mut on = |id: u32, piece: &str| match on_token.call2(
        &JsValue::NULL,
        &JsValue::from(id),
        &JsValue::from_str(piece),
    ) {
        Ok(v) => v.as_bool() != Some(false),
        Err(e) => {
            callback_error = Some(e);
            false
        }
    };
    let result: Result<Generation> =
        generate::generate(&inner.model, inner.tokenizer.as_ref(), ids, &gen, &mut on).await;
    if let Some(e) = callback_error {
        return Err(JsError::new(&format!(
            "the on_token callback threw: {}",
            js_text(&e)
        )));
    }
    to_js(&result.map_err(js_error)?)
}
