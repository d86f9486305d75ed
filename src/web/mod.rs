//! The browser API (wasm32 only): model files from `File`/`Blob` objects, the WebGPU adapter,
//! loading and generating — exported through wasm-bindgen for the page's Web Worker.
//!
//! Every entry point returns the library's one-line error as a JS `Error`; none panics on bad
//! input (a panic would still be logged by `console_error_panic_hook`).

use std::sync::Once;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::error::Error;
use crate::gpu::{GpuContext, GpuOptions};

mod files;
mod graft;
mod import;
mod inspect;
mod model;
mod upcycle;

pub use files::BlobSource;
pub use model::WebModel;

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

/// The WebGPU adapter as the runtime sees it (opens and drops a device).
#[wasm_bindgen]
pub async fn adapter_info() -> std::result::Result<JsValue, JsError> {
    init();
    let ctx = GpuContext::new(GpuOptions::default())
        .await
        .map_err(js_error)?;
    to_js(&ctx.summary)
}
