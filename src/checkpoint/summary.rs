//! `inspect`: what a model directory holds, from config.json and the safetensors headers alone
//! (no weight is read) — architecture, parameter counts, dtypes, files, experts and their
//! languages, and a graft's provenance. Target-independent, so the page can show it too; the
//! text report is in `summary_text.rs`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::is_vocab_tensor;
use super::moe_layout::MoeLayout;
use super::moegraft_section::{MoegraftSection, RouterChoice};
use super::provenance::{read_provenance, Provenance};
use super::Checkpoint;
use crate::error::Result;

/// Everything `inspect` reports; serialized as is by `inspect --json`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub path: String,
    /// config.json's `model_type` (llama, mistral, qwen2, mixtral).
    pub architecture: String,
    /// The transformers class (`LlamaForCausalLM`, ...).
    pub class: String,
    pub layers: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub attention_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub sliding_window: Option<usize>,
    pub rope_theta: f32,
    pub tied_embeddings: bool,
    /// config.json's `torch_dtype` / `dtype`, if it names one.
    pub config_dtype: Option<String>,
    pub parameters: ParameterCounts,
    /// Number of stored tensors.
    pub tensors: usize,
    /// Stored dtypes, most parameters first.
    pub dtypes: Vec<DTypeShare>,
    pub files: FileCounts,
    /// `None` for a dense model.
    pub moe: Option<MoeSummary>,
    /// `moegraft.json` of a graft's output, if present.
    pub provenance: Option<Provenance>,
}

