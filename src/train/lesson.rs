//! The lesson itself, the same natively and in the page: text becomes token streams, stage 1
//! trains the new experts and the routers on the new languages, the review trains the routers
//! on replay text mixed 1:2 with new-language text, and the taught MoE is written through any
//! `OutputFiles` with `moegraft.json` recording the data and every setting. `teach` (native)
//! and `web::teach` (the page) differ only in where files come from and go to.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::lesson_model::LessonModel;
use super::memory::TrainMemory;
use super::resume::{self, RunState, TensorState};
use super::step::{PendingLoss, Stage, StepInput, TrainOptions, Trainer};
use crate::checkpoint::config::ExpertProj;
use crate::checkpoint::dtype::from_f32;
use crate::checkpoint::provenance::MANIFEST_FILE;
use crate::checkpoint::writer::{OutputFiles, ShardedWriter, TensorSpec, DEFAULT_MAX_SHARD_BYTES};
use crate::checkpoint::{Checkpoint, ModelConfig, INDEX_FILE};
use crate::clock::Instant;
use crate::error::{Error, Result};
use crate::generate::rng::Rng;
use crate::tokenizer::Tokenizer;

/// Everything that shapes a run besides the model and the text.
#[derive(Debug, Clone)]
pub struct Settings {
    pub steps: usize,
    pub review_steps: usize,
    pub batch: usize,
    pub seq: usize,
    /// Stage 1's peak rate; the review runs at half of it.
    pub lr: f32,
    pub top_k: usize,
    pub seed: u64,
    /// Save a training checkpoint every this many steps of each stage (0: never).
    pub checkpoint_every: usize,
}

impl Settings {
    /// Refuses shapes a step cannot take, before anything is upcycled or loaded.
    pub fn check(&self) -> Result<()> {
        if self.seq == 0 || self.seq > super::kernels::MAX_TRAIN_SEQ || self.batch == 0 {
            return Err(Error::InvalidArgument(format!(
                "batch {} × sequence {}: the batch must be at least 1 and the sequence must be 1…{}",
                self.batch,
                self.seq,
                super::kernels::MAX_TRAIN_SEQ
            )));
        }
        if self.top_k == 0 {
            return Err(Error::InvalidArgument("top-k must be at least 1".into()));
        }
        Ok(())
    }
}

/// What the caller answers each step: go on, or stop (a checkpoint is saved first).
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
    /// Where the training checkpoint saved after this step went, if one was.
    pub checkpoint: Option<String>,
    /// On the run's first report: what training holds on the GPU besides the weights.
    pub memory: Option<TrainMemory>,
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

/// A text as one token stream: its blank-line separated paragraphs, each followed by the
/// end-of-text token.
pub struct Stream {
    pub lang: String,
    /// Where the text came from (a file, "pasted").
    pub source: String,
    pub sha256: String,
    pub ids: Vec<u32>,
}

impl Stream {
    pub fn from_text(
        tokenizer: &Tokenizer,
        eos: u32,
        lang: &str,
        source: &str,
        bytes: &[u8],
        seq: usize,
    ) -> Result<Self> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| Error::io(source, "the text is not UTF-8"))?;
        let mut ids = Vec::new();
        for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
            ids.extend(tokenizer.encode(paragraph, false)?);
            ids.push(eos);
        }
        if ids.len() <= seq + 1 {
            return Err(Error::InvalidArgument(format!(
                "{source}: {} tokens of {lang} text, fewer than one window of {} (give more text or a shorter sequence)",
                ids.len(),
                seq + 1
            )));
        }
        Ok(Self {
            lang: lang.to_string(),
            source: source.to_string(),
            sha256: format!("{:x}", Sha256::digest(bytes)),
            ids,
        })
    }
}

/// How much of each text the router's starting point (a centroid per language) reads.
pub const ROUTER_SAMPLE_CHARS: usize = 16_000;

/// The token that ends each paragraph of a stream: the tokenizer's end of text, else the
/// config's first end-of-sequence id.
pub fn end_of_text(tokenizer: &Tokenizer, config: &ModelConfig) -> u32 {
    tokenizer
        .eos_id()
        .or_else(|| config.eos_token_ids.first().copied())
        .unwrap_or(0)
}

