//! GGUF → Hugging Face model files (config.json, generation_config.json, safetensors,
//! tokenizer.json, tokenizer_config.json), from any byte source into any output: a directory
//! natively, `Blob`s in the browser.
//!
//! Tensors are processed one at a time — read, dequantise, un-permute, convert, write, drop —
//! so importing never holds the whole model. Everything that can be refused (architecture,
//! tokenizer, tensor names and shapes) is checked before the first tensor is read, and a
//! native output directory only appears once it is complete (`write_dir_atomically`).

use std::fmt;
#[cfg(not(target_arch = "wasm32"))]
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::config::{Architecture, ExpertProj, MoeLayout};
use super::dequant::dequantize;
use super::dtype::{self, DType};
use super::gguf::{read_gguf, GgmlType, GgufFile, GgufTensorInfo};
use super::gguf_tokenizer::{build_tokenizer, TokenizerFiles};
use super::source::ByteSource;
use super::writer::{OutputFiles, ShardedWriter, TensorSpec};
use crate::error::{Error, Result};

/// What an import produced.
#[derive(Debug, Clone)]
pub struct ImportedModel {
    /// Hugging Face `model_type` written to config.json (llama, qwen2, mixtral).
    pub architecture: String,
    /// Tensors written (stacked expert tensors count once per expert).
    pub tensors: usize,
    pub layers: usize,
    pub dtype: DType,
    /// Bytes of tensor data written.
    pub tensor_bytes: u64,
    /// Files written, in the order written.
    pub files: Vec<String>,
}

/// A native import: the model and the directory it went to.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone)]
pub struct ImportSummary {
    pub output_dir: PathBuf,
    pub model: ImportedModel,
}

#[cfg(not(target_arch = "wasm32"))]
impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} into {}", self.model, self.output_dir.display())
    }
}

impl fmt::Display for ImportedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "imported {} tensors ({}, {} layers, {}, {:.1} MiB)",
            self.tensors,
            self.architecture,
            self.layers,
            self.dtype.torch_name(),
            self.tensor_bytes as f64 / (1024.0 * 1024.0),
        )
    }
}

/// Imports `gguf_path` into a new directory `out_dir`, converting weights to `dtype`.
#[cfg(not(target_arch = "wasm32"))]
pub fn import_gguf(gguf_path: &Path, out_dir: &Path, dtype: DType) -> Result<ImportSummary> {
    import_gguf_with(
        gguf_path,
        out_dir,
        dtype,
        super::writer::DEFAULT_MAX_SHARD_BYTES,
    )
}

/// As `import_gguf`, with the shard size cap explicit.
#[cfg(not(target_arch = "wasm32"))]
pub fn import_gguf_with(
    gguf_path: &Path,
    out_dir: &Path,
    dtype: DType,
    max_shard_bytes: u64,
) -> Result<ImportSummary> {
    use super::source::FileSource;
    use super::writer::{write_dir_atomically, DirOutput};
    let source = FileSource::open(gguf_path)?;
    let model = write_dir_atomically(out_dir, |dir| {
        pollster::block_on(import_gguf_to(
            &source,
            DirOutput::new(dir),
            dtype,
            max_shard_bytes,
        ))
    })?;
    Ok(ImportSummary {
        output_dir: out_dir.to_path_buf(),
        model,
    })
}

/// Imports the GGUF file `source` into `out`, converting weights to `dtype`. Nothing is
/// written before every check has passed.
pub async fn import_gguf_to<O: OutputFiles>(
    source: &dyn ByteSource,
    mut out: O,
    dtype: DType,
    max_shard_bytes: u64,
) -> Result<ImportedModel> {
    let gguf = read_gguf(source).await?;
    let hp = Hyper::from_gguf(&gguf)?;
    let tok = build_tokenizer(&gguf)?;
    let plan = plan_tensors(&gguf, &hp)?;
    let rope_scaling = rope_scaling(&gguf, source, &hp).await?;
    let config = config_json(&hp, &plan, &tok, rope_scaling, dtype);
    let generation = generation_json(&tok);

    let specs: Vec<TensorSpec> = plan
        .tensors
        .iter()
        .map(|t| TensorSpec::new(&t.hf_name, dtype, t.shape.clone()))
        .collect();
    let tensor_bytes = specs.iter().filter_map(TensorSpec::byte_len).sum();
    let mut files = Vec::new();
    for (name, value) in [
        ("config.json", &config),
        ("generation_config.json", &generation),
        ("tokenizer.json", &tok.tokenizer),
        ("tokenizer_config.json", &tok.config),
    ] {
        out.write_json(name, value)?;
        files.push(name.to_string());
    }
    let mut writer = ShardedWriter::to(&mut out, specs, max_shard_bytes)?;
    for t in &plan.tensors {
        let bytes = convert_tensor(&gguf, source, t, dtype).await?;
        writer.write_tensor(&t.hf_name, &bytes)?;
    }
    files.extend(writer.finish()?);
    Ok(ImportedModel {
        architecture: hp.arch.model_type().to_string(),
        tensors: plan.tensors.len(),
        layers: hp.n_layers,
        dtype,
        tensor_bytes,
        files,
    })
}

// ---------------------------------------------------------------------------------------------
// Hyperparameters

/// The model's sizes, from the `<arch>.*` metadata keys.
#[derive(Debug, Clone)]
struct Hyper {
    arch: Architecture,
    /// Metadata key prefix (`general.architecture`).
    prefix: String,
    n_layers: usize,
    hidden: usize,
    ffn: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    /// Whether the file states the head size (written to config.json only then).
    head_dim_stated: bool,
    rms_eps: f32,
    rope_theta: f32,
    context: Option<usize>,
    n_experts: usize,
    n_experts_used: usize,
    /// Qwen MoEs: an expert's FFN width and the shared expert's (0: none).
    expert_ffn: usize,
    shared_ffn: usize,
}

/// Sizes above this are refused as corrupt, as config.json's parser does.
const MAX_SIZE: u64 = 1 << 31;

