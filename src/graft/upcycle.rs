//! Training-free upcycling (Branch-Train-MiX style, PAPER.md): an MoE built from dense
//! checkpoints of one base, in the layout engines load for its family (llama/mistral →
//! Mixtral, qwen2 → qwen2_moe, qwen3 → qwen3_moe). Expert 0 is the base's FFN (its original languages), expert i
//! the FFN of dense checkpoint i (continued-pretrained for language i); every other tensor comes
//! from the base, or is averaged over base and experts as BTX does. The router is a centroid
//! router computed from sample text; config.json's `moegraft` section records each expert's
//! languages so the runtime can route by a language prior instead.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use serde_json::{json, Value};

use super::centroid::{self, centroid_row, mean_router_inputs};
use crate::checkpoint::config::ExpertProj;
use crate::checkpoint::dtype::{from_f32, to_f32};
use crate::checkpoint::moegraft_section::MoegraftSection;
use crate::checkpoint::writer::{OutputFiles, ShardedWriter, TensorSpec, DEFAULT_MAX_SHARD_BYTES};
use crate::checkpoint::{Architecture, Checkpoint, DType, ModelConfig, ModelFiles};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};
use crate::model::open::largest_tensor_bytes;
use crate::model::routing::DEFAULT_PRIOR_STRENGTH;
use crate::model::script::language_scripts;
use crate::model::{LoadOptions, Model};
use crate::tokenizer::Tokenizer;

/// Hard top-1 is the zero-training default (PAPER.md): experts trained apart were never taught
/// to be mixed, so a token should see exactly one of them — and a base-language token routed
/// to expert 0 then sees exactly the base model.
pub const DEFAULT_TOP_K: usize = 1;

/// One dense checkpoint that becomes an expert, and the languages it was trained for.
#[derive(Debug, Clone)]
pub struct ExpertSource {
    pub dir: PathBuf,
    pub languages: Vec<String>,
}

/// How the written model routes by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpcycleRouter {
    /// The centroid router alone.
    Centroid,
    /// The centroid router is written too (so plain Mixtral loaders work), but moegraft routes
    /// by the language prior unless told otherwise.
    LanguagePrior,
}

#[derive(Debug, Clone)]
pub struct UpcycleOptions {
    pub base: PathBuf,
    /// Languages of the base model (expert 0).
    pub base_languages: Vec<String>,
    pub experts: Vec<ExpertSource>,
    pub router: UpcycleRouter,
    /// (language, sample text file) pairs for the centroid router.
    pub samples: Vec<(String, PathBuf)>,
    pub top_k: usize,
    pub temperature: f32,
    pub average_non_ffn: bool,
    pub out: PathBuf,
    pub gpu: GpuOptions,
}

/// How the MoE is built, wherever its inputs come from.
#[derive(Debug, Clone)]
pub struct UpcycleSettings {
    pub router: UpcycleRouter,
    pub top_k: usize,
    pub temperature: f32,
    pub average_non_ffn: bool,
    pub gpu: GpuOptions,
}

/// The inputs as files (a directory's natively, the page's `Blob`s in the browser).
pub struct UpcycleSources {
    pub base: ModelFiles,
    /// Languages of the base model (expert 0).
    pub base_languages: Vec<String>,
    /// Each expert's files and languages.
    pub experts: Vec<(ModelFiles, Vec<String>)>,
    /// (language, sample text) pairs for the centroid router.
    pub samples: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct UpcycleSummary {
    pub experts: usize,
    pub layers: usize,
    pub top_k: usize,
    pub files: Vec<String>,
    /// Nearly parallel router rows and similar: printed by the CLI on stderr.
    pub warnings: Vec<String>,
}

impl std::fmt::Display for UpcycleSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote a {}-expert top-{} MoE of {} layers ({})",
            self.experts,
            self.top_k,
            self.layers,
            self.files.join(", ")
        )
    }
}

/// Files copied from the base as they are (tokenizer, chat template, generation defaults).
const COPIED_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "generation_config.json",
];

/// Copies the side files `from` has into `out`, adding their names to `written`.
pub(super) async fn copy_side_files<O: OutputFiles>(
    from: &ModelFiles,
    out: &mut O,
    written: &mut Vec<String>,
) -> Result<()> {
    for name in COPIED_FILES {
        if let Some(bytes) = from.read_bytes(name).await? {
            out.write_file(name, &bytes)?;
            written.push(name.into());
        }
    }
    Ok(())
}