/// The first `chars` of a text, in whole paragraphs: the router's starting point needs a
/// sample of each language, not all of it.
pub fn sample_of(text: &str, chars: usize) -> String {
    let mut sample = String::new();
    for paragraph in text.split("\n\n") {
        if !sample.is_empty() && sample.len() + paragraph.len() > chars {
            break;
        }
        sample.push_str(paragraph);
        sample.push_str("\n\n");
    }
    sample
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

/// What a resumed run must share with the saved one: the model, the data and every setting
/// that shapes the batches, the schedule or the tensors.
pub fn fingerprint(model: &str, s: &Settings, new: &[Stream], replay: &[Stream]) -> Value {
    let data = |s: &[Stream]| {
        s.iter()
            .map(|s| json!([s.lang, s.sha256]))
            .collect::<Vec<_>>()
    };
    json!({
        "model": model,
        "languages": data(new),
        "replay": data(replay),
        "steps": s.steps,
        "review_steps": s.review_steps,
        "batch": s.batch,
        "seq": s.seq,
        "lr": s.lr,
        "top_k": s.top_k,
        "seed": s.seed,
    })
}

/// A saved run to continue: where it was saved (for messages), its state and tensors.
pub struct Resume {
    pub label: String,
    pub state: RunState,
    pub tensors: TensorState,
}

/// One run's inputs: its settings and fingerprint, the token streams, and a saved run to
/// continue, if any.
pub struct Lesson<'a> {
    pub settings: &'a Settings,
    pub fingerprint: Value,
    pub new: &'a [Stream],
    pub replay: &'a [Stream],
    /// Per replay stream: whether the review's language prior pulls its tokens to expert 0
    /// (`lesson_model::prior_streams`).
    pub prior: Vec<bool>,
    pub resume: Option<Resume>,
}

/// Runs both stages (or what is left of them after `resume`). `save(state, tensors)` stores a
/// training checkpoint and says where; it is called every `checkpoint_every` steps and when
/// `progress` answers `Flow::Stop`, which ends the run with `Error::Stopped`.
pub async fn run(
    trainer: &mut Trainer<'_>,
    lesson: Lesson<'_>,
    progress: &mut dyn FnMut(StepReport) -> Flow,
    save: &mut dyn FnMut(&RunState, TensorState) -> Result<String>,
) -> Result<RunState> {
    let Lesson {
        settings: s,
        fingerprint,
        new,
        replay,
        prior,
        resume,
    } = lesson;
    if new.is_empty() || replay.is_empty() {
        return Err(Error::InvalidArgument(
            "a lesson needs text of at least one new language and of one the model knows".into(),
        ));
    }
    let mut state = match resume {
        Some(r) => {
            if let Some(diff) = resume::fingerprint_mismatch(&r.state.fingerprint, &fingerprint) {
                return Err(Error::InvalidArgument(format!(
                    "{}: a checkpoint of another run ({diff}); resume with the same model, text and settings",
                    r.label
                )));
            }
            resume::restore(trainer, &r.label, &r.tensors)?;
            trainer.steps = r.state.optimizer_steps;
            r.state
        }
        None => RunState {
            stage: 1,
            step: 0,
            optimizer_steps: 0,
            rng: s.seed,
            stage1_loss: Vec::new(),
            stage2_loss: Vec::new(),
            tokens: 0,
            seconds: 0.0,
            fingerprint,
        },
    };
    let mut first_report = Some(trainer.memory.clone());
    let mut rng = Rng::new(state.rng);
    let mut clock = Instant::now();
    let new_refs: Vec<&Stream> = new.iter().collect();
    let none_original = vec![false; new.len()];
    // The review: every third row replay text (original-language tokens), the rest new text.
    let mixed: Vec<&Stream> = replay.iter().chain(new).collect();
    let original: Vec<bool> = (0..mixed.len())
        .map(|i| i < replay.len() && prior.get(i).copied().unwrap_or(true))
        .collect();
    let scheduled = |step: usize, steps: usize| {
        s.checkpoint_every > 0 && step.is_multiple_of(s.checkpoint_every) && step < steps
    };
    // One step stays in flight: step k + 1 is submitted before step k's loss is read, so the
    // GPU never waits for the CPU. A step that ends a stage or is followed by a checkpoint is
    // finished before anything more is submitted, so the state saved is the weights'.
    let mut in_flight: Option<InFlight> = None;
    loop {
        let (stage, steps) = match state.stage {
            1 => (Stage::NewExperts, s.steps),
            _ => (Stage::Review, s.review_steps),
        };
        if state.step >= steps && in_flight.is_none() {
            if state.stage == 2 {
                break;
            }
            state.stage = 2;
            state.step = 0;
            trainer.reset_optimizer();
            continue;
        }
        let must_finish = in_flight
            .as_ref()
            .is_some_and(|f| scheduled(f.step, f.steps));
        let submitted = if state.step < steps && !must_finish {
            let step = state.step;
            let (ids, targets, is_original) = match stage {
                Stage::NewExperts => {
                    batch_of(&mut rng, &new_refs, &none_original, s.batch, s.seq, |r| {
                        (r + step * s.batch) % new.len()
                    })
                }
                Stage::Review => batch_of(&mut rng, &mixed, &original, s.batch, s.seq, |r| {
                    let k = r + step * s.batch;
                    if r.is_multiple_of(3) {
                        k % replay.len()
                    } else {
                        replay.len() + k % new.len()
                    }
                }),
            };
            let (peak, original) = match stage {
                Stage::NewExperts => (s.lr, None),
                Stage::Review => (s.lr / 2.0, Some(is_original.as_slice())),
            };
            let input = StepInput {
                ids: &ids,
                targets: &targets,
                original,
            };
            let loss = trainer.submit(input, stage, schedule(step, steps, peak))?;
            state.step += 1;
            Some(InFlight {
                loss,
                stage,
                step: state.step,
                steps,
                tokens: ids.len(),
            })
        } else {
            None
        };
        let Some(done) = std::mem::replace(&mut in_flight, submitted) else {
            continue;
        };
        let (stage, step, steps) = (done.stage, done.step, done.steps);
        let loss = finish(trainer, done, &mut state, &mut clock).await?;
        let mut checkpoint = None;
        if scheduled(step, steps) {
            checkpoint = Some(save_state(trainer, &mut state, &rng, save).await?);
            clock = Instant::now();
        }
        let flow = progress(StepReport {
            stage,
            step,
            steps,
            loss,
            tokens_per_second: state.tokens as f64 / state.seconds.max(1e-9),
            checkpoint: checkpoint.clone(),
            memory: first_report.take(),
        });
        if flow == Flow::Stop {
            // The step under way finishes too, then the run stops with a checkpoint.
            if let Some(under_way) = in_flight.take() {
                let (step, steps) = (under_way.step, under_way.steps);
                let loss = finish(trainer, under_way, &mut state, &mut clock).await?;
                progress(StepReport {
                    stage,
                    step,
                    steps,
                    loss,
                    tokens_per_second: state.tokens as f64 / state.seconds.max(1e-9),
                    checkpoint: None,
                    memory: None,
                });
                checkpoint = None;
            }
            let at = match checkpoint {
                Some(at) => at,
                None => save_state(trainer, &mut state, &rng, save).await?,
            };
            let stage_name = if stage == Stage::NewExperts {
                "stage 1"
            } else {
                "the review"
            };
            return Err(Error::Stopped {
                done: format!("step {} of {steps} of {stage_name}", state.step),
                checkpoint: at,
            });
        }
    }
    Ok(state)
}

