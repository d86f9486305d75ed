//! `delta-stats`: how large the post-training delta Δ = θ_instruct − θ_base is, per tensor, per
//! tensor family and per layer — ‖Δ‖_F, ‖θ_base‖_F, their ratio, max |Δ| and the cosine of
//! θ_base and θ_instruct. Reads one slice of one tensor at a time and sums in f64, so no model
//! is ever held; target-independent (works from `Checkpoint`s, so the page can run it too).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::plan::{check_twins, Mismatches};
use crate::checkpoint::is_vocab_tensor;
use crate::checkpoint::Checkpoint;
use crate::error::Result;

/// Elements read per slice: 16 MiB of f32 per side, whatever the tensor's size.
pub const SLICE_ELEMENTS: usize = 1 << 22;

/// Running f64 sums over the compared elements of one or more tensors.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeltaSums {
    pub elements: u64,
    pub delta_sq: f64,
    pub base_sq: f64,
    pub instruct_sq: f64,
    /// Σ θ_base·θ_instruct, for the cosine.
    pub dot: f64,
    pub max_abs_delta: f64,
}

impl DeltaSums {
    pub fn add_slice(&mut self, base: &[f32], instruct: &[f32]) {
        for (&b, &i) in base.iter().zip(instruct) {
            let (b, i) = (b as f64, i as f64);
            let d = i - b;
            self.delta_sq += d * d;
            self.base_sq += b * b;
            self.instruct_sq += i * i;
            self.dot += b * i;
            // `max` would skip a NaN; a NaN weight should show.
            if d.abs() > self.max_abs_delta || d.is_nan() {
                self.max_abs_delta = d.abs();
            }
        }
        self.elements += base.len().min(instruct.len()) as u64;
    }

    pub fn merge(&mut self, o: &DeltaSums) {
        self.elements += o.elements;
        self.delta_sq += o.delta_sq;
        self.base_sq += o.base_sq;
        self.instruct_sq += o.instruct_sq;
        self.dot += o.dot;
        if o.max_abs_delta > self.max_abs_delta || o.max_abs_delta.is_nan() {
            self.max_abs_delta = o.max_abs_delta;
        }
    }

    pub fn norms(&self) -> DeltaNorms {
        let (delta, base, instruct) = (
            self.delta_sq.sqrt(),
            self.base_sq.sqrt(),
            self.instruct_sq.sqrt(),
        );
        DeltaNorms {
            elements: self.elements,
            delta_norm: delta,
            base_norm: base,
            instruct_norm: instruct,
            relative_norm: (base > 0.0).then(|| delta / base),
            max_abs_delta: self.max_abs_delta,
            cosine: (base > 0.0 && instruct > 0.0).then(|| self.dot / (base * instruct)),
        }
    }
}

/// The reported numbers (the JSON fields of every `delta-stats --json` entry).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DeltaNorms {
    pub elements: u64,
    /// ‖Δ‖_F.
    pub delta_norm: f64,
    /// ‖θ_base‖_F.
    pub base_norm: f64,
    /// ‖θ_instruct‖_F.
    pub instruct_norm: f64,
    /// ‖Δ‖_F / ‖θ_base‖_F; `None` when the base tensor is all zeros.
    pub relative_norm: Option<f64>,
    pub max_abs_delta: f64,
    /// cos(θ_base, θ_instruct); `None` when either is all zeros.
    pub cosine: Option<f64>,
}

/// One compared tensor.
#[derive(Debug, Clone)]
pub struct TensorDelta {
    pub name: String,
    pub family: String,
    pub layer: Option<usize>,
    /// The base's shape.
    pub shape: Vec<usize>,
    pub sums: DeltaSums,
}

/// Base and instruct vocabularies differ: embed_tokens / lm_head are compared on the rows
/// both have (token ids below `compared_rows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VocabOverlap {
    pub base_rows: usize,
    pub instruct_rows: usize,
    pub compared_rows: usize,
}

#[derive(Debug, Clone)]
pub struct DeltaStats {
    pub base: String,
    pub instruct: String,
    pub architecture: String,
    pub layers: usize,
    pub vocab: Option<VocabOverlap>,
    /// In the base's tensor-name order.
    pub tensors: Vec<TensorDelta>,
}

/// Checks that instruct is the base's twin (every mismatch listed in one error), then
/// measures Δ tensor by tensor.
pub async fn delta_stats(base: &Checkpoint, instruct: &Checkpoint) -> Result<DeltaStats> {
    delta_stats_sliced(base, instruct, SLICE_ELEMENTS).await
}