fn ffn_name(layer: usize, proj: ExpertProj) -> String {
    format!("model.layers.{layer}.mlp.{}.weight", proj.dense_name())
}

/// qwen2_moe always has a shared expert: the upcycled one is one unit wide and all zeros, so
/// it adds exactly 0 (its down projection is 0, whatever its sigmoid gate says).
const ZERO_SHARED_EXPERT_WIDTH: usize = 1;

fn is_ffn(name: &str) -> bool {
    name.starts_with("model.layers.") && name.contains(".mlp.")
}

/// Where one output tensor's bytes come from.
enum Source {
    /// A tensor of checkpoint `0` (base) or `i` (expert i), under its name there.
    Copy(usize, String),
    /// The mean of this tensor over every checkpoint.
    Average(String),
    /// Layer ℓ's router.
    Router(usize),
    /// Zeros (qwen2_moe's shared expert and its gate).
    Zeros,
}

/// Builds the MoE into a new directory `o.out`, which appears only once it is complete.
#[cfg(not(target_arch = "wasm32"))]
pub fn upcycle(o: &UpcycleOptions) -> Result<UpcycleSummary> {
    use crate::checkpoint::writer::{write_dir_atomically, DirOutput};
    let mut samples = Vec::with_capacity(o.samples.len());
    for (lang, file) in &o.samples {
        let text =
            std::fs::read_to_string(file).map_err(|e| Error::io(file.display().to_string(), e))?;
        samples.push((lang.clone(), text));
    }
    let mut experts = Vec::with_capacity(o.experts.len());
    for e in &o.experts {
        experts.push((ModelFiles::from_dir(&e.dir)?, e.languages.clone()));
    }
    let sources = UpcycleSources {
        base: ModelFiles::from_dir(&o.base)?,
        base_languages: o.base_languages.clone(),
        experts,
        samples,
    };
    let settings = UpcycleSettings {
        router: o.router,
        top_k: o.top_k,
        temperature: o.temperature,
        average_non_ffn: o.average_non_ffn,
        gpu: o.gpu.clone(),
    };
    // Everything is checked before the first file is written, so a refusal leaves nothing.
    let checked = pollster::block_on(check(sources, &settings))?;
    write_dir_atomically(&o.out, |dir| {
        pollster::block_on(write(checked, &settings, DirOutput::new(dir)))
    })
}

/// Builds the MoE into `out`; nothing is written unless every input checks out.
pub async fn upcycle_to<O: OutputFiles>(
    sources: UpcycleSources,
    settings: &UpcycleSettings,
    out: O,
) -> Result<UpcycleSummary> {
    let checked = check(sources, settings).await?;
    write(checked, settings, out).await
}

/// Inputs that passed every check, with the router rows computed.
struct Checked {
    ckpts: Vec<Checkpoint>,
    languages: Vec<Vec<String>>,
    rows: Vec<Vec<Vec<f32>>>,
    warnings: Vec<String>,
}

async fn check(sources: UpcycleSources, o: &UpcycleSettings) -> Result<Checked> {
    if sources.experts.is_empty() {
        return Err(Error::InvalidArgument(
            "upcycling needs at least one --expert DIR=lang".into(),
        ));
    }
    let languages = expert_languages(&sources)?;
    let mut ckpts = vec![Checkpoint::open(sources.base).await?];
    for (files, _) in sources.experts {
        ckpts.push(Checkpoint::open(files).await?);
    }
    check_compatible(&ckpts)?;
    let experts = ckpts.len();
    if o.top_k == 0 || o.top_k > experts {
        return Err(Error::InvalidArgument(format!(
            "--top-k {} must be between 1 and the number of experts ({experts})",
            o.top_k
        )));
    }
    if !(o.temperature.is_finite() && o.temperature > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "--temperature {} must be positive",
            o.temperature
        )));
    }
    let (rows, mut warnings) = router_rows(&ckpts[0], &sources.samples, &languages, o).await?;
    for (layer, r) in rows.iter().enumerate() {
        warnings.extend(centroid::router_warnings(layer, r));
    }
    Ok(Checked {
        ckpts,
        languages,
        rows,
        warnings,
    })
}

