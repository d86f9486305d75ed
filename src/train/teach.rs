//! `moegraft teach`: a dense model learns new languages as MoE-LPR teaches them. It is
//! upcycled first (expert 0 = its FFN, one new expert per language, each a copy of the FFN,
//! the router computed from samples of the texts), then `lesson::run` trains it, and the
//! taught MoE is written under a temporary name and renamed when complete. Native: it reads
//! files, writes directories and keeps its training checkpoints beside the output.

use std::path::{Path, PathBuf};

use super::lesson::{self, Curve, Flow, Lesson, Resume, Settings, StepReport, Stream};
use super::memory::TrainMemory;
use super::resume;
use super::step::{TrainOptions, Trainer};
use crate::checkpoint::writer::{write_dir_atomically, DirOutput};
use crate::checkpoint::{Checkpoint, ModelFiles};
use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::graft::upcycle::{self, ExpertSource, UpcycleOptions, UpcycleRouter};
use crate::model::open::open_dir;
use crate::model::{LoadOptions, WeightChoice};

#[derive(Debug, Clone)]
pub struct TeachOptions {
    /// A dense model (the new experts are copies of its FFN).
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

fn read(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).map_err(|e| Error::io(file.display().to_string(), e))
}

fn teach_from_upcycled(
    o: &TeachOptions,
    scratch: &Path,
    progress: &mut dyn FnMut(StepReport) -> Flow,
) -> Result<TeachReport> {
    let s = &o.settings;
    upcycle::upcycle(&UpcycleOptions {
        base: o.model.clone(),
        base_languages: o.replay.iter().map(|(l, _)| l.clone()).collect(),
        experts: o
            .languages
            .iter()
            .map(|(lang, _)| ExpertSource {
                dir: o.model.clone(),
                languages: vec![lang.clone()],
            })
            .collect(),
        router: UpcycleRouter::Centroid,
        samples: router_samples(o, scratch)?,
        top_k: s.top_k,
        temperature: crate::graft::centroid::DEFAULT_TEMPERATURE,
        average_non_ffn: false,
        out: scratch.to_path_buf(),
        gpu: o.gpu.clone(),
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
    let streams = |list: &[(String, PathBuf)]| -> Result<Vec<Stream>> {
        list.iter()
            .map(|(l, f)| {
                let label = f.display().to_string();
                Stream::from_text(tokenizer, eos, l, &label, &read(f)?, s.seq)
            })
            .collect()
    };
    let (new, replay) = (streams(&o.languages)?, streams(&o.replay)?);
    let ckpt = pollster::block_on(Checkpoint::open(ModelFiles::from_dir(scratch)?))?;
    let options = TrainOptions {
        batch: s.batch,
        seq: s.seq,
        ..Default::default()
    };
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
        resume,
    };
    let state = pollster::block_on(lesson::run(&mut trainer, run, progress, &mut save))?;
    let shares = pollster::block_on(lesson::expert_shares(&trainer, s, &new, &replay))?;
    let record = lesson::record(&model, s, &options, (&new, &replay), &state, &shares);
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
        let path = dir.join(format!("{k}.txt"));
        std::fs::write(&path, lesson::sample_of(&text, lesson::ROUTER_SAMPLE_CHARS))
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        out.push((lang.clone(), path));
    }
    Ok(out)
}
