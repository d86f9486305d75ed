//! A whole graft into any output (a directory natively, the page's `Blob`s in the browser):
//! plan first — mismatched inputs fail before anything is written — then stream the tensors
//! through the GPU merge (`gpu::GraftStream`: batched, each piece's bytes appended to the
//! output as it comes back) while the inputs are hashed for `moegraft.json` (natively on
//! threads of their own), then the tokenizer, config and `moegraft.json`.

use std::fmt;

use super::gpu::{DeltaSources, GraftStream, OutputTensor, Source};
use super::manifest::{describe_inputs, manifest, InputFile, InputModel};
use super::plan::{GraftPlan, Method};
use super::sidecar::sidecar_files;
use crate::checkpoint::provenance::MANIFEST_FILE;
use crate::checkpoint::writer::{OutputFiles, ShardedWriter};
use crate::checkpoint::{Checkpoint, ModelFiles};
use crate::error::Result;
use crate::gpu::GpuContext;

/// The three opened inputs.
pub struct GraftCheckpoints<'a> {
    pub base: &'a Checkpoint,
    pub instruct: &'a Checkpoint,
    pub target: &'a Checkpoint,
}

/// What a graft wrote.
#[derive(Debug, Clone)]
pub struct GraftSummary {
    pub method: Method,
    pub tensors: usize,
    pub grafted: usize,
    /// Weight files (and the index when sharded).
    pub files: Vec<String>,
    /// Bytes of tensor data written.
    pub bytes: u64,
}

impl fmt::Display for GraftSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} tensors ({} grafted, {} kept) in {} weight file(s)",
            self.method.name(),
            self.tensors,
            self.grafted,
            self.tensors - self.grafted,
            self.files.len(),
        )
    }
}

/// Grafts Δ = instruct − base onto target into `out` as `plan` (made from the same three
/// checkpoints by `plan::plan`) says. `progress(done, total)` counts bytes of output tensor
/// data.
pub async fn graft_checkpoints<O: OutputFiles>(
    ctx: &GpuContext,
    inputs: &GraftCheckpoints<'_>,
    plan: &GraftPlan,
    mut out: O,
    max_shard_bytes: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<GraftSummary> {
    let GraftCheckpoints {
        base,
        instruct,
        target,
    } = *inputs;
    let sidecars = sidecar_files(&instruct.files, &target.files, plan).await?;
    let models = [&base.files, &instruct.files, &target.files];
    let (hashes, (files, bytes)) = hash_while(
        models,
        write_weights(ctx, plan, inputs, &mut out, max_shard_bytes, progress),
    )
    .await?;
    let [b, i, t] = [base, instruct, target].map(|cp| cp.files.label());
    let manifest = manifest(
        plan,
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
    for (name, bytes) in &sidecars {
        out.write_file(name, bytes)?;
    }
    out.write_json(MANIFEST_FILE, &manifest)?;
    Ok(GraftSummary {
        method: plan.method,
        tensors: plan.tensors.len(),
        grafted: plan.tensors.iter().filter(|t| t.delta.is_some()).count(),
        files,
        bytes,
    })
}

/// The three inputs' file hashes (for the manifest) and `work`'s result. Natively the hashing
/// runs on threads of its own while `work` runs here, so a graft takes about as long as its
/// merge; the browser (one thread) hashes first.
#[cfg(not(target_arch = "wasm32"))]
async fn hash_while<T>(
    models: [&ModelFiles; 3],
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<([Vec<InputFile>; 3], T)> {
    std::thread::scope(|scope| {
        let hashing =
            models.map(|files| scope.spawn(move || pollster::block_on(describe_inputs(files))));
        // Natively every read and GPU wait resolves in place, so blocking here is no loss.
        let done = pollster::block_on(work);
        let [b, i, t] = hashing.map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(crate::Error::gpu(
                    "hashing the inputs failed (thread panicked)",
                ))
            })
        });
        Ok(([b?, i?, t?], done?))
    })
}

#[cfg(target_arch = "wasm32")]
async fn hash_while<T>(
    models: [&ModelFiles; 3],
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<([Vec<InputFile>; 3], T)> {
    let [b, i, t] = models;
    let hashes = [
        describe_inputs(b).await?,
        describe_inputs(i).await?,
        describe_inputs(t).await?,
    ];
    Ok((hashes, work.await?))
}

/// Streams every planned tensor through the GPU into a (possibly sharded) checkpoint; the
/// names of the weight files written and their bytes of tensor data. The merge alone: what
/// `graft_checkpoints` does besides hashing the inputs and writing the small files.
pub async fn write_weights<O: OutputFiles>(
    ctx: &GpuContext,
    plan: &GraftPlan,
    inputs: &GraftCheckpoints<'_>,
    out: O,
    max_shard_bytes: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<String>, u64)> {
    let specs = plan.specs();
    let total: u64 = specs.iter().filter_map(|s| s.byte_len()).sum();
    let largest = specs.iter().filter_map(|s| s.byte_len()).max().unwrap_or(0);
    let mut writer = ShardedWriter::to(out, specs, max_shard_bytes)?;
    let mut done = 0u64;
    progress(done, total);
    let mut sink = |index: usize, bytes: &[u8]| -> Result<()> {
        writer.write_part(&plan.tensors[index].name, bytes)?;
        done += bytes.len() as u64;
        progress(done, total);
        Ok(())
    };
    // Inputs may be f32 where the output is 16-bit: room for four bytes an element.
    let largest = largest / plan.dtype.size() as u64 * 4;
    let mut stream = GraftStream::new(ctx, plan.dtype, largest, &mut sink)?;
    for (index, planned) in plan.tensors.iter().enumerate() {
        let delta = planned.delta.as_ref().map(|delta| DeltaSources {
            instruct: Source::Stored(inputs.instruct, &delta.source),
            base: Source::Stored(inputs.base, &delta.source),
            delta,
        });
        let tensor = OutputTensor {
            target: Source::Stored(inputs.target, &planned.source),
            delta,
        };
        stream.push(index, &tensor).await?;
    }
    stream.finish().await?;
    Ok((writer.finish()?, done))
}
