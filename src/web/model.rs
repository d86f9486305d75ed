//! A loaded model on the page's WebGPU device: load, describe, generate.

use std::rc::Rc;

use js_sys::{Array, Function};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use super::files::picked_files;
use super::{from_js, init, js_error, js_text, to_js};
use crate::checkpoint::moegraft_section::{MoegraftSection, RouterChoice};
use crate::error::Result;
use crate::eval::perplexity::perplexity;
use crate::generate::{self, GenerateOptions, Generation, SampleSettings};
use crate::gpu::{AdapterSummary, GpuOptions};
use crate::model::open::open_files;
use crate::model::weights::main_format;
use crate::model::{LoadOptions, Model, WeightChoice};
use crate::tokenizer::{ChatMessage, Tokenizer};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebLoadOptions {
    /// Names the directory in messages; defaults to the first file's folder.
    label: Option<String>,
    max_context: Option<usize>,
    prefill_chunk: Option<usize>,
    /// Cap on one storage binding in bytes (to exercise the chunked-matrix path).
    max_binding: Option<u64>,
    /// MoE routing: `learned`, `language-prior` or `expert=N`; default: config.json's.
    router: Option<String>,
    /// `stored` (default: the checkpoint's dtype) or `q8_0` (the large matrices quantized:
    /// about half f16's GPU memory and bytes read per token).
    weights: Option<String>,
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
    /// Also return the experts each token went to (MoE models; the routing view).
    routes: bool,
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
    /// The layers that hold an MoE block (every layer of a Mixtral; Qwen MoEs may keep dense
    /// ones); their route lists are the only non-empty ones.
    moe_layers: Vec<usize>,
    /// How MoE layers route: `learned`, `language-prior` or `expert=N`.
    router: String,
    /// The languages each expert was trained for, where config.json records them.
    expert_languages: Vec<Vec<String>>,
    max_context: usize,
    /// The format most matrices are held in on the GPU (`f16`, `q8_0`, …).
    weight_format: String,
    /// Matrices that keep their dtype although Q8_0 was asked for, and why (`null`: none).
    weight_format_note: Option<String>,
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

#[wasm_bindgen]
impl WebModel {
    /// Loads a model from the files of a Hugging Face directory (`File` objects, or
    /// `{file, path}` objects where the path was taken before the files were posted to a
    /// worker). `on_progress(done_bytes, total_bytes)` follows the weight upload;
    /// `on_read(what, path, bytes, size)`, if given, each file's reads.
    pub async fn load(
        files: Array,
        options: JsValue,
        on_progress: &Function,
        on_read: Option<Function>,
    ) -> std::result::Result<WebModel, JsError> {
        init();
        let options: WebLoadOptions = from_js(options, "load options")?;
        let model_files = picked_files(&files, options.label.clone(), "model", on_read.as_ref())
            .map_err(js_error)?;
        let label = model_files.label().to_string();
        let mut load = LoadOptions::default();
        if let Some(n) = options.max_context {
            load.max_context = n;
        }
        if let Some(n) = options.prefill_chunk {
            load.prefill_chunk = n;
        }
        if let Some(router) = &options.router {
            load.router = Some(
                RouterChoice::parse(router)
                    .map_err(|e| JsError::new(&format!("{label}: router: {e}")))?,
            );
        }
        if let Some(weights) = &options.weights {
            load.weights = WeightChoice::parse(weights)
                .map_err(|e| JsError::new(&format!("{label}: weights: {e}")))?;
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
            moe_layers: (0..c.num_layers).filter(|l| c.is_moe_layer(*l)).collect(),
            router: inner.model.router_mode().to_string(),
            expert_languages: MoegraftSection::from_config(c, "config.json")
                .ok()
                .flatten()
                .map(|m| m.expert_languages)
                .unwrap_or_default(),
            max_context: inner.model.options.max_context,
            weight_format: main_format(&inner.model.weights).to_string(),
            weight_format_note: inner.model.weights.kept_note(),
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
        let ids = self
            .tokenizer()?
            .prompt_ids(&prompt, options.chat)
            .map_err(js_error)?;
        run(&inner, &ids, &options, on_token).await
    }

    /// Generates the assistant's next turn of a conversation (`[{role, content}]`: system,
    /// user and assistant turns) rendered with the chat template.
    pub async fn generate_chat(
        &self,
        messages: JsValue,
        options: JsValue,
        on_token: &Function,
    ) -> std::result::Result<JsValue, JsError> {
        init();
        let inner = self.inner.clone();
        let options: WebGenerateOptions = from_js(options, "generate options")?;
        let messages: Vec<ChatMessage> = serde_wasm_bindgen::from_value(messages)
            .map_err(|e| JsError::new(&format!("messages must be [{{role, content}}]: {e}")))?;
        if let Some(bad) = messages
            .iter()
            .find(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant"))
        {
            return Err(JsError::new(&format!(
                "unknown chat role '{}' (system, user or assistant)",
                bad.role
            )));
        }
        let ids = self.tokenizer()?.chat_ids(&messages).map_err(js_error)?;
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
        self.tokenizer()?
            .prompt_ids(&prompt, chat)
            .map_err(js_error)
    }

    /// Each token's own text (special tokens included), for showing tokens one by one.
    pub fn token_texts(&self, ids: Vec<u32>) -> std::result::Result<Vec<String>, JsError> {
        let tokenizer = self.tokenizer()?;
        ids.iter()
            .map(|&id| tokenizer.decode(&[id], false).map_err(js_error))
            .collect()
    }

    /// Perplexity of `text` in windows of `window` tokens (default 256), each a fresh
    /// context. Resolves to `{tokens, nll, perplexity}`.
    pub async fn perplexity(
        &self,
        text: String,
        window: Option<usize>,
    ) -> std::result::Result<JsValue, JsError> {
        init();
        let inner = self.inner.clone();
        let tokenizer = self.tokenizer()?;
        let window = window
            .unwrap_or(256)
            .min(inner.model.options.max_context)
            .max(2);
        let p = perplexity(&inner.model, tokenizer, &text, window)
            .await
            .map_err(js_error)?;
        to_js(&p)
    }
}

#[wasm_bindgen]
impl WebModel {
    /// Whether the model's GPU device was lost (it can only be loaded again).
    pub fn is_lost(&self) -> bool {
        self.inner.model.ctx.is_lost()
    }

    /// Destroys the model's GPU device, as a driver reset or the browser reclaiming the GPU
    /// would: for testing that the page survives a lost device.
    pub fn destroy_device(&self) {
        self.inner.model.ctx.device.destroy();
    }
}

impl WebModel {
    fn tokenizer(&self) -> std::result::Result<&Tokenizer, JsError> {
        self.inner.tokenizer.as_ref().ok_or_else(|| {
            JsError::new(&format!(
                "{}/tokenizer.json: the model directory has no tokenizer, so it takes token ids only",
                self.inner.label
            ))
        })
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
        record_routes: options.routes,
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
