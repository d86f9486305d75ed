//! GPU time per kernel for one decode step, from timestamp queries around every dispatch.

use serde::Serialize;

use super::clock::Instant;
use crate::error::Result;
use crate::gpu::kernels::SampleSettings;
use crate::gpu::timing::Profiler;
use crate::model::{Model, Session};

#[derive(Debug, Clone, Serialize)]
pub struct KernelGroup {
    pub kernel: String,
    pub dispatches: usize,
    pub ms: f64,
    /// Share of the summed kernel time.
    pub share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelProfile {
    /// Cached tokens when the step ran.
    pub context: usize,
    pub dispatches: usize,
    /// Sum of the dispatches' GPU times.
    pub kernel_ms: f64,
    /// Wall time of the profiled step (each dispatch in its own pass, so slower than usual).
    pub wall_ms: f64,
    /// Dispatches beyond the query set's capacity (not timed).
    pub untimed: usize,
    /// By kernel entry point, most time first.
    pub groups: Vec<KernelGroup>,
}

/// Profiles one decode step after what `session` holds; `None` without timestamp queries.
pub async fn decode_step(model: &Model, session: &mut Session) -> Result<Option<KernelProfile>> {
    let ctx = &model.ctx;
    let Some(profiler) = Profiler::new(ctx) else {
        return Ok(None);
    };
    let context = session.pos;
    let settings = SampleSettings {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
    };
    ctx.install_profiler(profiler);
    let start = Instant::now();
    let step = model.next_token(session, &[0], settings, 0.0).await;
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    let Some(profiler) = ctx.take_profiler() else {
        return Ok(None);
    };
    step?;
    summarize(ctx, profiler, context, wall_ms).await.map(Some)
}

/// One training step, timed per kernel as `decode_step` times decoding (`context`: the step's
/// tokens); `None` without timestamp queries.
pub async fn train_step(
    trainer: &mut crate::train::Trainer<'_>,
    input: crate::train::StepInput<'_>,
    stage: crate::train::Stage,
) -> Result<Option<KernelProfile>> {
    let ctx = trainer.context();
    let Some(profiler) = Profiler::new(ctx) else {
        return Ok(None);
    };
    let context = input.ids.len();
    ctx.install_profiler(profiler);
    let start = Instant::now();
    let step = trainer.step(input, stage, 1e-4).await;
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    let Some(profiler) = ctx.take_profiler() else {
        return Ok(None);
    };
    step?;
    summarize(ctx, profiler, context, wall_ms).await.map(Some)
}

/// Groups the timed dispatches by kernel entry point, most time first.
async fn summarize(
    ctx: &crate::gpu::GpuContext,
    mut profiler: Profiler,
    context: usize,
    wall_ms: f64,
) -> Result<KernelProfile> {
    let untimed = profiler.missed;
    let times = profiler.read(ctx).await?;
    let mut groups: Vec<KernelGroup> = Vec::new();
    for t in &times {
        let ms = t.nanos / 1e6;
        match groups.iter_mut().find(|g| g.kernel == t.kernel) {
            Some(g) => {
                g.dispatches += 1;
                g.ms += ms;
            }
            None => groups.push(KernelGroup {
                kernel: t.kernel.to_string(),
                dispatches: 1,
                ms,
                share: 0.0,
            }),
        }
    }
    let kernel_ms: f64 = groups.iter().map(|g| g.ms).sum();
    for g in &mut groups {
        g.share = if kernel_ms > 0.0 {
            g.ms / kernel_ms
        } else {
            0.0
        };
    }
    groups.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(KernelProfile {
        context,
        dispatches: times.len(),
        kernel_ms,
        wall_ms,
        untimed,
        groups,
    })
}