/// `delta_stats` reading at most `slice_elements` elements of a tensor at a time.
pub async fn delta_stats_sliced(
    base: &Checkpoint,
    instruct: &Checkpoint,
    slice_elements: usize,
) -> Result<DeltaStats> {
    let slice_elements = slice_elements.max(1);
    let mut report = Mismatches::default();
    check_twins(base, instruct, &mut report);
    let mut vocab = None;
    let mut jobs = Vec::new();
    for name in base.tensor_names() {
        let (b, i) = (report.info(base, name), report.info(instruct, name));
        let (Some(b), Some(i)) = (b, i) else {
            continue;
        };
        let rows_differ = is_vocab_tensor(name)
            && b.shape.len() == 2
            && i.shape.len() == 2
            && b.shape[1] == i.shape[1];
        if b.shape == i.shape {
            jobs.push((name, b.shape.iter().product::<usize>(), b.shape));
        } else if rows_differ {
            let overlap = VocabOverlap {
                base_rows: b.shape[0],
                instruct_rows: i.shape[0],
                compared_rows: b.shape[0].min(i.shape[0]),
            };
            vocab = Some(overlap);
            jobs.push((name, overlap.compared_rows * b.shape[1], b.shape));
        } else {
            report.push(format!(
                "{}: tensor '{name}' has shape {:?} but {} has {:?}",
                i.file, i.shape, b.file, b.shape
            ));
        }
    }
    for name in instruct.tensor_names().filter(|n| !base.has(n)) {
        report.push(format!(
            "{}: tensor '{name}' is not in {}",
            instruct.files.label(),
            base.files.label()
        ));
    }
    report.fail_if_any()?;

    let mut tensors = Vec::with_capacity(jobs.len());
    for (name, elements, shape) in jobs {
        let mut sums = DeltaSums::default();
        let mut start = 0;
        while start < elements {
            let len = slice_elements.min(elements - start);
            let b = base.read_f32_range(name, start, len).await?;
            let i = instruct.read_f32_range(name, start, len).await?;
            sums.add_slice(&b, &i);
            start += len;
        }
        let (layer, family) = family_of(name);
        tensors.push(TensorDelta {
            name: name.to_string(),
            family,
            layer,
            shape,
            sums,
        });
    }
    Ok(DeltaStats {
        base: base.files.label().to_string(),
        instruct: instruct.files.label().to_string(),
        architecture: base.config.architecture.model_type().to_string(),
        layers: base.config.num_layers,
        vocab,
        tensors,
    })
}

/// Families in reading order: embeddings, attention, norms, FFN (dense or MoE), output.
const FAMILY_ORDER: [&str; 22] = [
    "embed_tokens",
    "input_layernorm",
    "q_proj",
    "q_proj.bias",
    "k_proj",
    "k_proj.bias",
    "v_proj",
    "v_proj.bias",
    "o_proj",
    "o_proj.bias",
    "post_attention_layernorm",
    "gate_proj",
    "gate_proj.bias",
    "up_proj",
    "up_proj.bias",
    "down_proj",
    "down_proj.bias",
    "router",
    "experts.w1",
    "experts.w3",
    "experts.w2",
    "norm",
];

/// Sort key of a family: its place in `FAMILY_ORDER`, lm_head and unknown families last.
pub fn family_rank(family: &str) -> (usize, &str) {
    let rank = FAMILY_ORDER.iter().position(|f| *f == family);
    (rank.unwrap_or(FAMILY_ORDER.len()), family)
}

/// `model.layers.3.self_attn.q_proj.weight` → (Some(3), "q_proj"); biases keep `.bias`;
/// experts of an MoE layer share one family (`experts.w1`); the router is `router`.
pub fn family_of(name: &str) -> (Option<usize>, String) {
    let short = |rest: &str| {
        let rest = rest.strip_suffix(".weight").unwrap_or(rest);
        let rest = rest.strip_prefix("model.").unwrap_or(rest);
        // Qwen MoEs keep their router and experts under `mlp.`.
        if rest == "mlp.gate" {
            return "router".to_string();
        }
        if let Some(r) = rest.strip_prefix("mlp.experts.") {
            if let Some((_, w)) = r.split_once('.') {
                return format!("experts.{w}");
            }
        }
        for prefix in ["self_attn.", "mlp."] {
            if let Some(r) = rest.strip_prefix(prefix) {
                return r.to_string();
            }
        }
        if rest == "block_sparse_moe.gate" {
            return "router".to_string();
        }
        if let Some(r) = rest.strip_prefix("block_sparse_moe.experts.") {
            if let Some((_, w)) = r.split_once('.') {
                return format!("experts.{w}");
            }
        }
        rest.to_string()
    };
    if let Some((layer, rest)) = name
        .strip_prefix("model.layers.")
        .and_then(|r| r.split_once('.'))
    {
        if let Ok(layer) = layer.parse() {
            return (Some(layer), short(rest));
        }
    }
    (None, short(name))
}

impl DeltaStats {
    /// Sums over every compared tensor.
    pub fn total(&self) -> DeltaSums {
        self.sum(|_| true)
    }

