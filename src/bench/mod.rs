//! The benchmark: prefill and decode speed, the copy bandwidth that bounds them, merge
//! throughput, memory and per-kernel GPU time, each speed also as a fraction of its bound.
//! One measuring path for both targets: `measure` takes the model's and the graft's files
//! and makes each merge output through the caller, so only the edges differ — `native` (the
//! CLI: directories, synthetic weights, scratch directories), `web::bench` (the page: picked or
//! fetched `Blob`s, output kept in memory), `clock` and `host`.

pub mod bandwidth;
pub use crate::clock;
pub mod host;
pub mod memory;
pub mod merge;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
pub mod profile;
pub mod report;
pub mod stats;
pub mod synthetic;
pub mod throughput;
pub mod train;

use std::rc::Rc;

use serde::Serialize;

use crate::checkpoint::writer::OutputFiles;
use crate::checkpoint::ModelFiles;
use crate::error::{Error, Result};
use crate::gpu::{AdapterSummary, GpuContext, GpuOptions, KernelLayout};
use crate::model::open::{open_files, OpenedModel};
use crate::model::weights::{main_dtype, main_format};
use crate::model::{LoadOptions, WeightChoice};
use bandwidth::CopyBandwidth;
use memory::Memory;
use merge::{GraftFiles, GraftInputs, MergeResult};
#[cfg(not(target_arch = "wasm32"))]
pub use native::{run, BenchModel};
use profile::KernelProfile;
use stats::Stat;

/// Seed of the synthetic weights and the random prompt.
pub const SEED: u64 = 0x6d6f65;

#[derive(Debug, Clone)]
pub struct BenchOptions {
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
    /// The weight format to load the model in.
    pub weights: WeightChoice,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
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
            weights: WeightChoice::AsStored,
        }
    }
}

/// What a benchmark runs on.
pub struct BenchInputs {
    pub model: ModelFiles,
    /// Where the model came from, for the report.
    pub source: String,
    /// The graft the merge figure times, or why there is none.
    pub graft: std::result::Result<GraftFiles, String>,
}

