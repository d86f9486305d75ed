//! What a training run will hold on the GPU, from the model's config and the batch shape alone
//! (so the page can show it before a run starts): the trained tensors with their gradients
//! and AdamW moments, and the activations one step keeps. `state` allocates exactly these
//! buffers; a test holds the two to each other.

use serde::Serialize;

use super::kernels::NORM_PARTIALS;
use crate::checkpoint::ModelConfig;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrainMemory {
    /// Routers and new experts, each four times (values, gradient, two moments), f32.
    pub trained_bytes: u64,
    /// What the forward pass saves per layer plus the step's shared scratch.
    pub activation_bytes: u64,
    /// The largest single training buffer and its name: it must fit one storage binding.
    pub largest_buffer: (String, u64),
    pub total_bytes: u64,
}

/// For an MoE config (experts counted with the new ones), `frozen` experts that do not learn
/// and `batch` × `seq` tokens per step.
pub fn estimate(c: &ModelConfig, frozen: usize, batch: usize, seq: usize) -> TrainMemory {
    let n = batch * seq;
    let (h, i, e, l) = (
        c.hidden_size,
        c.expert_intermediate_size,
        c.num_experts,
        c.num_layers,
    );
    let qkv = n * (c.q_dim() + 2 * c.kv_dim());
    let new = e.saturating_sub(frozen);
    let trained_per_layer = [
        ("router", e * h),
        ("new experts' gate/up", new * 2 * i * h),
        ("new experts' down", new * h * i),
    ];
    let saved_per_layer = [
        ("residual in", n * h),
        ("residual mid", n * h),
        ("q|k|v", qkv),
        ("q|k|v before the q/k norm", if c.qk_norm { qkv } else { 0 }),
        ("attention out", n * c.q_dim()),
        ("log-sum-exp", n * c.num_heads),
        ("post-attention norm", n * h),
        ("router probabilities", n * e),
        ("gates", n * e),
        ("chosen experts", n),
        ("gate/up per expert", e * n * 2 * i),
        ("SwiGLU per expert", e * n * i),
        ("expert outputs", e * n * h),
    ];
    let scratch = [
        ("ids, targets, LPR weights, losses", 4 * n),
        ("x, xn, final norm input", 3 * n * h),
        ("logits", n * c.vocab_size),
        ("router logits", n * e),
        ("d residual, d norm", 2 * n * h),
        ("d attention out, dq", 2 * n * c.q_dim()),
        ("attention delta", n * c.num_heads),
        ("dk, dv", 2 * n * c.kv_dim()),
        (
            "dq, dk before the q/k norm",
            if c.qk_norm {
                n * (c.q_dim() + c.kv_dim())
            } else {
                2
            },
        ),
        ("d expert outputs", e * n * h),
        ("d gates, d router", 2 * n * e),
        ("d SwiGLU", n * i),
        ("d gate/up", n * 2 * i),
        ("load fractions", e),
        ("norm partials", (3 * l).max(1) * NORM_PARTIALS),
        ("norm", 2),
    ];
    let words = |parts: &[(&str, usize)]| parts.iter().map(|(_, w)| *w as u64).sum::<u64>();
    let trained_bytes = 4 * 4 * l as u64 * words(&trained_per_layer);
    let activation_bytes = 4 * (l as u64 * words(&saved_per_layer) + words(&scratch));
    // Single buffers: one per entry, except the per-expert ones and the ids group.
    let single = [
        ("router", e * h),
        ("new experts' gate/up", new * 2 * i * h),
        ("new experts' down", new * h * i),
        ("logits", n * c.vocab_size),
        ("expert outputs", e * n * h),
        ("q|k|v", qkv),
        ("gate/up of one expert", n * 2 * i),
    ];
    let (name, words) = single
        .iter()
        .max_by_key(|(_, w)| *w)
        .copied()
        .unwrap_or(("none", 0));
    TrainMemory {
        trained_bytes,
        activation_bytes,
        largest_buffer: (name.to_string(), 4 * words.max(1) as u64),
        total_bytes: trained_bytes + activation_bytes,
    }
}
