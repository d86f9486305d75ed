//! `moegraft teach`: a dense model learns new languages as MoE-LPR teaches them. It is
//! upcycled first (expert 0 = its FFN, one new expert per language, each a copy of the FFN,
//! the router computed from the texts), then stage 1 trains the new experts and the routers
//! on the new languages' text, stage 2 (the review) the routers alone on the replay text mixed
//! 1:2 with new-language text, and the result is written as a checkpoint that `graft`,
//! `generate`, `eval`, the page and transformers load, with `moegraft.json` recording the data
//! and every setting. Native: it reads files and writes a directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::memory::TrainMemory;
use super::resume::{self, RunState};
use super::step::{Stage, StepInput, TrainOptions, Trainer};
use crate::checkpoint::dtype::from_f32;
use crate::checkpoint::provenance::MANIFEST_FILE;
use crate::checkpoint::writer::{
    write_dir_atomically, write_file, write_json, ModelWriter, TensorSpec, DEFAULT_MAX_SHARD_BYTES,
};
use crate::checkpoint::{Checkpoint, ModelFiles};
use crate::error::{Error, Result};
use crate::generate::rng::Rng;
use crate::gpu::GpuOptions;
use crate::graft::upcycle::{self, ExpertSource, UpcycleOptions, UpcycleRouter};
use crate::model::open::open_dir;
use crate::model::{LoadOptions, WeightChoice};
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone)]
pub struct TeachOptions {
    /// A dense model (the new experts are copies of its FFN).
    pub model: PathBuf,
    /// (language code, text file) for each new language: one new expert each.
    pub languages: Vec<(String, PathBuf)>,
    /// (language code, text file) of the model's own languages, for the review.
    pub replay: Vec<(String, PathBuf)>,
    pub out: PathBuf,
    pub steps: usize,
    pub review_steps: usize,
    pub batch: usize,
    pub seq: usize,
    /// Stage 1's peak rate; the review runs at half of it.
    pub lr: f32,
    pub top_k: usize,
    pub seed: u64,
    /// Save a training checkpoint every this many steps of each stage (0: never) into
    /// `checkpoints_dir(out)`.
    pub checkpoint_every: usize,
    /// Continue from a training checkpoint (or the latest in a checkpoints folder).
    pub resume: Option<PathBuf>,
    pub gpu: GpuOptions,
}

/// What the caller of `teach` answers each step: go on, or stop (a checkpoint is saved first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// What one step reports while training runs.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub stage: Stage,
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    pub tokens_per_second: f64,
    /// The training checkpoint saved after this step, if one was.
    pub checkpoint: Option<PathBuf>,
    /// On the run's first report: what training holds on the GPU besides the weights.
    pub memory: Option<TrainMemory>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TeachReport {
    pub memory: TrainMemory,
    pub stage1: Curve,
    pub stage2: Curve,
    pub tokens_per_second: f64,
    pub out: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Curve {
    pub loss: Vec<f32>,
}

/// Warm-up over the first 5 % of the steps (at least one), then a cosine to zero.
pub fn schedule(step: usize, steps: usize, peak: f32) -> f32 {
    let warmup = (steps / 20).max(1);
    if step < warmup {
        return peak * (step + 1) as f32 / warmup as f32;
    }
    let t = (step - warmup) as f32 / (steps - warmup).max(1) as f32;
    peak * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
}

/// A text file as one token stream: its blank-line separated paragraphs, each followed by
/// the end-of-text token.
struct Stream {
    lang: String,
    file: PathBuf,
    sha256: String,
    ids: Vec<u32>,
}

fn read_stream(
    tokenizer: &Tokenizer,
    eos: u32,
    lang: &str,
    file: &Path,
    seq: usize,
) -> Result<Stream> {
    let label = file.display().to_string();
    let bytes = std::fs::read(file).map_err(|e| Error::io(&label, e))?;
    let text =
        String::from_utf8(bytes.clone()).map_err(|_| Error::io(&label, "the text is not UTF-8"))?;
    let mut ids = Vec::new();
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        ids.extend(tokenizer.encode(paragraph, false)?);
        ids.push(eos);
    }
    if ids.len() <= seq + 1 {
        return Err(Error::InvalidArgument(format!(
            "{label}: {} tokens of {lang} text, fewer than one window of {} (give more text or a shorter --seq)",
            ids.len(),
            seq + 1
        )));
    }
    Ok(Stream {
        lang: lang.to_string(),
        file: file.to_path_buf(),
        sha256: format!("{:x}", Sha256::digest(&bytes)),
        ids,
    })
}