impl Hyper {
    fn from_gguf(g: &GgufFile) -> Result<Self> {
        let file = g.file.as_str();
        let arch_name = g
            .get_str("general.architecture")?
            .ok_or_else(|| Error::config(file, "metadata 'general.architecture' is missing"))?;
        let unsupported = || Error::UnsupportedArchitecture {
            file: file.to_string(),
            arch: arch_name.to_string(),
        };
        let base = match arch_name {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "qwen3" => Architecture::Qwen3,
            "qwen2moe" => Architecture::Qwen2Moe,
            "qwen3moe" => Architecture::Qwen3Moe,
            _ => return Err(unsupported()),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let opt = |k: &str| -> Result<Option<usize>> {
            match g.get_u64(&key(k))? {
                None => Ok(None),
                Some(v) if v == 0 || v > MAX_SIZE => Err(Error::config(
                    file,
                    format!("metadata '{}' = {v} is out of range", key(k)),
                )),
                Some(v) => Ok(Some(v as usize)),
            }
        };
        let req = |k: &str| -> Result<usize> {
            opt(k)?.ok_or_else(|| Error::config(file, format!("metadata '{}' is missing", key(k))))
        };
        let n_head = req("attention.head_count")?;
        let hidden = req("embedding_length")?;
        let n_head_kv = opt("attention.head_count_kv")?.unwrap_or(n_head);
        // llama.cpp writes the head size as key_length, or (llama) as the rotary dimension.
        let stated = match opt("attention.key_length")? {
            Some(d) => Some(d),
            None if base == Architecture::Llama => opt("rope.dimension_count")?,
            None => None,
        };
        let head_dim = match stated {
            Some(d) => d,
            None if hidden.is_multiple_of(n_head) => hidden / n_head,
            None => {
                return Err(Error::config(
                    file,
                    format!("embedding_length {hidden} is not divisible by head_count {n_head}"),
                ))
            }
        };
        if !n_head.is_multiple_of(n_head_kv) || !head_dim.is_multiple_of(2) {
            return Err(Error::config(
                file,
                format!("head_count {n_head}, head_count_kv {n_head_kv}, head size {head_dim}: heads must divide evenly and the head size be even"),
            ));
        }
        let n_experts = g.get_u64(&key("expert_count"))?.unwrap_or(0) as usize;
        let qwen_moe = matches!(base, Architecture::Qwen2Moe | Architecture::Qwen3Moe);
        let (arch, n_experts_used) = if n_experts > 0 || qwen_moe {
            let arch = match base {
                Architecture::Llama => Architecture::Mixtral,
                a if qwen_moe => a,
                _ => return Err(unsupported()),
            };
            let n = req("expert_count")?;
            let used = req("expert_used_count")?;
            if used > n || n > 256 || used > 16 {
                return Err(Error::config(
                    file,
                    format!("expert_used_count {used} / expert_count {n} out of range"),
                ));
            }
            (arch, used)
        } else {
            (base, 0)
        };
        let ffn = req("feed_forward_length")?;
        // llama.cpp's Qwen MoEs: every layer routed, the experts' width apart from the dense
        // FFN's, qwen2moe's shared expert beside them.
        let (expert_ffn, shared_ffn) = match arch {
            Architecture::Qwen2Moe => (
                req("expert_feed_forward_length")?,
                req("expert_shared_feed_forward_length")?,
            ),
            Architecture::Qwen3Moe => (req("expert_feed_forward_length")?, 0),
            _ => (ffn, 0),
        };
        let float = |k: &str, default: f64| -> Result<f32> {
            Ok(g.get_f64(&key(k))?.unwrap_or(default) as f32)
        };
        Ok(Self {
            arch,
            prefix: arch_name.to_string(),
            n_layers: req("block_count")?,
            hidden,
            ffn,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_stated: stated.is_some(),
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5)?,
            rope_theta: float("rope.freq_base", 10000.0)?,
            context: opt("context_length")?,
            n_experts: if n_experts_used > 0 { n_experts } else { 0 },
            n_experts_used,
            expert_ffn,
            shared_ffn,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor plan

/// How a GGUF tensor becomes one Hugging Face tensor.
#[derive(Debug, Clone)]
struct PlannedTensor {
    hf_name: String,
    /// Row-major Hugging Face shape.
    shape: Vec<usize>,
    /// Index into `GgufFile::tensors`.
    source: usize,
    /// Byte range within the GGUF tensor (a whole tensor, or one expert of a stacked one).
    byte_start: u64,
    byte_len: u64,
    /// Undo llama.cpp's rotary row permutation with this many heads.
    unpermute_heads: Option<usize>,
}

#[derive(Debug)]
struct TensorPlan {
    tensors: Vec<PlannedTensor>,
    vocab_size: usize,
    tied: bool,
    attention_bias: bool,
}

/// What a GGUF tensor name maps to.
enum Target {
    One {
        hf: String,
        expected: Option<Vec<usize>>,
        unpermute_heads: Option<usize>,
    },
    /// One tensor of `shape` whatever the file's (the same elements): qwen2moe's shared-expert
    /// gate, [hidden] in older files and [1, hidden] in newer ones.
    Reshaped { hf: String, shape: Vec<usize> },
    /// A 3-D stack `[experts, rows, cols]` split into `<prefix>.<e>.<w>.weight`.
    Experts {
        prefix: String,
        w: &'static str,
        expected: Vec<usize>,
    },
    /// Consumed elsewhere (rope frequency factors become config.json's rope_scaling).
    Skip,
}

fn plan_tensors(g: &GgufFile, hp: &Hyper) -> Result<TensorPlan> {
    let file = g.file.as_str();
    let embed = g
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::MissingTensor {
            file: file.to_string(),
            tensor: "token_embd.weight".into(),
        })?;
    let embed_shape = hf_shape(file, embed)?;
    if embed_shape.len() != 2 || embed_shape[1] != hp.hidden {
        return Err(Error::Shape {
            file: file.to_string(),
            tensor: embed.name.clone(),
            expected: vec![embed_shape.first().copied().unwrap_or(0), hp.hidden],
            got: embed_shape,
        });
    }
    let vocab = embed_shape[0];
    let ctx = NameCtx { hp, vocab };
    let mut tensors = Vec::new();
    for (index, info) in g.tensors.iter().enumerate() {
        let shape = hf_shape(file, info)?;
        let check = |expected: &[usize], got: &[usize]| -> Result<()> {
            if expected != got {
                return Err(Error::Shape {
                    file: file.to_string(),
                    tensor: info.name.clone(),
                    expected: expected.to_vec(),
                    got: got.to_vec(),
                });
            }
            Ok(())
        };
        match ctx.target(&info.name).ok_or_else(|| {
            Error::tensor_format(
                file,
                &info.name,
                format!(
                    "has no Hugging Face equivalent for a {} model",
                    hp.arch.model_type()
                ),
            )
        })? {
            Target::Skip => {}
            Target::One {
                hf,
                expected,
                unpermute_heads,
            } => {
                if let Some(e) = expected {
                    check(&e, &shape)?;
                }
                tensors.push(PlannedTensor {
                    hf_name: hf,
                    shape,
                    source: index,
                    byte_start: 0,
                    byte_len: info.n_bytes,
                    unpermute_heads,
                });
            }
            Target::Reshaped { hf, shape: want } => {
                let numel = |s: &[usize]| s.iter().product::<usize>();
                if numel(&want) != numel(&shape) {
                    check(&want, &shape)?;
                }
                tensors.push(PlannedTensor {
                    hf_name: hf,
                    shape: want,
                    source: index,
                    byte_start: 0,
                    byte_len: info.n_bytes,
                    unpermute_heads: None,
                });
            }
            Target::Experts {
                prefix,
                w,
                expected,
            } => {
                check(&expected, &shape)?;
                let n = shape[0] as u64;
                // Experts are the outermost dimension: each one is a contiguous 1/n of the
                // bytes, whole blocks since blocks run along rows.
                let per_expert = info.n_bytes / n;
                for e in 0..shape[0] {
                    tensors.push(PlannedTensor {
                        hf_name: format!("{prefix}.{e}.{w}.weight"),
                        shape: shape[1..].to_vec(),
                        source: index,
                        byte_start: e as u64 * per_expert,
                        byte_len: per_expert,
                        unpermute_heads: None,
                    });
                }
            }
        }
    }
    check_complete(g, hp)?;
    let has = |n: &str| g.tensor(n).is_some();
    Ok(TensorPlan {
        tensors,
        vocab_size: vocab,
        tied: !has("output.weight"),
        attention_bias: has("blk.0.attn_q.bias"),
    })
}

/// Refuses a file missing a tensor the model needs, naming the first one, so an incomplete
/// GGUF fails before anything is written rather than when the model is loaded.
fn check_complete(g: &GgufFile, hp: &Hyper) -> Result<()> {
    let has = |n: &str| g.tensor(n).is_some();
    let missing = |n: String| Error::MissingTensor {
        file: g.file.clone(),
        tensor: n,
    };
    if !has("output_norm.weight") {
        return Err(missing("output_norm.weight".into()));
    }
    for l in 0..hp.n_layers {
        let t = |n: &str| format!("blk.{l}.{n}.weight");
        for part in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
        ] {
            if !has(&t(part)) {
                return Err(missing(t(part)));
            }
        }
        let mut needed: Vec<&str> = Vec::new();
        if matches!(hp.arch, Architecture::Qwen3 | Architecture::Qwen3Moe) {
            needed.extend(["attn_q_norm", "attn_k_norm"]);
        }
        if hp.shared_ffn > 0 {
            needed.extend([
                "ffn_gate_shexp",
                "ffn_up_shexp",
                "ffn_down_shexp",
                "ffn_gate_inp_shexp",
            ]);
        }
        if let Some(part) = needed.into_iter().find(|part| !has(&t(part))) {
            return Err(missing(t(part)));
        }
        if hp.arch == Architecture::Qwen2 {
            for part in ["attn_q", "attn_k", "attn_v"] {
                let bias = format!("blk.{l}.{part}.bias");
                if !has(&bias) {
                    return Err(missing(bias));
                }
            }
        }
        for ffn in ["ffn_gate", "ffn_up", "ffn_down"] {
            // Dense: one tensor; MoE: one stacked tensor or one per expert.
            let present = if hp.n_experts == 0 {
                has(&t(ffn))
            } else {
                has(&t(&format!("{ffn}_exps")))
                    || (0..hp.n_experts).all(|e| has(&t(&format!("{ffn}.{e}"))))
            };
            if !present {
                let name = if hp.n_experts == 0 {
                    t(ffn)
                } else {
                    t(&format!("{ffn}_exps"))
                };
                return Err(missing(name));
            }
        }
        if hp.n_experts > 0 && !has(&t("ffn_gate_inp")) {
            return Err(missing(t("ffn_gate_inp")));
        }
    }
    Ok(())
}

/// The row-major shape of a GGUF tensor (its dims reversed), as `usize`.
fn hf_shape(file: &str, info: &GgufTensorInfo) -> Result<Vec<usize>> {
    info.shape()
        .into_iter()
        .map(|d| {
            usize::try_from(d).map_err(|_| {
                Error::tensor_format(file, &info.name, "dimension too large for this platform")
            })
        })
        .collect()
}

struct NameCtx<'a> {
    hp: &'a Hyper,
    vocab: usize,
}

impl NameCtx<'_> {
    /// Maps a GGUF tensor name to its Hugging Face name and expected shape.
    fn target(&self, name: &str) -> Option<Target> {
        let hp = self.hp;
        let (stem, suffix) = name.rsplit_once('.')?;
        if suffix != "weight" && suffix != "bias" {
            return None;
        }
        let is_bias = suffix == "bias";
        let one = |hf: &str, shape: Vec<usize>| {
            Some(Target::One {
                hf: format!("{hf}.{suffix}"),
                expected: Some(if is_bias { vec![shape[0]] } else { shape }),
                unpermute_heads: None,
            })
        };
        let h = hp.hidden;
        match stem {
            "token_embd" if !is_bias => return one("model.embed_tokens", vec![self.vocab, h]),
            "output_norm" => return one("model.norm", vec![h]),
            "output" if !is_bias => return one("lm_head", vec![self.vocab, h]),
            "rope_freqs" if !is_bias => return Some(Target::Skip),
            _ => {}
        }
        let rest = stem.strip_prefix("blk.")?;
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok().filter(|&l| l < hp.n_layers)?;
        let p = format!("model.layers.{layer}");
        let (q_dim, kv_dim) = (hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim);
        // llama.cpp permutes q/k rows for llama-family rotary layout; Qwen's are stored as is.
        let permuted = matches!(hp.arch, Architecture::Llama | Architecture::Mixtral);
        let attn = |proj: &str, shape: Vec<usize>, heads: Option<usize>| {
            Some(Target::One {
                hf: format!("{p}.self_attn.{proj}.{suffix}"),
                expected: Some(if is_bias { vec![shape[0]] } else { shape }),
                unpermute_heads: heads.filter(|_| permuted),
            })
        };
        let layout = hp.arch.moe_layout().unwrap_or(MoeLayout::Mixtral);
        let moe = layout.block(layer);
        let experts = |proj: ExpertProj, shape: Vec<usize>| {
            if is_bias || hp.n_experts == 0 {
                return None;
            }
            Some(Target::Experts {
                prefix: format!("{moe}.experts"),
                w: layout.proj_name(proj),
                expected: shape,
            })
        };
        let (ffn, e, xf, sf) = (hp.ffn, hp.n_experts, hp.expert_ffn, hp.shared_ffn);
        let qk_norm = matches!(hp.arch, Architecture::Qwen3 | Architecture::Qwen3Moe);
        let shared = |proj: &str, shape: Vec<usize>| {
            (sf > 0 && !is_bias).then(|| one(&format!("{moe}.shared_expert.{proj}"), shape))?
        };
        match part {
            "attn_norm" => one(&format!("{p}.input_layernorm"), vec![h]),
            "ffn_norm" => one(&format!("{p}.post_attention_layernorm"), vec![h]),
            "attn_q" => attn("q_proj", vec![q_dim, h], Some(hp.n_head)),
            "attn_k" => attn("k_proj", vec![kv_dim, h], Some(hp.n_head_kv)),
            "attn_v" => attn("v_proj", vec![kv_dim, h], None),
            "attn_output" => attn("o_proj", vec![h, q_dim], None),
            "attn_q_norm" if qk_norm && !is_bias => {
                one(&format!("{p}.self_attn.q_norm"), vec![hp.head_dim])
            }
            "attn_k_norm" if qk_norm && !is_bias => {
                one(&format!("{p}.self_attn.k_norm"), vec![hp.head_dim])
            }
            "ffn_gate" if e == 0 => one(&format!("{p}.mlp.gate_proj"), vec![ffn, h]),
            "ffn_up" if e == 0 => one(&format!("{p}.mlp.up_proj"), vec![ffn, h]),
            "ffn_down" if e == 0 => one(&format!("{p}.mlp.down_proj"), vec![h, ffn]),
            "ffn_gate_inp" if e > 0 && !is_bias => one(&format!("{moe}.gate"), vec![e, h]),
            "ffn_gate_exps" => experts(ExpertProj::Gate, vec![e, xf, h]),
            "ffn_up_exps" => experts(ExpertProj::Up, vec![e, xf, h]),
            "ffn_down_exps" => experts(ExpertProj::Down, vec![e, h, xf]),
            "ffn_gate_shexp" => shared("gate_proj", vec![sf, h]),
            "ffn_up_shexp" => shared("up_proj", vec![sf, h]),
            "ffn_down_shexp" => shared("down_proj", vec![h, sf]),
            "ffn_gate_inp_shexp" if sf > 0 && !is_bias => Some(Target::Reshaped {
                hf: layout.shared_gate(layer),
                shape: vec![1, h],
            }),
            _ => {
                // Older MoE files store experts one by one: blk.N.ffn_gate.E.weight.
                let (kind, index) = part.rsplit_once('.')?;
                let index: usize = index.parse().ok().filter(|&i| i < e)?;
                let (proj, shape) = match kind {
                    "ffn_gate" => (ExpertProj::Gate, vec![xf, h]),
                    "ffn_up" => (ExpertProj::Up, vec![xf, h]),
                    "ffn_down" => (ExpertProj::Down, vec![h, xf]),
                    _ => return None,
                };
                if is_bias {
                    return None;
                }
                let name = layout.expert(layer, index, proj);
                one(name.strip_suffix(".weight")?, shape)
            }
        }
    }
}

