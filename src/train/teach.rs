//! `moegraft teach`: a model learns new languages as MoE-LPR teaches them. A dense one is
//! upcycled first, an MoE gains one expert per language (`lesson_model`), then `lesson::run`
//! trains it, and the
//! taught MoE is written under a temporary name and renamed when complete. Native: it reads
//! files, writes directories and keeps its training checkpoints beside the output.

use std::path::{Path, PathBuf};

use super::lesson::{self, Curve, Flow, Lesson, Resume, Settings, StepReport, Stream};
use super::lesson_model;
use super::memory::TrainMemory;
use super::resume;
use super::step::{TrainOptions, Trainer};
use crate::checkpoint::writer::{write_dir_atomically, DirOutput};
use crate::checkpoint::{Checkpoint, ModelFiles};
use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::model::open::open_dir;
use crate::model::{LoadOptions, WeightChoice};

#[derive(Debug, Clone)]
pub struct TeachOptions {
    /// A dense model (upcycled: the new experts are copies of its FFN) or a Mixtral-layout
    /// MoE (its experts stay frozen; the new ones are copies of expert 0).
    pub model: PathBuf,
    /// (language code, text file) for each new language: one new expert each.
    pub languages: Vec<(String, PathBuf)>,
    /// (language code, text file) of the model's own languages: expert 0's router start and
    /// the review.
    pub replay: Vec<(String, PathBuf)>,
    pub out: PathBuf,
    pub settings: Settings,
    /// Continue from a training checkpoint (or the latest in a checkpoints folder).
    pub resume: Option<PathBuf>,
    pub gpu: GpuOptions,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TeachReport {
    pub memory: TrainMemory,
    pub stage1: Curve,
    pub stage2: Curve,
    pub tokens_per_second: f64,
    pub out: String,
}

/// Where the training checkpoints go: beside the output, named after it.
pub fn checkpoints_dir(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_os_string();
    name.push(".checkpoints");
    PathBuf::from(name)
}

/// Runs the whole lesson; `progress` hears of every step and may stop the run.
pub fn teach(
    o: &TeachOptions,
    progress: &mut dyn FnMut(StepReport) -> Flow,
) -> Result<TeachReport> {
    if o.languages.is_empty() {
        return Err(Error::InvalidArgument(
            "teach needs at least one --lang CODE=FILE".into(),
        ));
    }
    o.settings.check()?;
    if o.replay.is_empty() {
        // Expert 0's languages and text: the router's starting point and the review need them.
        return Err(Error::InvalidArgument(
            "teach needs --replay CODE=FILE: text of a language the model already knows (the router starts from it and the review trains on it)".into(),
        ));
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
    result
}

fn teach_from_upcycled(
    o: &TeachOptions,
    scratch: &Path,
    progress: &mut dyn FnMut(StepReport) -> Flow,
) -> Result<TeachReport> {
    let s = &o.settings;
    let texts = |list: &[(String, PathBuf)]| -> Result<Vec<(String, String)>> {
        list.iter()
            .map(|(l, f)| {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| Error::io(f.display().to_string(), e))?;
                Ok((l.clone(), text))
            })
            .collect()
    };
    let (new_texts, replay_texts) = (texts(&o.languages)?, texts(&o.replay)?);
    let built = write_dir_atomically(scratch, |dir| {
        pollster::block_on(lesson_model::build(
            &|| ModelFiles::from_dir(&o.model),
            &new_texts,
            &replay_texts,
            s.top_k,
            &o.gpu,
            DirOutput::new(dir),
        ))
    })?;
    let load = LoadOptions {
        max_context: s.seq,
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
    let eos = lesson::end_of_text(tokenizer, &opened.model.config);
    let streams = |list: &[(String, PathBuf)], texts: &[(String, String)]| {
        list.iter()
            .zip(texts)
            .map(|((l, f), (_, text))| {
                let label = f.display().to_string();
                Stream::from_text(tokenizer, eos, l, &label, text.as_bytes(), s.seq)
            })
            .collect::<Result<Vec<Stream>>>()
    };
    let (new, replay) = (
        streams(&o.languages, &new_texts)?,
        streams(&o.replay, &replay_texts)?,
    );
    let ckpt = pollster::block_on(Checkpoint::open(ModelFiles::from_dir(scratch)?))?;
    let options = TrainOptions {
        batch: s.batch,
        seq: s.seq,
        frozen_experts: built.frozen_experts,
        ..Default::default()
    };
    let replay_languages: Vec<&str> = replay.iter().map(|r| r.lang.as_str()).collect();
    let prior = lesson_model::prior_streams(&ckpt.config, &replay_languages)?;
    let expert_languages = lesson_model::expert_languages(&ckpt.config)?;
    let mut trainer = pollster::block_on(Trainer::new(&opened.model, &ckpt, options))?;
    let model = o.model.display().to_string();
    let fingerprint = lesson::fingerprint(&model, s, &new, &replay);
    let resume = match &o.resume {
        Some(path) => {
            let (dir, state, tensors) = resume::load(path)?;
            Some(Resume {
                label: dir.display().to_string(),
                state,
                tensors,
            })
        }
        None => None,
    };
    let checkpoints = checkpoints_dir(&o.out);
    let mut save = |state: &resume::RunState, tensors: resume::TensorState| {
        resume::save(&checkpoints, state, &tensors).map(|d| d.display().to_string())
    };
    let run = Lesson {
        settings: s,
        fingerprint,
        new: &new,
        replay: &replay,
        prior,
        resume,
    };
    let state = pollster::block_on(lesson::run(&mut trainer, run, progress, &mut save))?;
    let shares = pollster::block_on(lesson::expert_shares(&trainer, s, &new, &replay))?;
    let taught = (&built, expert_languages.as_slice());
    let record = lesson::record(
        &model,
        s,
        &options,
        (&new, &replay),
        &state,
        &shares,
        taught,
    );
    let trained = pollster::block_on(lesson::read_trained(&trainer))?;
    write_dir_atomically(&o.out, |dir| {
        pollster::block_on(lesson::write_taught(
            &ckpt,
            &trained,
            &record,
            DirOutput::new(dir),
        ))
    })?;
    // The run is complete: its checkpoints would only resume a finished run.
    let _ = std::fs::remove_dir_all(&checkpoints);
    Ok(TeachReport {
        memory: trainer.memory.clone(),
        stage1: Curve {
            loss: state.stage1_loss.clone(),
        },
        stage2: Curve {
            loss: state.stage2_loss.clone(),
        },
        tokens_per_second: state.tokens as f64 / state.seconds.max(1e-9),
        out: o.out.display().to_string(),
    })
}
