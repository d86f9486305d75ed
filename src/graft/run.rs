//! The streaming executor (native): plan and hash first — mismatched inputs fail before
//! anything is written — then tensor by tensor read the three inputs' byte ranges, merge on
//! the GPU, convert and append to the output, and drop; the output directory appears under
//! its name only once complete.

use std::fmt;
use std::path::Path;

use super::gpu::graft_tensor;
use super::manifest::{describe_inputs, manifest, InputModel, MANIFEST_FILE};
use super::plan::{plan, GraftOptions, GraftPlan, Method};
use super::sidecar::sidecar_files;
use crate::checkpoint::writer::{write_dir_atomically, write_file, write_json, ModelWriter};
use crate::checkpoint::{dtype, Checkpoint, ModelFiles};
use crate::error::Result;
use crate::gpu::kernels::GraftPipelines;
use crate::gpu::GpuContext;

/// The three inputs' directories.
pub struct GraftInputs<'a> {
    pub base: &'a Path,
    pub instruct: &'a Path,
    pub target: &'a Path,
}

/// What a graft wrote, for the CLI's one-line summary.
#[derive(Debug, Clone)]
pub struct GraftSummary {
    pub method: Method,
    pub tensors: usize,
    pub grafted: usize,
    pub files: Vec<String>,
    pub out: String,
}

impl fmt::Display for GraftSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} tensors ({} grafted, {} kept) in {} weight file(s) -> {}",
            self.method.name(),
            self.tensors,
            self.grafted,
            self.tensors - self.grafted,
            self.files.len(),
            self.out
        )
    }
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
    let plan = plan(&base, &instruct, &target, options)?;

    let hashes = [
        describe_inputs(&base.files).await?,
        describe_inputs(&instruct.files).await?,
        describe_inputs(&target.files).await?,
    ];
    let [b, i, t] = [&base, &instruct, &target].map(|cp| cp.files.label());
    let manifest = manifest(
        &plan,
        &InputModel {
            label: b,
            files: &hashes[0],
        },
        &InputModel {
            label: i,
            files: &hashes[1],
        },
        &InputModel {
            label: t,
            files: &hashes[2],
        },
    );
    let sidecars = sidecar_files(&instruct.files, &target.files, plan.dtype).await?;

    let files = write_dir_atomically(out, |dir| {
        // The closure is synchronous; natively every read resolves at once.
        let files = pollster::block_on(write_weights(
            ctx,
            &plan,
            &base,
            &instruct,
            &target,
            dir,
            max_shard_bytes,
        ))?;
        for (name, bytes) in &sidecars {
            write_file(dir, name, bytes)?;
        }
        write_json(dir, MANIFEST_FILE, &manifest)?;
        Ok(files)
    })?;
    Ok(GraftSummary {
        method: plan.method,
        tensors: plan.tensors.len(),
        grafted: plan.tensors.iter().filter(|t| t.delta.is_some()).count(),
        files,
        out: out.display().to_string(),
    })
}

/// Streams every planned tensor through the GPU into a (possibly sharded) checkpoint.
async fn write_weights(
    ctx: &GpuContext,
    plan: &GraftPlan,
    base: &Checkpoint,
    instruct: &Checkpoint,
    target: &Checkpoint,
    dir: &Path,
    max_shard_bytes: u64,
) -> Result<Vec<String>> {
    let mut writer = ModelWriter::new(dir, plan.specs(), max_shard_bytes)?;
    let mut pipelines = GraftPipelines::default();
    for planned in &plan.tensors {
        let t = target.read(&planned.name).await?;
        let bytes = match &planned.delta {
            // A router: no Δ; byte for byte when the dtype is kept.
            None if t.dtype == plan.dtype => t.bytes,
            None => dtype::from_f32(plan.dtype, &t.to_f32()),
            Some(delta) => {
                let inst = instruct.read(&delta.source).await?;
                let b = base.read(&delta.source).await?;
                let merged = graft_tensor(ctx, &mut pipelines, &t, &inst, &b, delta).await?;
                // The kernel writes f32; the output dtype (round to nearest even) is applied
                // here after read-back.
                dtype::from_f32(plan.dtype, &merged)
            }
        };
        writer.write_tensor(&planned.name, &bytes)?;
    }
    writer.finish()
}
