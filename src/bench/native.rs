//! The CLI's edge of the benchmark: the model from a directory or synthetic weights of a
//! config, the graft's inputs from the same directory (ParamΔ of the model onto itself: Δ = 0
//! costs the same as any Δ), and each graft written into a scratch directory.

use std::path::{Path, PathBuf};

use super::merge::GraftFiles;
use super::{measure, synthetic, BenchInputs, BenchOptions, BenchReport, Progress};
use super::{DENSE_BASE_NOTE, SEED};
use crate::checkpoint::writer::{DirOutput, OutputFiles};
use crate::checkpoint::{DType, ModelConfig, ModelFiles};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub enum BenchModel {
    /// A Hugging Face model directory.
    Dir(PathBuf),
    /// Random weights of this config.json's shapes, in `dtype`.
    Synthetic { config: PathBuf, dtype: DType },
}

/// Runs every measurement on `model`; `log` hears which one starts.
pub async fn run(
    model: &BenchModel,
    options: &BenchOptions,
    log: &mut dyn FnMut(&str),
) -> Result<BenchReport> {
    let (files, source) = model_files(model)?;
    // Kept until the end: the synthetic model's directory, and the grafts' scratch.
    let mut synthetic_dir = None;
    let graft = graft_files(model, options, &mut synthetic_dir)?;
    let scratch = TempDir::new("merge")?;
    let inputs = BenchInputs {
        model: files,
        source,
        graft,
    };
    let mut output = |round: usize| RoundDir::new(scratch.0.join(format!("out-{round}")));
    let mut progress = |p: Progress| {
        if let Progress::Step(step) = p {
            log(step);
        }
    };
    measure(inputs, options, &mut output, &mut progress).await
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

/// The model's directory three times over; synthetic weights are written to a scratch
/// directory first (kept in `keep`), unless there is nothing to graft.
fn graft_files(
    m: &BenchModel,
    o: &BenchOptions,
    keep: &mut Option<TempDir>,
) -> Result<std::result::Result<GraftFiles, String>> {
    if o.merge_repeats == 0 {
        return Ok(Err("not run (--merge-repeats 0)".into()));
    }
    let dir = match m {
        BenchModel::Dir(dir) => dir.as_path(),
        BenchModel::Synthetic { config, dtype } => {
            let (text, c) = read_config(config)?;
            if c.is_moe() {
                return Ok(Err(DENSE_BASE_NOTE.into()));
            }
            let scratch = keep.insert(TempDir::new("model")?);
            synthetic::write_dir(&scratch.0, &text, &c, *dtype, SEED)?;
            scratch.0.as_path()
        }
    };
    Ok(Ok(GraftFiles {
        base: ModelFiles::from_dir(dir)?,
        instruct: ModelFiles::from_dir(dir)?,
        target: ModelFiles::from_dir(dir)?,
    }))
}

fn read_config(path: &Path) -> Result<(String, ModelConfig)> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(&label, e))?;
    let config = ModelConfig::from_json(&text, &label)?;
    Ok((text, config))
}

/// A scratch directory under the system's temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Result<Self> {
        let path =
            std::env::temp_dir().join(format!("moegraft-bench-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One graft's output directory, removed when the round drops it (a big model's grafts
/// would otherwise pile up on disk).
struct RoundDir {
    out: DirOutput,
    _removed_on_drop: TempDir,
}

impl RoundDir {
    fn new(path: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
        Ok(Self {
            out: DirOutput::new(&path),
            _removed_on_drop: TempDir(path),
        })
    }
}

impl OutputFiles for RoundDir {
    type File = <DirOutput as OutputFiles>::File;

    fn create(&mut self, name: &str) -> Result<Self::File> {
        self.out.create(name)
    }

    fn complete(&mut self, name: &str, file: Self::File) -> Result<()> {
        self.out.complete(name, file)
    }

    fn label(&self, name: &str) -> String {
        self.out.label(name)
    }
}
