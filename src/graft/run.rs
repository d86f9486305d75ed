//! The native graft: three model directories in, one directory out, which appears under its
//! name only once complete (see `export` for the streaming itself).

use std::path::Path;

use super::export::{graft_checkpoints, GraftCheckpoints, GraftSummary};
use super::plan::{plan, GraftOptions};
use crate::checkpoint::writer::{write_dir_atomically, DirOutput};
use crate::checkpoint::{Checkpoint, ModelFiles};
use crate::error::Result;
use crate::gpu::GpuContext;

/// The three inputs' directories.
pub struct GraftInputs<'a> {
    pub base: &'a Path,
    pub instruct: &'a Path,
    pub target: &'a Path,
}

/// Grafts Δ = instruct − base onto target and writes the result to `out`.
pub async fn graft_dirs(
    ctx: &GpuContext,
    inputs: &GraftInputs<'_>,
    out: &Path,
    options: &GraftOptions,
    max_shard_bytes: u64,
) -> Result<GraftSummary> {
    let base = Checkpoint::open(ModelFiles::from_dir(inputs.base)?).await?;
    let instruct = Checkpoint::open(ModelFiles::from_dir(inputs.instruct)?).await?;
    let target = Checkpoint::open(ModelFiles::from_dir(inputs.target)?).await?;
    let checkpoints = GraftCheckpoints {
        base: &base,
        instruct: &instruct,
        target: &target,
    };
    // Mismatched inputs fail here, before the directory is created.
    let plan = plan(&base, &instruct, &target, options)?;
    write_dir_atomically(out, |dir| {
        // The closure is synchronous; natively every read resolves at once.
        pollster::block_on(graft_checkpoints(
            ctx,
            &checkpoints,
            &plan,
            DirOutput::new(dir),
            max_shard_bytes,
            &mut |_, _| {},
        ))
    })
}