async fn write<O: OutputFiles>(
    checked: Checked,
    o: &UpcycleSettings,
    mut out: O,
) -> Result<UpcycleSummary> {
    let Checked {
        ckpts,
        languages,
        rows,
        warnings,
    } = checked;
    let experts = ckpts.len();
    let base = &ckpts[0];
    let c = &base.config;
    let dtype_of = |name: &str| -> Result<DType> {
        let (file, info) = base.info(name)?;
        info.dtype.ok_or_else(|| {
            Error::tensor_format(
                base.files.display_name(file),
                name,
                "not a floating-point tensor",
            )
        })
    };
    let mut plan: Vec<(TensorSpec, Source)> = Vec::new();
    for name in base.tensor_names().filter(|n| !is_ffn(n)) {
        let (_, info) = base.info(name)?;
        let source = if o.average_non_ffn {
            Source::Average(name.to_string())
        } else {
            Source::Copy(0, name.to_string())
        };
        plan.push((
            TensorSpec::new(name, dtype_of(name)?, info.shape.clone()),
            source,
        ));
    }
    let arch = c
        .architecture
        .upcycled()
        .ok_or_else(|| Error::config(base.files.label(), "this architecture has no MoE layout"))?;
    let layout = arch
        .moe_layout()
        .ok_or_else(|| Error::config(base.files.label(), "not an MoE layout"))?;
    for layer in 0..c.num_layers {
        let router_dtype = dtype_of(&ffn_name(layer, ExpertProj::Gate))?;
        plan.push((
            TensorSpec::new(
                layout.router(layer),
                router_dtype,
                vec![experts, c.hidden_size],
            ),
            Source::Router(layer),
        ));
        for e in 0..experts {
            for proj in ExpertProj::ALL {
                let from = ffn_name(layer, proj);
                let (_, info) = base.info(&from)?;
                plan.push((
                    TensorSpec::new(
                        layout.expert(layer, e, proj),
                        dtype_of(&from)?,
                        info.shape.clone(),
                    ),
                    Source::Copy(e, from),
                ));
            }
        }
        if arch == Architecture::Qwen2Moe {
            let (h, w) = (c.hidden_size, ZERO_SHARED_EXPERT_WIDTH);
            for (proj, shape) in [
                (ExpertProj::Gate, vec![w, h]),
                (ExpertProj::Up, vec![w, h]),
                (ExpertProj::Down, vec![h, w]),
            ] {
                let spec = TensorSpec::new(layout.shared_expert(layer, proj), router_dtype, shape);
                plan.push((spec, Source::Zeros));
            }
            let gate = TensorSpec::new(layout.shared_gate(layer), router_dtype, vec![1, h]);
            plan.push((gate, Source::Zeros));
        }
    }

    let labels: Vec<String> = ckpts.iter().map(|k| k.files.label().to_string()).collect();
    let config = moe_config(o, arch, c, &languages, &labels);
    let specs: Vec<TensorSpec> = plan.iter().map(|(s, _)| s.clone()).collect();
    let mut writer = ShardedWriter::to(&mut out, specs, DEFAULT_MAX_SHARD_BYTES)?;
    for (spec, source) in &plan {
        let bytes = tensor_bytes(&ckpts, spec, source, &rows).await?;
        writer.write_tensor(&spec.name, &bytes)?;
    }
    let mut files = writer.finish()?;
    out.write_json("config.json", &config)?;
    files.push("config.json".into());
    copy_side_files(&base.files, &mut out, &mut files).await?;
    Ok(UpcycleSummary {
        experts,
        layers: c.num_layers,
        top_k: o.top_k,
        files,
        warnings,
    })
}

/// Expert 0's languages, then each expert's; unknown codes are refused.
fn expert_languages(sources: &UpcycleSources) -> Result<Vec<Vec<String>>> {
    let all: Vec<Vec<String>> = std::iter::once(sources.base_languages.clone())
        .chain(sources.experts.iter().map(|(_, langs)| langs.clone()))
        .collect();
    for (e, langs) in all.iter().enumerate() {
        if langs.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "expert {e} has no languages"
            )));
        }
        if let Some(bad) = langs.iter().find(|l| language_scripts(l).is_none()) {
            return Err(Error::InvalidArgument(format!(
                "expert {e}: unknown language code '{bad}' (use ISO 639-1, e.g. en, ja)"
            )));
        }
    }
    Ok(all)
}

/// How many mismatches an error lists.
const LISTED_MISMATCHES: usize = 8;

