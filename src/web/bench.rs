//! The benchmark page's entry: the measurements of `moegraft bench` (`bench::measure`, the same
//! code) over the page's files, each graft's output kept in memory as `Blob`s.

use js_sys::{Array, Function};
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::files::{picked_files, BlobOutput};
use super::{from_js, init, js_error, to_js};
use crate::bench::merge::GraftFiles;
use crate::bench::{measure, BenchInputs, BenchOptions, Progress};
use crate::error::{Error, Result};
use crate::gpu::KernelLayout;
use crate::model::WeightChoice;

/// The knobs of `moegraft bench`; absent ones take the CLI's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebBenchOptions {
    prompt_tokens: Option<usize>,
    contexts: Option<Vec<usize>>,
    decode_tokens: Option<usize>,
    warmup: Option<usize>,
    repeats: Option<usize>,
    copy_mib: Option<u64>,
    merge_repeats: Option<usize>,
    profile: Option<bool>,
    /// `auto`, `lanes` or `rows`.
    kernels: Option<String>,
    max_binding: Option<u64>,
    /// `stored` (default) or `q8_0`.
    weights: Option<String>,
}

impl WebBenchOptions {
    fn bench_options(self) -> Result<BenchOptions> {
        let d = BenchOptions::default();
        let layout = match &self.kernels {
            None => d.layout,
            Some(name) => name
                .parse::<KernelLayout>()
                .map_err(|e| Error::InvalidArgument(format!("kernels: {e}")))?,
        };
        let weights = match &self.weights {
            None => d.weights,
            Some(name) => WeightChoice::parse(name)
                .map_err(|e| Error::InvalidArgument(format!("weights: {e}")))?,
        };
        Ok(BenchOptions {
            prompt_tokens: self.prompt_tokens.unwrap_or(d.prompt_tokens),
            contexts: self.contexts.unwrap_or(d.contexts),
            decode_tokens: self.decode_tokens.unwrap_or(d.decode_tokens),
            warmup: self.warmup.unwrap_or(d.warmup),
            repeats: self.repeats.unwrap_or(d.repeats),
            copy_bytes: self
                .copy_mib
                .map_or(d.copy_bytes, |m| m.saturating_mul(1 << 20)),
            merge_repeats: self.merge_repeats.unwrap_or(d.merge_repeats),
            profile: self.profile.unwrap_or(d.profile),
            max_binding: self.max_binding,
            layout,
            no_subgroups: false,
            weights,
        })
    }
}

/// Benchmarks the model in `files` (as `WebModel.load` takes them; `label` names it). The merge
/// figure grafts `graft` — `{base, instruct, target}`, three such folders — or, when it is
/// `null`, the model onto itself (ParamΔ, as the CLI does). `on_progress(event)` hears
/// `{step}` as each measurement starts and `{figure, value}` as each part of the report is
/// ready. Resolves to the report, shaped as `moegraft bench --json` prints it.
#[wasm_bindgen]
pub async fn bench(
    files: Array,
    label: Option<String>,
    graft: JsValue,
    options: JsValue,
    on_progress: &Function,
) -> std::result::Result<JsValue, JsError> {
    init();
    let options = from_js::<WebBenchOptions>(options, "bench options")?
        .bench_options()
        .map_err(js_error)?;
    let model = picked_files(&files, label, "model", None).map_err(js_error)?;
    let source = model.label().to_string();
    let graft = graft_files(&files, &graft).map_err(js_error)?;
    let inputs = BenchInputs {
        model,
        source,
        graft: Ok(graft),
    };
    let mut progress = |p: Progress| {
        let event = js_sys::Object::new();
        let set = |key: &str, value: JsValue| {
            let _ = js_sys::Reflect::set(&event, &key.into(), &value);
        };
        match p {
            Progress::Step(step) => set("step", step.into()),
            Progress::Figure(name, value) => {
                set("figure", name.into());
                set("value", to_js(&value).unwrap_or(JsValue::NULL));
            }
        }
        let _ = on_progress.call1(&JsValue::NULL, &event);
    };
    let report = measure(
        inputs,
        &options,
        &mut |_| Ok(BlobOutput::default()),
        &mut progress,
    )
    .await
    .map_err(js_error)?;
    to_js(&report)
}

/// The graft's three folders from `{base, instruct, target}`, or the model's files thrice.
fn graft_files(model: &Array, graft: &JsValue) -> Result<GraftFiles> {
    let folder = |role: &str| -> Result<Array> {
        if graft.is_null() || graft.is_undefined() {
            return Ok(model.clone());
        }
        js_sys::Reflect::get(graft, &role.into())
            .ok()
            .and_then(|v| v.dyn_into::<Array>().ok())
            .ok_or_else(|| Error::InvalidArgument(format!("graft.{role} must be a list of files")))
    };
    Ok(GraftFiles {
        base: picked_files(&folder("base")?, None, "base", None)?,
        instruct: picked_files(&folder("instruct")?, None, "instruct", None)?,
        target: picked_files(&folder("target")?, None, "target", None)?,
    })
}
