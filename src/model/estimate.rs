//! What a model will hold on the GPU, known from its headers before any weight is read: so a
//! page can say what loading needs before it starts.

use serde::Serialize;

use super::open::largest_tensor_bytes;
use super::WeightChoice;
use crate::checkpoint::Checkpoint;
use crate::gpu::tensor::row_words;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    /// Matrices as the GPU will hold them (f16/bf16 packed two to a word, rows padded to
    /// words; Q8_0 where chosen); norms and biases as f32.
    pub weight_bytes: u64,
    /// Keys and values (f32) of one session at `max_context` tokens.
    pub kv_cache_bytes: u64,
    /// The context the estimate is for: the one asked for, capped by the model's own.
    pub max_context: usize,
    pub largest_tensor_bytes: u64,
    pub total_bytes: u64,
}

/// The estimate for the weights as stored.
pub fn estimate(ckpt: &Checkpoint, max_context: usize) -> MemoryEstimate {
    estimate_with(ckpt, max_context, WeightChoice::AsStored)
}

/// The estimate for the weight format `choice`.
pub fn estimate_with(
    ckpt: &Checkpoint,
    max_context: usize,
    choice: WeightChoice,
) -> MemoryEstimate {
    let c = &ckpt.config;
    let max_context = max_context.min(c.max_position_embeddings).max(1);
    let weight_bytes = ckpt
        .tensor_names()
        .filter_map(|n| Some((n, ckpt.info(n).ok()?.1)))
        .map(|(name, i)| match (i.shape.as_slice(), i.dtype) {
            ([n], _) => *n as u64 * 4,
            // Rows padded to whole words, as the GPU holds them.
            ([rows, cols], Some(dtype)) => {
                let format = choice.format_for(name, dtype, *cols);
                (rows * row_words(format, *cols) * 4) as u64
            }
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
