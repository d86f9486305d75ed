//! `inspect`: what a model directory holds, from config.json and the safetensors headers alone
//! (no weight is read) — architecture, parameter counts, dtypes, files, experts and their
//! languages, and a graft's provenance. Target-independent, so the page can show it too.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::Checkpoint;
use crate::error::Result;
use crate::graft::delta::is_vocab_tensor;
use crate::graft::manifest::{read_provenance, Provenance};
use crate::graft::router::MoegraftSection;

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
    let config_file = cp.files.display_name("config.json");
    let parameters = count_parameters(cp);
    let moe = match c.is_moe() {
        false => None,
        true => {
            let section = MoegraftSection::from_config(c, &config_file)?.unwrap_or_default();
            Some(MoeSummary {
                experts: c.num_experts,
                experts_per_token: c.experts_per_token,
                expert_parameters: expert_parameters(cp).values().flatten().sum(),
                router: section.router.clone().unwrap_or_else(|| "learned".into()),
                routing: match section.default_choice() {
                    crate::graft::router::RouterChoice::LanguagePrior => "language-prior",
                    _ => "learned",
                }
                .into(),
                prior_strength: section.prior_strength,
                expert_languages: section.expert_languages,
                expert_sources: section.experts,
            })
        }
    };
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
        moe,
        provenance: read_provenance(&cp.files).await?,
    })
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

/// `model.layers.L.block_sparse_moe.experts.E.…` → (L, E).
pub fn expert_of(name: &str) -> Option<(usize, usize)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let rest = rest.strip_prefix("block_sparse_moe.experts.")?;
    let (expert, _) = rest.split_once('.')?;
    Some((layer.parse().ok()?, expert.parse().ok()?))
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

/// `1234567` → `1,234,567 (1.23M)`: exact for scripts that grep, short for people.
pub fn count_text(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    let short = match n {
        0..1_000 => return grouped,
        1_000..1_000_000 => format!("{:.2}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    };
    format!("{grouped} ({short})")
}

/// Bytes as `1,234,567 bytes (1.18 MiB)`.
pub fn bytes_text(n: u64) -> String {
    let units = [("GiB", 30), ("MiB", 20), ("KiB", 10)];
    match units.iter().find(|(_, shift)| n >= 1 << shift) {
        Some((unit, shift)) => format!(
            "{} bytes ({:.2} {unit})",
            count_text(n).split(' ').next().unwrap_or_default(),
            n as f64 / (1u64 << shift) as f64
        ),
        None => format!("{n} bytes"),
    }
}

const LABEL: usize = 24;

fn row(f: &mut fmt::Formatter<'_>, label: &str, value: impl fmt::Display) -> fmt::Result {
    writeln!(f, "{label:<LABEL$}{value}")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        row(f, "model", &self.path)?;
        let kind = if self.moe.is_some() { "MoE" } else { "dense" };
        let arch = format!("{} ({}), {kind}", self.architecture, self.class);
        row(f, "architecture", arch)?;
        row(f, "layers", self.layers)?;
        row(f, "hidden size", self.hidden_size)?;
        let heads = format!(
            "{} heads, {} kv heads, head dim {}",
            self.attention_heads, self.kv_heads, self.head_dim
        );
        row(f, "attention", heads)?;
        row(f, "intermediate size", self.intermediate_size)?;
        row(f, "vocab", self.vocab_size)?;
        let window = match self.sliding_window {
            Some(w) => format!(" (sliding window {w})"),
            None => String::new(),
        };
        row(
            f,
            "context length",
            format!("{}{window}", self.context_length),
        )?;
        row(f, "rope theta", self.rope_theta)?;
        row(f, "tied embeddings", yes_no(self.tied_embeddings))?;
        let p = &self.parameters;
        row(f, "parameters", count_text(p.total))?;
        row(f, "  embeddings", count_text(p.embedding))?;
        row(f, "  active per token", count_text(p.active))?;
        row(
            f,
            "  active w/o embeddings",
            count_text(p.active_non_embedding),
        )?;
        row(f, "tensors", self.tensors)?;
        let config_dtype = self.config_dtype.as_deref().unwrap_or("not set");
        row(f, "dtype (config.json)", config_dtype)?;
        for d in &self.dtypes {
            let line = format!(
                "{} tensors, {} parameters, {}",
                d.tensors,
                count_text(d.parameters),
                bytes_text(d.bytes)
            );
            row(f, &format!("  {}", d.dtype), line)?;
        }
        let files = &self.files;
        row(
            f,
            "files",
            format!("{}, {}", files.count, bytes_text(files.bytes)),
        )?;
        let weights = format!("{}, {}", files.weight_files, bytes_text(files.weight_bytes));
        row(f, "  weight files", weights)?;
        if let Some(moe) = &self.moe {
            write_moe(f, moe)?;
        }
        if let Some(p) = &self.provenance {
            write_provenance(f, p)?;
        }
        Ok(())
    }
}

fn write_moe(f: &mut fmt::Formatter<'_>, moe: &MoeSummary) -> fmt::Result {
    let experts = format!(
        "{} per layer, {} per token, {} parameters in experts",
        moe.experts,
        moe.experts_per_token,
        count_text(moe.expert_parameters)
    );
    row(f, "experts", experts)?;
    let strength = match moe.prior_strength {
        Some(s) if moe.routing == "language-prior" => format!(" (prior strength {s})"),
        _ => String::new(),
    };
    let router = format!("{}, default routing {}{strength}", moe.router, moe.routing);
    row(f, "router", router)?;
    if moe.expert_languages.is_empty() && moe.expert_sources.is_empty() {
        return Ok(());
    }
    for e in 0..moe.experts {
        let langs = moe
            .expert_languages
            .get(e)
            .map(|l| l.join(","))
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "-".into());
        let source = match moe.expert_sources.get(e) {
            Some(s) => format!("  from {s}"),
            None => String::new(),
        };
        row(f, &format!("  expert {e}"), format!("{langs}{source}"))?;
    }
    Ok(())
}

fn write_provenance(f: &mut fmt::Formatter<'_>, p: &Provenance) -> fmt::Result {
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let tool = format!("{} {}", or_dash(&p.tool), or_dash(&p.version));
    row(f, "provenance", format!("{} (moegraft.json)", tool.trim()))?;
    row(f, "  method", or_dash(&p.method))?;
    let alpha = p.alpha.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    row(f, "  alpha", alpha)?;
    if !p.expert_alpha.is_empty() {
        let list: Vec<String> = p.expert_alpha.iter().map(f32::to_string).collect();
        row(f, "  alpha per expert", list.join(", "))?;
    }
    row(f, "  router", or_dash(&p.router_mode))?;
    row(f, "  dtype", or_dash(&p.dtype))?;
    for (role, path) in &p.inputs {
        row(f, &format!("  {role}"), path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_exactly_and_shortly() {
        assert_eq!(count_text(999), "999");
        assert_eq!(count_text(1_234_567), "1,234,567 (1.23M)");
        assert_eq!(count_text(46_702_792_704), "46,702,792,704 (46.70B)");
        assert_eq!(bytes_text(1536), "1,536 bytes (1.50 KiB)");
    }

    #[test]
    fn expert_names_parse() {
        let n = "model.layers.12.block_sparse_moe.experts.3.w1.weight";
        assert_eq!(expert_of(n), Some((12, 3)));
        assert_eq!(
            expert_of("model.layers.1.block_sparse_moe.gate.weight"),
            None
        );
        assert_eq!(expert_of("model.layers.1.mlp.up_proj.weight"), None);
    }
}
