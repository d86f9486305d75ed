//! Merging on the GPU, streamed: out = t + α·(inst − base) in f32, written in the output
//! dtype. Pieces of consecutive output tensors share one submission (a handful per model, not
//! one per tensor), in buffers made once; while the GPU merges one batch the host writes the
//! previous batch's results and reads the next batch's inputs. Target-independent: the
//! browser runs the same code.

use super::plan::PlannedDelta;
use crate::checkpoint::{Checkpoint, DType, Tensor};
use crate::error::{Error, Result};
use crate::gpu::batch::PendingReadback;
use crate::gpu::kernels::{self, graft_binding_bytes, GraftPipelines, Packed, GRAFT_GROUP};
use crate::gpu::tensor::STORAGE;
use crate::gpu::{Batch, GpuContext};

/// Bytes of each input region and of the output: large enough that a submission's fixed
/// cost vanishes, small enough that the buffers (six regions) stay a modest allocation.
const REGION_BYTES: u64 = 16 << 20;

/// Where a tensor's elements come from: a checkpoint, or memory.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    Stored(&'a Checkpoint, &'a str),
    Memory(&'a Tensor),
}

impl Source<'_> {
    fn name(&self) -> &str {
        match self {
            Source::Stored(_, name) => name,
            Source::Memory(t) => &t.name,
        }
    }

    /// Element type and count.
    fn shape(&self) -> Result<(DType, usize)> {
        match self {
            Source::Stored(cp, name) => cp.element_info(name),
            Source::Memory(t) => Ok((t.dtype, t.bytes.len() / t.dtype.size())),
        }
    }

    /// Elements from `start` on, `buf.len()` bytes of them.
    async fn read_into(&self, start: usize, buf: &mut [u8]) -> Result<()> {
        match self {
            Source::Stored(cp, name) => cp.read_elements_into(name, start, buf).await,
            Source::Memory(t) => {
                let from = start * t.dtype.size();
                let bytes = t.bytes.get(from..from + buf.len()).ok_or_else(|| {
                    Error::tensor_format(&t.name, &t.name, "piece lies outside the tensor")
                })?;
                buf.copy_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// One output tensor: the target's elements, the first `delta.elements` of them plus
/// α·(inst − base), followed by the instruct tensor's `delta.appended` elements (rows of
/// tokens the instruct model added, which have no Δ). Without a delta (a router) the
/// target's elements alone, converted to the output dtype.
pub struct OutputTensor<'a> {
    pub target: Source<'a>,
    pub delta: Option<DeltaSources<'a>>,
}

/// Δ's tensors and how it applies.
pub struct DeltaSources<'a> {
    pub instruct: Source<'a>,
    pub base: Source<'a>,
    pub delta: &'a PlannedDelta,
}

/// A contiguous run of output elements read from `t` from element `start` on, with Δ on
/// the first `delta_len` of them.
#[derive(Clone, Copy)]
struct Piece<'a> {
    t: Source<'a>,
    start: usize,
    len: usize,
    delta: Option<(Source<'a>, Source<'a>, f32)>,
    delta_len: usize,
}

/// A piece in the batch being filled: which output tensor it belongs to and where its
/// bytes land in the output buffer.
struct Placed {
    tensor: usize,
    out_offset: u64,
    out_bytes: u64,
}

/// A submitted batch: its pieces and the read-back that will hold them.
struct InFlight {
    pieces: Vec<Placed>,
    readback: PendingReadback,
    submission: Option<wgpu::SubmissionIndex>,
}

/// Receives each merged piece's bytes, in output order, with its tensor's index.
pub type Sink<'s> = dyn FnMut(usize, &[u8]) -> Result<()> + 's;

/// Buffers made once: three input regions (t, inst, base) in one storage buffer, the output,
/// and two read-backs, so one batch can be read back while the next one runs.
pub struct GraftStream<'c, 's> {
    ctx: &'c GpuContext,
    pipelines: GraftPipelines,
    out_dtype: DType,
    region: u64,
    alignment: u64,
    inputs: wgpu::Buffer,
    output: wgpu::Buffer,
    readbacks: [wgpu::Buffer; 2],
    next_readback: usize,
    host: Vec<u8>,
    batch: Batch<'c>,
    /// Bytes used of the t, inst, base and output regions.
    used: [u64; 4],
    filling: Vec<Placed>,
    in_flight: Option<InFlight>,
    sink: &'s mut Sink<'s>,
}

