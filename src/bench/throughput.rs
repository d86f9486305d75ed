//! Prefill and decode speed as generation sees it: each measurement runs `next_token` (the
//! forward pass, GPU sampling and the read-back of the chosen id), greedy.

use super::clock::Instant;
use super::stats::Stat;
use super::BenchOptions;
use crate::error::{Error, Result};
use crate::generate::rng::Rng;
use crate::gpu::kernels::SampleSettings;
use crate::model::{Model, Session};

const GREEDY: SampleSettings = SampleSettings {
    temperature: 0.0,
    top_k: 0,
    top_p: 1.0,
};

/// `n` random token ids of the model's vocabulary.
pub fn random_ids(model: &Model, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let v = model.config.vocab_size.max(1) as u64;
    (0..n).map(|_| (rng.next_u64() % v) as u32).collect()
}

/// Tokens per second of feeding a `prompt_tokens` prompt to a fresh cache.
pub async fn prefill(model: &Model, o: &BenchOptions, seed: u64) -> Result<super::Prefill> {
    let prompt = random_ids(model, o.prompt_tokens, seed);
    let mut session = model.session()?;
    let mut rates = Vec::new();
    for round in 0..o.warmup + o.repeats {
        session.reset();
        let start = Instant::now();
        model.next_token(&mut session, &prompt, GREEDY, 0.0).await?;
        let seconds = start.elapsed().as_secs_f64();
        if round >= o.warmup {
            rates.push(prompt.len() as f64 / seconds);
        }
    }
    Ok(super::Prefill {
        tokens: prompt.len(),
        tokens_per_s: Stat::of(&rates).ok_or_else(|| Error::gpu("no prefill was timed"))?,
    })
}

/// Tokens per second of single-token steps once `context` tokens are cached (each step's
/// rate is one sample). Leaves the session after the last step.
///
/// The cache is not filled by a prefill (minutes at context 1024 on a CPU adapter): the
/// session just starts at position `context` over its zeroed cache. A step's cost depends on
/// how many positions attention reads, not on what they hold.
pub async fn decode(
    model: &Model,
    session: &mut Session,
    context: usize,
    o: &BenchOptions,
    seed: u64,
) -> Result<Stat> {
    session.reset();
    session.check_room(context + o.warmup + o.decode_tokens)?;
    session.pos = context;
    let mut id = random_ids(model, 1, seed)[0];
    let mut rates = Vec::new();
    for step in 0..o.warmup + o.decode_tokens {
        let start = Instant::now();
        id = model.next_token(session, &[id], GREEDY, 0.0).await?;
        let seconds = start.elapsed().as_secs_f64();
        if step >= o.warmup {
            rates.push(1.0 / seconds);
        }
    }
    Stat::of(&rates).ok_or_else(|| Error::gpu("no decode step was timed"))
}
