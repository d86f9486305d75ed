//! Memory figures: the host's high-water mark (see `host`) and the GPU bytes a model holds.

use serde::Serialize;

use crate::gpu::GpuMatrix;
use crate::model::weights::{Ffn, ModelWeights};
use crate::model::Model;

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// VmHWM of /proc/self/status (Linux), bytes; includes the whole benchmark's host data.
    /// `None` in the browser, which does not report it.
    pub peak_host_rss_bytes: Option<u64>,
    /// In the browser: the wasm module's linear memory (it only grows, so its peak); `None`
    /// natively.
    pub wasm_memory_bytes: Option<u64>,
    /// Weight buffers on the GPU.
    pub gpu_weight_bytes: u64,
    /// KV cache of one session of the benchmark's longest context.
    pub gpu_kv_cache_bytes: u64,
}

fn matrices(w: &ModelWeights) -> Vec<&GpuMatrix> {
    let mut out = vec![&w.embed];
    for l in &w.layers {
        let a = &l.attention;
        out.extend([&a.qkv, &a.o]);
        match &l.ffn {
            Ffn::Dense(f) => out.extend([&f.gate_up, &f.down]),
            Ffn::Moe(m) => {
                out.extend([&m.router, &m.gate_up, &m.w2]);
                if let Some(e) = &m.shared {
                    out.extend([&e.ffn.gate_up, &e.ffn.down, &e.gate]);
                }
            }
        }
    }
    if !tied(w) {
        out.push(&w.lm_head);
    }
    out
}

/// lm_head shares the embedding's buffers (tied embeddings).
fn tied(w: &ModelWeights) -> bool {
    match (w.lm_head.chunks.first(), w.embed.chunks.first()) {
        (Some(a), Some(b)) => a.buffer == b.buffer,
        _ => false,
    }
}

/// Bytes of every weight buffer (matrices, plus norm vectors and biases as f32).
pub fn gpu_weight_bytes(m: &Model) -> u64 {
    let matrices: u64 = matrices(&m.weights).iter().map(|x| x.bytes()).sum();
    matrices + vector_bytes(m)
}

/// f32 vectors read per token: norms and biases.
fn vector_bytes(m: &Model) -> u64 {
    let c = &m.config;
    // Two norms a layer; gemma's sandwich adds two more.
    let norms = if c.sandwich_norms { 4 } else { 2 };
    let per_layer = norms * c.hidden_size
        + if c.qkv_bias {
            c.q_dim() + 2 * c.kv_dim()
        } else {
            0
        }
        + if c.o_bias { c.hidden_size } else { 0 }
        + if c.qk_norm { 2 * c.head_dim } else { 0 }
        + if c.mlp_bias && !c.is_moe() {
            2 * c.intermediate_size + c.hidden_size
        } else {
            0
        };
    ((c.num_layers * per_layer + c.hidden_size) * 4) as u64
}

/// Weight bytes one decode step reads: every layer matrix (for MoE the router, the
/// `experts_per_token` chosen experts and a shared expert), the vocabulary projection, one
/// embedding row.
pub fn decode_weight_bytes(m: &Model) -> u64 {
    let c = &m.config;
    let w = &m.weights;
    let mut bytes = vector_bytes(m) + (w.embed.row_words * 4) as u64 + w.lm_head.bytes();
    for l in &w.layers {
        let a = &l.attention;
        bytes += a.qkv.bytes() + a.o.bytes();
        bytes += match &l.ffn {
            Ffn::Dense(f) => f.gate_up.bytes() + f.down.bytes(),
            Ffn::Moe(e) => {
                let experts = (e.gate_up.bytes() + e.w2.bytes()) as f64;
                let share = c.experts_per_token as f64 / c.num_experts.max(1) as f64;
                let shared = e.shared.as_ref().map_or(0, |s| {
                    s.ffn.gate_up.bytes() + s.ffn.down.bytes() + s.gate.bytes()
                });
                e.router.bytes() + (experts * share) as u64 + shared
            }
        };
    }
    bytes
}

/// KV-cache bytes one decode step reads at `context` cached tokens (f32 keys and values).
pub fn kv_bytes(m: &Model, context: usize) -> u64 {
    let c = &m.config;
    let spans: usize = (0..c.num_layers)
        .map(|l| c.window(l).map_or(context, |w| context.min(w)))
        .sum();
    (2 * spans * c.kv_dim() * 4) as u64
}

/// Elements of all weights (parameters), counting tied embeddings once.
pub fn parameters(m: &Model) -> u64 {
    let matrices: u64 = matrices(&m.weights)
        .iter()
        .map(|x| (x.rows * x.cols) as u64)
        .sum();
    matrices + vector_bytes(m) / 4
}