impl<'c, 's> GraftStream<'c, 's> {
    /// Buffers for merges into `out_dtype`, sized for pieces of at most `largest` bytes of
    /// any one input or output (a small model's buffers stay small).
    pub fn new(
        ctx: &'c GpuContext,
        out_dtype: DType,
        largest: u64,
        sink: &'s mut Sink<'s>,
    ) -> Result<Self> {
        let alignment = u64::from(ctx.device.limits().min_storage_buffer_offset_alignment);
        let fits = ctx.buffer_limit().min(ctx.max_buffer / 3);
        // The smallest useful region holds one padded group of f32 elements.
        let region = REGION_BYTES
            .min(largest.next_multiple_of(alignment))
            .min(fits / alignment * alignment)
            .max(alignment);
        if region > fits {
            return Err(Error::gpu(format!(
                "graft: the adapter's buffers ({fits} bytes) cannot hold one piece of {region} bytes"
            )));
        }
        let buffer = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        let read_back = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        Ok(Self {
            ctx,
            pipelines: GraftPipelines::default(),
            out_dtype,
            region,
            alignment,
            inputs: buffer("graft inputs", 3 * region, STORAGE),
            output: buffer("graft output", region, STORAGE),
            readbacks: [
                buffer("graft read-back", region, read_back),
                buffer("graft read-back", region, read_back),
            ],
            next_readback: 0,
            host: Vec::new(),
            batch: Batch::new(ctx),
            used: [0; 4],
            filling: Vec::new(),
            in_flight: None,
            sink,
        })
    }

    /// Queues output tensor number `index`; its bytes reach the sink in order, some time
    /// before `finish` returns.
    pub async fn push(&mut self, index: usize, tensor: &OutputTensor<'_>) -> Result<()> {
        let (t_dtype, count) = tensor.target.shape()?;
        let Some(d) = &tensor.delta else {
            return self.push_run(index, tensor.target, 0, count, None, 0).await;
        };
        let (elements, appended) = (d.delta.elements, d.delta.appended);
        let (_, inst_len) = d.instruct.shape()?;
        let (_, base_len) = d.base.shape()?;
        for (x, fits) in [
            (d.instruct, inst_len >= elements + appended),
            (d.base, base_len == elements),
        ] {
            if !fits || elements > count {
                return Err(Error::tensor_format(
                    tensor.target.name(),
                    x.name(),
                    format!(
                        "holds {} elements; the plan expects {elements} (+{appended} appended) \
                         of the target's {count} ({t_dtype:?})",
                        x.shape()?.1
                    ),
                ));
            }
        }
        let delta = Some((d.instruct, d.base, d.delta.alpha));
        self.push_run(index, tensor.target, 0, count, delta, elements)
            .await?;
        if appended > 0 {
            self.push_run(index, d.instruct, elements, appended, None, 0)
                .await?;
        }
        Ok(())
    }

