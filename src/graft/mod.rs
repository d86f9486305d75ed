//! Grafting (DeltaMoE, Zhou et al. 2026): the post-training delta Δ = θ_instruct − θ_base
//! added to a continued-pretrained model — once to attention, norms and embeddings, and to
//! every expert of an upcycled MoE — plus upcycling dense checkpoints into language experts
//! and the routers that choose between them.

pub mod centroid;
pub mod delta;
pub mod export;
pub mod extend;
pub mod gpu;
pub mod manifest;
pub mod plan;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
pub mod sidecar;
pub mod stats;
pub mod stats_rows;
mod stats_text;
pub mod upcycle;
