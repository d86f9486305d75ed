//! The moegraft command line: a thin face over the library (no logic lives only here).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use moegraft::bench::{BenchModel, BenchOptions};
use moegraft::checkpoint::import::import_gguf;
use moegraft::checkpoint::moegraft_section::RouterChoice;
use moegraft::checkpoint::summary::summarize;
use moegraft::checkpoint::{Checkpoint, DType, ModelFiles};
use moegraft::eval::kit::kit_models;
use moegraft::eval::{evaluate, EvalOptions, Report, Suite};
use moegraft::generate::{self, GenerateOptions, SampleSettings};
use moegraft::gpu::{GpuContext, GpuOptions, KernelLayout};
use moegraft::graft::centroid;
use moegraft::graft::plan::GraftOptions;
use moegraft::graft::run::{graft_dirs, GraftInputs};
use moegraft::graft::stats::delta_stats;
use moegraft::graft::stats_rows::token_row_deltas;
use moegraft::graft::upcycle::{self, ExpertSource, UpcycleOptions, UpcycleRouter};
use moegraft::model::open::{open_dir, OpenedModel};
use moegraft::model::{LoadOptions, Model, WeightChoice};
use moegraft::tokenizer::Tokenizer;
use moegraft::train::lesson::{Flow, Settings};
use moegraft::train::teach::{teach as train_teach, TeachOptions};
use moegraft::train::Stage;
use moegraft::{Error, Result};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "moegraft",
    version,
    about = "Graft post-training deltas onto language-expert MoE models, on WebGPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the logits of the last position of a prompt.
    Logits(LogitsArgs),
    /// Generate text from a prompt.
    Generate(GenerateArgs),
    /// Convert a GGUF file into a Hugging Face model directory.
    ImportGguf(ImportArgs),
    /// Build a language-expert MoE (Mixtral, qwen2_moe or qwen3_moe layout) from dense checkpoints of one base.
    Upcycle(UpcycleArgs),
    /// Teach a model new languages on the GPU (MoE-LPR): upcycle a dense one (or give an MoE
    /// more experts), train one new expert per language and the routers on that language's
    /// text, review the routers on replay text, and write the taught MoE.
    Teach(TeachArgs),
    /// Describe the GPU adapter moegraft would use.
    Adapter(GpuArgs),
    /// Graft Δ = instruct − base onto a target: ParamΔ for a dense target, DeltaMoE for a
    /// Mixtral MoE upcycled from the base.
    Graft(GraftArgs),
    /// Score models on an evaluation suite: perplexity per language and exactly-scored
    /// instructions in the chat format.
    Eval(EvalArgs),
    /// Describe a model directory: architecture, parameter counts, dtypes, files, experts and
    /// their languages, provenance. Reads only config.json and the safetensors headers.
    Inspect(InspectArgs),
    /// Norms of Δ = instruct − base per tensor family and per layer.
    DeltaStats(DeltaStatsArgs),
    /// Measure prefill/decode speed, copy bandwidth, merge throughput, memory and per-kernel
    /// GPU time, each speed also as a fraction of its bandwidth bound.
    Bench(BenchArgs),
    /// Measure training speed: MoE-LPR stage-1 steps on random tokens (tokens/s, the memory
    /// the run holds, one step's GPU time per kernel). Takes an MoE model (teach or upcycle's).
    BenchTrain(BenchTrainArgs),
}

