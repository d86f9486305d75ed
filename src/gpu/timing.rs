//! Per-dispatch GPU time from timestamp queries, for `moegraft bench`. Off unless a profiler
//! is installed on the context (which needs a device opened with `GpuOptions::profiling` on an
//! adapter with `TIMESTAMP_QUERY`): normal runs record no queries and split no passes.

use super::GpuContext;
use crate::error::{Error, Result};

/// Queries per set (wgpu's maximum); two per dispatch.
const CAPACITY: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// GPU time of one dispatch, named by its kernel's entry point.
#[derive(Debug, Clone)]
pub struct KernelTime {
    pub kernel: &'static str,
    pub nanos: f64,
}

pub struct Profiler {
    set: wgpu::QuerySet,
    /// Entry point of each timed dispatch, in recording order (queries 2i and 2i+1).
    labels: Vec<&'static str>,
    /// Dispatches recorded after the set was full (not timed).
    pub missed: usize,
}

impl Profiler {
    /// A profiler for `ctx`, or `None` when its device has no timestamp queries.
    pub fn new(ctx: &GpuContext) -> Option<Self> {
        if !ctx.timestamps {
            return None;
        }
        let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kernel timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: CAPACITY,
        });
        Some(Self {
            set,
            labels: Vec::new(),
            missed: 0,
        })
    }

    /// The timestamp writes for the next dispatch's own pass, or `None` once the set is full.
    pub(crate) fn next_pass(
        &mut self,
        kernel: &'static str,
    ) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let index = self.labels.len() as u32 * 2;
        if index + 2 > CAPACITY {
            self.missed += 1;
            return None;
        }
        self.labels.push(kernel);
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: Some(index),
            end_of_pass_write_index: Some(index + 1),
        })
    }

    /// Resolves every query written since the last read, returns each dispatch's time and
    /// starts over.
    pub async fn read(&mut self, ctx: &GpuContext) -> Result<Vec<KernelTime>> {
        let labels = std::mem::take(&mut self.labels);
        self.missed = 0;
        if labels.is_empty() {
            return Ok(Vec::new());
        }
        let ticks = resolve(ctx, &self.set, labels.len() as u32 * 2).await?;
        let period = ctx.queue.get_timestamp_period() as f64;
        Ok(labels
            .iter()
            .zip(ticks.chunks_exact(2))
            .map(|(&kernel, t)| KernelTime {
                kernel,
                nanos: t[1].saturating_sub(t[0]) as f64 * period,
            })
            .collect())
    }
}

/// Copies the first `count` timestamps of `set` back to the host.
pub async fn resolve(ctx: &GpuContext, set: &wgpu::QuerySet, count: u32) -> Result<Vec<u64>> {
    let size = count as u64 * 8;
    let resolved = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("timestamps"),
        size,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("resolve timestamps"),
        });
    encoder.resolve_query_set(set, 0..count, &resolved, 0);
    ctx.queue.submit([encoder.finish()]);
    let mut batch = super::Batch::new(ctx);
    let rb = batch.read_back(&resolved, 0, size);
    batch.submit();
    let bytes = rb.bytes(ctx).await?;
    if bytes.len() < size as usize {
        return Err(Error::gpu("timestamp read-back came back short"));
    }
    Ok(bytemuck::pod_collect_to_vec(&bytes[..size as usize]))
}