    /// Families in display order, each summed over all layers.
    pub fn by_family(&self) -> Vec<(String, DeltaSums)> {
        let mut families: Vec<&str> = self.tensors.iter().map(|t| t.family.as_str()).collect();
        families.sort_by_key(|f| family_rank(f));
        families.dedup();
        families
            .into_iter()
            .map(|f| (f.to_string(), self.sum(|t| t.family == f)))
            .collect()
    }

    /// Layer → family → sums, for the layer × family table.
    pub fn by_layer(&self) -> BTreeMap<usize, BTreeMap<String, DeltaSums>> {
        let mut out: BTreeMap<usize, BTreeMap<String, DeltaSums>> = BTreeMap::new();
        for t in &self.tensors {
            if let Some(layer) = t.layer {
                let entry = out.entry(layer).or_default();
                entry.entry(t.family.clone()).or_default().merge(&t.sums);
            }
        }
        out
    }

    fn sum(&self, keep: impl Fn(&TensorDelta) -> bool) -> DeltaSums {
        let mut s = DeltaSums::default();
        self.tensors
            .iter()
            .filter(|t| keep(t))
            .for_each(|t| s.merge(&t.sums));
        s
    }

    /// The `delta-stats --json` object (fields documented in README.md).
    pub fn to_json(&self) -> Value {
        let norms = |s: &DeltaSums| serde_json::to_value(s.norms()).unwrap_or(Value::Null);
        let by_family: serde_json::Map<String, Value> = self
            .by_family()
            .iter()
            .map(|(f, s)| (f.clone(), norms(s)))
            .collect();
        let by_layer: Vec<Value> = self
            .by_layer()
            .iter()
            .map(|(layer, families)| {
                let mut total = DeltaSums::default();
                families.values().for_each(|s| total.merge(s));
                let families: serde_json::Map<String, Value> = families
                    .iter()
                    .map(|(f, s)| (f.clone(), norms(s)))
                    .collect();
                json!({ "layer": layer, "total": norms(&total), "families": families })
            })
            .collect();
        let tensors: Vec<Value> = self
            .tensors
            .iter()
            .map(|t| {
                let mut v = norms(&t.sums);
                if let Value::Object(map) = &mut v {
                    map.insert("name".into(), json!(t.name));
                    map.insert("family".into(), json!(t.family));
                    map.insert("layer".into(), json!(t.layer));
                    map.insert("shape".into(), json!(t.shape));
                }
                v
            })
            .collect();
        json!({
            "base": self.base,
            "instruct": self.instruct,
            "architecture": self.architecture,
            "layers": self.layers,
            "vocab": self.vocab,
            "total": norms(&self.total()),
            "by_family": by_family,
            "by_layer": by_layer,
            "tensors": tensors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_of_dense_and_moe_names() {
        let cases = [
            ("model.embed_tokens.weight", None, "embed_tokens"),
            ("lm_head.weight", None, "lm_head"),
            ("model.norm.weight", None, "norm"),
            ("model.layers.0.self_attn.q_proj.weight", Some(0), "q_proj"),
            (
                "model.layers.1.self_attn.k_proj.bias",
                Some(1),
                "k_proj.bias",
            ),
            ("model.layers.2.mlp.down_proj.weight", Some(2), "down_proj"),
            (
                "model.layers.3.input_layernorm.weight",
                Some(3),
                "input_layernorm",
            ),
            (
                "model.layers.4.block_sparse_moe.gate.weight",
                Some(4),
                "router",
            ),
            (
                "model.layers.5.block_sparse_moe.experts.7.w2.weight",
                Some(5),
                "experts.w2",
            ),
            ("model.layers.6.mlp.gate.weight", Some(6), "router"),
            (
                "model.layers.6.mlp.experts.1.up_proj.weight",
                Some(6),
                "experts.up_proj",
            ),
            (
                "model.layers.6.mlp.shared_expert.up_proj.weight",
                Some(6),
                "shared_expert.up_proj",
            ),
        ];
        for (name, layer, family) in cases {
            assert_eq!(family_of(name), (layer, family.to_string()), "{name}");
        }
    }

    #[test]
    fn sums_merge_like_one_pass() {
        let (b, i) = ([1.0f32, -2.0, 3.0, 0.5], [1.5f32, -2.0, 2.0, 0.5]);
        let mut whole = DeltaSums::default();
        whole.add_slice(&b, &i);
        let (mut left, mut right) = (DeltaSums::default(), DeltaSums::default());
        left.add_slice(&b[..1], &i[..1]);
        right.add_slice(&b[1..], &i[1..]);
        left.merge(&right);
        assert_eq!(left, whole);
        let n = whole.norms();
        assert_eq!(n.elements, 4);
        assert!((n.delta_norm - 1.25f64.sqrt()).abs() < 1e-12);
        assert_eq!(n.max_abs_delta, 1.0);
    }
}