#[derive(Args)]
struct EvalArgs {
    /// A model directory to score (repeatable).
    #[arg(long = "model")]
    models: Vec<PathBuf>,
    /// A demo kit: scores its base, instruct, cpt-dense and cpt-moe and the ParamΔ and
    /// DeltaMoE grafts made from them.
    #[arg(long)]
    kit: Option<PathBuf>,
    /// The suite directory (suite.json); default: the kit's eval/.
    #[arg(long)]
    suite: Option<PathBuf>,
    /// Instructions per language and task (default: all).
    #[arg(long)]
    per_task: Option<usize>,
    /// Tokens per perplexity window.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Print the whole report as JSON (every answer included) instead of the table.
    #[arg(long)]
    json: bool,
    /// MoE routing: learned, language-prior or expert=N.
    #[arg(long, value_parser = RouterChoice::parse)]
    router: Option<RouterChoice>,
    #[command(flatten)]
    weights: WeightsArg,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct InspectArgs {
    /// Hugging Face model directory.
    dir: PathBuf,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DeltaStatsArgs {
    /// The dense pretrained model.
    #[arg(long)]
    base: PathBuf,
    /// The base's instruct/chat version.
    #[arg(long)]
    instruct: PathBuf,
    /// Text in a language (repeatable): also measure Δ on the embedding rows of that
    /// language's own tokens (the base's tokenizer), e.g. --text de=german.txt.
    #[arg(long = "text", value_name = "LANG=FILE")]
    texts: Vec<String>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["model", "synthetic"])))]
