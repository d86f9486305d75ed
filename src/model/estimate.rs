//! What a model will hold on the GPU, known from its headers before any weight is read: so a
//! page can say what loading needs before it starts.

use serde::Serialize;

use super::open::largest_tensor_bytes;
use crate::checkpoint::Checkpoint;
use crate::gpu::tensor::row_words;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    /// Matrices as stored (f16/bf16 stay packed, two to a word, rows padded to words); norms and biases as f32.
    pub weight_bytes: u64,
    /// Keys and values (f32) of one session at `max_context` tokens.
    pub kv_cache_bytes: u64,
    /// The context the estimate is for: the one asked for, capped by the model's own.
    pub max_context: usize,
    pub largest_tensor_bytes: u64,
    pub total_bytes: u64,
}

pub fn estimate(ckpt: &Checkpoint, max_context: usize) -> MemoryEstimate {
    let c = &ckpt.config;
    let max_context = max_context.min(c.max_position_embeddings).max(1);
    let weight_bytes = ckpt
        .tensor_names()
        .filter_map(|n| ckpt.info(n).ok())
        .map(|(_, i)| match (i.shape.as_slice(), i.dtype) {
            ([n], _) => *n as u64 * 4,
            // Rows padded to whole words, as the GPU holds them.
            ([rows, cols], Some(dtype)) => (rows * row_words(dtype, *cols) * 4) as u64,
            _ => i.len,
        })
        .sum();
    let kv_cache_bytes = (2 * c.num_layers * max_context * c.kv_dim() * 4) as u64;
    MemoryEstimate {
        weight_bytes,
        kv_cache_bytes,
        max_context,
        largest_tensor_bytes: largest_tensor_bytes(ckpt),
        total_bytes: weight_bytes + kv_cache_bytes,
    }
}
