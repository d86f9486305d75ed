//! Resumable runs: a training checkpoint holds every trained tensor with its AdamW moments
//! (`state.safetensors`, f32) and where the run stands (`state.json`: stage, step, the
//! optimiser's step count, the batch sampler's state, the loss curves so far, and the run's
//! fingerprint: the model, the data's sha256 and every setting that shapes the run). The
//! same bytes natively (a folder) and in the page (OPFS).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::step::Trainer;
use crate::checkpoint::dtype::DType;
use crate::checkpoint::safetensors::read_header;
use crate::checkpoint::source::MemorySource;
use crate::checkpoint::writer::{SafetensorsWriter, TensorSpec};
use crate::error::{Error, Result};

pub const STATE_JSON: &str = "state.json";
pub const STATE_TENSORS: &str = "state.safetensors";

/// Where a run stands after `step` steps of `stage` (1: new experts, 2: the review).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    pub stage: u8,
    pub step: usize,
    /// AdamW's step count (its bias corrections); the review restarts it.
    pub optimizer_steps: u32,
    /// The batch sampler's state.
    pub rng: u64,
    pub stage1_loss: Vec<f32>,
    pub stage2_loss: Vec<f32>,
    /// Tokens trained on and seconds spent so far (the speed across a resume).
    pub tokens: usize,
    pub seconds: f64,
    /// What must match for a resume to continue the same run.
    pub fingerprint: Value,
}

/// The trained tensors with their moments: (name, values, m, v).
pub type TensorState = Vec<(String, Vec<f32>, Vec<f32>, Vec<f32>)>;

/// Reads the trainer's tensors and moments off the GPU.
pub async fn capture(trainer: &Trainer<'_>) -> Result<TensorState> {
    let mut out = Vec::new();
    for t in trainer.trained_tensors() {
        let (p, m, v) = trainer.read_with_moments(t).await?;
        out.push((t.name.clone(), p, m, v));
    }
    Ok(out)
}

/// `state.json` and `state.safetensors` as bytes.
pub fn encode(state: &RunState, tensors: &TensorState) -> Result<(Vec<u8>, Vec<u8>)> {
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| Error::format(STATE_JSON, format!("cannot serialise: {e}")))?;
    let mut specs = Vec::new();
    for (name, p, _, _) in tensors {
        for suffix in ["", ".m", ".v"] {
            specs.push(TensorSpec::new(
                format!("{name}{suffix}"),
                DType::F32,
                vec![p.len()],
            ));
        }
    }
    let mut writer = SafetensorsWriter::new(Vec::new(), STATE_TENSORS, specs)?;
    for (name, p, m, v) in tensors {
        for (suffix, values) in [("", p), (".m", m), (".v", v)] {
            writer.write_tensor(&format!("{name}{suffix}"), bytemuck::cast_slice(values))?;
        }
    }
    Ok((json, writer.finish()?))
}

/// Parses a checkpoint's two files; `label` names it in errors.
pub async fn decode(label: &str, json: &[u8], tensors: Vec<u8>) -> Result<(RunState, TensorState)> {
    let state: RunState = serde_json::from_slice(json)
        .map_err(|e| Error::format(format!("{label}/{STATE_JSON}"), e.to_string()))?;
    let file = format!("{label}/{STATE_TENSORS}");
    let source = MemorySource::new(&file, tensors);
    let header = read_header(&source).await?;
    let bytes = source.bytes();
    let read = |name: &str| -> Result<Vec<f32>> {
        let info = header
            .tensors
            .get(name)
            .ok_or_else(|| Error::tensor_format(&file, name, "missing"))?;
        if info.dtype != Some(DType::F32) {
            return Err(Error::tensor_format(&file, name, "not F32"));
        }
        let range = info.offset as usize..(info.offset + info.len) as usize;
        Ok(bytemuck::pod_collect_to_vec(&bytes[range]))
    };
    let mut out = Vec::new();
    for name in header.tensors.keys() {
        if name.ends_with(".m") || name.ends_with(".v") {
            continue;
        }
        out.push((
            name.clone(),
            read(name)?,
            read(&format!("{name}.m"))?,
            read(&format!("{name}.v"))?,
        ));
    }
    Ok((state, out))
}