struct BenchArgs {
    /// Hugging Face model directory.
    #[arg(long)]
    model: Option<PathBuf>,
    /// A config.json: benchmark random weights of its shapes (no weight files needed).
    #[arg(long)]
    synthetic: Option<PathBuf>,
    /// Element type of the synthetic weights.
    #[arg(long, default_value = "f16", value_parser = parse_dtype)]
    dtype: DType,
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Cached tokens at which decode speed is measured, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128,1024")]
    contexts: Vec<usize>,
    /// Timed decode steps per context.
    #[arg(long, default_value_t = 32)]
    decode_tokens: usize,
    /// Untimed runs before each measurement.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed prefills and bandwidth copies.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// MiB copied per bandwidth measurement.
    #[arg(long, default_value_t = 256)]
    copy_mib: u64,
    /// Timed grafts of the model onto itself (0: skip the merge benchmark).
    #[arg(long, default_value_t = 2)]
    merge_repeats: usize,
    /// Skip the per-kernel timestamp profile.
    #[arg(long)]
    no_profile: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    weights: WeightsArg,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct GraftArgs {
    /// The dense pretrained model Δ is measured from.
    #[arg(long)]
    base: PathBuf,
    /// The base's instruct/chat version.
    #[arg(long)]
    instruct: PathBuf,
    /// The continued-pretrained model Δ is added to (dense, or an upcycled Mixtral MoE).
    #[arg(long)]
    target: PathBuf,
    /// Output directory (written under a temporary name, renamed when complete).
    #[arg(long)]
    out: PathBuf,
    /// Scale of Δ.
    #[arg(long, default_value_t = 1.0)]
    alpha: f32,
    /// Scale of Δ per expert (DeltaMoE), comma-separated; default: --alpha for every expert.
    #[arg(long, value_delimiter = ',')]
    expert_alpha: Option<Vec<f32>>,
    /// Element type of the written weights; default: the target's.
    #[arg(long, value_parser = parse_dtype)]
    dtype: Option<DType>,
    /// Cut weight files above this many bytes.
    #[arg(long, default_value_t = moegraft::checkpoint::writer::DEFAULT_MAX_SHARD_BYTES)]
    max_shard_bytes: u64,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct ImportArgs {
    /// The GGUF file (llama, qwen2, or llama with experts → mixtral).
    file: PathBuf,
    /// Output directory (written under a temporary name, renamed when complete).
    #[arg(long)]
    out: PathBuf,
    /// Element type of the written weights.
    #[arg(long, default_value = "f16", value_parser = parse_dtype)]
    dtype: DType,
}

#[derive(Args)]
struct UpcycleArgs {
    /// The dense base model: its FFN becomes expert 0, its other tensors are kept.
    #[arg(long)]
    base: PathBuf,
    /// A dense checkpoint of the same base and its languages: DIR=lang[,lang]. Repeatable;
    /// expert i is the i-th.
    #[arg(long = "expert", value_parser = parse_expert, required = true)]
    experts: Vec<ExpertSource>,
    /// Languages of the base model (expert 0).
    #[arg(long, value_delimiter = ',', default_value = "en")]
    base_languages: Vec<String>,
    /// centroid (router from sample text) or language-prior (centroid router written, but
    /// moegraft routes by each token's script by default).
    #[arg(long, default_value = "centroid", value_parser = parse_upcycle_router)]
    router: UpcycleRouter,
    /// Sample text for the centroid router: LANG=FILE. Repeatable.
    #[arg(long = "samples", value_parser = parse_sample)]
    samples: Vec<(String, PathBuf)>,
    /// Experts per token (1: hard top-1, the safest zero-training default).
    #[arg(long, default_value_t = upcycle::DEFAULT_TOP_K)]
    top_k: usize,
    /// Norm of every centroid router row (the router's logit scale).
    #[arg(long, default_value_t = centroid::DEFAULT_TEMPERATURE)]
    temperature: f32,
    /// Average attention, norms and embeddings over base and experts (as Branch-Train-MiX
    /// does) instead of taking the base's.
    #[arg(long)]
    average_non_ffn: bool,
    /// Output directory (written under a temporary name, renamed when complete).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct TeachArgs {
    /// The model to teach: dense (its FFN becomes expert 0 and stays as it is) or a
    /// Mixtral-layout MoE such as an earlier `teach` output (its experts stay as they are;
    /// each new one starts as a copy of expert 0).
    #[arg(long)]
    model: PathBuf,
    /// A new language and its text: CODE=FILE (paragraphs separated by blank lines).
    /// Repeatable: one new expert each.
    #[arg(long = "lang", value_parser = parse_sample, required = true)]
    languages: Vec<(String, PathBuf)>,
    /// Text of a language the model already knows, for the router review: CODE=FILE.
    #[arg(long = "replay", value_parser = parse_sample, required = true)]
    replay: Vec<(String, PathBuf)>,
    /// Output directory (written under a temporary name, renamed when complete).
    #[arg(long)]
    out: PathBuf,
    /// Stage-1 steps (the new experts and routers learn).
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Review steps (the routers alone; 0 skips the review).
    #[arg(long, default_value_t = 50)]
    review_steps: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Stage 1's peak learning rate (the review runs at half of it).
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    /// Experts per token.
    #[arg(long, default_value_t = 2)]
    top_k: usize,
    /// Seed of the batches' windows.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save a training checkpoint every N steps of each stage into OUT.checkpoints (0: never).
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// Continue a stopped run from its training checkpoint (a step-… folder, or the
    /// OUT.checkpoints folder for its latest); the model, text and settings must match.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print the loss curves and the speed as JSON at the end.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

fn teach(a: TeachArgs) -> Result<()> {
    let options = TeachOptions {
        model: a.model,
        languages: a.languages,
        replay: a.replay,
        out: a.out,
        settings: Settings {
            steps: a.steps,
            review_steps: a.review_steps,
            batch: a.batch,
            seq: a.seq,
            lr: a.lr,
            top_k: a.top_k,
            seed: a.seed,
            checkpoint_every: a.checkpoint_every,
        },
        resume: a.resume,
        gpu: a.gpu.options(),
    };
    // Ctrl-C stops after the step under way, with a checkpoint to --resume from.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = interrupted.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("stopping after this step (Ctrl-C again to quit at once)");
    });
    let s = &options.settings;
    let total = s.steps + s.review_steps;
    let report = train_teach(&options, &mut |r| {
        if let Some(m) = &r.memory {
            eprintln!(
                "training memory besides the weights: {:.1} MB (trained tensors with gradients and moments {:.1} MB, activations {:.1} MB; largest buffer {} {:.1} MB)",
                m.total_bytes as f64 / 1e6,
                m.trained_bytes as f64 / 1e6,
                m.activation_bytes as f64 / 1e6,
                m.largest_buffer.0,
                m.largest_buffer.1 as f64 / 1e6
            );
        }
        let (stage, done) = match r.stage {
            Stage::NewExperts => ("stage 1", r.step),
            Stage::Review => ("review", s.steps + r.step),
        };
        let left = (total - done) * s.batch * s.seq;
        let eta = left as f64 / r.tokens_per_second.max(1e-9);
        if r.step == 1 || r.step == r.steps || r.step % 10 == 0 {
            eprintln!(
                "{stage} step {}/{}: loss {:.4}, {:.0} tokens/s, {:.0} s left",
                r.step, r.steps, r.loss, r.tokens_per_second, eta
            );
        }
        if let Some(dir) = &r.checkpoint {
            eprintln!("checkpoint {dir} (--resume it to continue)");
        }
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    })?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!(
            "taught {} ({} + {} steps, {:.0} tokens/s)",
            report.out,
            report.stage1.loss.len(),
            report.stage2.loss.len(),
            report.tokens_per_second
        );
    }
    Ok(())
}

