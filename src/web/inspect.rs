//! What a picked model is and what loading it will take, from config.json and the
//! safetensors headers alone: the page shows it before any weight is read.

use js_sys::Array;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use super::files::picked_files;
use super::{from_js, init, js_error, to_js};
use crate::checkpoint::summary::{summarize, ModelSummary};
use crate::checkpoint::Checkpoint;
use crate::model::estimate::{estimate_with, MemoryEstimate};
use crate::model::{LoadOptions, WeightChoice};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebInspectOptions {
    label: Option<String>,
    /// The context the KV-cache estimate is for (default: what loading allocates).
    max_context: Option<usize>,
    /// The weight format the estimate is for: `stored` (default) or `q8_0`.
    weights: Option<String>,
}

#[derive(Serialize)]
struct Inspection {
    summary: ModelSummary,
    memory: MemoryEstimate,
}

/// Resolves to `{summary, memory}`: `inspect`'s summary and the GPU bytes loading will take.
#[wasm_bindgen]
pub async fn inspect(files: Array, options: JsValue) -> std::result::Result<JsValue, JsError> {
    init();
    let options: WebInspectOptions = from_js(options, "inspect options")?;
    let weights = match &options.weights {
        Some(name) => WeightChoice::parse(name)
            .map_err(|e| JsError::new(&format!("inspect options: weights: {e}")))?,
        None => WeightChoice::AsStored,
    };
    let files = picked_files(&files, options.label, "model", None).map_err(js_error)?;
    let ckpt = Checkpoint::open(files).await.map_err(js_error)?;
    let summary = summarize(&ckpt).await.map_err(js_error)?;
    let context = options
        .max_context
        .unwrap_or(LoadOptions::default().max_context);
    to_js(&Inspection {
        summary,
        memory: estimate_with(&ckpt, context, weights),
    })
}
