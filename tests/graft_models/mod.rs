//! Tiny base/instruct/CPT triples for the graft tests, built from the committed fixtures
//! with the crate's own writer: instruct and CPT models are the base with deterministic
//! perturbations; an upcycled MoE is the base with four experts (expert 0 = the base FFN,
//! 1..3 perturbed copies) and a random router.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use moegraft::checkpoint::config::{ExpertProj, MoeLayout};
use moegraft::checkpoint::writer::{write_json, ModelWriter, TensorSpec};
use moegraft::checkpoint::{dtype, Architecture, Checkpoint, DType, ModelFiles};
use serde_json::Value;

pub const EXPERTS: usize = 4;

/// A model held in memory: config.json and f32 tensors in name order.
#[derive(Clone)]
pub struct Model {
    pub config: Value,
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl Model {
    pub fn read(dir: &Path) -> Model {
        let cp = pollster::block_on(async {
            Checkpoint::open(ModelFiles::from_dir(dir).expect("dir")).await
        })
        .expect("open");
        let mut tensors = Vec::new();
        for name in cp.tensor_names() {
            let t = pollster::block_on(cp.read(name)).expect("read");
            tensors.push((name.to_string(), t.shape.clone(), t.to_f32()));
        }
        Model {
            config: cp.config.raw.clone(),
            tensors,
        }
    }

    pub fn get(&self, name: &str) -> &[f32] {
        &self
            .tensors
            .iter()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .2
    }

    /// Adds `scale`·noise(seed) to every tensor.
    pub fn perturbed(&self, seed: u64, scale: f32) -> Model {
        let mut m = self.clone();
        for (k, (_, _, v)) in m.tensors.iter_mut().enumerate() {
            perturb(v, seed.wrapping_add(k as u64 * 7919), scale);
        }
        m
    }

    pub fn without(&self, name: &str) -> Model {
        let mut m = self.clone();
        m.tensors.retain(|t| t.0 != name);
        m
    }

    /// Writes the model in `dtype` with the tokenizer files of `files_from`.
    pub fn write(&self, dir: &Path, dtype: DType, files_from: &Path) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for name in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "generation_config.json",
        ] {
            std::fs::copy(files_from.join(name), dir.join(name)).expect("copy");
        }
        let mut config = self.config.clone();
        config["dtype"] = dtype.torch_name().into();
        write_json(dir, "config.json", &config).expect("config");
        let specs = self
            .tensors
            .iter()
            .map(|(n, s, _)| TensorSpec::new(n, dtype, s.clone()))
            .collect();
        let mut w = ModelWriter::new(dir, specs, u64::MAX).expect("writer");
        for (n, _, v) in &self.tensors {
            w.write_tensor(n, &dtype::from_f32(dtype, v))
                .expect("write");
        }
        w.finish().expect("finish");
    }
}

/// A deterministic value in [-1, 1) (splitmix64).
pub fn noise(seed: u64, i: usize) -> f32 {
    let mut z = seed
        .wrapping_add(0x9e37_79b9_7f4a_7c15)
        .wrapping_mul(i as u64 + 1);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

pub fn perturb(v: &mut [f32], seed: u64, scale: f32) {
    for (i, x) in v.iter_mut().enumerate() {
        *x += scale * noise(seed, i);
    }
}

pub fn tiny(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(name)
}

pub fn base() -> Model {
    Model::read(&tiny("tiny-llama"))
}

/// The MoE of `base`'s family (llama → Mixtral, qwen2 → qwen2_moe, qwen3 → qwen3_moe)
/// upcycled from it: attention, norms and embeddings equal the base's, expert 0 is the base
/// FFN, experts 1..3 are perturbed copies, routers random; qwen2_moe's shared expert is one
/// unit of zeros, as `moegraft upcycle` writes it.
pub fn upcycled(base: &Model, seed: u64) -> Model {
    upcycled_with(base, seed, false)
}

/// As `upcycled`, with `wide_shared`: qwen2_moe's shared expert as wide as the FFN (a
/// perturbed copy, so Δ's FFN reaches it) and its gate random.
pub fn upcycled_with(base: &Model, seed: u64, wide_shared: bool) -> Model {
    let mut config = base.config.clone();
    let dense = config["model_type"]
        .as_str()
        .expect("model_type")
        .to_string();
    let (arch, layout) = match dense.as_str() {
        "llama" | "mistral" => (Architecture::Mixtral, MoeLayout::Mixtral),
        "qwen2" => (Architecture::Qwen2Moe, MoeLayout::Qwen),
        "qwen3" => (Architecture::Qwen3Moe, MoeLayout::Qwen),
        other => panic!("no MoE layout for {other}"),
    };
    config["model_type"] = arch.model_type().into();
    config["architectures"] = serde_json::json!([arch.class_name()]);
    config["num_experts_per_tok"] = 2.into();
    if layout == MoeLayout::Mixtral {
        config["num_local_experts"] = EXPERTS.into();
    } else {
        config["num_experts"] = EXPERTS.into();
        config["moe_intermediate_size"] = config["intermediate_size"].clone();
        config["norm_topk_prob"] = true.into();
    }
    let hidden = config["hidden_size"].as_u64().expect("hidden") as usize;
    let mut tensors = Vec::new();
    for (name, shape, values) in &base.tensors {
        let Some((layer, w)) = name.split_once(".mlp.") else {
            tensors.push((name.clone(), shape.clone(), values.clone()));
            continue;
        };
        let l: usize = layer
            .strip_prefix("model.layers.")
            .and_then(|l| l.parse().ok())
            .expect("layer");
        let proj = ExpertProj::ALL
            .into_iter()
            .find(|p| w == format!("{}.weight", p.dense_name()))
            .unwrap_or_else(|| panic!("unexpected {w}"));
        for e in 0..EXPERTS {
            let mut v = values.clone();
            if e > 0 {
                perturb(&mut v, seed + (e * 131 + w.len()) as u64, 0.05);
            }
            tensors.push((layout.expert(l, e, proj), shape.clone(), v));
        }
        if arch == Architecture::Qwen2Moe {
            let (shape, v) = if wide_shared {
                let mut v = values.clone();
                perturb(&mut v, seed + 77 + w.len() as u64, 0.05);
                (shape.clone(), v)
            } else if proj == ExpertProj::Down {
                (vec![hidden, 1], vec![0.0; hidden])
            } else {
                (vec![1, hidden], vec![0.0; hidden])
            };
            tensors.push((layout.shared_expert(l, proj), shape, v));
            let gate = layout.shared_gate(l);
            if !tensors.iter().any(|t| t.0 == gate) {
                config["shared_expert_intermediate_size"] = if wide_shared {
                    config["intermediate_size"].clone()
                } else {
                    1.into()
                };
                let mut v = vec![0.0; hidden];
                if wide_shared {
                    perturb(&mut v, seed ^ 0x9a7e, 0.5);
                }
                tensors.push((gate, vec![1, hidden], v));
            }
        }
        let gate = layout.router(l);
        if !tensors.iter().any(|t| t.0 == gate) {
            let mut v = vec![0.0; EXPERTS * hidden];
            perturb(&mut v, seed ^ 0x5eed, 0.5);
            tensors.push((gate, vec![EXPERTS, hidden], v));
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Model { config, tensors }
}
