//! `moegraft bench`: prefill and decode speed, the copy bandwidth that bounds them, merge
//! throughput, memory and per-kernel GPU time, each speed also as a fraction of its bound.
//! Native only (wall-clock timing, temporary directories, /proc); the GPU timing it relies
//! on (`gpu::timing`) is target-independent.

pub mod bandwidth;
pub mod memory;
pub mod merge;
pub mod profile;
pub mod report;
pub mod stats;
pub mod synthetic;
pub mod throughput;

use std::path::PathBuf;
use std::rc::Rc;

use serde::Serialize;

use crate::checkpoint::{DType, ModelConfig, ModelFiles};
use crate::error::{Error, Result};
use crate::gpu::{AdapterSummary, GpuContext, GpuOptions, KernelLayout};
use crate::model::open::{open_files, OpenedModel};
use crate::model::weights::main_dtype;
use crate::model::LoadOptions;
use bandwidth::CopyBandwidth;
use memory::Memory;
use merge::MergeResult;
use profile::KernelProfile;
use stats::Stat;

/// Seed of the synthetic weights and the random prompt.
const SEED: u64 = 0x6d6f65;

#[derive(Debug, Clone)]
pub enum BenchModel {
    /// A Hugging Face model directory.
    Dir(PathBuf),
    /// Random weights of this config.json's shapes, in `dtype`.
    Synthetic { config: PathBuf, dtype: DType },
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub model: BenchModel,
    pub prompt_tokens: usize,
    /// Cached tokens at which decode speed is measured.
    pub contexts: Vec<usize>,
    /// Timed decode steps per context.
    pub decode_tokens: usize,
    /// Untimed runs before each measurement.
    pub warmup: usize,
    /// Timed prefills, and timed copies for the bandwidths.
    pub repeats: usize,
    /// Size of the bandwidth test's buffer.
    pub copy_bytes: u64,
    /// Timed grafts (0: no merge benchmark).
    pub merge_repeats: usize,
    /// Per-kernel timestamps, where the adapter has them.
    pub profile: bool,
    pub max_binding: Option<u64>,
    pub layout: KernelLayout,
    /// Keep to the baseline kernels even where the adapter has subgroups.
    pub no_subgroups: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            model: BenchModel::Dir(PathBuf::new()),
            prompt_tokens: 128,
            contexts: vec![128, 1024],
            decode_tokens: 32,
            warmup: 2,
            repeats: 5,
            copy_bytes: 256 << 20,
            merge_repeats: 2,
            profile: true,
            max_binding: None,
            layout: KernelLayout::Auto,
            no_subgroups: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub source: String,
    pub architecture: String,
    pub dtype: String,
    pub parameters: u64,
    /// Weight bytes one decode step reads.
    pub decode_weight_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: Option<String>,
    pub cores: usize,
    pub os: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Prefill {
    pub tokens: usize,
    pub tokens_per_s: Stat,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decode {
    pub context: usize,
    pub tokens_per_s: Stat,
    /// GPU copy bandwidth ÷ weight bytes per token.
    pub weight_bound_tokens_per_s: f64,
    /// Median speed ÷ that bound.
    pub fraction_of_weight_bound: f64,
    /// The same with the KV cache read at this context added to the bytes.
    pub kv_bytes: u64,
    pub fraction_of_weight_kv_bound: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Merge {
    #[serde(flatten)]
    pub result: MergeResult,
    /// Median merge GB/s ÷ the host copy bandwidth.
    pub fraction_of_host_copy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub machine: Machine,
    pub adapter: AdapterSummary,
    pub model: ModelSummary,
    pub copy_bandwidth: CopyBandwidth,
    pub prefill: Prefill,
    pub decode: Vec<Decode>,
    /// `None` with `merge_note` saying why.
    pub merge: Option<Merge>,
    pub merge_note: Option<String>,
    pub memory: Memory,
    /// One decode step at the first context, by kernel; `None` with `kernels_note` saying why.
    pub kernels: Option<KernelProfile>,
    pub kernels_note: Option<String>,
}

/// Runs every measurement; `log` hears which one starts (they can take minutes on a CPU
/// adapter).
pub async fn run(options: &BenchOptions, log: &mut dyn FnMut(&str)) -> Result<BenchReport> {
    check(options)?;
    let longest = options.contexts.iter().copied().max().unwrap_or(0);
    let needed = longest.max(options.prompt_tokens) + options.warmup + options.decode_tokens + 1;
    let load = LoadOptions {
        max_context: needed,
        ..LoadOptions::default()
    };
    let gpu = GpuOptions {
        max_binding_override: options.max_binding,
        layout: options.layout,
        no_subgroups: options.no_subgroups,
        profiling: options.profile,
        ..GpuOptions::default()
    };
    log("loading the model");
    let (files, source) = model_files(&options.model)?;
    let OpenedModel { model, .. } = open_files(files, load, gpu, &mut |_, _| {}).await?;
    if model.options.max_context < needed {
        return Err(Error::InvalidArgument(format!(
            "the benchmark needs {needed} positions but the model has {} (lower --contexts or --decode-tokens)",
            model.options.max_context
        )));
    }
    let ctx: Rc<GpuContext> = model.ctx.clone();

    log("copy bandwidth");
    let copy = bandwidth::measure(&ctx, options.copy_bytes, options.repeats).await?;
    log("prefill");
    let prefill = throughput::prefill(&model, options, SEED).await?;
    let weight_bytes = memory::decode_weight_bytes(&model);
    let bw = copy.gpu_bytes_per_s();
    let mut decode = Vec::new();
    let mut kernels = None;
    for (n, &context) in options.contexts.iter().enumerate() {
        log(&format!("decode at context {context}"));
        let mut session = model.session()?;
        let speed = throughput::decode(&model, &mut session, context, options, SEED).await?;
        if n == 0 && options.profile {
            kernels = profile::decode_step(&model, &mut session).await?;
        }
        let kv_bytes = memory::kv_bytes(&model, context);
        let bound = bw / weight_bytes as f64;
        decode.push(Decode {
            context,
            weight_bound_tokens_per_s: bound,
            fraction_of_weight_bound: speed.median / bound,
            fraction_of_weight_kv_bound: speed.median * (weight_bytes + kv_bytes) as f64 / bw,
            kv_bytes,
            tokens_per_s: speed,
        });
    }
    let kernels_note = kernels_note(&ctx, options, kernels.is_some());

    if options.merge_repeats > 0 {
        log("merge");
    }
    let (merge, merge_note) = run_merge(&ctx, &model.config, options, &copy).await?;
    let memory = Memory {
        peak_host_rss_bytes: memory::peak_rss_bytes(),
        gpu_weight_bytes: memory::gpu_weight_bytes(&model),
        gpu_kv_cache_bytes: memory::kv_bytes(&model, model.options.max_context),
    };
    Ok(BenchReport {
        machine: machine(),
        adapter: ctx.summary.clone(),
        model: ModelSummary {
            source,
            architecture: model.config.architecture.model_type().to_string(),
            dtype: main_dtype(&model.weights).safetensors_name().to_lowercase(),
            parameters: memory::parameters(&model),
            decode_weight_bytes: weight_bytes,
        },
        copy_bandwidth: copy,
        prefill,
        decode,
        merge,
        merge_note,
        memory,
        kernels,
        kernels_note,
    })
}

fn check(o: &BenchOptions) -> Result<()> {
    let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
    if o.prompt_tokens == 0 {
        return bad("--prompt-tokens must be at least 1");
    }
    if o.contexts.is_empty() || o.contexts.contains(&0) {
        return bad("--contexts needs one or more positive token counts");
    }
    if o.decode_tokens == 0 || o.repeats == 0 {
        return bad("--decode-tokens and --repeats must be at least 1");
    }
    Ok(())
}

/// The model's files and a description of where they came from.
fn model_files(m: &BenchModel) -> Result<(ModelFiles, String)> {
    match m {
        BenchModel::Dir(dir) => Ok((ModelFiles::from_dir(dir)?, dir.display().to_string())),
        BenchModel::Synthetic { config, dtype } => {
            let (text, c) = read_config(config)?;
            let files = synthetic::model_files(&text, &c, *dtype, SEED)?;
            let source = format!(
                "synthetic {} weights of {}",
                dtype.safetensors_name().to_lowercase(),
                config.display()
            );
            Ok((files, source))
        }
    }
}

fn read_config(path: &std::path::Path) -> Result<(String, ModelConfig)> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(&label, e))?;
    let config = ModelConfig::from_json(&text, &label)?;
    Ok((text, config))
}

async fn run_merge(
    ctx: &GpuContext,
    config: &ModelConfig,
    o: &BenchOptions,
    copy: &CopyBandwidth,
) -> Result<(Option<Merge>, Option<String>)> {
    if o.merge_repeats == 0 {
        return Ok((None, Some("not run (--merge-repeats 0)".into())));
    }
    if config.is_moe() {
        return Ok((
            None,
            Some("not run: a DeltaMoE graft needs a dense base; bench a dense config".into()),
        ));
    }
    let result = match &o.model {
        BenchModel::Dir(dir) => merge::measure(ctx, dir, o.merge_repeats).await?,
        BenchModel::Synthetic {
            config: path,
            dtype,
        } => {
            let (text, c) = read_config(path)?;
            let dir = merge::TempDir::new("model")?;
            synthetic::write_dir(&dir.0, &text, &c, *dtype, SEED)?;
            merge::measure(ctx, &dir.0, o.merge_repeats).await?
        }
    };
    let fraction = result.merge_gbps.median / copy.host_gbps.median;
    Ok((
        Some(Merge {
            result,
            fraction_of_host_copy: fraction,
        }),
        None,
    ))
}

fn kernels_note(ctx: &GpuContext, o: &BenchOptions, profiled: bool) -> Option<String> {
    if profiled {
        None
    } else if !o.profile {
        Some("not run (--no-profile)".into())
    } else if !ctx.summary.timestamp_queries {
        Some("not available: the adapter has no timestamp queries".into())
    } else {
        Some("not available: no dispatch was timed".into())
    }
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!(" {}", s.trim()))
        .unwrap_or_default();
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        os: format!("{}{kernel}", std::env::consts::OS),
    }
}
