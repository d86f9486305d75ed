//! moegraft: teach a language model new languages without alignment data, by grafting the
//! post-training delta (Δ = θ_instruct − θ_base) onto a language-expert MoE — on WebGPU,
//! natively and in the browser.

pub mod bench;
pub mod checkpoint;
pub mod clock;
pub mod error;
pub mod eval;
pub mod generate;
pub mod gpu;
pub mod graft;
pub mod model;
pub mod tokenizer;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