/// All checkpoints must be dense Llama/Mistral models of one architecture and size with the
/// same tensors of the same shapes; the first mismatches are listed.
fn check_compatible(ckpts: &[Checkpoint]) -> Result<()> {
    let base = &ckpts[0];
    let c = &base.config;
    let label = base.files.label().to_string();
    let Some(arch) = c.architecture.upcycled().filter(|_| !c.is_moe()) else {
        return Err(Error::config(
            &label,
            format!(
                "upcycling needs a dense llama, mistral, qwen2 or qwen3 base model, not {}{}",
                c.architecture.model_type(),
                if c.is_moe() {
                    " (already an MoE)"
                } else {
                    " (no MoE layout that transformers, vLLM or llama.cpp load holds it)"
                }
            ),
        ));
    };
    if arch == Architecture::Mixtral && (c.qkv_bias || c.o_bias) {
        return Err(Error::config(
            &label,
            "the Mixtral layout has no attention biases; this base has some",
        ));
    }
    if c.mlp_bias {
        return Err(Error::config(
            &label,
            "MoE experts have no MLP biases; this base has some",
        ));
    }
    let key = |c: &crate::checkpoint::ModelConfig| {
        (
            c.architecture,
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_layers,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim,
        )
    };
    let mut problems = Vec::new();
    for other in &ckpts[1..] {
        let who = other.files.label();
        if key(&other.config) != key(c) {
            problems.push(format!(
                "{who}: architecture/sizes {:?} differ from the base's {:?} (arch, vocab, hidden, intermediate, layers, heads, kv heads, head dim)",
                key(&other.config),
                key(c)
            ));
        }
        for name in base.tensor_names() {
            match other.info(name) {
                Err(_) => problems.push(format!("{who}: tensor '{name}' is missing")),
                Ok((_, info)) => {
                    let (_, want) = base.info(name)?;
                    if info.shape != want.shape {
                        problems.push(format!(
                            "{who}: tensor '{name}' has shape {:?}, the base's is {:?}",
                            info.shape, want.shape
                        ));
                    }
                }
            }
        }
        for name in other.tensor_names().filter(|n| !base.has(n)) {
            problems.push(format!("{who}: tensor '{name}' is not in the base"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let more = problems.len().saturating_sub(LISTED_MISMATCHES);
    problems.truncate(LISTED_MISMATCHES);
    if more > 0 {
        problems.push(format!("… and {more} more"));
    }
    Err(Error::InvalidArgument(format!(
        "the expert checkpoints do not match the base:\n  {}",
        problems.join("\n  ")
    )))
}

/// Every layer's router rows ([layer][expert][hidden]) and warnings. Centroids come from the
/// *base* model's hidden states for every expert's samples (mergekit-moe's "hidden" mode): the
/// upcycled model keeps the base's attention, norms and expert 0, so the base's residual
/// stream is the closest single-model stand-in for the MoE's own router input, and one model
/// on the GPU is enough however many experts there are.
async fn router_rows(
    base: &Checkpoint,
    samples: &[(String, String)],
    languages: &[Vec<String>],
    o: &UpcycleSettings,
) -> Result<(Vec<Vec<Vec<f32>>>, Vec<String>)> {
    let layers = base.config.num_layers;
    let mut texts: BTreeMap<&str, String> = BTreeMap::new();
    for (lang, text) in samples {
        let entry = texts.entry(lang.as_str()).or_default();
        entry.push_str(text);
        entry.push('\n');
    }
    let missing: Vec<usize> = (0..languages.len())
        .filter(|&e| !languages[e].iter().any(|l| texts.contains_key(l.as_str())))
        .collect();
    let mut warnings = Vec::new();
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|&e| format!("expert {e} ({})", languages[e].join(",")))
            .collect();
        if o.router == UpcycleRouter::Centroid {
            return Err(Error::InvalidArgument(format!(
                "the centroid router needs --samples LANG=FILE for every expert's languages; none for {}",
                list.join(", ")
            )));
        }
        warnings.push(format!(
            "no samples for {}: their router rows are zero (the language prior still routes; plain Mixtral loaders will not)",
            list.join(", ")
        ));
    }
    let hidden = base.config.hidden_size;
    let mut rows = vec![vec![vec![0.0f32; hidden]; languages.len()]; layers];
    if missing.len() == languages.len() {
        return Ok((rows, warnings));
    }
    if base.files.get("tokenizer.json").is_none() {
        return Err(Error::io(
            base.files.display_name("tokenizer.json"),
            "centroid routers need the base's tokenizer to read the samples",
        ));
    }
    let tokenizer = Tokenizer::from_files(&base.files).await?;
    let gpu = GpuOptions {
        wanted_binding_bytes: o.gpu.wanted_binding_bytes.max(largest_tensor_bytes(base)),
        ..o.gpu.clone()
    };
    let ctx = Rc::new(GpuContext::new(gpu).await?);
    let model = Model::load(ctx, base, LoadOptions::default()).await?;
    for (e, langs) in languages.iter().enumerate() {
        let text: String = langs
            .iter()
            .filter_map(|l| texts.get(l.as_str()))
            .cloned()
            .collect();
        if text.is_empty() {
            continue;
        }
        let ids = tokenizer.encode(&text, false)?;
        let means = mean_router_inputs(&model, &ids).await?;
        for (layer, mean) in means.iter().enumerate() {
            rows[layer][e] = centroid_row(mean, o.temperature);
        }
    }
    Ok((rows, warnings))
}

/// The MoE's config from the base's: the same sizes plus the expert counts and our section.
fn moe_config(
    o: &UpcycleSettings,
    arch: Architecture,
    base: &ModelConfig,
    languages: &[Vec<String>],
    labels: &[String],
) -> Value {
    let experts = labels.len();
    let router = match o.router {
        UpcycleRouter::Centroid => "centroid",
        UpcycleRouter::LanguagePrior => "language-prior",
    };
    let mut raw = base.raw.clone();
    if let Some(map) = raw.as_object_mut() {
        map.insert("architectures".into(), json!([arch.class_name()]));
        map.insert("model_type".into(), json!(arch.model_type()));
        map.insert("num_experts_per_tok".into(), json!(o.top_k));
        map.insert("output_router_logits".into(), json!(false));
        if arch == Architecture::Mixtral {
            map.insert("num_local_experts".into(), json!(experts));
            map.entry("router_aux_loss_coef").or_insert(json!(0.02));
            // Llama has no sliding window; Mixtral reads the key, so make "none" explicit.
            map.entry("sliding_window").or_insert(Value::Null);
            for key in ["mlp_bias", "attention_bias"] {
                map.remove(key);
            }
        } else {
            // Every layer an MoE of the dense FFN's width, the top-k weights summing to 1 so
            // identical experts give the dense model.
            map.insert("num_experts".into(), json!(experts));
            map.remove("num_local_experts");
            map.insert(
                "moe_intermediate_size".into(),
                json!(base.intermediate_size),
            );
            map.insert("norm_topk_prob".into(), json!(true));
            map.insert("decoder_sparse_step".into(), json!(1));
            map.insert("mlp_only_layers".into(), json!([]));
            map.entry("router_aux_loss_coef").or_insert(json!(0.001));
            if arch == Architecture::Qwen2Moe {
                map.insert("qkv_bias".into(), json!(base.qkv_bias));
                map.insert(
                    "shared_expert_intermediate_size".into(),
                    json!(ZERO_SHARED_EXPERT_WIDTH),
                );
            }
        }
        map.insert(
            MoegraftSection::KEY.into(),
            json!({
                "expert_languages": languages,
                "router": router,
                "prior_strength": DEFAULT_PRIOR_STRENGTH,
                "centroid_temperature": o.temperature,
                "non_ffn": if o.average_non_ffn { "average" } else { "base" },
                "experts": labels,
            }),
        );
    }
    raw
}

async fn tensor_bytes(
    ckpts: &[Checkpoint],
    spec: &TensorSpec,
    source: &Source,
    rows: &[Vec<Vec<f32>>],
) -> Result<Vec<u8>> {
    match source {
        Source::Copy(i, name) => Ok(ckpts[*i].read(name).await?.into_dtype(spec.dtype)),
        Source::Zeros => Ok(from_f32(
            spec.dtype,
            &vec![0.0; spec.shape.iter().product()],
        )),
        Source::Average(name) => {
            let mut sum: Vec<f64> = Vec::new();
            for ckpt in ckpts {
                let t = ckpt.read(name).await?;
                let v = to_f32(t.dtype, &t.bytes);
                if sum.is_empty() {
                    sum = vec![0.0; v.len()];
                }
                for (s, x) in sum.iter_mut().zip(v) {
                    *s += x as f64;
                }
            }
            let n = ckpts.len() as f64;
            let mean: Vec<f32> = sum.into_iter().map(|s| (s / n) as f32).collect();
            Ok(from_f32(spec.dtype, &mean))
        }
        Source::Router(layer) => {
            let flat: Vec<f32> = rows[*layer].iter().flatten().copied().collect();
            Ok(from_f32(spec.dtype, &flat))
        }
    }
}