fn parse_expert(s: &str) -> std::result::Result<ExpertSource, String> {
    let (dir, langs) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("'{s}': expected DIR=lang[,lang]"))?;
    let languages: Vec<String> = langs
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if dir.is_empty() || languages.is_empty() {
        return Err(format!("'{s}': expected DIR=lang[,lang]"));
    }
    Ok(ExpertSource {
        dir: PathBuf::from(dir),
        languages,
    })
}

fn parse_sample(s: &str) -> std::result::Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((lang, file)) if !lang.is_empty() && !file.is_empty() => {
            Ok((lang.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("'{s}': expected LANG=FILE")),
    }
}

fn parse_upcycle_router(s: &str) -> std::result::Result<UpcycleRouter, String> {
    match s {
        "centroid" => Ok(UpcycleRouter::Centroid),
        "language-prior" => Ok(UpcycleRouter::LanguagePrior),
        _ => Err(format!("unknown router '{s}' (centroid or language-prior)")),
    }
}

fn parse_dtype(s: &str) -> std::result::Result<DType, String> {
    DType::parse(s).ok_or_else(|| format!("unknown dtype '{s}' (f32, f16 or bf16)"))
}

#[derive(Args, Clone, Copy)]
struct WeightsArg {
    /// Weight format on the GPU: stored (the checkpoint's dtype) or q8_0 (llama.cpp's 8-bit
    /// blocks for the attention, FFN, expert, embedding and LM-head matrices: about half f16's
    /// memory and bytes read per token; norms, biases and routers stay as stored).
    #[arg(long = "weights", default_value = "stored", value_parser = WeightChoice::parse)]
    choice: WeightChoice,
}

#[derive(Args, Clone)]
struct GpuArgs {
    /// Cap on one storage binding in bytes (to try small devices; larger tensors are split).
    #[arg(long)]
    max_binding: Option<u64>,
    /// Kernel layout: lanes (rows split over invocations, for GPUs), rows (one invocation per
    /// row or head, for CPU adapters) or auto (by the adapter's type).
    #[arg(long, default_value = "auto")]
    kernels: KernelLayout,
    /// Keep to the baseline kernels even where the adapter has subgroups.
    #[arg(long)]
    no_subgroups: bool,
}

impl GpuArgs {
    /// The GPU options these flags ask for (everything else as default).
    fn options(&self) -> GpuOptions {
        GpuOptions {
            max_binding_override: self.max_binding,
            layout: self.kernels,
            no_subgroups: self.no_subgroups,
            ..Default::default()
        }
    }
}