/// The first setting in which `saved` and `now` differ, as "key: saved → now".
pub fn fingerprint_mismatch(saved: &Value, now: &Value) -> Option<String> {
    let (Some(a), Some(b)) = (saved.as_object(), now.as_object()) else {
        return (saved != now).then(|| format!("{saved} → {now}"));
    };
    a.keys()
        .chain(b.keys().filter(|k| !a.contains_key(*k)))
        .find(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("(none)".to_string(), Value::to_string);
            format!("{k}: {} → {}", show(a.get(k)), show(b.get(k)))
        })
}

/// Puts saved tensors and moments back into the trainer, checking names and lengths.
pub fn restore(trainer: &mut Trainer<'_>, label: &str, tensors: &TensorState) -> Result<()> {
    let expected: Vec<(String, usize)> = trainer
        .trained_tensors()
        .map(|t| (t.name.clone(), t.len))
        .collect();
    if expected.len() != tensors.len() {
        return Err(Error::InvalidArgument(format!(
            "{label}: {} trained tensors saved, this run trains {}",
            tensors.len(),
            expected.len()
        )));
    }
    for (name, len) in &expected {
        let (_, p, m, v) = tensors
            .iter()
            .find(|(n, ..)| n == name)
            .ok_or_else(|| Error::tensor_format(label, name, "not in the checkpoint"))?;
        if p.len() != *len || m.len() != *len || v.len() != *len {
            return Err(Error::tensor_format(
                label,
                name,
                format!("{} values saved, the model's has {len}", p.len()),
            ));
        }
        trainer.write_with_moments(name, p, m, v)?;
    }
    Ok(())
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{latest, load, save};

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::checkpoint::writer::{write_dir_atomically, write_file};

    /// Writes `root/step-S-NNNNNN` (atomically) and then removes the older ones.
    pub fn save(root: &Path, state: &RunState, tensors: &TensorState) -> Result<PathBuf> {
        let (json, bytes) = encode(state, tensors)?;
        let dir = root.join(format!("step-{}-{:06}", state.stage, state.step));
        let _ = std::fs::remove_dir_all(&dir);
        write_dir_atomically(&dir, |d| {
            write_file(d, STATE_TENSORS, &bytes)?;
            write_file(d, STATE_JSON, &json)
        })?;
        for entry in
            std::fs::read_dir(root).map_err(|e| Error::io(root.display().to_string(), e))?
        {
            let path = entry
                .map_err(|e| Error::io(root.display().to_string(), e))?
                .path();
            if path != dir && is_checkpoint_name(&path) {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        Ok(dir)
    }

    fn is_checkpoint_name(path: &Path) -> bool {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("step-") && !n.contains(".partial-"))
    }

    /// `path` itself when it is a checkpoint, else the latest complete one inside it.
    pub fn latest(path: &Path) -> Result<PathBuf> {
        if path.join(STATE_JSON).is_file() {
            return Ok(path.to_path_buf());
        }
        let label = path.display().to_string();
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(&label, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_checkpoint_name(p) && p.join(STATE_JSON).is_file())
            .collect();
        found.sort();
        found.pop().ok_or_else(|| {
            Error::io(
                &label,
                "no training checkpoint here (a folder with state.json)",
            )
        })
    }

    pub fn load(path: &Path) -> Result<(PathBuf, RunState, TensorState)> {
        let dir = latest(path)?;
        let label = dir.display().to_string();
        let read = |name: &str| {
            let file = dir.join(name);
            std::fs::read(&file).map_err(|e| Error::io(file.display().to_string(), e))
        };
        let (state, tensors) =
            pollster::block_on(decode(&label, &read(STATE_JSON)?, read(STATE_TENSORS)?))?;
        Ok((dir, state, tensors))
    }
}
