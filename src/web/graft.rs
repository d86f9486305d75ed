//! Grafting in the browser: the same planning, GPU merge and streaming as the CLI, from the
//! page's picked folders into `Blob`s.

use js_sys::{Array, Function};
use serde::Deserialize;
use wasm_bindgen::prelude::*;

use super::files::{picked_files, BlobOutput};
use super::{from_js, init, js_error};
use crate::checkpoint::writer::DEFAULT_MAX_SHARD_BYTES;
use crate::checkpoint::{Checkpoint, DType};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};
use crate::graft::export::{graft_checkpoints, GraftCheckpoints};
use crate::graft::plan::{plan, GraftOptions};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebGraftOptions {
    /// Scale of Δ (default 1).
    alpha: Option<f32>,
    /// Scale of Δ per expert (DeltaMoE).
    expert_alpha: Option<Vec<f32>>,
    /// `f32`, `f16` or `bf16`; default: the target's.
    dtype: Option<String>,
    /// Cut weight files above this many bytes.
    max_shard_bytes: Option<u64>,
    /// Cap on one storage binding in bytes (to exercise the split path).
    max_binding: Option<u64>,
}

impl WebGraftOptions {
    fn graft_options(&self) -> Result<GraftOptions> {
        let dtype = match &self.dtype {
            None => None,
            Some(name) => Some(DType::parse(name).ok_or_else(|| {
                Error::InvalidArgument(format!("unknown dtype '{name}' (f32, f16 or bf16)"))
            })?),
        };
        Ok(GraftOptions {
            alpha: self.alpha.unwrap_or(1.0),
            expert_alpha: self.expert_alpha.clone(),
            dtype,
        })
    }
}

/// Grafts Δ = instruct − base onto target (each a picked model folder, as `WebModel.load`
/// takes). `on_progress(done_bytes, total_bytes)` follows the output, `on_read(role, path,
/// bytes, size)` (if given) each input file's reads. Resolves to
/// `{method, tensors, grafted, bytes, files: [{name, blob}]}`; mismatched inputs reject before
/// any file is made.
#[wasm_bindgen]
pub async fn graft(
    base: Array,
    instruct: Array,
    target: Array,
    options: JsValue,
    on_progress: &Function,
    on_read: Option<Function>,
) -> std::result::Result<JsValue, JsError> {
    init();
    let options: WebGraftOptions = from_js(options, "graft options")?;
    let graft_options = options.graft_options().map_err(js_error)?;
    let open = |files: &Array, what: &str| {
        let files = picked_files(files, None, what, on_read.as_ref());
        async move { Checkpoint::open(files?).await }
    };
    let base = open(&base, "base").await.map_err(js_error)?;
    let instruct = open(&instruct, "instruct").await.map_err(js_error)?;
    let target = open(&target, "target").await.map_err(js_error)?;
    let plan = plan(&base, &instruct, &target, &graft_options).map_err(js_error)?;
    let ctx = GpuContext::new(GpuOptions {
        max_binding_override: options.max_binding,
        ..Default::default()
    })
    .await
    .map_err(js_error)?;
    let mut progress = |done: u64, total: u64| {
        let _ = on_progress.call2(
            &JsValue::NULL,
            &JsValue::from_f64(done as f64),
            &JsValue::from_f64(total as f64),
        );
    };
    let mut out = BlobOutput::default();
    let summary = graft_checkpoints(
        &ctx,
        &GraftCheckpoints {
            base: &base,
            instruct: &instruct,
            target: &target,
        },
        &plan,
        &mut out,
        options.max_shard_bytes.unwrap_or(DEFAULT_MAX_SHARD_BYTES),
        &mut progress,
    )
    .await
    .map_err(js_error)?;
    let result = js_sys::Object::new();
    let set = |key: &str, value: JsValue| js_sys::Reflect::set(&result, &key.into(), &value);
    let ok = set("method", summary.method.name().into())
        .and(set("tensors", (summary.tensors as f64).into()))
        .and(set("grafted", (summary.grafted as f64).into()))
        .and(set("bytes", (summary.bytes as f64).into()))
        .and(set("files", out.into_js().into()));
    ok.map_err(|_| JsError::new("cannot build the graft result object"))?;
    Ok(result.into())
}