#[derive(Args)]
struct ModelArgs {
    /// Hugging Face model directory (config.json, safetensors, tokenizer files).
    #[arg(long)]
    model: PathBuf,
    /// Longest context to allocate the KV cache for.
    #[arg(long, default_value_t = 4096)]
    max_context: usize,
    /// MoE routing: learned, language-prior or expert=N (default: config.json's
    /// moegraft.router, else learned).
    #[arg(long, value_parser = RouterChoice::parse)]
    router: Option<RouterChoice>,
    #[command(flatten)]
    weights: WeightsArg,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct PromptArgs {
    /// Prompt text, tokenized as given (special tokens in it are recognised).
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    prompt: Option<String>,
    /// Token ids instead of text, comma-separated.
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u32>>,
    /// Wrap the prompt as one user message in the model's chat template.
    #[arg(long)]
    chat: bool,
}

#[derive(Args)]
struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    /// How many of the highest logits to print.
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// 0 means no top-k cut.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// MoE models: also print the experts each prompt and output token went to, per layer.
    #[arg(long)]
    routes: bool,
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    quiet_headless_vulkan();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // Bad arguments get one line like every other error; `--help` has the rest.
            eprintln!("{}", first_paragraph(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    match pollster::block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" (twice) on a
/// headless machine without one; give this process a private one, as a login session would.
/// Runs first in `main`, while the process has one thread.
fn quiet_headless_vulkan() {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let valid = std::env::var_os("XDG_RUNTIME_DIR")
            .map(std::path::PathBuf::from)
            .is_some_and(|d| d.is_absolute() && d.is_dir());
        if valid {
            return;
        }
        let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
        let dir = std::env::temp_dir().join(format!("moegraft-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        let ours = std::fs::metadata(&dir)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0);
        if ours {
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}

/// The first paragraph of a multi-line message, as one line.
fn first_paragraph(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Logits(a) => logits(a).await,
        Command::Generate(a) => generate_text(a).await,
        Command::ImportGguf(a) => {
            let summary = import_gguf(&a.file, &a.out, a.dtype)?;
            println!("{summary}");
            Ok(())
        }
        Command::Graft(a) => graft(a).await,
        Command::Eval(a) => eval(a).await,
        Command::Inspect(a) => {
            let summary = summarize(&open_checkpoint(&a.dir).await?).await?;
            print_report(&summary, a.json, || serde_json::to_value(&summary).ok());
            Ok(())
        }
        Command::DeltaStats(a) => {
            let base = open_checkpoint(&a.base).await?;
            let instruct = open_checkpoint(&a.instruct).await?;
            let stats = delta_stats(&base, &instruct).await?;
            if a.texts.is_empty() {
                print_report(&stats, a.json, || Some(stats.to_json()));
                return Ok(());
            }
            let tokenizer = Tokenizer::from_files(&base.files).await?;
            let mut texts = Vec::new();
            for spec in &a.texts {
                let (lang, file) = spec.split_once('=').ok_or_else(|| {
                    Error::InvalidArgument(format!("--text {spec}: give LANG=FILE"))
                })?;
                let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
                texts.push((lang.to_string(), tokenizer.encode(&text, false)?));
            }
            let rows = token_row_deltas(&base, &instruct, &texts).await?;
            let mut json = stats.to_json();
            json["token_rows"] = serde_json::to_value(&rows).unwrap_or(Value::Null);
            print_report(&format!("{stats}{rows}"), a.json, || Some(json));
            Ok(())
        }
        Command::Upcycle(a) => {
            let options = UpcycleOptions {
                base: a.base,
                base_languages: a.base_languages,
                experts: a.experts,
                router: a.router,
                samples: a.samples,
                top_k: a.top_k,
                temperature: a.temperature,
                average_non_ffn: a.average_non_ffn,
                out: a.out,
                gpu: a.gpu.options(),
            };
            let summary = upcycle::upcycle(&options)?;
            for w in &summary.warnings {
                eprintln!("warning: {w}");
            }
            println!("{summary}");
            Ok(())
        }
        Command::Teach(a) => teach(a),
        Command::Bench(a) => bench(a).await,
        Command::BenchTrain(a) => bench_train(a).await,
        Command::Adapter(a) => {
            let ctx = gpu(&a, 0).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&ctx.summary).unwrap_or_default()
            );
            Ok(())
        }
    }
}

#[derive(Args)]
struct BenchTrainArgs {
    /// An MoE model directory (expert 0 frozen, experts 1… and the routers trained).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Skip the per-kernel timestamp profile.
    #[arg(long)]
    no_profile: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

async fn bench_train(a: BenchTrainArgs) -> Result<()> {
    let load = LoadOptions {
        max_context: a.seq,
        weights: WeightChoice::AsStored,
        ..Default::default()
    };
    let gpu = GpuOptions {
        profiling: !a.no_profile,
        ..a.gpu.options()
    };
    let opened = moegraft::model::open::open_dir(&a.model, load, gpu).await?;
    let ckpt = open_checkpoint(&a.model).await?;
    let options = moegraft::train::TrainOptions {
        batch: a.batch,
        seq: a.seq,
        ..Default::default()
    };
    let r = moegraft::bench::train::train(
        &opened.model,
        &ckpt,
        options,
        a.warmup,
        a.steps,
        !a.no_profile,
    )
    .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return Ok(());
    }
    println!(
        "training {} ({} experts), batch {} × sequence {}: {:.0} tokens/s (median of {}; {:.0}–{:.0}), {:.1} ms/step; {:.1} MB besides the weights",
        a.model.display(),
        r.experts,
        r.batch,
        r.seq,
        r.tokens_per_second.median,
        r.tokens_per_second.samples,
        r.tokens_per_second.min,
        r.tokens_per_second.max,
        r.step_ms.median,
        r.memory.total_bytes as f64 / 1e6
    );
    if let Some(p) = &r.profile {
        println!(
            "one step, {} dispatches, {:.1} ms of kernels ({:.1} ms wall, each dispatch alone):",
            p.dispatches, p.kernel_ms, p.wall_ms
        );
        for g in &p.groups {
            println!(
                "  {:<28} {:>4} × {:>9.2} ms  {:>5.1} %",
                g.kernel,
                g.dispatches,
                g.ms,
                100.0 * g.share
            );
        }
    }
    Ok(())
}

async fn open_checkpoint(dir: &Path) -> Result<Checkpoint> {
    Checkpoint::open(ModelFiles::from_dir(dir)?).await
}

/// The text report, or its JSON on one line. A closed pipe (`| head`) just ends the output.
fn print_report(text: &impl std::fmt::Display, json: bool, value: impl FnOnce() -> Option<Value>) {
    let mut stdout = std::io::stdout().lock();
    let _ = match json {
        true => writeln!(stdout, "{}", value().unwrap_or(Value::Null)),
        false => write!(stdout, "{text}"),
    };
}

async fn bench(a: BenchArgs) -> Result<()> {
    let model = match (a.model, a.synthetic) {
        (Some(dir), None) => BenchModel::Dir(dir),
        (None, Some(config)) => BenchModel::Synthetic {
            config,
            dtype: a.dtype,
        },
        _ => {
            return Err(Error::InvalidArgument(
                "give one of --model and --synthetic".into(),
            ))
        }
    };
    let options = BenchOptions {
        prompt_tokens: a.prompt_tokens,
        contexts: a.contexts,
        decode_tokens: a.decode_tokens,
        warmup: a.warmup,
        repeats: a.repeats,
        copy_bytes: a.copy_mib.saturating_mul(1 << 20),
        merge_repeats: a.merge_repeats,
        profile: !a.no_profile,
        max_binding: a.gpu.max_binding,
        layout: a.gpu.kernels,
        no_subgroups: a.gpu.no_subgroups,
        weights: a.weights.choice,
    };
    let report =
        moegraft::bench::run(&model, &options, &mut |step| eprintln!("bench: {step}…")).await?;
    if a.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::InvalidArgument(format!("report is not serialisable: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", moegraft::bench::report::table(&report));
    }
    Ok(())
}

async fn graft(a: GraftArgs) -> Result<()> {
    let ctx = gpu(&a.gpu, 0).await?;
    let inputs = GraftInputs {
        base: &a.base,
        instruct: &a.instruct,
        target: &a.target,
    };
    let options = GraftOptions {
        alpha: a.alpha,
        expert_alpha: a.expert_alpha,
        dtype: a.dtype,
    };
    let summary = graft_dirs(&ctx, &inputs, &a.out, &options, a.max_shard_bytes).await?;
    println!("{summary} -> {}", a.out.display());
    Ok(())
}

async fn gpu(args: &GpuArgs, wanted_binding_bytes: u64) -> Result<GpuContext> {
    GpuContext::new(GpuOptions {
        wanted_binding_bytes,
        ..args.options()
    })
    .await
}

async fn eval(a: EvalArgs) -> Result<()> {
    let gpu = a.gpu.options();
    let suite_dir = match (&a.suite, &a.kit) {
        (Some(s), _) => s.clone(),
        (None, Some(k)) => k.join("eval"),
        (None, None) => {
            return Err(Error::InvalidArgument(
                "give --suite DIR (or --kit DIR, whose eval/ is the suite)".into(),
            ))
        }
    };
    let suite = Suite::load(&ModelFiles::from_dir(&suite_dir)?).await?;
    let scratch = tempfile_dir("moegraft-eval")?;
    let mut models: Vec<(String, PathBuf)> = Vec::new();
    if let Some(kit) = &a.kit {
        let ctx = GpuContext::new(gpu.clone()).await?;
        models.extend(kit_models(&ctx, kit, &scratch.0).await?);
    }
    for m in &a.models {
        let label = m
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| m.display().to_string());
        models.push((label, m.clone()));
    }
    if models.is_empty() {
        return Err(Error::InvalidArgument(
            "nothing to score: give --model DIR (repeatable) or --kit DIR".into(),
        ));
    }
    let options = EvalOptions {
        window: a.window,
        per_task: a.per_task,
        ..Default::default()
    };
    let mut scores = Vec::new();
    for (label, dir) in &models {
        let load = LoadOptions {
            max_context: 4096,
            router: a.router,
            weights: a.weights.choice,
            ..Default::default()
        };
        let opened = open_dir(dir, load, gpu.clone()).await?;
        note_kept(&opened.model);
        eprintln!("scoring {label} ({})", dir.display());
        let score = evaluate(
            label,
            &opened.model,
            opened.tokenizer.as_ref(),
            &suite,
            &options,
        )
        .await?;
        scores.push(score);
    }
    let report = Report::new(&suite, scores);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.markdown());
    }
    Ok(())
}

