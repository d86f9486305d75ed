//! Upcycling in the browser: the CLI's `upcycle` from picked dense folders into `Blob`s — a
//! Mixtral-layout MoE whose expert 0 is the base's FFN and expert i the FFN of dense model i.

use js_sys::{Array, Function, Object, Reflect};
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::files::{picked_files, BlobOutput};
use super::{from_js, init, js_error};
use crate::gpu::GpuOptions;
use crate::graft::centroid;
use crate::graft::upcycle::{
    upcycle_to, UpcycleRouter, UpcycleSettings, UpcycleSources, DEFAULT_TOP_K,
};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebUpcycleOptions {
    /// `centroid` (default) or `language-prior`.
    router: Option<String>,
    top_k: Option<usize>,
    /// Norm of every centroid router row (default: the CLI's).
    temperature: Option<f32>,
    /// Average attention, norms and embeddings over base and experts (BTX) instead of the base's.
    average_non_ffn: bool,
}

#[derive(Debug, Deserialize)]
struct Sample {
    lang: String,
    text: String,
}

fn languages(value: &JsValue, what: &str) -> std::result::Result<Vec<String>, JsError> {
    serde_wasm_bindgen::from_value(value.clone())
        .map_err(|e| JsError::new(&format!("{what}: languages must be a list of codes: {e}")))
}

/// Upcycles `base` (a picked folder, with its languages) and `experts` (`[{files, languages,
/// label}]`) into an MoE; `samples` (`[{lang, text}]`) feed the centroid router. Resolves to
/// `{experts, layers, top_k, warnings, files: [{name, blob}]}`; nothing is made unless every
/// input checks out.
#[wasm_bindgen]
pub async fn upcycle(
    base: Array,
    base_languages: JsValue,
    experts: Array,
    samples: JsValue,
    options: JsValue,
    on_read: Option<Function>,
) -> std::result::Result<JsValue, JsError> {
    init();
    let options: WebUpcycleOptions = from_js(options, "upcycle options")?;
    let samples: Vec<Sample> = if samples.is_undefined() || samples.is_null() {
        Vec::new()
    } else {
        serde_wasm_bindgen::from_value(samples)
            .map_err(|e| JsError::new(&format!("samples must be [{{lang, text}}]: {e}")))?
    };
    let router = match options.router.as_deref() {
        None | Some("centroid") => UpcycleRouter::Centroid,
        Some("language-prior") => UpcycleRouter::LanguagePrior,
        Some(other) => {
            return Err(JsError::new(&format!(
                "unknown router '{other}' (centroid or language-prior)"
            )))
        }
    };
    let mut expert_files = Vec::new();
    for (i, item) in experts.iter().enumerate() {
        let what = format!("expert {}", i + 1);
        let get = |key: &str| Reflect::get(&item, &key.into()).unwrap_or(JsValue::UNDEFINED);
        let files: Array = get("files")
            .dyn_into()
            .map_err(|_| JsError::new(&format!("{what}: files must be a list of files")))?;
        let label = get("label").as_string();
        let picked = picked_files(&files, label, &what, on_read.as_ref()).map_err(js_error)?;
        expert_files.push((picked, languages(&get("languages"), &what)?));
    }
    let sources = UpcycleSources {
        base: picked_files(&base, None, "base", on_read.as_ref()).map_err(js_error)?,
        base_languages: languages(&base_languages, "base")?,
        experts: expert_files,
        samples: samples.into_iter().map(|s| (s.lang, s.text)).collect(),
    };
    let settings = UpcycleSettings {
        router,
        top_k: options.top_k.unwrap_or(DEFAULT_TOP_K),
        temperature: options.temperature.unwrap_or(centroid::DEFAULT_TEMPERATURE),
        average_non_ffn: options.average_non_ffn,
        gpu: GpuOptions::default(),
    };
    let mut out = BlobOutput::default();
    let summary = upcycle_to(sources, &settings, &mut out)
        .await
        .map_err(js_error)?;
    let result = Object::new();
    let set = |key: &str, value: JsValue| Reflect::set(&result, &key.into(), &value);
    let warnings: Array = summary.warnings.iter().map(JsValue::from).collect();
    set("experts", (summary.experts as f64).into())
        .and(set("layers", (summary.layers as f64).into()))
        .and(set("top_k", (summary.top_k as f64).into()))
        .and(set("warnings", warnings.into()))
        .and(set("files", out.into_js().into()))
        .map_err(|_| JsError::new("cannot build the upcycle result object"))?;
    Ok(result.into())
}