/// A submitted step: its loss on the way, and where it stands in its stage.
struct InFlight {
    loss: PendingLoss,
    stage: Stage,
    /// The step's number in its stage, from 1.
    step: usize,
    steps: usize,
    tokens: usize,
}

/// Waits for a submitted step and books it: its loss on the stage's curve, the time taken.
async fn finish(
    trainer: &Trainer<'_>,
    done: InFlight,
    state: &mut RunState,
    clock: &mut Instant,
) -> Result<f32> {
    let loss = done.loss.wait(trainer.context()).await?;
    state.tokens += done.tokens;
    state.seconds += clock.elapsed().as_secs_f64();
    *clock = Instant::now();
    match done.stage {
        Stage::NewExperts => state.stage1_loss.push(loss),
        Stage::Review => state.stage2_loss.push(loss),
    }
    Ok(loss)
}

async fn save_state(
    trainer: &Trainer<'_>,
    state: &mut RunState,
    rng: &Rng,
    save: &mut dyn FnMut(&RunState, TensorState) -> Result<String>,
) -> Result<String> {
    state.rng = rng.state();
    state.optimizer_steps = trainer.steps;
    let tensors = resume::capture(trainer).await?;
    save(state, tensors)
}

/// Per language (the new ones, then the replay ones): how the taught routers send one batch
/// of its text, a window per row from a fixed seed — per layer, each expert's share of the
/// tokens (top-k: a layer's shares add up to k).
pub async fn expert_shares(
    trainer: &Trainer<'_>,
    s: &Settings,
    new: &[Stream],
    replay: &[Stream],
) -> Result<Vec<(String, Vec<Vec<f64>>)>> {
    let mut rng = Rng::new(s.seed ^ 0x5eed);
    let mut out = Vec::new();
    for stream in new.iter().chain(replay) {
        let (ids, _, _) = batch_of(&mut rng, &[stream], &[false], s.batch, s.seq, |_| 0);
        out.push((stream.lang.clone(), trainer.expert_shares(&ids).await?));
    }
    Ok(out)
}