/// A scratch directory removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir(prefix: &str) -> Result<ScratchDir> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let label = dir.display().to_string();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&label, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&label, e))?;
    Ok(ScratchDir(dir))
}

async fn load(args: &ModelArgs) -> Result<OpenedModel> {
    let options = LoadOptions {
        max_context: args.max_context,
        router: args.router,
        weights: args.weights.choice,
        ..Default::default()
    };
    let gpu = args.gpu.options();
    let opened = open_dir(&args.model, options, gpu).await?;
    note_kept(&opened.model);
    Ok(opened)
}

/// Tells the user which matrices kept their dtype when Q8_0 was asked for.
fn note_kept(model: &Model) {
    if let Some(note) = model.weights.kept_note() {
        eprintln!("note: {note}");
    }
}

fn prompt_ids(p: &PromptArgs, tokenizer: Option<&Tokenizer>) -> Result<Vec<u32>> {
    if let Some(ids) = &p.ids {
        if p.chat {
            return Err(Error::InvalidArgument(
                "--chat needs --prompt text, not --ids".into(),
            ));
        }
        return Ok(ids.clone());
    }
    let text = p.prompt.as_deref().unwrap_or_default();
    let tokenizer = tokenizer.ok_or_else(|| {
        Error::InvalidArgument("--prompt needs tokenizer.json in the model directory".into())
    })?;
    tokenizer.prompt_ids(text, p.chat)
}

