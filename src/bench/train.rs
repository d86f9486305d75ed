//! Training speed: steps of MoE-LPR's stage 1 on random tokens, timed step by step (each
//! step waits for its loss, as `teach` does), with the memory the run holds and one step's
//! GPU time per kernel. The peer is PyTorch training the same model, batch and sequence length
//! (`tools/bench_train.py` runs both in one run).

use serde::Serialize;

use super::clock::Instant;
use super::profile::{self, KernelProfile};
use super::stats::Stat;
use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::generate::rng::Rng;
use crate::model::Model;
use crate::train::memory::TrainMemory;
use crate::train::{Stage, StepInput, TrainOptions, Trainer};

#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    pub batch: usize,
    pub seq: usize,
    pub experts: usize,
    pub step_ms: Stat,
    pub tokens_per_second: Stat,
    pub memory: TrainMemory,
    pub profile: Option<KernelProfile>,
}

/// `warmup` untimed steps, then `steps` timed ones, then (with `profile`) one profiled step.
pub async fn train(
    model: &Model,
    ckpt: &Checkpoint,
    options: TrainOptions,
    warmup: usize,
    steps: usize,
    profile: bool,
) -> Result<TrainBench> {
    let mut trainer = Trainer::new(model, ckpt, options).await?;
    let n = options.batch * options.seq;
    let vocab = model.config.vocab_size as u64;
    let mut rng = Rng::new(super::SEED);
    let mut tokens = || -> Vec<u32> { (0..n).map(|_| (rng.next_u64() % vocab) as u32).collect() };
    let mut times = Vec::with_capacity(steps);
    for s in 0..warmup + steps {
        let (ids, targets) = (tokens(), tokens());
        let input = StepInput {
            ids: &ids,
            targets: &targets,
            original: None,
        };
        let start = Instant::now();
        trainer.step(input, Stage::NewExperts, 1e-4).await?;
        if s >= warmup {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let profile = if profile {
        let (ids, targets) = (tokens(), tokens());
        let input = StepInput {
            ids: &ids,
            targets: &targets,
            original: None,
        };
        profile::train_step(&mut trainer, input, Stage::NewExperts).await?
    } else {
        None
    };
    let step = Stat::of(&times).unwrap_or(Stat {
        median: 0.0,
        min: 0.0,
        max: 0.0,
        samples: 0,
    });
    Ok(TrainBench {
        batch: options.batch,
        seq: options.seq,
        experts: model.config.num_experts,
        tokens_per_second: step.map(|s| n as f64 / s.max(1e-12)),
        step_ms: step.map(|s| s * 1e3),
        memory: trainer.memory.clone(),
        profile,
    })
}