/// `moegraft.json`'s record of a finished run.
pub fn record(
    model: &str,
    s: &Settings,
    options: &TrainOptions,
    data: (&[Stream], &[Stream]),
    state: &RunState,
    shares: &[(String, Vec<Vec<f64>>)],
    taught: (&LessonModel, &[Vec<String>]),
) -> Value {
    let (new, replay) = data;
    let (built, expert_languages) = taught;
    let data = |s: &[Stream]| {
        s.iter()
            .map(|s| json!({"lang": s.lang, "file": s.source, "sha256": s.sha256, "tokens": s.ids.len()}))
            .collect::<Vec<_>>()
    };
    json!({
        "teach": {
            "model": model,
            "languages": data(new),
            "replay": data(replay),
            "settings": {
                "steps": s.steps, "review_steps": s.review_steps, "batch": s.batch, "seq": s.seq,
                "lr": s.lr, "review_lr": s.lr / 2.0, "top_k": s.top_k, "seed": s.seed,
                "schedule": "linear warm-up over 5 % of the steps, then cosine to 0",
                "adamw": {"beta1": options.beta1, "beta2": options.beta2, "eps": options.eps, "weight_decay": options.weight_decay},
                "max_grad_norm": options.max_grad_norm, "load_balance": options.load_balance, "language_prior": options.language_prior,
                "frozen_experts": options.frozen_experts,
            },
            "stage1": {"loss": state.stage1_loss},
            "stage2": {"loss": state.stage2_loss},
            "tokens_per_second": state.tokens as f64 / state.seconds.max(1e-9),
            "expert_shares": shares.iter().map(|(lang, layers)| (lang.clone(), json!(layers))).collect::<serde_json::Map<_, _>>(),
            "expert_languages": expert_languages,
            "earlier": built.earlier,
        }
    })
}

/// The trained tensors under their checkpoint names, as f32.
pub async fn read_trained(trainer: &Trainer<'_>) -> Result<Vec<(String, Vec<f32>)>> {
    let c = &trainer.config;
    let (h, i) = (c.hidden_size, c.expert_intermediate_size);
    let layout = super::state::layout(c)?;
    let frozen = trainer.frozen_experts();
    let mut out = Vec::new();
    for (l, t) in trainer.layers.iter().enumerate() {
        out.push((layout.router(l), trainer.read(&t.router).await?));
        let gate_up = trainer.read(&t.gate_up).await?;
        let down = trainer.read(&t.down).await?;
        for e in frozen..c.num_experts {
            let k = e - frozen;
            let pairs = &gate_up[k * 2 * i * h..(k + 1) * 2 * i * h];
            let rows = |which: usize| -> Vec<f32> {
                pairs
                    .chunks_exact(h)
                    .skip(which)
                    .step_by(2)
                    .flatten()
                    .copied()
                    .collect()
            };
            out.push((layout.expert(l, e, ExpertProj::Gate), rows(0)));
            out.push((layout.expert(l, e, ExpertProj::Up), rows(1)));
            out.push((
                layout.expert(l, e, ExpertProj::Down),
                down[k * h * i..(k + 1) * h * i].to_vec(),
            ));
        }
    }
    Ok(out)
}

/// The upcycled checkpoint with the trained tensors in its dtype, its other files as they are
/// (config.json's router now "learned"), and `moegraft.json`.
pub async fn write_taught<O: OutputFiles>(
    ckpt: &Checkpoint,
    trained: &[(String, Vec<f32>)],
    record: &Value,
    mut out: O,
) -> Result<()> {
    let names: Vec<String> = ckpt.tensor_names().map(str::to_string).collect();
    let mut specs = Vec::with_capacity(names.len());
    for name in &names {
        let (_, info) = ckpt.info(name)?;
        let dtype = info.dtype.ok_or_else(|| {
            Error::tensor_format(
                ckpt.files.display_name(""),
                name,
                format!("{} is not a weight dtype", info.dtype_name),
            )
        })?;
        specs.push(TensorSpec::new(name.clone(), dtype, info.shape.clone()));
    }
    let mut writer = ShardedWriter::to(&mut out, specs.clone(), DEFAULT_MAX_SHARD_BYTES)?;
    for spec in &specs {
        match trained.iter().find(|(n, _)| n == &spec.name) {
            Some((_, values)) => writer.write_tensor(&spec.name, &from_f32(spec.dtype, values))?,
            None => writer.write_tensor(&spec.name, &ckpt.read(&spec.name).await?.bytes)?,
        }
    }
    writer.finish()?;
    let others: Vec<String> = ckpt
        .files
        .names()
        .filter(|n| !n.ends_with(".safetensors") && *n != INDEX_FILE && *n != MANIFEST_FILE)
        .map(str::to_string)
        .collect();
    for name in others {
        let Some(bytes) = ckpt.files.read_bytes(&name).await? else {
            continue;
        };
        if name == "config.json" {
            let mut config: Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::config(ckpt.files.display_name(&name), e.to_string()))?;
            config["moegraft"]["router"] = json!("learned");
            out.write_json(&name, &config)?;
        } else {
            out.write_file(&name, &bytes)?;
        }
    }
    out.write_json(MANIFEST_FILE, record)
}
