//! Merge throughput through the real graft path: `graft_checkpoints`, what `moegraft graft`
//! and the page's Graft run, and its merge alone (`write_weights`), over the same three inputs
//! `repeats` times, each into a fresh output the caller makes (a scratch directory natively,
//! `Blob`s in memory in the browser).

use serde::Serialize;

use super::clock::Instant;
use super::stats::Stat;
use crate::checkpoint::writer::{OutputFiles, DEFAULT_MAX_SHARD_BYTES};
use crate::checkpoint::{Checkpoint, ModelFiles};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::graft::export::{graft_checkpoints, write_weights, GraftCheckpoints};
use crate::graft::manifest::describe_inputs;
use crate::graft::plan::{plan, GraftOptions, GraftPlan};

/// The files of the graft the merge figure times.
pub struct GraftFiles {
    pub base: ModelFiles,
    pub instruct: ModelFiles,
    pub target: ModelFiles,
}

/// The three inputs opened (headers read).
pub struct GraftInputs {
    pub base: Checkpoint,
    pub instruct: Checkpoint,
    pub target: Checkpoint,
}

impl GraftInputs {
    pub async fn open(files: GraftFiles) -> Result<Self> {
        Ok(Self {
            base: Checkpoint::open(files.base).await?,
            instruct: Checkpoint::open(files.instruct).await?,
            target: Checkpoint::open(files.target).await?,
        })
    }

