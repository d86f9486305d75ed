//! Random weights of a config's shapes, so a benchmark needs no model files (speed does not
//! depend on weight values). Deterministic: the same config, dtype and seed give the same bytes,
//! in memory for loading or on disk for the merge benchmark.

use std::io::Write;

use crate::checkpoint::writer::{SafetensorsWriter, TensorSpec};
use crate::checkpoint::{dtype, DType, MemorySource, ModelConfig, ModelFiles, SINGLE_FILE};
use crate::error::Result;
use crate::generate::rng::Rng;

/// Every tensor the model loader reads for `c`, in its naming, all in `dt`.
pub fn tensor_specs(c: &ModelConfig, dt: DType) -> Vec<TensorSpec> {
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (qd, kvd) = (c.q_dim(), c.kv_dim());
    let mut specs = vec![TensorSpec::new("model.embed_tokens.weight", dt, vec![v, h])];
    let mut add = |name: String, shape: Vec<usize>| specs.push(TensorSpec::new(name, dt, shape));
    for l in 0..c.num_layers {
        let p = format!("model.layers.{l}");
        add(format!("{p}.input_layernorm.weight"), vec![h]);
        add(format!("{p}.post_attention_layernorm.weight"), vec![h]);
        let a = format!("{p}.self_attn");
        for (name, rows, cols, bias) in [
            ("q_proj", qd, h, c.qkv_bias),
            ("k_proj", kvd, h, c.qkv_bias),
            ("v_proj", kvd, h, c.qkv_bias),
            ("o_proj", h, qd, c.o_bias),
        ] {
            add(format!("{a}.{name}.weight"), vec![rows, cols]);
            if bias {
                add(format!("{a}.{name}.bias"), vec![rows]);
            }
        }
        if c.is_moe() {
            let m = format!("{p}.block_sparse_moe");
            add(format!("{m}.gate.weight"), vec![c.num_experts, h]);
            for e in 0..c.num_experts {
                add(format!("{m}.experts.{e}.w1.weight"), vec![i, h]);
                add(format!("{m}.experts.{e}.w3.weight"), vec![i, h]);
                add(format!("{m}.experts.{e}.w2.weight"), vec![h, i]);
            }
        } else {
            let m = format!("{p}.mlp");
            for (name, rows, cols) in [("gate_proj", i, h), ("up_proj", i, h), ("down_proj", h, i)]
            {
                add(format!("{m}.{name}.weight"), vec![rows, cols]);
                if c.mlp_bias {
                    add(format!("{m}.{name}.bias"), vec![rows]);
                }
            }
        }
    }
    add("model.norm.weight".into(), vec![h]);
    if !c.tie_word_embeddings {
        add("lm_head.weight".into(), vec![v, h]);
    }
    specs
}

/// Streams a safetensors file of random weights for `c` into `out`: norms are 1, everything
/// else uniform in ±0.02 (keeps activations finite so greedy sampling returns real ids).
pub fn write_weights<W: Write>(c: &ModelConfig, dt: DType, seed: u64, out: W) -> Result<W> {
    let specs = tensor_specs(c, dt);
    let mut writer = SafetensorsWriter::new(out, SINGLE_FILE, specs.clone())?;
    let mut rng = Rng::new(seed);
    for spec in &specs {
        let n: usize = spec.shape.iter().product();
        let values: Vec<f32> = if spec.name.ends_with("norm.weight") {
            vec![1.0; n]
        } else {
            (0..n).map(|_| (rng.next_f32() - 0.5) * 0.04).collect()
        };
        writer.write_tensor(&spec.name, &dtype::from_f32(dt, &values))?;
    }
    writer.finish()
}

/// A model directory held in memory: `config.json` as given plus random weights.
pub fn model_files(config_json: &str, c: &ModelConfig, dt: DType, seed: u64) -> Result<ModelFiles> {
    let weights = write_weights(c, dt, seed, Vec::new())?;
    let mut files = ModelFiles::new(format!("synthetic-{}", dt.safetensors_name()));
    files.insert(
        "config.json",
        Box::new(MemorySource::new(
            "config.json",
            config_json.as_bytes().to_vec(),
        )),
    );
    files.insert(
        SINGLE_FILE,
        Box::new(MemorySource::new(SINGLE_FILE, weights)),
    );
    Ok(files)
}

/// Writes the same synthetic model into `dir` (for benchmarks that read directories).
#[cfg(not(target_arch = "wasm32"))]
pub fn write_dir(
    dir: &std::path::Path,
    config_json: &str,
    c: &ModelConfig,
    dt: DType,
    seed: u64,
) -> Result<()> {
    use crate::error::Error;
    let label = dir.display().to_string();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(&label, e))?;
    std::fs::write(dir.join("config.json"), config_json).map_err(|e| Error::io(&label, e))?;
    let path = dir.join(SINGLE_FILE);
    let file =
        std::fs::File::create(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
    write_weights(c, dt, seed, std::io::BufWriter::new(file))?;
    Ok(())
}