/// Parameter counts, from the tensors actually stored (a tied lm_head is not stored, so not
/// counted twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParameterCounts {
    pub total: u64,
    /// embed_tokens, plus lm_head when it is stored (untied).
    pub embedding: u64,
    /// Used for one token: all but the experts a token does not pick (MoE: every non-expert
    /// tensor plus experts_per_token experts per layer; dense: the total). Includes the
    /// embeddings, as model cards quote it (Mixtral 8x7B: 12.9B active).
    pub active: u64,
    pub active_non_embedding: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DTypeShare {
    /// The safetensors name (F32, F16, BF16, I64, ...).
    pub dtype: String,
    pub tensors: usize,
    pub parameters: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FileCounts {
    /// Every file of the directory.
    pub count: usize,
    pub bytes: u64,
    /// The safetensors files holding tensors.
    pub weight_files: usize,
    pub weight_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoeSummary {
    pub experts: usize,
    pub experts_per_token: usize,
    /// Parameters of every expert FFN of every layer.
    pub expert_parameters: u64,
    /// How the router weights were made: "learned" (trained; no moegraft section), or what
    /// `upcycle` recorded ("centroid", "language-prior").
    pub router: String,
    /// What moegraft routes by unless told otherwise: "learned" or "language-prior".
    pub routing: String,
    pub prior_strength: Option<f32>,
    /// Languages of each expert (empty when config.json does not record them).
    pub expert_languages: Vec<Vec<String>>,
    /// The directory each expert came from, as `upcycle` recorded (expert 0: the base).
    pub expert_sources: Vec<String>,
}

/// Summarises an opened checkpoint; reads only config.json, headers and `moegraft.json`.
pub async fn summarize(cp: &Checkpoint) -> Result<ModelSummary> {
    let c = &cp.config;
    let parameters = count_parameters(cp);
    let config_dtype = ["torch_dtype", "dtype"]
        .iter()
        .find_map(|k| c.raw.get(*k).and_then(|v| v.as_str()))
        .map(str::to_string);
    Ok(ModelSummary {
        path: cp.files.label().to_string(),
        architecture: c.architecture.model_type().into(),
        class: c.architecture.class_name().into(),
        layers: c.num_layers,
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        attention_heads: c.num_heads,
        kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
        vocab_size: c.vocab_size,
        context_length: c.max_position_embeddings,
        sliding_window: c.sliding_window,
        rope_theta: c.rope_theta,
        tied_embeddings: c.tie_word_embeddings,
        config_dtype,
        parameters,
        tensors: cp.tensor_names().count(),
        dtypes: dtype_shares(cp),
        files: file_counts(cp),
        moe: moe_summary(cp)?,
        provenance: read_provenance(&cp.files).await?,
    })
}

fn moe_summary(cp: &Checkpoint) -> Result<Option<MoeSummary>> {
    let c = &cp.config;
    if !c.is_moe() {
        return Ok(None);
    }
    let config_file = cp.files.display_name("config.json");
    let section = MoegraftSection::from_config(c, &config_file)?.unwrap_or_default();
    let routing = match section.default_choice() {
        RouterChoice::LanguagePrior => "language-prior",
        _ => "learned",
    };
    Ok(Some(MoeSummary {
        experts: c.num_experts,
        experts_per_token: c.experts_per_token,
        expert_parameters: expert_parameters(cp).values().flatten().sum(),
        router: section.router.unwrap_or_else(|| "learned".into()),
        routing: routing.into(),
        prior_strength: section.prior_strength,
        expert_languages: section.expert_languages,
        expert_sources: section.experts,
    }))
}

fn numel(cp: &Checkpoint, name: &str) -> u64 {
    cp.info(name).map(|(_, i)| i.numel() as u64).unwrap_or(0)
}

fn count_parameters(cp: &Checkpoint) -> ParameterCounts {
    let total = cp.tensor_names().map(|n| numel(cp, n)).sum();
    let embedding = cp
        .tensor_names()
        .filter(|n| is_vocab_tensor(n))
        .map(|n| numel(cp, n))
        .sum();
    // Per layer, the k largest experts (Mixtral's are all alike, so k × one expert).
    let k = cp.config.experts_per_token;
    let (mut all_experts, mut chosen) = (0u64, 0u64);
    for mut sizes in expert_parameters(cp).into_values() {
        all_experts += sizes.iter().sum::<u64>();
        sizes.sort_unstable_by_key(|&s| std::cmp::Reverse(s));
        chosen += sizes.iter().take(k).sum::<u64>();
    }
    let active = total - all_experts + chosen;
    ParameterCounts {
        total,
        embedding,
        active,
        active_non_embedding: active - embedding,
    }
}

/// Layer → parameters of each expert of that layer.
fn expert_parameters(cp: &Checkpoint) -> BTreeMap<usize, Vec<u64>> {
    let mut layers: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for name in cp.tensor_names() {
        if let Some((layer, expert)) = expert_of(name) {
            let sizes = layers.entry(layer).or_default();
            if sizes.len() <= expert {
                sizes.resize(expert + 1, 0);
            }
            sizes[expert] += numel(cp, name);
        }
    }
    layers
}

/// A routed expert's tensor (`model.layers.L.block_sparse_moe.experts.E.w1.weight`,
/// `model.layers.L.mlp.experts.E.gate_proj.weight`, …) → (L, E).
pub fn expert_of(name: &str) -> Option<(usize, usize)> {
    [MoeLayout::Mixtral, MoeLayout::Qwen]
        .iter()
        .find_map(|layout| layout.parse_expert(name))
        .map(|(layer, expert, _)| (layer, expert))
}

fn dtype_shares(cp: &Checkpoint) -> Vec<DTypeShare> {
    let mut by_name: BTreeMap<String, DTypeShare> = BTreeMap::new();
    for (_, info) in cp.tensor_names().filter_map(|n| cp.info(n).ok()) {
        let share = by_name
            .entry(info.dtype_name.clone())
            .or_insert_with(|| DTypeShare {
                dtype: info.dtype_name.clone(),
                tensors: 0,
                parameters: 0,
                bytes: 0,
            });
        share.tensors += 1;
        share.parameters += info.numel() as u64;
        share.bytes += info.len;
    }
    let mut shares: Vec<DTypeShare> = by_name.into_values().collect();
    shares.sort_by_key(|s| std::cmp::Reverse(s.parameters));
    shares
}

fn file_counts(cp: &Checkpoint) -> FileCounts {
    let size = |name: &str| cp.files.get(name).map(|s| s.size()).unwrap_or(0);
    let weights: std::collections::BTreeSet<&str> = cp
        .tensor_names()
        .filter_map(|n| cp.info(n).ok())
        .map(|(file, _)| file)
        .collect();
    FileCounts {
        count: cp.files.names().count(),
        bytes: cp.files.names().map(size).sum(),
        weight_files: weights.len(),
        weight_bytes: weights.iter().map(|f| size(f)).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expert_names_parse() {
        let n = "model.layers.12.block_sparse_moe.experts.3.w1.weight";
        assert_eq!(expert_of(n), Some((12, 3)));
        assert_eq!(
            expert_of("model.layers.1.block_sparse_moe.gate.weight"),
            None
        );
        assert_eq!(expert_of("model.layers.1.mlp.up_proj.weight"), None);
        let q = "model.layers.2.mlp.experts.7.down_proj.weight";
        assert_eq!(expert_of(q), Some((2, 7)));
        assert_eq!(
            expert_of("model.layers.2.mlp.shared_expert.up_proj.weight"),
            None
        );
    }
}