/// One batch of windows: row r from `pick(r)`'s stream at a random start; ids, next-token
/// targets, and whether each token is an original-language one.
fn batch_of(
    rng: &mut Rng,
    streams: &[&Stream],
    original: &[bool],
    rows: usize,
    seq: usize,
    pick: impl Fn(usize) -> usize,
) -> (Vec<u32>, Vec<u32>, Vec<bool>) {
    let (mut ids, mut targets, mut is_original) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rows {
        let s = pick(r);
        let stream = &streams[s].ids;
        let start = (rng.next_u64() % (stream.len() - seq - 1) as u64) as usize;
        ids.extend_from_slice(&stream[start..start + seq]);
        targets.extend_from_slice(&stream[start + 1..start + seq + 1]);
        is_original.extend(std::iter::repeat_n(original[s], seq));
    }
    (ids, targets, is_original)
}

/// Runs the whole lesson; `progress` hears of every step.
pub fn teach(
    o: &TeachOptions,
    progress: &mut dyn FnMut(StepReport) -> Flow,
) -> Result<TeachReport> {
    if o.languages.is_empty() {
        return Err(Error::InvalidArgument(
            "teach needs at least one --lang CODE=FILE".into(),
        ));
    }
    if o.replay.is_empty() {
        // Expert 0's languages and text: the router's starting point and the review need them.
        return Err(Error::InvalidArgument(
            "teach needs --replay CODE=FILE: text of a language the model already knows (the router starts from it and the review trains on it)".into(),
        ));
    }
    let dense = pollster::block_on(Checkpoint::open(ModelFiles::from_dir(&o.model)?))?;
    if dense.config.is_moe() {
        return Err(Error::InvalidArgument(format!(
            "{}: an MoE model; teach takes a dense model for now (its FFN becomes expert 0)",
            o.model.display()
        )));
    }
    let scratch = o.out.with_file_name(format!(
        "{}.upcycled-{}",
        o.out
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("teach"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    let result = teach_from_upcycled(o, &scratch, progress);
    let _ = std::fs::remove_dir_all(&scratch);
    let _ = std::fs::remove_dir_all(samples_dir(&scratch));
    result
}

fn teach_from_upcycled(
    o: &TeachOptions,
    scratch: &Path,
    progress: &mut dyn FnMut(StepReport) -> Flow,
) -> Result<TeachReport> {
    let base_languages: Vec<String> = o.replay.iter().map(|(l, _)| l.clone()).collect();
    let samples = router_samples(o, scratch)?;
    upcycle::upcycle(&UpcycleOptions {
        base: o.model.clone(),
        base_languages,
        experts: o
            .languages
            .iter()
            .map(|(lang, _)| ExpertSource {
                dir: o.model.clone(),
                languages: vec![lang.clone()],
            })
            .collect(),
        router: UpcycleRouter::Centroid,
        samples,
        top_k: o.top_k,
        temperature: crate::graft::centroid::DEFAULT_TEMPERATURE,
        average_non_ffn: false,
        out: scratch.to_path_buf(),
        gpu: o.gpu.clone(),
    })?;
    let load = LoadOptions {
        max_context: o.seq,
        weights: WeightChoice::AsStored,
        ..Default::default()
    };
    let opened = pollster::block_on(open_dir(scratch, load, o.gpu.clone()))?;
    let tokenizer = opened.tokenizer.as_ref().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: no tokenizer.json to read the text with",
            o.model.display()
        ))
    })?;
    let eos = tokenizer
        .eos_id()
        .or_else(|| opened.model.config.eos_token_ids.first().copied())
        .unwrap_or(0);
    let ckpt = pollster::block_on(Checkpoint::open(ModelFiles::from_dir(scratch)?))?;
    let new: Vec<Stream> = o
        .languages
        .iter()
        .map(|(l, f)| read_stream(tokenizer, eos, l, f, o.seq))
        .collect::<Result<_>>()?;
    let replay: Vec<Stream> = o
        .replay
        .iter()
        .map(|(l, f)| read_stream(tokenizer, eos, l, f, o.seq))
        .collect::<Result<_>>()?;
    let options = TrainOptions {
        batch: o.batch,
        seq: o.seq,
        ..Default::default()
    };
    let mut trainer = pollster::block_on(Trainer::new(&opened.model, &ckpt, options))?;
    let fingerprint = fingerprint(o, &new, &replay);
    let mut state = match &o.resume {
        Some(path) => resume_from(path, &mut trainer, &fingerprint)?,
        None => RunState {
            stage: 1,
            step: 0,
            optimizer_steps: 0,
            rng: o.seed,
            stage1_loss: Vec::new(),
            stage2_loss: Vec::new(),
            tokens: 0,
            seconds: 0.0,
            fingerprint,
        },
    };
    let checkpoints = checkpoints_dir(&o.out);
    let mut first_report = Some(trainer.memory.clone());
    let mut rng = Rng::new(state.rng);
    let mut clock = Instant::now();
    let new_refs: Vec<&Stream> = new.iter().collect();
    let none_original = vec![false; new.len()];
    // The review: every third row replay text (original-language tokens), the rest new text.
    let mixed: Vec<&Stream> = replay.iter().chain(&new).collect();
    let original: Vec<bool> = (0..mixed.len()).map(|s| s < replay.len()).collect();
    loop {
        let (stage, steps) = match state.stage {
            1 => (Stage::NewExperts, o.steps),
            _ => (Stage::Review, o.review_steps),
        };
        if state.step >= steps {
            if state.stage == 2 {
                break;
            }
            state.stage = 2;
            state.step = 0;
            trainer.reset_optimizer();
            continue;
        }
        let step = state.step;
        let (ids, targets, is_original) = match stage {
            Stage::NewExperts => {
                batch_of(&mut rng, &new_refs, &none_original, o.batch, o.seq, |r| {
                    (r + step * o.batch) % new.len()
                })
            }
            Stage::Review => batch_of(&mut rng, &mixed, &original, o.batch, o.seq, |r| {
                let k = r + step * o.batch;
                if r.is_multiple_of(3) {
                    k % replay.len()
                } else {
                    replay.len() + k % new.len()
                }
            }),
        };
        let (peak, original) = match stage {
            Stage::NewExperts => (o.lr, None),
            Stage::Review => (o.lr / 2.0, Some(is_original.as_slice())),
        };
        let input = StepInput {
            ids: &ids,
            targets: &targets,
            original,
        };
        let loss = pollster::block_on(trainer.step(input, stage, schedule(step, steps, peak)))?;
        state.step += 1;
        state.tokens += ids.len();
        state.seconds += clock.elapsed().as_secs_f64();
        clock = Instant::now();
        match stage {
            Stage::NewExperts => state.stage1_loss.push(loss),
            Stage::Review => state.stage2_loss.push(loss),
        }
        let scheduled = o.checkpoint_every > 0
            && state.step.is_multiple_of(o.checkpoint_every)
            && state.step < steps;
        let save = |state: &mut RunState, rng: &Rng, trainer: &Trainer<'_>| -> Result<PathBuf> {
            state.rng = rng.state();
            state.optimizer_steps = trainer.steps;
            let tensors = pollster::block_on(resume::capture(trainer))?;
            resume::save(&checkpoints, state, &tensors)
        };
        let checkpoint = if scheduled {
            let dir = save(&mut state, &rng, &trainer)?;
            clock = Instant::now();
            Some(dir)
        } else {
            None
        };
        let flow = progress(StepReport {
            stage,
            step: state.step,
            steps,
            loss,
            tokens_per_second: state.tokens as f64 / state.seconds.max(1e-9),
            checkpoint: checkpoint.clone(),
            memory: first_report.take(),
        });
        if flow == Flow::Stop {
            let dir = match checkpoint {
                Some(dir) => dir,
                None => save(&mut state, &rng, &trainer)?,
            };
            let stage_name = if state.stage == 1 {
                "stage 1"
            } else {
                "the review"
            };
            return Err(Error::Stopped {
                done: format!("step {} of {steps} of {stage_name}", state.step),
                checkpoint: dir.display().to_string(),
            });
        }
    }
    let tokens = state.tokens;
    let stage1 = Curve {
        loss: state.stage1_loss.clone(),
    };
    let stage2 = Curve {
        loss: state.stage2_loss.clone(),
    };
    let tokens_per_second = tokens as f64 / state.seconds.max(1e-9);
    let record = json!({
        "teach": {
            "model": o.model.display().to_string(),
            "languages": new.iter().map(|s| json!({"lang": s.lang, "file": s.file.display().to_string(), "sha256": s.sha256, "tokens": s.ids.len()})).collect::<Vec<_>>(),
            "replay": replay.iter().map(|s| json!({"lang": s.lang, "file": s.file.display().to_string(), "sha256": s.sha256, "tokens": s.ids.len()})).collect::<Vec<_>>(),
            "settings": {
                "steps": o.steps, "review_steps": o.review_steps, "batch": o.batch, "seq": o.seq,
                "lr": o.lr, "review_lr": o.lr / 2.0, "top_k": o.top_k, "seed": o.seed,
                "schedule": "linear warm-up over 5 % of the steps, then cosine to 0",
                "adamw": {"beta1": options.beta1, "beta2": options.beta2, "eps": options.eps, "weight_decay": options.weight_decay},
                "max_grad_norm": options.max_grad_norm, "load_balance": options.load_balance, "language_prior": options.language_prior,
            },
            "stage1": {"loss": stage1.loss},
            "stage2": {"loss": stage2.loss},
            "tokens_per_second": tokens_per_second,
            "expert_languages": std::iter::once(o.replay.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>())
                .chain(o.languages.iter().map(|(l, _)| vec![l.clone()]))
                .collect::<Vec<_>>(),
        }
    });
    let trained = read_trained(&trainer)?;
    write_dir_atomically(&o.out, |dir| {
        write_taught(&ckpt, scratch, &trained, &record, dir)
    })?;
    // The run is complete: its checkpoints would only resume a finished run.
    let _ = std::fs::remove_dir_all(&checkpoints);
    Ok(TeachReport {
        memory: trainer.memory.clone(),
        stage1,
        stage2,
        tokens_per_second,
        out: o.out.display().to_string(),
    })
}