    /// Elements `start..start + len` of `t` (Δ on the first `delta_len`), in pieces that fit.
    async fn push_run<'a>(
        &mut self,
        index: usize,
        t: Source<'a>,
        start: usize,
        len: usize,
        delta: Option<(Source<'a>, Source<'a>, f32)>,
        delta_len: usize,
    ) -> Result<()> {
        let mut size = t.shape()?.0.size().max(self.out_dtype.size());
        if let Some((i, b, _)) = delta {
            size = size.max(i.shape()?.0.size()).max(b.shape()?.0.size());
        }
        let per_piece = (self.region as usize / size) / GRAFT_GROUP * GRAFT_GROUP;
        let mut done = 0;
        // An empty tensor still passes through, as one empty piece.
        while done < len || (len == 0 && done == 0) {
            let n = (len - done).min(per_piece);
            let piece = Piece {
                t,
                start: start + done,
                len: n,
                delta,
                delta_len: delta_len.saturating_sub(done).min(n),
            };
            self.place(index, piece).await?;
            done += n;
            if len == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Reads one piece's inputs into the batch being filled and records its merge.
    async fn place(&mut self, index: usize, piece: Piece<'_>) -> Result<()> {
        let t_dtype = piece.t.shape()?.0;
        let delta = piece.delta.filter(|_| piece.delta_len > 0);
        let (i_dtype, b_dtype) = match delta {
            Some((i, b, _)) => (i.shape()?.0, b.shape()?.0),
            None => (t_dtype, t_dtype),
        };
        let delta_bytes = |dtype| match delta {
            Some(_) => graft_binding_bytes(dtype, piece.delta_len),
            None => 0,
        };
        let need = [
            graft_binding_bytes(t_dtype, piece.len),
            delta_bytes(i_dtype),
            delta_bytes(b_dtype),
            graft_binding_bytes(self.out_dtype, piece.len),
        ];
        if (0..4).any(|k| self.used[k] + need[k] > self.region) {
            self.flush().await?;
        }
        let at = self.used;
        for k in 0..4 {
            self.used[k] = (at[k] + need[k]).next_multiple_of(self.alignment);
        }
        self.upload(0, at[0], piece.t, piece.start, piece.len, t_dtype)
            .await?;
        if let Some((i, b, _)) = delta {
            self.upload(1, at[1], i, piece.start, piece.delta_len, i_dtype)
                .await?;
            self.upload(2, at[2], b, piece.start, piece.delta_len, b_dtype)
                .await?;
        }
        let input = |k: usize, dtype| Packed {
            buffer: &self.inputs,
            offset: k as u64 * self.region + at[k],
            dtype,
        };
        kernels::graft(
            &mut self.batch,
            &mut self.pipelines,
            input(0, t_dtype),
            input(1, i_dtype),
            input(2, b_dtype),
            Packed {
                buffer: &self.output,
                offset: at[3],
                dtype: self.out_dtype,
            },
            piece.len,
            piece.delta_len,
            delta.map_or(0.0, |(_, _, alpha)| alpha),
        )?;
        self.filling.push(Placed {
            tensor: index,
            out_offset: at[3],
            out_bytes: (piece.len * self.out_dtype.size()) as u64,
        });
        Ok(())
    }

    /// Copies `len` elements of `source` from `start` on into input region `k` at `offset`
    /// (through one reused host buffer; queue writes need whole words).
    async fn upload(
        &mut self,
        k: u64,
        offset: u64,
        source: Source<'_>,
        start: usize,
        len: usize,
        dtype: DType,
    ) -> Result<()> {
        let bytes = len * dtype.size();
        let padded = bytes.next_multiple_of(4);
        if self.host.len() < padded {
            self.host.resize(padded, 0);
        }
        source.read_into(start, &mut self.host[..bytes]).await?;
        self.host[bytes..padded].fill(0);
        self.ctx
            .queue
            .write_buffer(&self.inputs, k * self.region + offset, &self.host[..padded]);
        Ok(())
    }

    /// Submits the batch being filled, then hands the previous batch's results to the sink
    /// while this one runs.
    async fn flush(&mut self) -> Result<()> {
        if self.filling.is_empty() {
            return Ok(());
        }
        let readback = &self.readbacks[self.next_readback];
        self.next_readback ^= 1;
        let mut batch = std::mem::replace(&mut self.batch, Batch::new(self.ctx));
        let readback = batch.read_back_into(&self.output, 0, readback, self.used[3]);
        let submission = batch.submit();
        // Asked for only now: a buffer pending a mapping may not be used by a submission.
        let submitted = InFlight {
            pieces: std::mem::take(&mut self.filling),
            readback: readback.request(),
            submission,
        };
        self.used = [0; 4];
        match self.in_flight.replace(submitted) {
            Some(previous) => self.drain(previous).await,
            None => Ok(()),
        }
    }

    async fn drain(&mut self, batch: InFlight) -> Result<()> {
        let sink = &mut *self.sink;
        batch
            .readback
            .read(self.ctx, batch.submission, |bytes| {
                batch.pieces.iter().try_for_each(|p| {
                    let start = p.out_offset as usize;
                    sink(p.tensor, &bytes[start..start + p.out_bytes as usize])
                })
            })
            .await?
    }

    /// Merges what is still queued and hands every remaining piece to the sink.
    pub async fn finish(mut self) -> Result<()> {
        self.flush().await?;
        match self.in_flight.take() {
            Some(last) => self.drain(last).await,
            None => Ok(()),
        }
    }
}

/// Grafts `delta` onto target tensor `t` (its first `delta.elements` elements; the rest, rows
/// beyond the base's vocabulary, are copied), followed by `inst`'s appended elements: the
/// output tensor's bytes in `out_dtype`. The streamed path with one tensor.
pub async fn graft_tensor(
    ctx: &GpuContext,
    t: &Tensor,
    inst: &Tensor,
    base: &Tensor,
    delta: &PlannedDelta,
    out_dtype: DType,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut sink = |_: usize, bytes: &[u8]| -> Result<()> {
        out.extend_from_slice(bytes);
        Ok(())
    };
    let largest = [t, inst, base]
        .iter()
        .map(|x| x.bytes.len() as u64)
        .max()
        .unwrap_or(0)
        .max((t.bytes.len() / t.dtype.size() * out_dtype.size()) as u64);
    let mut stream = GraftStream::new(ctx, out_dtype, largest, &mut sink)?;
    let tensor = OutputTensor {
        target: Source::Memory(t),
        delta: Some(DeltaSources {
            instruct: Source::Memory(inst),
            base: Source::Memory(base),
            delta,
        }),
    };
    stream.push(0, &tensor).await?;
    stream.finish().await?;
    Ok(out)
}
