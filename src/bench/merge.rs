//! Merge throughput through the real graft path: a streamed ParamΔ graft of a dense model
//! onto itself (Δ = 0, which costs the same as any Δ), written to a temporary directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::stats::Stat;
use crate::checkpoint::writer::DEFAULT_MAX_SHARD_BYTES;
use crate::checkpoint::{Checkpoint, ModelFiles};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::graft::manifest::describe_inputs;
use crate::graft::plan::{plan, GraftOptions};
use crate::graft::run::{graft_dirs, GraftInputs};

#[derive(Debug, Clone, Serialize)]
pub struct MergeResult {
    /// Tensor bytes the merge reads: target, instruct and base of every grafted tensor.
    pub input_bytes: u64,
    /// Whole `graft` (plan, sha256 of the inputs, merge, write), seconds.
    pub total_seconds: Stat,
    /// The inputs' sha256 alone (part of the total; recorded in the manifest).
    pub hash_seconds: Stat,
    /// input_bytes ÷ (total − hashing): the streamed read → GPU merge → convert → write.
    pub merge_gbps: Stat,
    /// input_bytes ÷ total.
    pub end_to_end_gbps: Stat,
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

/// Grafts the model in `dir` onto itself `repeats` times (plus one untimed warm-up that also
/// brings the files into the page cache).
pub async fn measure(ctx: &GpuContext, dir: &Path, repeats: usize) -> Result<MergeResult> {
    let input_bytes = input_bytes(dir).await?;
    let scratch = TempDir::new("merge")?;
    let inputs = GraftInputs {
        base: dir,
        instruct: dir,
        target: dir,
    };
    let options = GraftOptions {
        alpha: 1.0,
        expert_alpha: None,
        dtype: None,
    };
    let (mut total, mut hash) = (Vec::new(), Vec::new());
    for round in 0..=repeats {
        let out = scratch.0.join(format!("out-{round}"));
        let start = Instant::now();
        graft_dirs(ctx, &inputs, &out, &options, DEFAULT_MAX_SHARD_BYTES).await?;
        let seconds = start.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&out);
        let start = Instant::now();
        let files = ModelFiles::from_dir(dir)?;
        for _ in 0..3 {
            describe_inputs(&files).await?;
        }
        let hashing = start.elapsed().as_secs_f64();
        if round > 0 {
            total.push(seconds);
            hash.push(hashing);
        }
    }
    let total_seconds = Stat::of(&total).ok_or_else(|| Error::gpu("no merge was timed"))?;
    let hash_seconds = Stat::of(&hash).ok_or_else(|| Error::gpu("no merge was timed"))?;
    let merge: Vec<f64> = total
        .iter()
        .zip(&hash)
        .map(|(t, h)| input_bytes as f64 / (t - h).max(1e-9) / 1e9)
        .collect();
    let end_to_end: Vec<f64> = total.iter().map(|t| input_bytes as f64 / t / 1e9).collect();
    Ok(MergeResult {
        input_bytes,
        merge_gbps: Stat::of(&merge).ok_or_else(|| Error::gpu("no merge was timed"))?,
        end_to_end_gbps: Stat::of(&end_to_end).ok_or_else(|| Error::gpu("no merge was timed"))?,
        total_seconds,
        hash_seconds,
    })
}

/// Bytes of the tensors the graft plan reads from the three inputs.
async fn input_bytes(dir: &Path) -> Result<u64> {
    let ckpt = Checkpoint::open(ModelFiles::from_dir(dir)?).await?;
    let options = GraftOptions {
        alpha: 1.0,
        expert_alpha: None,
        dtype: None,
    };
    let p = plan(&ckpt, &ckpt, &ckpt, &options)?;
    let mut bytes = 0;
    for t in &p.tensors {
        bytes += ckpt.info(&t.name)?.1.len;
        if let Some(d) = &t.delta {
            bytes += 2 * ckpt.info(&d.source)?.1.len;
        }
    }
    Ok(bytes)
}