/// Where `--checkpoint-every` saves: beside the output, named after it.
pub fn checkpoints_dir(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_os_string();
    name.push(".checkpoints");
    PathBuf::from(name)
}

/// What a resumed run must share with the saved one: the model, the data and every setting
/// that shapes the batches, the schedule or the tensors.
fn fingerprint(o: &TeachOptions, new: &[Stream], replay: &[Stream]) -> Value {
    let data = |s: &[Stream]| {
        s.iter()
            .map(|s| json!([s.lang, s.sha256]))
            .collect::<Vec<_>>()
    };
    json!({
        "model": o.model.display().to_string(),
        "languages": data(new),
        "replay": data(replay),
        "steps": o.steps,
        "review_steps": o.review_steps,
        "batch": o.batch,
        "seq": o.seq,
        "lr": o.lr,
        "top_k": o.top_k,
        "seed": o.seed,
    })
}

fn resume_from(path: &Path, trainer: &mut Trainer<'_>, fingerprint: &Value) -> Result<RunState> {
    let (dir, state, tensors) = resume::load(path)?;
    let label = dir.display().to_string();
    if let Some(diff) = resume::fingerprint_mismatch(&state.fingerprint, fingerprint) {
        return Err(Error::InvalidArgument(format!(
            "{label}: a checkpoint of another run ({diff}); resume with the same model, text and settings"
        )));
    }
    resume::restore(trainer, &label, &tensors)?;
    trainer.steps = state.optimizer_steps;
    Ok(state)
}

