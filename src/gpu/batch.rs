//! Recording GPU work: dispatches and copies go into one command encoder per step, with all
//! kernel parameters packed into one uniform buffer, then submitted at once. A session's
//! steps reuse that buffer and their bind groups (`Reuse`) instead of making new ones.

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU64;

use super::GpuContext;
use crate::error::{Error, Result};

/// A storage binding: a whole buffer or a byte range of one.
#[derive(Clone)]
pub struct Binding {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: Option<u64>,
}

impl From<&wgpu::Buffer> for Binding {
    fn from(buffer: &wgpu::Buffer) -> Self {
        Binding {
            buffer: buffer.clone(),
            offset: 0,
            size: None,
        }
    }
}

enum Op {
    Dispatch {
        pipeline: wgpu::ComputePipeline,
        params: (u64, u64),
        bindings: Vec<(u32, Binding)>,
        workgroups: [u32; 3],
    },
    Copy {
        from: wgpu::Buffer,
        from_offset: u64,
        to: wgpu::Buffer,
        to_offset: u64,
        size: u64,
    },
}

pub struct Batch<'c> {
    ctx: &'c GpuContext,
    params: Vec<u8>,
    ops: Vec<Op>,
    reuse: Option<&'c RefCell<Reuse>>,
}

/// One bind group's identity: the pipeline, its parameters' range in the uniform buffer and
/// every storage binding.
#[derive(PartialEq, Eq, Hash)]
struct GroupKey {
    pipeline: wgpu::ComputePipeline,
    params: (u64, u64),
    bindings: Vec<(u32, wgpu::Buffer, u64, Option<u64>)>,
}

/// What one session's steps share instead of allocating per step: the uniform buffer (a
/// queue write orders after earlier submissions, so rewriting it is safe) and the bind
/// groups, which repeat step after step because the buffers and the parameters' offsets do.
/// Owned by the session, so its buffers are released with it.
#[derive(Default)]
pub struct Reuse {
    uniforms: Option<wgpu::Buffer>,
    groups: HashMap<GroupKey, wgpu::BindGroup>,
}

/// Bind groups kept at most; a different mix of steps just starts over.
const MAX_CACHED_GROUPS: usize = 4096;

/// A buffer that will hold copied-out bytes once the batch has run.
pub struct Readback {
    buffer: wgpu::Buffer,
    size: u64,
}

impl<'c> Batch<'c> {
    pub fn new(ctx: &'c GpuContext) -> Self {
        Self {
            ctx,
            params: Vec::new(),
            ops: Vec::new(),
            reuse: None,
        }
    }

    /// A batch whose uniform buffer and bind groups come from (and go back to) `reuse`.
    pub fn reusing(ctx: &'c GpuContext, reuse: &'c RefCell<Reuse>) -> Self {
        Self {
            reuse: Some(reuse),
            ..Self::new(ctx)
        }
    }

