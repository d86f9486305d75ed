//! One tensor's merge on the GPU: out = t + α·(inst − base) in f32, written in the output
//! dtype, in pieces that fit the storage-binding limit. Target-independent: the browser runs
//! the same code.

use wgpu::util::DeviceExt;

use super::plan::PlannedDelta;
use crate::checkpoint::{DType, Tensor};
use crate::error::{Error, Result};
use crate::gpu::kernels::{self, GraftPipelines, Packed};
use crate::gpu::tensor::STORAGE;
use crate::gpu::{Batch, GpuContext};

/// Grafts `delta` onto target tensor `t`, returning the result's bytes in `out_dtype`.
/// `inst` and `base` hold Δ's source tensor; only the first `delta.elements` elements of `t`
/// get Δ, the rest (rows beyond the base's vocabulary) are copied.
pub async fn graft_tensor(
    ctx: &GpuContext,
    pipelines: &mut GraftPipelines,
    t: &Tensor,
    inst: &Tensor,
    base: &Tensor,
    delta: &PlannedDelta,
    out_dtype: DType,
) -> Result<Vec<u8>> {
    let count = elements(t);
    let delta_len = delta.elements;
    // The instruct tensor may hold more (rows of tokens it added, appended by the caller).
    for (x, fits) in [
        (inst, elements(inst) >= delta_len),
        (base, elements(base) == delta_len),
    ] {
        if !fits || delta_len > count {
            return Err(Error::tensor_format(
                &t.name,
                &x.name,
                format!(
                    "holds {} elements; the plan expects {delta_len} of {count}",
                    elements(x)
                ),
            ));
        }
    }
    // The output piece is the largest binding (4 bytes an element at most); an even length
    // keeps every 16-bit piece word-aligned.
    let limit = ctx.buffer_limit();
    let piece = (((limit / 4) as usize) & !1).max(2);
    let size = out_dtype.size();
    let mut out = Vec::with_capacity(count * size);
    let mut start = 0;
    while start < count {
        let end = (start + piece).min(count);
        let d_end = end.min(delta_len);
        let t_buf = upload(ctx, &t.name, t.dtype, &t.bytes, start, end);
        // Pieces past the base's rows read no Δ: bind the (unread) dummy.
        let (i_buf, b_buf) = if start < d_end {
            (
                upload(ctx, &inst.name, inst.dtype, &inst.bytes, start, d_end),
                upload(ctx, &base.name, base.dtype, &base.bytes, start, d_end),
            )
        } else {
            (ctx.dummy.clone(), ctx.dummy.clone())
        };
        let out_words = ((end - start) * size).div_ceil(4);
        let out_buf = ctx.create_storage(&t.name, out_words)?;
        let mut batch = Batch::new(ctx);
        kernels::graft(
            &mut batch,
            pipelines,
            Packed {
                buffer: &t_buf,
                dtype: t.dtype,
            },
            Packed {
                buffer: &i_buf,
                dtype: inst.dtype,
            },
            Packed {
                buffer: &b_buf,
                dtype: base.dtype,
            },
            Packed {
                buffer: &out_buf,
                dtype: out_dtype,
            },
            end - start,
            d_end.saturating_sub(start),
            delta.alpha,
        );
        let readback = batch.read_back(&out_buf, 0, (out_words * 4) as u64);
        batch.submit();
        let bytes = readback.bytes(ctx).await?;
        // An odd 16-bit piece (the tensor's last) ends in half a word of padding.
        out.extend_from_slice(&bytes[..(end - start) * size]);
        start = end;
    }
    Ok(out)
}

fn elements(t: &Tensor) -> usize {
    t.bytes.len() / t.dtype.size()
}

/// Elements `start..end` of a tensor as a u32-packed storage buffer (padded to a whole word).
fn upload(
    ctx: &GpuContext,
    label: &str,
    dtype: DType,
    bytes: &[u8],
    start: usize,
    end: usize,
) -> wgpu::Buffer {
    let size = dtype.size();
    // create_buffer_init pads to a whole word itself; only an empty piece needs a stand-in.
    let contents = match &bytes[start * size..end * size] {
        [] => &[0u8; 4][..],
        piece => piece,
    };
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: STORAGE,
        })
}