/// The router's starting point needs a sample of each language, not all of its text: the first
/// `SAMPLE_CHARS` of each file (whole paragraphs), in files beside the scratch model.
const SAMPLE_CHARS: usize = 16_000;

/// Beside the scratch model, named after it (so with its pid).
fn samples_dir(scratch: &Path) -> PathBuf {
    let mut name = scratch.as_os_str().to_os_string();
    name.push(".samples");
    PathBuf::from(name)
}

fn router_samples(o: &TeachOptions, scratch: &Path) -> Result<Vec<(String, PathBuf)>> {
    let dir = samples_dir(scratch);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let mut out = Vec::new();
    for (k, (lang, file)) in o.languages.iter().chain(&o.replay).enumerate() {
        let text =
            std::fs::read_to_string(file).map_err(|e| Error::io(file.display().to_string(), e))?;
        let mut sample = String::new();
        for paragraph in text.split("\n\n") {
            if !sample.is_empty() && sample.len() + paragraph.len() > SAMPLE_CHARS {
                break;
            }
            sample.push_str(paragraph);
            sample.push_str("\n\n");
        }
        let path = dir.join(format!("{k}.txt"));
        std::fs::write(&path, sample).map_err(|e| Error::io(path.display().to_string(), e))?;
        out.push((lang.clone(), path));
    }
    Ok(out)
}