    fn checkpoints(&self) -> GraftCheckpoints<'_> {
        GraftCheckpoints {
            base: &self.base,
            instruct: &self.instruct,
            target: &self.target,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MergeResult {
    /// `paramdelta` or `deltamoe`.
    pub method: String,
    /// Tensor bytes the merge reads: target, instruct and base of every grafted tensor.
    pub input_bytes: u64,
    /// Whole graft (merge and write, the inputs' sha256 for the manifest — natively on
    /// threads of their own beside the merge — and the small files), seconds.
    pub total_seconds: Stat,
    /// The inputs' sha256 alone, one input after another, seconds.
    pub hash_seconds: Stat,
    /// The merge alone (`write_weights`: read → GPU merge → convert → write), seconds.
    pub merge_seconds: Stat,
    /// input_bytes ÷ merge_seconds.
    pub merge_gbps: Stat,
    /// input_bytes ÷ total.
    pub end_to_end_gbps: Stat,
    /// Bytes of tensor data the graft writes.
    pub output_bytes: u64,
    /// Writing that many bytes alone into a new file of the same kind of output, seconds:
    /// the floor under the streamed merge that no kernel removes (a new file's pages are
    /// allocated as it grows; in the browser, a `Blob` is assembled).
    pub write_floor_seconds: Stat,
}

/// Grafts Δ = instruct − base onto target (α = 1) `repeats` times, plus one untimed warm-up
/// that also brings the files into the page cache. `output(round)` makes each round's output,
/// dropped when the round ends.
pub async fn measure<O: OutputFiles>(
    ctx: &GpuContext,
    inputs: &GraftInputs,
    repeats: usize,
    output: &mut dyn FnMut(usize) -> Result<O>,
) -> Result<MergeResult> {
    let options = GraftOptions {
        alpha: 1.0,
        expert_alpha: None,
        dtype: None,
    };
    let checkpoints = inputs.checkpoints();
    let plan = plan(&inputs.base, &inputs.instruct, &inputs.target, &options)?;
    let input_bytes = input_bytes(inputs, &plan)?;
    let output_bytes: u64 = plan.specs().iter().filter_map(|s| s.byte_len()).sum();
    let (mut total, mut hash, mut streamed, mut floor) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Every graft gets an output of its own; each is dropped (a scratch directory removed)
    // outside the timing.
    let mut made = 0;
    let mut fresh = || {
        made += 1;
        output(made - 1)
    };
    for round in 0..=repeats {
        let mut out = fresh()?;
        let start = Instant::now();
        graft_checkpoints(
            ctx,
            &checkpoints,
            &plan,
            &mut out,
            DEFAULT_MAX_SHARD_BYTES,
            &mut |_, _| {},
        )
        .await?;
        let seconds = start.elapsed().as_secs_f64();
        drop(out);
        let mut out = fresh()?;
        let start = Instant::now();
        write_weights(
            ctx,
            &plan,
            &checkpoints,
            &mut out,
            DEFAULT_MAX_SHARD_BYTES,
            &mut |_, _| {},
        )
        .await?;
        let merging = start.elapsed().as_secs_f64();
        drop(out);
        // What graft_checkpoints hashes, timed alone.
        let start = Instant::now();
        for cp in [&inputs.base, &inputs.instruct, &inputs.target] {
            describe_inputs(&cp.files).await?;
        }
        let hashing = start.elapsed().as_secs_f64();
        let writing = write_floor(&mut fresh()?, output_bytes)?;
        if round > 0 {
            total.push(seconds);
            streamed.push(merging);
            hash.push(hashing);
            floor.push(writing);
        }
    }
    let none = || Error::gpu("no merge was timed");
    let merge: Vec<f64> = streamed
        .iter()
        .map(|t| input_bytes as f64 / t.max(1e-9) / 1e9)
        .collect();
    let end_to_end: Vec<f64> = total.iter().map(|t| input_bytes as f64 / t / 1e9).collect();
    Ok(MergeResult {
        method: plan.method.name().to_string(),
        input_bytes,
        merge_gbps: Stat::of(&merge).ok_or_else(none)?,
        end_to_end_gbps: Stat::of(&end_to_end).ok_or_else(none)?,
        total_seconds: Stat::of(&total).ok_or_else(none)?,
        hash_seconds: Stat::of(&hash).ok_or_else(none)?,
        merge_seconds: Stat::of(&streamed).ok_or_else(none)?,
        output_bytes,
        write_floor_seconds: Stat::of(&floor).ok_or_else(none)?,
    })
}

/// Seconds to write `bytes` zero bytes into a new file of `out`, in the pieces the graft
/// writes (the output is dropped, and so removed, outside the timing).
fn write_floor<O: OutputFiles>(out: &mut O, bytes: u64) -> Result<f64> {
    const NAME: &str = "write-floor.bin";
    let chunk = vec![0u8; 16 << 20];
    let start = Instant::now();
    let mut file = out.create(NAME)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        std::io::Write::write_all(&mut file, &chunk[..n])
            .map_err(|e| Error::io(out.label(NAME), e))?;
        left -= n as u64;
    }
    out.complete(NAME, file)?;
    Ok(start.elapsed().as_secs_f64())
}

/// Bytes of the tensors the plan reads from the three inputs (a DeltaMoE graft reads Δ's
/// sources once per expert).
fn input_bytes(inputs: &GraftInputs, plan: &GraftPlan) -> Result<u64> {
    let mut bytes = 0;
    for t in &plan.tensors {
        bytes += inputs.target.info(&t.source)?.1.len;
        if let Some(d) = &t.delta {
            bytes += inputs.instruct.info(&d.source)?.1.len + inputs.base.info(&d.source)?.1.len;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::synthetic;
    use crate::checkpoint::{DType, ModelConfig};

    const LLAMA: &str = include_str!("../../tests/fixtures/tiny/tiny-llama/config.json");

    /// Synthetic f16 weights of `json`, and the bytes of its FFN tensors and of the rest.
    fn model(json: &str) -> (ModelFiles, u64, u64) {
        let c = ModelConfig::from_json(json, "config.json").expect("config");
        let specs = synthetic::tensor_specs(&c, DType::F16);
        let bytes = |ffn: bool| -> u64 {
            let is_ffn = |name: &str| name.contains(".mlp.") || name.contains(".block_sparse_moe.");
            specs
                .iter()
                .filter(|s| is_ffn(&s.name) == ffn)
                .filter_map(|s| s.byte_len())
                .sum()
        };
        let files = synthetic::model_files(json, &c, DType::F16, 1).expect("weights");
        (files, bytes(true), bytes(false))
    }

    /// `input_bytes` of grafting Δ of `base` (as base and instruct) onto `target`.
    fn counted(base: &str, target: &str) -> (u64, &'static str) {
        let inputs = pollster::block_on(GraftInputs::open(GraftFiles {
            base: model(base).0,
            instruct: model(base).0,
            target: model(target).0,
        }))
        .expect("open");
        let options = GraftOptions {
            alpha: 1.0,
            ..Default::default()
        };
        let p = plan(&inputs.base, &inputs.instruct, &inputs.target, &options).expect("plan");
        (input_bytes(&inputs, &p).expect("bytes"), p.method.name())
    }

    #[test]
    fn paramdelta_onto_itself_reads_every_tensor_three_times() {
        let (_, ffn, rest) = model(LLAMA);
        assert_eq!(counted(LLAMA, LLAMA), (3 * (ffn + rest), "paramdelta"));
    }

    #[test]
    fn deltamoe_reads_the_dense_ffn_once_per_expert() {
        let moe = LLAMA
            .replace("\"llama\"", "\"mixtral\"")
            .replace("\"LlamaForCausalLM\"", "\"MixtralForCausalLM\"")
            .replace(
                "\"num_hidden_layers\"",
                "\"num_local_experts\": 3, \"num_experts_per_tok\": 2, \"num_hidden_layers\"",
            );
        let (_, ffn, rest) = model(LLAMA);
        let (_, moe_ffn, moe_rest) = model(&moe);
        // Every target tensor once (routers included); Δ of attention, norms and the
        // embedding once, of the dense FFN once for each of the 3 experts.
        let expected = moe_ffn + moe_rest + 2 * (rest + 3 * ffn);
        assert_eq!(counted(LLAMA, &moe), (expected, "deltamoe"));
    }
}