/// Reads one planned tensor and returns it in `dtype`, ready to write.
async fn convert_tensor(
    g: &GgufFile,
    source: &dyn ByteSource,
    t: &PlannedTensor,
    dtype: DType,
) -> Result<Vec<u8>> {
    let info = &g.tensors[t.source];
    let bytes = g
        .read_tensor_range(source, info, t.byte_start, t.byte_len)
        .await?;
    let numel: usize = t.shape.iter().product();
    let mut values = dequantize(&g.file, &info.name, info.ggml_type, &bytes, numel)?;
    drop(bytes);
    if let Some(heads) = t.unpermute_heads {
        let rows = t.shape[0];
        let cols = numel / rows.max(1);
        values = unpermute_rows(&values, rows, cols, heads).ok_or_else(|| {
            Error::tensor_format(
                &g.file,
                &info.name,
                format!("{rows} rows cannot be split into {heads} heads of even size"),
            )
        })?;
    }
    Ok(dtype::from_f32(dtype, &values))
}

/// Undoes llama.cpp's q/k row permutation (convert_hf_to_gguf.py `permute`), which stores each
/// head's rows interleaved (pairs) instead of rotate-half order. With rows viewed as
/// `[n_head, head_dim/2, 2]`, swapping the last two axes restores Hugging Face's
/// `[n_head, 2, head_dim/2]`. `cols` is the row length (1 for a bias). `None` if the rows do
/// not split into `n_head` heads of even size.
pub fn unpermute_rows(values: &[f32], rows: usize, cols: usize, n_head: usize) -> Option<Vec<f32>> {
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) || rows.checked_mul(cols)? != values.len() {
        return None;
    }
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * head_dim + i * 2 + j;
                let dst = h * head_dim + j * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// config.json and generation_config.json