    pub fn ctx(&self) -> &'c GpuContext {
        self.ctx
    }

    /// Records a dispatch of `workgroups` (linear count, spread over x/y) with `params` bound
    /// as the uniform at binding 0.
    pub fn dispatch(
        &mut self,
        pipeline: wgpu::ComputePipeline,
        params: &[u8],
        bindings: Vec<(u32, Binding)>,
        workgroups: u32,
    ) {
        let align = self.ctx.uniform_alignment.max(16) as usize;
        let offset = self.params.len().next_multiple_of(align);
        self.params.resize(offset, 0);
        self.params.extend_from_slice(params);
        let padded = params.len().next_multiple_of(16);
        self.params.resize(offset + padded, 0);
        self.ops.push(Op::Dispatch {
            pipeline,
            params: (offset as u64, padded as u64),
            bindings,
            workgroups: self.ctx.workgroups(workgroups),
        });
    }

    pub fn copy(
        &mut self,
        from: &wgpu::Buffer,
        from_offset: u64,
        to: &wgpu::Buffer,
        to_offset: u64,
        size: u64,
    ) {
        self.ops.push(Op::Copy {
            from: from.clone(),
            from_offset,
            to: to.clone(),
            to_offset,
            size,
        });
    }

    /// Records a copy of `size` bytes at `offset` of `from` into a mappable buffer.
    pub fn read_back(&mut self, from: &wgpu::Buffer, offset: u64, size: u64) -> Readback {
        let size = size.next_multiple_of(4).max(4);
        let buffer = readback_buffer(self.ctx, size);
        self.read_back_into(from, offset, &buffer, size)
    }

    /// `read_back` into a buffer made by `readback_buffer` and kept for reuse (it is unmapped
    /// again once read).
    pub fn read_back_into(
        &mut self,
        from: &wgpu::Buffer,
        offset: u64,
        into: &wgpu::Buffer,
        size: u64,
    ) -> Readback {
        let size = size.next_multiple_of(4).max(4);
        self.copy(from, offset, into, 0, size);
        Readback {
            buffer: into.clone(),
            size,
        }
    }

    /// Encodes everything recorded and submits it in one command buffer; its index, unless
    /// nothing was recorded.
    pub fn submit(self) -> Option<wgpu::SubmissionIndex> {
        let ctx = self.ctx;
        if self.ops.is_empty() {
            return None;
        }
        // A batch of its own (one-off reads, the graft) starts from nothing, as before.
        let own;
        let cell = match self.reuse {
            Some(r) => r,
            None => {
                own = RefCell::new(Reuse::default());
                &own
            }
        };
        let mut reuse = cell.borrow_mut();
        let uniforms = (!self.params.is_empty()).then(|| {
            let buffer = reuse.uniforms_for(ctx, self.params.len() as u64);
            ctx.queue.write_buffer(&buffer, 0, &self.params);
            buffer
        });
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        let mut profiler = ctx.profiler.borrow_mut();
        let one_per_pass = profiler.is_some();
        let mut i = 0;
        while i < self.ops.len() {
            if let Op::Copy {
                from,
                from_offset,
                to,
                to_offset,
                size,
            } = &self.ops[i]
            {
                encoder.copy_buffer_to_buffer(from, *from_offset, to, *to_offset, *size);
                i += 1;
                continue;
            }
            // Profiling: each dispatch gets its own pass, timed at its start and end.
            let timed = match (profiler.as_mut(), &self.ops[i]) {
                (Some(p), Op::Dispatch { pipeline, .. }) => {
                    p.next_pass(ctx.pipeline_name(pipeline))
                }
                _ => None,
            };
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: timed,
            });
            while let Some(Op::Dispatch {
                pipeline,
                params,
                bindings,
                workgroups,
            }) = self.ops.get(i)
            {
                let group = reuse.group(ctx, pipeline, uniforms.as_ref(), *params, bindings);
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
                i += 1;
                if one_per_pass {
                    break;
                }
            }
        }
        Some(ctx.queue.submit([encoder.finish()]))
    }
}

impl Reuse {
    /// A uniform buffer of at least `size` bytes; a larger one replaces a smaller one (and
    /// the groups that bound it).
    fn uniforms_for(&mut self, ctx: &GpuContext, size: u64) -> wgpu::Buffer {
        match &self.uniforms {
            Some(u) if u.size() >= size => u.clone(),
            _ => {
                let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: size.next_power_of_two(),
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                self.groups.clear();
                self.uniforms = Some(buffer.clone());
                buffer
            }
        }
    }

    /// The bind group for one dispatch, made once for its pipeline, parameter range and
    /// bindings.
    fn group(
        &mut self,
        ctx: &GpuContext,
        pipeline: &wgpu::ComputePipeline,
        uniforms: Option<&wgpu::Buffer>,
        params: (u64, u64),
        bindings: &[(u32, Binding)],
    ) -> wgpu::BindGroup {
        let key = GroupKey {
            pipeline: pipeline.clone(),
            params,
            bindings: bindings
                .iter()
                .map(|(slot, b)| (*slot, b.buffer.clone(), b.offset, b.size))
                .collect(),
        };
        if let Some(g) = self.groups.get(&key) {
            return g.clone();
        }
        let mut entries = Vec::with_capacity(bindings.len() + 1);
        if let Some(u) = uniforms {
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: u,
                    offset: params.0,
                    size: NonZeroU64::new(params.1),
                }),
            });
        }
        for (slot, b) in bindings {
            entries.push(wgpu::BindGroupEntry {
                binding: *slot,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &b.buffer,
                    offset: b.offset,
                    size: b.size.and_then(NonZeroU64::new),
                }),
            });
        }
        let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        if self.groups.len() >= MAX_CACHED_GROUPS {
            self.groups.clear();
        }
        self.groups.insert(key, group.clone());
        group
    }
}

