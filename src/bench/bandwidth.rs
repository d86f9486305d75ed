//! The copy bandwidths the other figures are measured against: a GPU buffer-to-buffer copy
//! (timed by waiting for the GPU, and by timestamps where the device has them) and a host
//! memory copy. Bandwidth counts bytes read plus bytes written, as a copy of S bytes moves 2·S.
//! Beside them the read ceiling: how fast a shader streams a buffer (bytes read only), which
//! bounds every weight-reading kernel below the copy where the adapter's loads cost more than
//! its copies.

use serde::Serialize;

use super::clock::Instant;
use super::stats::Stat;
use crate::error::{Error, Result};
use crate::gpu::kernels::{self, ReadPattern};
use crate::gpu::{timing, Batch, GpuContext};

/// Copies (and read sweeps) recorded per timed submission (amortises the submit and wait).
const COPIES_PER_SUBMIT: u64 = 8;

#[derive(Debug, Clone, Serialize)]
pub struct CopyBandwidth {
    /// Bytes of one copy.
    pub bytes: u64,
    /// GB/s (10⁹ bytes, read + written), wall time from submit to the GPU being idle.
    pub gpu_fence_gbps: Stat,
    /// GB/s from timestamps around the copies, where the device has encoder timestamps.
    pub gpu_timestamp_gbps: Option<Stat>,
    /// GB/s of a host `memcpy` of the same size.
    pub host_gbps: Stat,
    /// Bytes one read sweep reads (the copy's size, within the storage-binding limit).
    pub shader_read_bytes: u64,
    /// GB/s (bytes read only) of a shader streaming those bytes, by fence, for each way of
    /// sharing them among invocations.
    pub shader_reads: Vec<ShaderRead>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShaderRead {
    pub pattern: ReadPattern,
    pub gbps: Stat,
}

impl CopyBandwidth {
    /// The best GPU figure (the bound should not be flattered by a slow timer).
    pub fn gpu_bytes_per_s(&self) -> f64 {
        let ts = self.gpu_timestamp_gbps.as_ref().map_or(0.0, |s| s.median);
        self.gpu_fence_gbps.median.max(ts) * 1e9
    }

    /// The read ceiling: the faster pattern's median, bytes/s.
    pub fn read_ceiling_bytes_per_s(&self) -> f64 {
        let fastest = self.shader_reads.iter().map(|r| r.gbps.median);
        fastest.fold(0.0, f64::max) * 1e9
    }
}

pub async fn measure(ctx: &GpuContext, bytes: u64, repeats: usize) -> Result<CopyBandwidth> {
    let bytes = bytes.min(ctx.max_buffer).max(4) & !3;
    let make = |label| {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let (src, dst) = (make("copy source"), make("copy destination"));
    let moved = (2 * bytes * COPIES_PER_SUBMIT) as f64;
    let queries = ctx.encoder_timestamps.then(|| {
        ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("copy timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        })
    });
    let mut fence = Vec::new();
    let mut stamped = Vec::new();
    // One untimed round first: the first touch of fresh memory is slower.
    for round in 0..=repeats {
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("copy bandwidth"),
            });
        if let Some(q) = &queries {
            encoder.write_timestamp(q, 0);
        }
        for _ in 0..COPIES_PER_SUBMIT {
            encoder.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
        }
        if let Some(q) = &queries {
            encoder.write_timestamp(q, 1);
        }
        let start = Instant::now();
        ctx.queue.submit([encoder.finish()]);
        wait_idle(ctx, &dst).await?;
        let seconds = start.elapsed().as_secs_f64();
        if round == 0 {
            continue;
        }
        fence.push(moved / seconds / 1e9);
        if let Some(q) = &queries {
            let t = timing::resolve(ctx, q, 2).await?;
            let ns = t[1].saturating_sub(t[0]) as f64 * ctx.queue.get_timestamp_period() as f64;
            if ns > 0.0 {
                stamped.push(moved / ns);
            }
        }
    }
    ctx.check_device_error()?;
    let shader_read_bytes = src.size().min(ctx.buffer_limit()) & !15;
    if shader_read_bytes == 0 {
        return Err(Error::gpu(
            "the read ceiling needs a buffer of at least 16 bytes",
        ));
    }
    let folds = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("read sweep folds"),
        size: kernels::read_sweep_invocations((shader_read_bytes / 16) as usize) as u64 * 4,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut shader_reads = Vec::new();
    for pattern in ReadPattern::ALL {
        let gbps = shader_read(ctx, pattern, &src, shader_read_bytes, &folds, repeats).await?;
        shader_reads.push(ShaderRead { pattern, gbps });
    }
    Ok(CopyBandwidth {
        bytes,
        gpu_fence_gbps: Stat::of(&fence).ok_or_else(|| Error::gpu("no copy was timed"))?,
        gpu_timestamp_gbps: Stat::of(&stamped),
        host_gbps: host_copy(bytes as usize, repeats)?,
        shader_read_bytes,
        shader_reads,
    })
}

/// GB/s of `read_sweep` over the first `bytes` (a multiple of 16) of `src` into `folds`, timed
/// by fence over a few sweeps per submission.
async fn shader_read(
    ctx: &GpuContext,
    pattern: ReadPattern,
    src: &wgpu::Buffer,
    bytes: u64,
    folds: &wgpu::Buffer,
    repeats: usize,
) -> Result<Stat> {
    let mut rates = Vec::new();
    // One untimed round first: it compiles the pipeline and touches the memory.
    for round in 0..=repeats {
        let mut batch = Batch::new(ctx);
        for _ in 0..COPIES_PER_SUBMIT {
            kernels::read_sweep(&mut batch, pattern, src, bytes, folds);
        }
        let start = Instant::now();
        batch.submit();
        wait_idle(ctx, folds).await?;
        let seconds = start.elapsed().as_secs_f64();
        if round > 0 {
            rates.push((bytes * COPIES_PER_SUBMIT) as f64 / seconds / 1e9);
        }
    }
    ctx.check_device_error()?;
    Stat::of(&rates).ok_or_else(|| Error::gpu("no read sweep was timed"))
}

/// Resolves once the queue has finished everything submitted: a 4-byte read-back of `probe`
/// is mapped only after the work before it. (Natively `device.poll` could block instead, but
/// a browser can only be awaited.)
async fn wait_idle(ctx: &GpuContext, probe: &wgpu::Buffer) -> Result<()> {
    let mut batch = Batch::new(ctx);
    let readback = batch.read_back(probe, 0, 4);
    batch.submit();
    readback.bytes(ctx).await.map(|_| ())
}

/// The shortest a host-copy sample may last: a browser coarsens its clock to about 0.1 ms,
/// which a copy of a few MiB takes, so small copies are repeated until this much time passed.
const MIN_SAMPLE_SECONDS: f64 = 0.01;

/// GB/s of copying `bytes` between two host buffers.
pub fn host_copy(bytes: usize, repeats: usize) -> Result<Stat> {
    let src: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
    let mut dst = vec![0u8; bytes];
    let mut rates = Vec::new();
    for round in 0..=repeats {
        let start = Instant::now();
        let mut copies = 0u32;
        let seconds = loop {
            dst.copy_from_slice(&src);
            std::hint::black_box(&mut dst);
            copies += 1;
            let seconds = start.elapsed().as_secs_f64();
            if seconds >= MIN_SAMPLE_SECONDS {
                break seconds;
            }
        };
        if round > 0 {
            rates.push(2.0 * bytes as f64 * copies as f64 / seconds / 1e9);
        }
    }
    Stat::of(&rates).ok_or_else(|| Error::InvalidArgument("no host copy was timed".into()))
}