/// An f32 from the file as the shortest decimal that reads back as the same f32, so config.json
/// says `1e-5`, not `9.999999747378752e-6`.
fn f32_json(x: f32) -> Value {
    format!("{x}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn config_json(
    hp: &Hyper,
    plan: &TensorPlan,
    tok: &TokenizerFiles,
    rope_scaling: Option<Value>,
    dtype: DType,
) -> Value {
    let mut c = Map::new();
    c.insert("architectures".into(), json!([hp.arch.class_name()]));
    c.insert("model_type".into(), json!(hp.arch.model_type()));
    c.insert("hidden_size".into(), json!(hp.hidden));
    c.insert("intermediate_size".into(), json!(hp.ffn));
    c.insert("num_hidden_layers".into(), json!(hp.n_layers));
    c.insert("num_attention_heads".into(), json!(hp.n_head));
    c.insert("num_key_value_heads".into(), json!(hp.n_head_kv));
    if hp.head_dim_stated {
        c.insert("head_dim".into(), json!(hp.head_dim));
    }
    c.insert("hidden_act".into(), json!("silu"));
    c.insert("rms_norm_eps".into(), f32_json(hp.rms_eps));
    c.insert("rope_theta".into(), f32_json(hp.rope_theta));
    if let Some(s) = rope_scaling {
        c.insert("rope_scaling".into(), s);
    }
    if let Some(ctx) = hp.context {
        c.insert("max_position_embeddings".into(), json!(ctx));
    }
    c.insert("vocab_size".into(), json!(plan.vocab_size));
    c.insert("tie_word_embeddings".into(), json!(plan.tied));
    match hp.arch {
        Architecture::Llama => {
            c.insert("attention_bias".into(), json!(plan.attention_bias));
            c.insert("mlp_bias".into(), json!(false));
        }
        Architecture::Qwen2 => {
            c.insert("use_sliding_window".into(), json!(false));
        }
        Architecture::Qwen3 => {
            c.insert("use_sliding_window".into(), json!(false));
            c.insert("attention_bias".into(), json!(plan.attention_bias));
        }
        Architecture::Qwen2Moe | Architecture::Qwen3Moe => {
            c.insert("use_sliding_window".into(), json!(false));
            c.insert("num_experts".into(), json!(hp.n_experts));
            c.insert("num_experts_per_tok".into(), json!(hp.n_experts_used));
            c.insert("moe_intermediate_size".into(), json!(hp.expert_ffn));
            // llama.cpp routes every layer and hard-codes the renormalisation per
            // architecture (qwen2moe no, qwen3moe yes); it writes no key for either.
            c.insert("decoder_sparse_step".into(), json!(1));
            c.insert("mlp_only_layers".into(), json!([]));
            let qwen2 = hp.arch == Architecture::Qwen2Moe;
            c.insert("norm_topk_prob".into(), json!(!qwen2));
            if qwen2 {
                c.insert(
                    "shared_expert_intermediate_size".into(),
                    json!(hp.shared_ffn),
                );
                c.insert("qkv_bias".into(), json!(plan.attention_bias));
            } else {
                c.insert("attention_bias".into(), json!(plan.attention_bias));
            }
        }
        Architecture::Mixtral => {
            c.insert("num_local_experts".into(), json!(hp.n_experts));
            c.insert("num_experts_per_tok".into(), json!(hp.n_experts_used));
            // llama.cpp runs Mixtral GGUFs with full attention.
            c.insert("sliding_window".into(), Value::Null);
        }
        // Hyper::from_gguf reads no gemma GGUFs yet.
        Architecture::Mistral | Architecture::Gemma3 => {}
    }
    if let Some(id) = tok.bos_id {
        c.insert("bos_token_id".into(), json!(id));
    }
    if let Some(id) = tok.eos_id {
        c.insert("eos_token_id".into(), json!(id));
    }
    c.insert("torch_dtype".into(), json!(dtype.torch_name()));
    Value::Object(c)
}

fn generation_json(tok: &TokenizerFiles) -> Value {
    let mut c = Map::new();
    if let Some(id) = tok.bos_id {
        c.insert("bos_token_id".into(), json!(id));
    }
    if let Some(id) = tok.eos_id {
        c.insert("eos_token_id".into(), json!(id));
    }
    Value::Object(c)
}

/// config.json's `rope_scaling` from the metadata, or from llama 3's `rope_freqs` tensor.
async fn rope_scaling(g: &GgufFile, source: &dyn ByteSource, hp: &Hyper) -> Result<Option<Value>> {
    let key = |k: &str| format!("{}.rope.scaling.{k}", hp.prefix);
    let from_meta = match g.get_str(&key("type"))? {
        None | Some("none") => None,
        Some("linear") => {
            let factor = g.get_f64(&key("factor"))?.ok_or_else(|| {
                Error::config(
                    &g.file,
                    format!("linear rope scaling without '{}'", key("factor")),
                )
            })?;
            Some(json!({ "rope_type": "linear", "factor": f32_json(factor as f32) }))
        }
        Some(other) => {
            return Err(Error::config(
                &g.file,
                format!(
                "rope scaling type '{other}' is not supported by import (supported: none, linear)"
            ),
            ))
        }
    };
    let Some(info) = g.tensor("rope_freqs.weight") else {
        return Ok(from_meta);
    };
    if from_meta.is_some() {
        return Err(Error::config(
            &g.file,
            "both rope scaling metadata and a rope_freqs tensor: ambiguous",
        ));
    }
    let numel = usize::try_from(info.numel()).unwrap_or(usize::MAX);
    if info.ggml_type != GgmlType::F32 || numel != hp.head_dim / 2 {
        return Err(Error::tensor_format(
            &g.file,
            &info.name,
            format!("expected {} F32 frequency factors", hp.head_dim / 2),
        ));
    }
    let bytes = g.read_tensor(source, info).await?;
    let factors = dequantize(&g.file, &info.name, info.ggml_type, &bytes, numel)?;
    llama3_rope_scaling(&factors, hp.head_dim, hp.rope_theta)
        .map(Some)
        .ok_or_else(|| {
            Error::tensor_format(
                &g.file,
                &info.name,
                "frequency factors do not match llama3 rope scaling (low_freq_factor 1, high_freq_factor 4, original context 8192); not supported",
            )
        })
}

/// Recovers llama3 `rope_scaling` from the factors convert_hf_to_gguf.py bakes into
/// `rope_freqs`. The factor is their maximum; the other parameters are those every released
/// Llama 3.x uses (the converter reads original_max_position_embeddings from the wrong place
/// and always uses 8192), confirmed by recomputing the factors.
fn llama3_rope_scaling(factors: &[f32], head_dim: usize, theta: f32) -> Option<Value> {
    let factor = factors.iter().copied().fold(f32::NAN, f32::max);
    let (low, high, old_ctx) = (1.0f64, 4.0f64, 8192.0f64);
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    for (i, &got) in factors.iter().enumerate() {
        let freq = 1.0 / (theta as f64).powf((2 * i) as f64 / head_dim as f64);
        let wavelen = 2.0 * std::f64::consts::PI / freq;
        let want = if wavelen < high_wavelen {
            1.0
        } else if wavelen > low_wavelen {
            factor as f64
        } else {
            let smooth = (old_ctx / wavelen - low) / (high - low);
            1.0 / ((1.0 - smooth) / factor as f64 + smooth)
        };
        if (want - got as f64).abs() > 1e-3 * want.abs().max(1.0) {
            return None;
        }
    }
    Some(json!({
        "rope_type": "llama3",
        "factor": f32_json(factor),
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::gguf::tests::GgufBuilder;
    use crate::checkpoint::{Checkpoint, ModelFiles};

    /// llama.cpp's `permute` (convert_hf_to_gguf.py): HF rows `[n_head, 2, hd/2]` stored as
    /// `[n_head, hd/2, 2]`.
    fn permute(values: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
        let hd = rows / n_head;
        let half = hd / 2;
        let mut out = vec![0f32; values.len()];
        for h in 0..n_head {
            for j in 0..2 {
                for i in 0..half {
                    let src = h * hd + j * half + i;
                    let dst = h * hd + i * 2 + j;
                    out[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&values[src * cols..(src + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        for (rows, cols, heads) in [(24, 5, 3), (8, 1, 1), (16, 3, 4), (12, 7, 2)] {
            let w: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
            let back = unpermute_rows(&permute(&w, rows, cols, heads), rows, cols, heads).unwrap();
            assert_eq!(back, w, "rows {rows} cols {cols} heads {heads}");
        }
        // Head 0 of a head_dim-4 tensor: stored rows (0,1,2,3) are HF rows (0,2,1,3).
        let w = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(
            unpermute_rows(&w, 4, 1, 1).unwrap(),
            vec![0.0, 2.0, 1.0, 3.0]
        );
        assert!(unpermute_rows(&w, 4, 1, 3).is_none());
        assert!(unpermute_rows(&w, 4, 2, 1).is_none());
    }

    #[test]
    fn llama3_rope_factors_round_trip() {
        // Factors as convert_hf_to_gguf.py computes them for factor 8.
        let (hd, theta) = (64usize, 500000.0f32);
        let factors: Vec<f32> = (0..hd / 2)
            .map(|i| {
                let freq = 1.0 / (theta as f64).powf((2 * i) as f64 / hd as f64);
                let wl = 2.0 * std::f64::consts::PI / freq;
                if wl < 2048.0 {
                    1.0
                } else if wl > 8192.0 {
                    8.0
                } else {
                    let s = (8192.0 / wl - 1.0) / 3.0;
                    (1.0 / ((1.0 - s) / 8.0 + s)) as f32
                }
            })
            .collect();
        let v = llama3_rope_scaling(&factors, hd, theta).unwrap();
        assert_eq!(v["factor"], 8.0);
        let mut off = factors.clone();
        off[20] *= 1.5;
        assert!(llama3_rope_scaling(&off, hd, theta).is_none());
    }

    fn tiny_tokenizer(b: &mut GgufBuilder, pre: &str, add_bos: bool) {
        b.str("tokenizer.ggml.model", "gpt2")
            .str("tokenizer.ggml.pre", pre)
            .strs(
                "tokenizer.ggml.tokens",
                &[
                    "<s>", "</s>", "a", "b", "ab", "Ġ", "Ġab", "1", "2", "<tool>",
                ],
            )
            .i32s("tokenizer.ggml.token_type", &[3, 3, 1, 1, 1, 1, 1, 1, 1, 4])
            .strs("tokenizer.ggml.merges", &["a b", "Ġ ab"])
            .u32("tokenizer.ggml.bos_token_id", 0)
            .u32("tokenizer.ggml.eos_token_id", 1)
            .bool("tokenizer.ggml.add_bos_token", add_bos)
            .str("tokenizer.chat_template", "{{ messages }}");
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("moegraft-import-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A 2-layer model with 2 heads (head_dim 4), 1 kv head, F32 weights whose values encode
    /// their position. `kind`: "llama", "qwen2" (q/k/v biases), "mixtral" (llama with two
    /// stacked experts), "qwen3" (q/k norms), "qwen3moe" (q/k norms, two stacked experts of
    /// width 6) or "qwen2moe" (biases, two experts of width 6, a shared expert of width 5 whose
    /// gate is stored as [hidden], as older converters did).
    fn tiny(kind: &str, tied: bool) -> Vec<u8> {
        let (h, ffn, xf, sf, vocab) = (8u64, 16u64, 6u64, 5u64, 10u64);
        let arch = match kind {
            "mixtral" => "llama",
            k => k,
        };
        let moe = matches!(kind, "mixtral" | "qwen3moe" | "qwen2moe");
        let biases = matches!(kind, "qwen2" | "qwen2moe");
        let key = |k: &str| format!("{arch}.{k}");
        let mut b = GgufBuilder::new();
        b.str("general.architecture", arch)
            .u32(&key("block_count"), 2)
            .u32(&key("embedding_length"), h as u32)
            .u32(&key("feed_forward_length"), ffn as u32)
            .u32(&key("attention.head_count"), 2)
            .u32(&key("attention.head_count_kv"), 1)
            .u32(&key("context_length"), 64)
            .f32(&key("attention.layer_norm_rms_epsilon"), 1e-5)
            .f32(&key("rope.freq_base"), 10000.0);
        if moe {
            b.u32(&key("expert_count"), 2)
                .u32(&key("expert_used_count"), 1);
        }
        if kind.starts_with("qwen") && moe {
            b.u32(&key("expert_feed_forward_length"), xf as u32);
        }
        if kind == "qwen2moe" {
            b.u32(&key("expert_shared_feed_forward_length"), sf as u32);
        }
        if kind.starts_with("qwen3") {
            b.u32(&key("attention.key_length"), 4)
                .u32(&key("attention.value_length"), 4);
        }
        let pre = if kind.starts_with("qwen") {
            "qwen2"
        } else {
            "smollm"
        };
        tiny_tokenizer(&mut b, pre, kind == "llama");
        let vals = |n: u64, base: f32| (0..n).map(|i| base + i as f32).collect::<Vec<_>>();
        b.f32_tensor("token_embd.weight", &[h, vocab], &vals(h * vocab, 0.0));
        b.f32_tensor("output_norm.weight", &[h], &vals(h, 1.0));
        if !tied {
            b.f32_tensor("output.weight", &[h, vocab], &vals(h * vocab, 2.0));
        }
        let width = if kind == "mixtral" { ffn } else { xf };
        for l in 0..2 {
            let t = |n: &str| format!("blk.{l}.{n}.weight");
            b.f32_tensor(&t("attn_norm"), &[h], &vals(h, 3.0));
            b.f32_tensor(&t("attn_q"), &[h, 8], &vals(64, 4.0));
            b.f32_tensor(&t("attn_k"), &[h, 4], &vals(32, 5.0));
            b.f32_tensor(&t("attn_v"), &[h, 4], &vals(32, 6.0));
            b.f32_tensor(&t("attn_output"), &[8, h], &vals(64, 7.0));
            b.f32_tensor(&t("ffn_norm"), &[h], &vals(h, 8.0));
            if biases {
                let bias = |n: &str| format!("blk.{l}.{n}.bias");
                b.f32_tensor(&bias("attn_q"), &[8], &vals(8, 20.0));
                b.f32_tensor(&bias("attn_k"), &[4], &vals(4, 30.0));
                b.f32_tensor(&bias("attn_v"), &[4], &vals(4, 40.0));
            }
            if kind.starts_with("qwen3") {
                b.f32_tensor(&t("attn_q_norm"), &[4], &vals(4, 50.0));
                b.f32_tensor(&t("attn_k_norm"), &[4], &vals(4, 60.0));
            }
            if moe {
                b.f32_tensor(&t("ffn_gate_inp"), &[h, 2], &vals(h * 2, 12.0));
                b.f32_tensor(
                    &t("ffn_gate_exps"),
                    &[h, width, 2],
                    &vals(h * width * 2, 9.0),
                );
                b.f32_tensor(
                    &t("ffn_up_exps"),
                    &[h, width, 2],
                    &vals(h * width * 2, 10.0),
                );
                b.f32_tensor(
                    &t("ffn_down_exps"),
                    &[width, h, 2],
                    &vals(h * width * 2, 11.0),
                );
            } else {
                b.f32_tensor(&t("ffn_gate"), &[h, ffn], &vals(h * ffn, 9.0));
                b.f32_tensor(&t("ffn_up"), &[h, ffn], &vals(h * ffn, 10.0));
                b.f32_tensor(&t("ffn_down"), &[ffn, h], &vals(h * ffn, 11.0));
            }
            if kind == "qwen2moe" {
                b.f32_tensor(&t("ffn_gate_shexp"), &[h, sf], &vals(h * sf, 70.0));
                b.f32_tensor(&t("ffn_up_shexp"), &[h, sf], &vals(h * sf, 71.0));
                b.f32_tensor(&t("ffn_down_shexp"), &[sf, h], &vals(h * sf, 72.0));
                b.f32_tensor(&t("ffn_gate_inp_shexp"), &[h], &vals(h, 73.0));
            }
        }
        b.build()
    }

    fn import_bytes(tag: &str, bytes: Vec<u8>, dtype: DType) -> Result<(PathBuf, ImportSummary)> {
        let dir = temp_dir(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let gguf = dir.join("m.gguf");
        std::fs::write(&gguf, bytes).unwrap();
        let out = dir.join("out");
        let s = import_gguf_with(&gguf, &out, dtype, 1024);
        s.map(|s| (dir, s))
    }

    #[test]
    fn imports_tiny_llama_that_checkpoint_reads_back() {
        let (dir, summary) = import_bytes("llama", tiny("llama", true), DType::F32).unwrap();
        assert_eq!(summary.model.architecture, "llama");
        assert_eq!(summary.model.tensors, 2 + 9 * 2);
        assert!(summary.to_string().contains("20 tensors"), "{summary}");
        let out = dir.join("out");
        // Sharded at 1 KiB.
        assert!(out.join("model.safetensors.index.json").exists());
        let files = ModelFiles::from_dir(&out).unwrap();
        let ck = pollster::block_on(Checkpoint::open(files)).unwrap();
        assert_eq!(ck.config.num_layers, 2);
        assert_eq!(ck.config.num_kv_heads, 1);
        assert_eq!(ck.config.rms_norm_eps, 1e-5);
        assert!(ck.config.tie_word_embeddings);
        assert_eq!(ck.config.bos_token_id, Some(0));
        assert!(!ck.has("lm_head.weight"));
        ck.expect_shape("model.layers.1.self_attn.k_proj.weight", &[4, 8])
            .unwrap();
        ck.expect_shape("model.layers.0.mlp.down_proj.weight", &[8, 16])
            .unwrap();
        // q rows come back un-permuted: stored row r of head 0 is HF row (0, 2, 1, 3)[r].
        let q = pollster::block_on(ck.read_f32("model.layers.0.self_attn.q_proj.weight")).unwrap();
        let row = |r: usize| q[r * 8];
        assert_eq!([row(0), row(1), row(2), row(3)], [4.0, 20.0, 12.0, 28.0]);
        // v is not permuted.
        let v = pollster::block_on(ck.read_f32("model.layers.0.self_attn.v_proj.weight")).unwrap();
        assert_eq!(v[8], 14.0);

        let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
        let enc = tok.encode("ab ab12<tool>", true).unwrap();
        assert_eq!(enc.get_ids(), &[0, 4, 6, 7, 8, 9]);
        let cfg: Value =
            serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["chat_template"], "{{ messages }}");
        assert_eq!(cfg["bos_token"], "<s>");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn untied_bf16_import() {
        let (dir, summary) = import_bytes("bf16", tiny("llama", false), DType::BF16).unwrap();
        assert_eq!(summary.model.tensors, 21);
        let ck = pollster::block_on(Checkpoint::open(
            ModelFiles::from_dir(&dir.join("out")).unwrap(),
        ))
        .unwrap();
        assert!(!ck.config.tie_word_embeddings);
        let t = pollster::block_on(ck.read("lm_head.weight")).unwrap();
        assert_eq!(t.dtype, DType::BF16);
        assert_eq!(t.to_f32()[3], 5.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn open(dir: &Path) -> Checkpoint {
        pollster::block_on(Checkpoint::open(
            ModelFiles::from_dir(&dir.join("out")).unwrap(),
        ))
        .unwrap()
    }

    #[test]
    fn qwen2_keeps_q_k_order_and_biases() {
        let (dir, summary) = import_bytes("qwen2", tiny("qwen2", true), DType::F32).unwrap();
        assert_eq!(summary.model.architecture, "qwen2");
        assert_eq!(summary.model.tensors, 2 + 12 * 2);
        let ck = open(&dir);
        assert_eq!(ck.config.architecture, Architecture::Qwen2);
        assert!(ck.config.qkv_bias);
        let q = pollster::block_on(ck.read_f32("model.layers.0.self_attn.q_proj.weight")).unwrap();
        assert_eq!([q[0], q[8], q[16]], [4.0, 12.0, 20.0]);
        let kb = pollster::block_on(ck.read_f32("model.layers.1.self_attn.k_proj.bias")).unwrap();
        assert_eq!(kb, vec![30.0, 31.0, 32.0, 33.0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mixtral_experts_are_split() {
        let (dir, summary) = import_bytes("mixtral", tiny("mixtral", true), DType::F32).unwrap();
        assert_eq!(summary.model.architecture, "mixtral");
        // Per layer: 6 attention/norm tensors, the router, 2 experts × 3.
        assert_eq!(summary.model.tensors, 2 + 13 * 2);
        let ck = open(&dir);
        assert_eq!(ck.config.num_experts, 2);
        assert_eq!(ck.config.experts_per_token, 1);
        ck.expect_shape("model.layers.0.block_sparse_moe.gate.weight", &[2, 8])
            .unwrap();
        ck.expect_shape(
            "model.layers.1.block_sparse_moe.experts.1.w2.weight",
            &[8, 16],
        )
        .unwrap();
        // Expert 1 of the stack starts after expert 0's 128 values.
        let w1 =
            pollster::block_on(ck.read_f32("model.layers.0.block_sparse_moe.experts.1.w1.weight"))
                .unwrap();
        assert_eq!((w1.len(), w1[0]), (128, 9.0 + 128.0));
        let w3 =
            pollster::block_on(ck.read_f32("model.layers.0.block_sparse_moe.experts.0.w3.weight"))
                .unwrap();
        assert_eq!(w3[5], 15.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn qwen3_keeps_q_k_order_and_its_norms() {
        let (dir, summary) = import_bytes("qwen3", tiny("qwen3", true), DType::F32).unwrap();
        assert_eq!(summary.model.architecture, "qwen3");
        let ck = open(&dir);
        assert!(ck.config.qk_norm && !ck.config.qkv_bias);
        assert_eq!(ck.config.head_dim, 4);
        let q = pollster::block_on(ck.read_f32("model.layers.0.self_attn.q_proj.weight")).unwrap();
        assert_eq!([q[0], q[8], q[16]], [4.0, 12.0, 20.0], "not permuted");
        let kn = pollster::block_on(ck.read_f32("model.layers.1.self_attn.k_norm.weight")).unwrap();
        assert_eq!(kn, vec![60.0, 61.0, 62.0, 63.0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn qwen_moes_split_their_experts_under_qwen_names() {
        for kind in ["qwen3moe", "qwen2moe"] {
            let (dir, summary) = import_bytes(kind, tiny(kind, false), DType::F32).unwrap();
            let ck = open(&dir);
            let c = &ck.config;
            let qwen2 = kind == "qwen2moe";
            assert_eq!(
                summary.model.architecture,
                if qwen2 { "qwen2_moe" } else { "qwen3_moe" }
            );
            assert_eq!((c.num_experts, c.experts_per_token), (2, 1));
            assert_eq!(c.expert_intermediate_size, 6);
            assert_eq!(
                c.norm_topk_prob, !qwen2,
                "llama.cpp's per-architecture choice"
            );
            assert!(c.all_layers_moe());
            assert_eq!(c.qkv_bias, qwen2);
            assert_eq!(c.shared_expert_intermediate_size, if qwen2 { 5 } else { 0 });
            let layout = MoeLayout::Qwen;
            ck.expect_shape(&layout.router(0), &[2, 8]).unwrap();
            ck.expect_shape(&layout.expert(1, 1, ExpertProj::Down), &[8, 6])
                .unwrap();
            // Expert 1 of the stack starts after expert 0's 48 values.
            let up = pollster::block_on(ck.read_f32(&layout.expert(0, 1, ExpertProj::Up))).unwrap();
            assert_eq!((up.len(), up[0]), (48, 10.0 + 48.0));
            if qwen2 {
                let gate = layout.shared_gate(1);
                ck.expect_shape(&gate, &[1, 8]).unwrap();
                let g = pollster::block_on(ck.read_f32(&gate)).unwrap();
                assert_eq!(g[7], 80.0);
                ck.expect_shape(&layout.shared_expert(0, ExpertProj::Down), &[8, 5])
                    .unwrap();
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    type BuildFn = dyn Fn(&mut GgufBuilder);

    /// One layer of hidden size 8, two heads and an FFN of 4, for `arch`.
    fn head<'b>(b: &'b mut GgufBuilder, arch: &str) -> &'b mut GgufBuilder {
        b.str("general.architecture", arch)
            .u32(&format!("{arch}.block_count"), 1)
            .u32(&format!("{arch}.embedding_length"), 8)
            .u32(&format!("{arch}.attention.head_count"), 2)
            .u32(&format!("{arch}.feed_forward_length"), 4)
    }

    #[test]
    fn refusals_are_clear_and_leave_no_output() {
        let cases: Vec<(Box<BuildFn>, &str)> = vec![
            (
                Box::new(|b| {
                    b.str("general.architecture", "gpt2");
                }),
                "unsupported architecture 'gpt2'",
            ),
            (
                Box::new(|b| {
                    head(b, "llama")
                        .str("tokenizer.ggml.model", "llama")
                        .strs("tokenizer.ggml.tokens", &["<unk>", "a"])
                        .f32_tensor("token_embd.weight", &[8, 2], &[0.0; 16]);
                }),
                "a SentencePiece vocabulary without merges needs tokenizer.ggml.scores",
            ),
            (
                Box::new(|b| {
                    head(b, "llama")
                        .str("tokenizer.ggml.model", "llama")
                        .strs("tokenizer.ggml.tokens", &["<unk>", "a", "b", "ab"])
                        .f32s("tokenizer.ggml.scores", &[0.0, 0.0, f32::NAN, -1.0])
                        .f32_tensor("token_embd.weight", &[8, 4], &[0.0; 32]);
                }),
                "tokenizer.ggml.scores: token 2 ('b') has score NaN",
            ),
            (
                Box::new(|b| {
                    head(b, "llama")
                        .str("tokenizer.ggml.model", "llama")
                        .strs("tokenizer.ggml.tokens", &["<unk>", "a", "b", "ab"])
                        .f32s("tokenizer.ggml.scores", &[0.0, 0.0])
                        .f32_tensor("token_embd.weight", &[8, 4], &[0.0; 32]);
                }),
                "tokenizer.ggml.scores has 2 scores for 4 tokens",
            ),
            (
                Box::new(|b| {
                    head(b, "llama").f32_tensor("token_embd.weight", &[8, 10], &[0.0; 80]);
                    tiny_tokenizer(b, "falcon", false);
                }),
                "pre-tokenizer 'falcon' is not supported",
            ),
            (
                Box::new(|b| {
                    tiny_tokenizer(b, "smollm", false);
                    head(b, "llama")
                        .f32_tensor("token_embd.weight", &[8, 10], &[0.0; 80])
                        .f32_tensor("blk.0.mystery.weight", &[8], &[0.0; 8]);
                }),
                "tensor 'blk.0.mystery.weight': has no Hugging Face equivalent",
            ),
            (
                Box::new(|b| {
                    tiny_tokenizer(b, "smollm", false);
                    head(b, "llama")
                        .f32_tensor("token_embd.weight", &[8, 10], &[0.0; 80])
                        .f32_tensor("blk.0.attn_q.weight", &[8, 6], &[0.0; 48]);
                }),
                "has shape [6, 8], expected [8, 8]",
            ),
            (
                Box::new(|b| {
                    tiny_tokenizer(b, "smollm", false);
                    head(b, "llama")
                        .f32_tensor("token_embd.weight", &[8, 10], &[0.0; 80])
                        .f32_tensor("output_norm.weight", &[8], &[0.0; 8]);
                }),
                "tensor 'blk.0.attn_norm.weight' is missing",
            ),
            (
                Box::new(|b| {
                    head(b, "qwen3moe")
                        .u32("qwen3moe.expert_count", 2)
                        .u32("qwen3moe.expert_used_count", 1);
                }),
                "metadata 'qwen3moe.expert_feed_forward_length' is missing",
            ),
            (
                Box::new(|b| {
                    head(b, "qwen2moe")
                        .u32("qwen2moe.expert_count", 2)
                        .u32("qwen2moe.expert_used_count", 3);
                }),
                "expert_used_count 3 / expert_count 2 out of range",
            ),
            (
                Box::new(|b| {
                    head(b, "qwen3").u32("qwen3.expert_count", 2);
                }),
                "unsupported architecture 'qwen3'",
            ),
        ];
        for (i, (build, needle)) in cases.into_iter().enumerate() {
            let mut b = GgufBuilder::new();
            build(&mut b);
            let err = import_bytes(&format!("refuse{i}"), b.build(), DType::F32)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "expected '{needle}' in: {err}");
            let dir = std::env::temp_dir()
                .join(format!("moegraft-import-refuse{i}-{}", std::process::id()));
            assert!(!dir.join("out").exists());
            // Only the input GGUF is left: no partial output directory either.
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