/// A mappable buffer for `Batch::read_back_into`.
pub fn readback_buffer(ctx: &GpuContext, size: u64) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: size.next_multiple_of(4).max(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

impl Readback {
    /// Waits for the GPU and returns the bytes (natively by polling, in the browser by
    /// yielding to the event loop).
    pub async fn bytes(self, ctx: &GpuContext) -> Result<Vec<u8>> {
        self.request().read(ctx, None, |bytes| bytes.to_vec()).await
    }

    /// Asks for the mapping now; it is granted once the submission that fills the buffer
    /// has run, so the caller may submit (and prepare) more work before waiting.
    pub fn request(self) -> PendingReadback {
        let (sender, receiver) = oneshot();
        self.buffer
            .map_async(wgpu::MapMode::Read, ..self.size, move |r| sender.send(r));
        PendingReadback {
            buffer: self.buffer,
            size: self.size,
            mapped: receiver,
        }
    }

    pub async fn f32s(self, ctx: &GpuContext) -> Result<Vec<f32>> {
        let bytes = self.bytes(ctx).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    pub async fn u32s(self, ctx: &GpuContext) -> Result<Vec<u32>> {
        let bytes = self.bytes(ctx).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

/// A read-back whose mapping was asked for.
pub struct PendingReadback {
    buffer: wgpu::Buffer,
    size: u64,
    mapped: Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

impl PendingReadback {
    /// Waits for the mapping — natively by polling until `submission` has run (all submitted
    /// work when `None`), in the browser by yielding to the event loop — hands the bytes to
    /// `read` and unmaps the buffer.
    pub async fn read<T>(
        self,
        ctx: &GpuContext,
        submission: Option<wgpu::SubmissionIndex>,
        read: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        #[cfg(not(target_arch = "wasm32"))]
        ctx.device
            .poll(wgpu::PollType::Wait {
                submission_index: submission,
                timeout: None,
            })
            .map_err(|e| Error::gpu(format!("waiting for the GPU failed: {e}")))?;
        #[cfg(target_arch = "wasm32")]
        let _ = submission;
        let mapped = self.mapped.await;
        ctx.check_device_error()?;
        mapped
            .ok_or_else(|| Error::gpu("read-back was dropped (device lost?)"))?
            .map_err(|e| Error::gpu(format!("read-back failed: {e}")))?;
        let value = {
            let view = self
                .buffer
                .get_mapped_range(..self.size)
                .map_err(|e| Error::gpu(format!("read-back mapping failed: {e}")))?;
            read(&view)
        };
        self.buffer.unmap();
        Ok(value)
    }
}

/// A one-value channel whose receiver is a future (the map callback may run on another
/// thread natively, or later on the browser's event loop).
fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Slot {
        value: None,
        waker: None,
        closed: false,
    }));
    (Sender(shared.clone()), Receiver(shared))
}

struct Slot<T> {
    value: Option<T>,
    waker: Option<std::task::Waker>,
    closed: bool,
}

struct Sender<T>(std::sync::Arc<std::sync::Mutex<Slot<T>>>);
struct Receiver<T>(std::sync::Arc<std::sync::Mutex<Slot<T>>>);

impl<T> Sender<T> {
    fn send(self, value: T) {
        if let Ok(mut slot) = self.0.lock() {
            slot.value = Some(value);
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.0.lock() {
            slot.closed = true;
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
    }
}

impl<T> std::future::Future for Receiver<T> {
    type Output = Option<T>;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        let Ok(mut slot) = self.0.lock() else {
            return std::task::Poll::Ready(None);
        };
        if let Some(v) = slot.value.take() {
            return std::task::Poll::Ready(Some(v));
        }
        if slot.closed {
            return std::task::Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        std::task::Poll::Pending
    }
}