/// The trained tensors under their checkpoint names, as f32.
fn read_trained(trainer: &Trainer) -> Result<Vec<(String, Vec<f32>)>> {
    let c = &trainer.config;
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut out = Vec::new();
    for (l, t) in trainer.layers.iter().enumerate() {
        let m = format!("model.layers.{l}.block_sparse_moe");
        out.push((
            format!("{m}.gate.weight"),
            pollster::block_on(trainer.read(&t.router))?,
        ));
        let gate_up = pollster::block_on(trainer.read(&t.gate_up))?;
        let down = pollster::block_on(trainer.read(&t.down))?;
        for e in 1..c.num_experts {
            let pairs = &gate_up[(e - 1) * 2 * i * h..e * 2 * i * h];
            let rows = |which: usize| -> Vec<f32> {
                pairs
                    .chunks_exact(h)
                    .skip(which)
                    .step_by(2)
                    .flatten()
                    .copied()
                    .collect()
            };
            out.push((format!("{m}.experts.{e}.w1.weight"), rows(0)));
            out.push((format!("{m}.experts.{e}.w3.weight"), rows(1)));
            out.push((
                format!("{m}.experts.{e}.w2.weight"),
                down[(e - 1) * h * i..e * h * i].to_vec(),
            ));
        }
    }
    Ok(out)
}

/// The upcycled checkpoint with the trained tensors in its dtype, its other files as they are
/// (config.json's router now "learned"), and `moegraft.json`.
fn write_taught(
    ckpt: &Checkpoint,
    upcycled: &Path,
    trained: &[(String, Vec<f32>)],
    record: &Value,
    dir: &Path,
) -> Result<()> {
    let names: Vec<String> = ckpt.tensor_names().map(str::to_string).collect();
    let mut specs = Vec::with_capacity(names.len());
    for name in &names {
        let (_, info) = ckpt.info(name)?;
        let dtype = info.dtype.ok_or_else(|| {
            Error::tensor_format(
                upcycled.display().to_string(),
                name,
                format!("{} is not a weight dtype", info.dtype_name),
            )
        })?;
        specs.push(TensorSpec::new(name.clone(), dtype, info.shape.clone()));
    }
    let mut writer = ModelWriter::new(dir, specs.clone(), DEFAULT_MAX_SHARD_BYTES)?;
    for spec in &specs {
        match trained.iter().find(|(n, _)| n == &spec.name) {
            Some((_, values)) => writer.write_tensor(&spec.name, &from_f32(spec.dtype, values))?,
            None => writer.write_tensor(
                &spec.name,
                &pollster::block_on(ckpt.read(&spec.name))?.bytes,
            )?,
        }
    }
    writer.finish()?;
    for entry in
        std::fs::read_dir(upcycled).map_err(|e| Error::io(upcycled.display().to_string(), e))?
    {
        let entry = entry.map_err(|e| Error::io(upcycled.display().to_string(), e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".safetensors")
            || name.ends_with(".safetensors.index.json")
            || name == MANIFEST_FILE
        {
            continue;
        }
        let bytes = std::fs::read(entry.path())
            .map_err(|e| Error::io(entry.path().display().to_string(), e))?;
        if name == "config.json" {
            let mut config: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::config("config.json", e.to_string()))?;
            config["moegraft"]["router"] = json!("learned");
            write_json(dir, &name, &config)?;
        } else {
            write_file(dir, &name, &bytes)?;
        }
    }
    write_json(dir, MANIFEST_FILE, record)
}
