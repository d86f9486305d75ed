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

mod bench;
mod files;
mod graft;
mod import;
mod inspect;
mod model;
mod teach;
mod upcycle;

pub use files::BlobSource;
pub use model::WebModel;

thread_local! {
    /// The worker's function that tells the page about a panic (see `set_panic_reporter`).
    static PANIC_REPORTER: std::cell::RefCell<Option<js_sys::Function>> =
        const { std::cell::RefCell::new(None) };
}

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            // The console gets the full report; the page gets the message, before the trap
            // that follows ends this wasm instance.
            console_error_panic_hook::hook(info);
            let payload = info.payload();
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            let message = match info.location() {
                Some(at) => format!("{what} (at {}:{})", at.file(), at.line()),
                None => what,
            };
            PANIC_REPORTER.with(|r| {
                if let Some(report) = r.borrow().as_ref() {
                    let _ = report.call1(&JsValue::NULL, &JsValue::from_str(&message));
                }
            });
        }));
    });
}

/// `report(message)` is called if the module ever panics (a bug: user input gives errors,
/// not panics), just before the instance traps, so the page can say what happened.
#[wasm_bindgen]
pub fn set_panic_reporter(report: js_sys::Function) {
    init();
    PANIC_REPORTER.with(|r| *r.borrow_mut() = Some(report));
}

/// Panics on purpose: for testing that the page survives a crashed worker.
#[wasm_bindgen]
pub fn crash_for_test(message: String) {
    init();
    panic!("{message}");
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