/// What `measure` tells its caller as it goes.
pub enum Progress<'a> {
    /// A measurement starts (one can take minutes on a CPU adapter).
    Step(&'a str),
    /// A part of the report is ready: its field in `BenchReport` and its value (for `decode`,
    /// one context's entry of the list).
    Figure(&'static str, serde_json::Value),
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub source: String,
    pub architecture: String,
    /// The dtype the checkpoint stores its matrices in.
    pub dtype: String,
    /// The format the GPU holds them in: the dtype, or `q8_0`.
    pub weight_format: String,
    /// Matrices that keep their dtype although Q8_0 was asked for, and why (`None`: none).
    pub weight_format_note: Option<String>,
    pub parameters: u64,
    /// Weight bytes one decode step reads, in the format the GPU holds them.
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
    /// Shader read ceiling ÷ weight bytes per token: the most any kernel that reads each
    /// weight once could reach on this adapter.
    pub read_ceiling_tokens_per_s: f64,
    /// Median speed ÷ that ceiling.
    pub fraction_of_read_ceiling: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Merge {
    #[serde(flatten)]
    pub result: MergeResult,
    /// Median merge GB/s ÷ the host copy bandwidth.
    pub fraction_of_host_copy: f64,
    /// Median merge GB/s ÷ the GPU copy bandwidth (the bound the decode figures use).
    pub fraction_of_gpu_copy: f64,
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

/// Runs every measurement on `inputs`. `output(round)` makes each timed graft's output;
/// `progress` hears each step and each figure as soon as it is measured.
pub async fn measure<O: OutputFiles>(
    inputs: BenchInputs,
    options: &BenchOptions,
    output: &mut dyn FnMut(usize) -> Result<O>,
    progress: &mut dyn FnMut(Progress),
) -> Result<BenchReport> {
    check(options)?;
    let longest = options.contexts.iter().copied().max().unwrap_or(0);
    let needed = longest.max(options.prompt_tokens) + options.warmup + options.decode_tokens + 1;
    let load = LoadOptions {
        max_context: needed,
        weights: options.weights,
        ..LoadOptions::default()
    };
    let gpu = GpuOptions {
        max_binding_override: options.max_binding,
        layout: options.layout,
        no_subgroups: options.no_subgroups,
        profiling: options.profile,
        ..GpuOptions::default()
    };
    progress(Progress::Step("loading the model"));
    let OpenedModel { model, .. } = open_files(inputs.model, load, gpu, &mut |_, _| {}).await?;
    if model.options.max_context < needed {
        return Err(Error::InvalidArgument(format!(
            "the benchmark needs {needed} positions but the model has {} (lower the contexts or the decode tokens)",
            model.options.max_context
        )));
    }
    let ctx: Rc<GpuContext> = model.ctx.clone();
    let weight_bytes = memory::decode_weight_bytes(&model);
    let summary = ModelSummary {
        source: inputs.source,
        architecture: model.config.architecture.model_type().to_string(),
        dtype: main_dtype(&model.weights).safetensors_name().to_lowercase(),
        weight_format: main_format(&model.weights).to_string(),
        weight_format_note: model.weights.kept_note(),
        parameters: memory::parameters(&model),
        decode_weight_bytes: weight_bytes,
    };
    let machine = host::machine();
    figure(progress, "machine", &machine);
    figure(progress, "adapter", &ctx.summary);
    figure(progress, "model", &summary);

    progress(Progress::Step("copy bandwidth"));
    let copy = bandwidth::measure(&ctx, options.copy_bytes, options.repeats).await?;
    figure(progress, "copy_bandwidth", &copy);
    progress(Progress::Step("prefill"));
    let prefill = throughput::prefill(&model, options, SEED).await?;
    figure(progress, "prefill", &prefill);
    let bw = copy.gpu_bytes_per_s();
    let mut decode = Vec::new();
    let mut kernels = None;
    for (n, &context) in options.contexts.iter().enumerate() {
        progress(Progress::Step(&format!("decode at context {context}")));
        let mut session = model.session()?;
        let speed = throughput::decode(&model, &mut session, context, options, SEED).await?;
        if n == 0 && options.profile {
            progress(Progress::Step("per-kernel GPU time"));
            kernels = profile::decode_step(&model, &mut session).await?;
        }
        let kv_bytes = memory::kv_bytes(&model, context);
        let bound = bw / weight_bytes as f64;
        let ceiling = copy.read_ceiling_bytes_per_s() / weight_bytes as f64;
        let entry = Decode {
            context,
            weight_bound_tokens_per_s: bound,
            fraction_of_weight_bound: speed.median / bound,
            fraction_of_weight_kv_bound: speed.median * (weight_bytes + kv_bytes) as f64 / bw,
            read_ceiling_tokens_per_s: ceiling,
            fraction_of_read_ceiling: speed.median / ceiling,
            kv_bytes,
            tokens_per_s: speed,
        };
        figure(progress, "decode", &entry);
        decode.push(entry);
    }
    let kernels_note = kernels_note(&ctx, options, kernels.is_some());
    figure(progress, "kernels", &kernels);
    figure(progress, "kernels_note", &kernels_note);

    if options.merge_repeats > 0 && inputs.graft.is_ok() {
        progress(Progress::Step("merge"));
    }
    let (merge, merge_note) = run_merge(&ctx, inputs.graft, options, &copy, output).await?;
    figure(progress, "merge", &merge);
    figure(progress, "merge_note", &merge_note);
    let memory = Memory {
        peak_host_rss_bytes: host::peak_rss_bytes(),
        wasm_memory_bytes: host::wasm_memory_bytes(),
        gpu_weight_bytes: memory::gpu_weight_bytes(&model),
        gpu_kv_cache_bytes: memory::kv_bytes(&model, model.options.max_context),
    };
    figure(progress, "memory", &memory);
    Ok(BenchReport {
        machine,
        adapter: ctx.summary.clone(),
        model: summary,
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

/// Tells `progress` that a part of the report is ready.
fn figure(progress: &mut dyn FnMut(Progress), name: &'static str, value: &impl Serialize) {
    // Our own plain structs: serialising them cannot fail.
    let json = serde_json::to_value(value).unwrap_or_default();
    progress(Progress::Figure(name, json));
}

fn check(o: &BenchOptions) -> Result<()> {
    let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
    if o.prompt_tokens == 0 {
        return bad("prompt tokens must be at least 1");
    }
    if o.contexts.is_empty() || o.contexts.contains(&0) {
        return bad("contexts needs one or more positive token counts");
    }
    if o.decode_tokens == 0 || o.repeats == 0 {
        return bad("decode tokens and repeats must be at least 1");
    }
    Ok(())
}

async fn run_merge<O: OutputFiles>(
    ctx: &GpuContext,
    graft: std::result::Result<GraftFiles, String>,
    o: &BenchOptions,
    copy: &CopyBandwidth,
    output: &mut dyn FnMut(usize) -> Result<O>,
) -> Result<(Option<Merge>, Option<String>)> {
    if o.merge_repeats == 0 {
        return Ok((None, Some("not run (merge repeats: 0)".into())));
    }
    let files = match graft {
        Ok(files) => files,
        Err(why) => return Ok((None, Some(why))),
    };
    let inputs = GraftInputs::open(files).await?;
    if inputs.base.config.is_moe() {
        return Ok((None, Some(DENSE_BASE_NOTE.into())));
    }
    let result = merge::measure(ctx, &inputs, o.merge_repeats, output).await?;
    let fraction_of_host_copy = result.merge_gbps.median / copy.host_gbps.median;
    let fraction_of_gpu_copy = result.merge_gbps.median * 1e9 / copy.gpu_bytes_per_s();
    Ok((
        Some(Merge {
            result,
            fraction_of_host_copy,
            fraction_of_gpu_copy,
        }),
        None,
    ))
}

/// Why an MoE model is not grafted onto itself.
pub const DENSE_BASE_NOTE: &str = "not run: a graft needs a dense base; bench a dense model";

fn kernels_note(ctx: &GpuContext, o: &BenchOptions, profiled: bool) -> Option<String> {
    if profiled {
        None
    } else if !o.profile {
        Some("not run (profiling off)".into())
    } else if !ctx.summary.timestamp_queries {
        Some("not available: the adapter has no timestamp queries".into())
    } else {
        Some("not available: no dispatch was timed".into())
    }
}
