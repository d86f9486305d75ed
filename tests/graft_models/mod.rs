//! Tiny base/instruct/CPT triples for the graft tests, built from the committed fixtures
//! with the crate's own writer: instruct and CPT models are the base with deterministic
//! perturbations; an upcycled MoE is the base with four experts (expert 0 = the base FFN,
//! 1..3 perturbed copies) and a random router.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use moegraft::checkpoint::writer::{write_json, ModelWriter, TensorSpec};
use moegraft::checkpoint::{dtype, Checkpoint, DType, ModelFiles};
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

/// A Mixtral-layout MoE upcycled from `base`: attention, norms and embeddings equal the
/// base's, expert 0 is the base FFN, experts 1..3 are perturbed copies, routers random.
pub fn upcycled(base: &Model, seed: u64) -> Model {
    let mut config = base.config.clone();
    config["model_type"] = "mixtral".into();
    config["architectures"] = serde_json::json!(["MixtralForCausalLM"]);
    config["num_local_experts"] = EXPERTS.into();
    config["num_experts_per_tok"] = 2.into();
    let hidden = config["hidden_size"].as_u64().expect("hidden") as usize;
    let mut tensors = Vec::new();
    for (name, shape, values) in &base.tensors {
        let Some((layer, w)) = name.split_once(".mlp.") else {
            tensors.push((name.clone(), shape.clone(), values.clone()));
            continue;
        };
        let moe = format!("{layer}.block_sparse_moe");
        let w = match w {
            "gate_proj.weight" => "w1",
            "up_proj.weight" => "w3",
            "down_proj.weight" => "w2",
            other => panic!("unexpected {other}"),
        };
        for e in 0..EXPERTS {
            let mut v = values.clone();
            if e > 0 {
                perturb(&mut v, seed + (e * 131 + w.len()) as u64, 0.05);
            }
            tensors.push((format!("{moe}.experts.{e}.{w}.weight"), shape.clone(), v));
        }
        let gate = format!("{moe}.gate.weight");
        if !tensors.iter().any(|t| t.0 == gate) {
            let mut v = vec![0.0; EXPERTS * hidden];
            perturb(&mut v, seed ^ 0x5eed, 0.5);
            tensors.push((gate, vec![EXPERTS, hidden], v));
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Model { config, tensors }
}