async fn logits(a: LogitsArgs) -> Result<()> {
    let loaded = load(&a.model).await?;
    let ids = prompt_ids(&a.prompt, loaded.tokenizer.as_ref())?;
    let mut session = loaded.model.session()?;
    let logits = loaded.model.logits_last(&mut session, &ids).await?;
    let top = top_k(&logits, a.top);
    if a.json {
        let out = serde_json::json!({
            "input_ids": ids,
            "top_ids": top.iter().map(|(i, _)| i).collect::<Vec<_>>(),
            "top_logits": top.iter().map(|(_, v)| v).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        println!("input ids ({}): {:?}", ids.len(), ids);
        for (rank, (id, value)) in top.iter().enumerate() {
            let token = loaded
                .tokenizer
                .as_ref()
                .and_then(|t| t.decode(&[*id as u32], false).ok())
                .unwrap_or_default();
            println!("{:>3}  {:>8}  {:>12.6}  {:?}", rank + 1, id, value, token);
        }
    }
    Ok(())
}

/// The k largest values with their indices, highest first (lower index first on ties).
fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|i| (i, values[i])).collect()
}

async fn generate_text(a: GenerateArgs) -> Result<()> {
    let loaded = load(&a.model).await?;
    let tokenizer = loaded.tokenizer.as_ref();
    let ids = prompt_ids(&a.prompt, tokenizer)?;
    let options = GenerateOptions {
        max_tokens: a.max_tokens,
        sampling: SampleSettings {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
        },
        seed: a.seed,
        stop_ids: generate::stop_ids(&loaded.model, tokenizer),
        record_routes: a.routes,
    };
    if a.routes && !loaded.model.config.is_moe() {
        return Err(Error::InvalidArgument(format!(
            "--routes: {} is a dense model; it has no experts to route to",
            a.model.model.display()
        )));
    }
    let stream = !a.json;
    let mut stdout = std::io::stdout();
    let result = generate::generate(&loaded.model, tokenizer, &ids, &options, &mut |_, piece| {
        if stream {
            let _ = write!(stdout, "{piece}");
            let _ = stdout.flush();
        }
        true
    })
    .await?;
    if a.json {
        let out = serde_json::json!({
            "input_ids": result.input_ids,
            "output_ids": result.output_ids,
            "text": result.text,
            "stop_reason": result.stop_reason,
            "routes": result.routes,
        });
        println!("{out}");
    } else {
        println!();
        if let Some(routes) = &result.routes {
            print_routes(&result, routes, tokenizer)?;
        }
    }
    Ok(())
}

/// One line per token: its text, then the experts it went to in each layer.
fn print_routes(
    result: &generate::Generation,
    routes: &[generate::TokenRoutes],
    tokenizer: Option<&Tokenizer>,
) -> Result<()> {
    println!("routes (token: experts per layer, prompt tokens first):");
    let ids = result.input_ids.iter().chain(&result.output_ids);
    for (n, (&id, layers)) in ids.zip(routes).enumerate() {
        let text = match tokenizer {
            Some(t) => format!("{:?}", t.decode(&[id], false)?),
            None => format!("#{id}"),
        };
        let side = if n < result.input_ids.len() {
            "prompt"
        } else {
            "output"
        };
        let per_layer: Vec<String> = layers
            .iter()
            .map(|slots| {
                let e: Vec<String> = slots.iter().map(u32::to_string).collect();
                e.join("+")
            })
            .collect();
        println!("{n:>5} {side} {text:<16} {}", per_layer.join(" | "));
    }
    Ok(())
}
