//! Typed launchers for the WGSL kernels: each packs its parameters exactly as the shader's
//! `Params` struct and records one dispatch (or one per weight chunk) into a batch.

use bytemuck::{Pod, Zeroable};

use super::batch::{Batch, Binding};
use super::shaders::{PipelineKey, Shader};
use super::tensor::{GpuMatrix, WeightFormat};
use super::KernelLayout;
use crate::checkpoint::config::Activation;
use crate::checkpoint::DType;
use crate::error::{Error, Result};

pub(crate) fn key(shader: Shader, entry: &'static str) -> PipelineKey {
    PipelineKey {
        shader,
        entry,
        weight_format: None,
        swiglu: false,
        gelu: false,
    }
}

pub(crate) fn b(buffer: &wgpu::Buffer) -> Binding {
    Binding::from(buffer)
}

/// `buffer` bound again as an array of vec4s (row_dot's wide path); one too small to hold a
/// vec4 cannot take that path, so the (16-byte) dummy stands in.
fn wide(ctx: &super::GpuContext, buffer: &wgpu::Buffer) -> Binding {
    b(if buffer.size() >= 16 {
        buffer
    } else {
        &ctx.dummy
    })
}

pub(crate) fn u(v: usize) -> u32 {
    v as u32
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulParams {
    tokens: u32,
    cols: u32,
    row_words: u32,
    row_start: u32,
    chunk_rows: u32,
    x_stride: u32,
    y_stride: u32,
    y_offset: u32,
    has_bias: u32,
    accumulate: u32,
    _pad: [u32; 2],
}

/// Where a projection writes: `y[y_offset + t·y_stride + n]`, added to what is there when
/// `accumulate` (the residual connection).
#[derive(Clone, Copy)]
pub struct Output<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: usize,
    pub stride: usize,
    pub accumulate: bool,
}

impl<'a> Output<'a> {
    pub fn new(buffer: &'a wgpu::Buffer, stride: usize) -> Self {
        Self {
            buffer,
            offset: 0,
            stride,
            accumulate: false,
        }
    }
    pub fn at(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }
    pub fn accumulate(mut self) -> Self {
        self.accumulate = true;
        self
    }
}

/// Token count from which the tiled matmul beats the per-row matvec.
pub const TILED_FROM_TOKENS: usize = 8;

/// y = x · Wᵀ (+ bias), x: [tokens, w.cols] with rows `x_stride` apart.
pub fn matmul(
    batch: &mut Batch,
    x: &wgpu::Buffer,
    tokens: usize,
    x_stride: usize,
    w: &GpuMatrix,
    bias: Option<&wgpu::Buffer>,
    y: Output,
) {
    project(batch, x, tokens, x_stride, w, bias, y, Fused::None);
}

/// The fused gate/up projection and SwiGLU: y[t, n] = silu(gate_n · x_t) · (up_n · x_t), with
/// `gate_up` holding gate and up rows interleaved (see `GpuContext::create_matrix_in_pairs`)
/// and `bias` likewise. Decode does it in one matvec; prefill projects into `scratch`
/// ([tokens, 2·n]) and pairs the halves in a second pass.
#[allow(clippy::too_many_arguments)]
pub fn matmul_swiglu(
    batch: &mut Batch,
    x: &wgpu::Buffer,
    tokens: usize,
    x_stride: usize,
    gate_up: &GpuMatrix,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
    scratch: &wgpu::Buffer,
) {
    let gated = GatedFfn {
        gate_up,
        bias,
        activation: Activation::Silu,
    };
    matmul_gated(batch, x, tokens, x_stride, gated, y, scratch);
}

/// A fused gate/up projection, its gate's activation and the bias.
pub struct GatedFfn<'a> {
    pub gate_up: &'a GpuMatrix,
    pub bias: Option<&'a wgpu::Buffer>,
    pub activation: Activation,
}

/// `matmul_swiglu` with the gate's activation chosen: y[t, n] = act(gate_n · x_t) · (up_n · x_t).
pub fn matmul_gated(
    batch: &mut Batch,
    x: &wgpu::Buffer,
    tokens: usize,
    x_stride: usize,
    f: GatedFfn,
    y: &wgpu::Buffer,
    scratch: &wgpu::Buffer,
) {
    let n = f.gate_up.rows / 2;
    // Decode fuses the activation into the matvec; prefill projects the pairs into `scratch`
    // and pairs them in a second pass.
    let decode = tokens < TILED_FROM_TOKENS;
    let (out, fused) = if decode {
        (Output::new(y, n), Fused::Gated(f.activation))
    } else {
        (Output::new(scratch, f.gate_up.rows), Fused::None)
    };
    project(batch, x, tokens, x_stride, f.gate_up, f.bias, out, fused);
    if !decode {
        gated_pairs(batch, scratch, y, tokens * n, f.activation);
    }
}

/// What a projection fuses into its output.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fused {
    None,
    /// Rows in gate/up pairs, written as act(gate) · up (decode only).
    Gated(Activation),
}

/// out[i] = silu(gate_up[2i]) · gate_up[2i + 1] for `pairs` values: the SwiGLU of a fused
/// gate/up projection's output.
pub fn swiglu_pairs(batch: &mut Batch, gate_up: &wgpu::Buffer, out: &wgpu::Buffer, pairs: usize) {
    gated_pairs(batch, gate_up, out, pairs, Activation::Silu);
}

/// `swiglu_pairs` with the gate's activation chosen (gelu_tanh: gemma's GeGLU).
pub fn gated_pairs(
    batch: &mut Batch,
    gate_up: &wgpu::Buffer,
    out: &wgpu::Buffer,
    pairs: usize,
    activation: Activation,
) {
    let params = CountParams {
        count: u(pairs),
        _pad: [0; 3],
    };
    let pipeline = batch.ctx().pipeline(PipelineKey {
        gelu: activation == Activation::GeluTanh,
        ..key(Shader::Activation, "swiglu_pairs")
    });
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(1, b(gate_up)), (3, b(out))],
        u(pairs.div_ceil(256)),
    );
}

/// Whether every row of `w` and every token's x can take row_dot's wide path (16-bit or Q8_0
/// words and x quads starting 16-byte aligned, K whole groups of eight; Q8_0 rows always
/// are), so the CPU adapters' kernels can give each invocation four rows (the entry points
/// ending in `rows4`).
fn wide_rows(w: &GpuMatrix, x_stride: usize) -> bool {
    matches!(
        w.format,
        WeightFormat::Plain(DType::F16 | DType::BF16) | WeightFormat::Q8_0
    ) && w.row_words.is_multiple_of(4)
        && w.cols.is_multiple_of(8)
        && x_stride.is_multiple_of(4)
}

/// `rest` plus the per-word views of x and w (`plain`), which the four- and eight-row kernels
/// (entry points ending in `rows4` or `rows8`) do not declare: they read both only as vec4s.
fn four_row_bindings(
    entry: &str,
    plain: [(u32, Binding); 2],
    mut rest: Vec<(u32, Binding)>,
) -> Vec<(u32, Binding)> {
    if !entry.ends_with("rows4") && !entry.ends_with("rows8") {
        rest.extend(plain);
    }
    rest
}

/// One projection's dispatches, one per weight chunk. `Fused::Gated` (decode only) takes the
/// rows in gate/up pairs and writes act(gate) · up per pair.
#[allow(clippy::too_many_arguments)]
fn project(
    batch: &mut Batch,
    x: &wgpu::Buffer,
    tokens: usize,
    x_stride: usize,
    w: &GpuMatrix,
    bias: Option<&wgpu::Buffer>,
    y: Output,
    fused: Fused,
) {
    let ctx = batch.ctx();
    let swiglu = fused != Fused::None;
    let gelu = fused == Fused::Gated(Activation::GeluTanh);
    let tiled = tokens >= TILED_FROM_TOKENS;
    // With swiglu the kernel's rows are gate/up pairs (chunks hold whole pairs).
    let per_row = if swiglu { 2 } else { 1 };
    // (shader, entry point, rows per workgroup, tokens per workgroup). On CPU adapters
    // `matvec_rows` beats the subgroup matvec (BENCHMARKS.md), so subgroups serve the lanes
    // layout only.
    let (shader, entry, group_rows, group_tokens) =
        match (tiled, ctx.layout == KernelLayout::Rows, ctx.subgroups) {
            (true, true, _) if wide_rows(w, x_stride) => (Shader::Matmul, "matmul_rows4", 64, 4),
            (true, true, _) => (Shader::Matmul, "matmul_rows", 64, 4),
            (true, false, _) => (Shader::Matmul, "matmul_tiled", 32, 32),
            (false, true, _) if wide_rows(w, x_stride) && w.format == WeightFormat::Q8_0 => {
                (Shader::Matmul, "matvec_rows8", 128 / per_row, 1)
            }
            (false, true, _) if wide_rows(w, x_stride) => {
                (Shader::Matmul, "matvec_rows4", 64 / per_row, 1)
            }
            (false, true, _) => (Shader::Matmul, "matvec_rows", 64, 1),
            (false, false, true) => (Shader::MatvecSubgroup, "matvec_subgroup", 8, 1),
            (false, false, false) => (Shader::Matmul, "matvec", 4, 1),
        };
    let pipeline = ctx.pipeline(PipelineKey {
        shader,
        entry,
        weight_format: Some(w.format),
        swiglu,
        gelu,
    });
    for chunk in &w.chunks {
        if chunk.rows == 0 {
            continue;
        }
        let rows = chunk.rows / per_row;
        let params = MatmulParams {
            tokens: u(tokens),
            cols: u(w.cols),
            row_words: u(w.row_words),
            row_start: u(chunk.row_start / per_row),
            chunk_rows: u(rows),
            x_stride: u(x_stride),
            y_stride: u(y.stride),
            y_offset: u(y.offset),
            has_bias: bias.is_some() as u32,
            accumulate: y.accumulate as u32,
            _pad: [0; 2],
        };
        let groups = rows.div_ceil(group_rows) * tokens.div_ceil(group_tokens);
        let mut bindings = four_row_bindings(
            entry,
            [(1, b(x)), (2, b(&chunk.buffer))],
            vec![(3, b(bias.unwrap_or(&ctx.dummy))), (4, b(y.buffer))],
        );
        // The matvecs and matmul_rows read x and w a vec4 at a time where they can.
        if entry != "matmul_tiled" {
            bindings.extend([(5, wide(ctx, &chunk.buffer)), (6, wide(ctx, x))]);
        }
        batch.dispatch(
            pipeline.clone(),
            bytemuck::bytes_of(&params),
            bindings,
            u(groups),
        );
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct NormParams {
    tokens: u32,
    dim: u32,
    eps: f32,
    heads: u32,
    q_heads: u32,
    stride: u32,
    _pad: [u32; 2],
}

/// y = RMSNorm(x) · weight per token.
pub fn rms_norm(
    batch: &mut Batch,
    x: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    y: &wgpu::Buffer,
    tokens: usize,
    dim: usize,
    eps: f32,
) {
    let params = NormParams {
        tokens: u(tokens),
        dim: u(dim),
        eps,
        heads: 0,
        q_heads: 0,
        stride: 0,
        _pad: [0; 2],
    };
    let pipeline = batch.ctx().pipeline(key(Shader::Norm, "rms_norm"));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(1, b(x)), (2, b(weight)), (3, b(y))],
        u(tokens),
    );
}

/// Where the per-head q/k norm applies: `tokens` rows of `stride` elements, each starting with
/// `q_heads` q heads then `kv_heads` k heads of `head_dim`.
pub struct HeadNormTarget<'a> {
    pub qkv: &'a wgpu::Buffer,
    pub tokens: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub stride: usize,
}

/// qwen3's q_norm and k_norm in place: each q and k head RMS-normalised over its own
/// elements and scaled by `weight` (q_norm's `head_dim` values, then k_norm's).
pub fn head_rms_norm(batch: &mut Batch, t: HeadNormTarget<'_>, weight: &wgpu::Buffer, eps: f32) {
    let heads = t.q_heads + t.kv_heads;
    let params = NormParams {
        tokens: u(t.tokens),
        dim: u(t.head_dim),
        eps,
        heads: u(heads),
        q_heads: u(t.q_heads),
        stride: u(t.stride),
        _pad: [0; 2],
    };
    let pipeline = batch.ctx().pipeline(key(Shader::Norm, "head_rms_norm"));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(4, b(t.qkv)), (5, b(weight))],
        u(t.tokens * heads),
    );
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RopeParams {
    tokens: u32,
    pos0: u32,
    heads: u32,
    head_dim: u32,
    stride: u32,
    offset: u32,
    kv_heads: u32,
    _pad: u32,
}

/// Where RoPE applies: `heads` heads of `head_dim` per token, tokens `stride` apart from
/// element `offset`, at absolute positions pos0…
pub struct RopeTarget<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub tokens: usize,
    pub pos0: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub stride: usize,
    pub offset: usize,
}

pub fn rope(batch: &mut Batch, t: RopeTarget, cos: &wgpu::Buffer, sin: &wgpu::Buffer) {
    let params = RopeParams {
        tokens: u(t.tokens),
        pos0: u(t.pos0),
        heads: u(t.heads),
        head_dim: u(t.head_dim),
        stride: u(t.stride),
        offset: u(t.offset),
        kv_heads: 0,
        _pad: 0,
    };
    let pipeline = batch.ctx().pipeline(key(Shader::Rope, "rope"));
    let count = t.tokens * t.heads * t.head_dim / 2;
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(1, b(t.buffer)), (2, b(cos)), (3, b(sin))],
        u(count.div_ceil(64)),
    );
}

/// The fused q/k/v projection's output, `tokens` rows of q | k | v at positions pos0…, and
/// where its parts go: q (rotated) into `q` as [tokens, heads·head_dim], k (rotated) and v
/// into the caches from element `slot`.
pub struct QkvSplit<'a> {
    pub qkv: &'a wgpu::Buffer,
    pub q: &'a wgpu::Buffer,
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
    pub tokens: usize,
    pub pos0: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub slot: usize,
}

/// RoPE on q and k and the cache append, in one dispatch.
pub fn rope_qkv(batch: &mut Batch, s: QkvSplit, cos: &wgpu::Buffer, sin: &wgpu::Buffer) {
    let params = RopeParams {
        tokens: u(s.tokens),
        pos0: u(s.pos0),
        heads: u(s.heads),
        head_dim: u(s.head_dim),
        stride: u((s.heads + 2 * s.kv_heads) * s.head_dim),
        offset: u(s.slot),
        kv_heads: u(s.kv_heads),
        _pad: 0,
    };
    let pipeline = batch.ctx().pipeline(key(Shader::Rope, "rope_qkv"));
    let count = s.tokens * (s.heads + 2 * s.kv_heads) * s.head_dim / 2;
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![
            (2, b(cos)),
            (3, b(sin)),
            (4, b(s.qkv)),
            (5, b(s.q)),
            (6, b(s.k_cache)),
            (7, b(s.v_cache)),
        ],
        u(count.div_ceil(64)),
    );
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AttentionParams {
    tokens: u32,
    pos0: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    window: u32,
    scale: f32,
    splits: u32,
    row0: u32,
    row_end: u32,
    _pad: [u32; 2],
}

/// Shape of one attention call.
#[derive(Clone, Copy)]
pub struct AttentionShape {
    pub tokens: usize,
    pub pos0: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Sliding window, 0 for none.
    pub window: usize,
}

/// llvmpipe (lavapipe) ends an invocation after 65 535 loop iterations, all its loops
/// together (`LP_MAX_TGSI_LOOP_ITERATIONS`), and the results are then silently wrong.
/// `attention_rows` runs about keys · (2 · head_dim + 1) of them, so longer contexts take the
/// workgroup kernel, whose invocations loop about 2 · keys times.
fn fits_loop_budget(s: AttentionShape) -> bool {
    visible_keys(s) * (2 * s.head_dim + 1) + s.head_dim < 60_000
}

/// The most keys one query row sees: the whole context, or its sliding window.
fn visible_keys(s: AttentionShape) -> usize {
    let keys = s.pos0 + s.tokens;
    if s.window > 0 {
        keys.min(s.window)
    } else {
        keys
    }
}

/// Keys one `attention_split` invocation visits (`SPLIT_KEYS` in `shaders/attention.wgsl`).
const ATTENTION_SPLIT_KEYS: usize = 64;
/// (query token, head) rows up to which attention splits the keys: decoding and short
/// chunks, whose few rows would otherwise leave most of the device idle.
const ATTENTION_SPLIT_ROWS: usize = 64;

/// Rows of scores the CPU adapters' two passes hold at once: a prefill chunk's rows go through
/// in blocks of this many, so their scratch is this many rows of the context, not the chunk's.
const SCORE_BLOCK_ROWS: usize = 256;
/// The fewest rows a block of the two passes may hold (a smaller scratch, cut by the binding
/// limit at a huge context, keeps to the one-pass kernels rather than run many tiny blocks).
const SCORE_BLOCK_MIN_ROWS: usize = 16;

/// f32 values of the scratch `attention` needs for `rows` (query token, head) rows over
/// `keys` cache positions: the partial softmaxes of split keys (few rows), and on CPU adapters
/// (`layout` Rows) a block of rows' scores.
pub fn attention_partials_len(
    rows: usize,
    keys: usize,
    head_dim: usize,
    layout: KernelLayout,
) -> usize {
    let split_rows = rows.min(ATTENTION_SPLIT_ROWS);
    let score_rows = match layout {
        KernelLayout::Rows => rows.min(SCORE_BLOCK_ROWS),
        _ => split_rows,
    };
    split_partials_len(split_rows, keys, head_dim).max(score_rows * keys)
}

/// What `attention_split` writes: each range's max, sum of exp and head_dim outputs.
fn split_partials_len(rows: usize, keys: usize, head_dim: usize) -> usize {
    rows * keys.div_ceil(ATTENTION_SPLIT_KEYS) * (head_dim + 2)
}

/// Whether a call of few rows can take the CPU adapters' two passes (`attention_scores`, then
/// `attention_values`): head_dim whole vec4s, and the values pass's loop over a row's keys
/// within llvmpipe's loop budget (see `fits_loop_budget`).
fn scores_then_values(s: AttentionShape) -> bool {
    s.head_dim.is_multiple_of(4) && visible_keys(s) < 60_000
}

/// out = softmax(q·Kᵀ/√d + causal mask)·V over cache positions 0..pos0+tokens. A call with
/// few rows and many keys splits the keys in ranges merged afterwards, in `partials` (sized
/// by `attention_partials_len`; a smaller one keeps the call whole).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    batch: &mut Batch,
    q: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    out: &wgpu::Buffer,
    partials: &wgpu::Buffer,
    s: AttentionShape,
) {
    let rows = s.tokens * s.heads;
    let keys = s.pos0 + s.tokens;
    let splits = keys.div_ceil(ATTENTION_SPLIT_KEYS);
    let split = rows <= ATTENTION_SPLIT_ROWS
        && splits > 1
        && (split_partials_len(rows, keys, s.head_dim) * 4) as u64 <= partials.size();
    let params = AttentionParams {
        tokens: u(s.tokens),
        pos0: u(s.pos0),
        heads: u(s.heads),
        kv_heads: u(s.kv_heads),
        head_dim: u(s.head_dim),
        window: u(s.window),
        scale: 1.0 / (s.head_dim as f32).sqrt(),
        splits: u(splits),
        row0: 0,
        row_end: u(rows),
        _pad: [0; 2],
    };
    let ctx = batch.ctx();
    let caches = [(1, b(q)), (2, b(k_cache)), (3, b(v_cache))];
    // The one-invocation kernels read q and the caches a vec4 at a time where they can.
    let wide_caches = [
        (6, wide(ctx, q)),
        (7, wide(ctx, k_cache)),
        (8, wide(ctx, v_cache)),
    ];
    // On a CPU adapter every load costs a loop over the SIMD lanes, and the split kernel's
    // and attention_rows' per-invocation output arrays go through memory: scoring every key in
    // one pass and weighing the values in a second reads far less (BENCHMARKS.md), for
    // decoding and prefill alike.
    if ctx.layout == KernelLayout::Rows
        && scores_then_values(s)
        && scores_then_values_in_blocks(batch, [q, k_cache, v_cache, out, partials], s, params)
    {
        return;
    }
    let params = bytemuck::bytes_of(&params);
    if split {
        let pipeline = ctx.pipeline(key(Shader::Attention, "attention_split"));
        let mut bindings = [caches, wide_caches].concat();
        bindings.push((5, b(partials)));
        batch.dispatch(pipeline, params, bindings, u((rows * splits).div_ceil(64)));
        let pipeline = ctx.pipeline(key(Shader::Attention, "attention_combine"));
        let bindings = vec![(4, b(out)), (5, b(partials))];
        batch.dispatch(
            pipeline,
            params,
            bindings,
            u((rows * s.head_dim).div_ceil(64)),
        );
        return;
    }
    let rows_kernel = ctx.layout == KernelLayout::Rows && fits_loop_budget(s);
    let (entry, groups) = if rows_kernel {
        ("attention_rows", rows.div_ceil(64))
    } else {
        ("attention", rows)
    };
    let mut bindings = caches.to_vec();
    if rows_kernel {
        bindings.extend(wide_caches);
    }
    bindings.push((4, b(out)));
    batch.dispatch(
        ctx.pipeline(key(Shader::Attention, entry)),
        params,
        bindings,
        u(groups),
    );
}

/// The CPU adapters' two attention passes over blocks of rows whose scores fit in `partials`
/// ([q, k_cache, v_cache, out, partials]); false, recording nothing, where too few fit. Where
/// query heads share a KV head both passes take four of a group an invocation (`_grouped`),
/// so a block holds whole tokens.
fn scores_then_values_in_blocks(
    batch: &mut Batch,
    [q, k_cache, v_cache, out, partials]: [&wgpu::Buffer; 5],
    s: AttentionShape,
    params: AttentionParams,
) -> bool {
    let ctx = batch.ctx();
    let rows = s.tokens * s.heads;
    let keys = s.pos0 + s.tokens;
    let group = s.heads / s.kv_heads.max(1);
    let grouped = group >= 2;
    let mut block_rows = (partials.size() / 4) as usize / keys;
    if grouped {
        block_rows = block_rows / s.heads * s.heads;
    }
    if block_rows == 0 || block_rows < rows.min(SCORE_BLOCK_MIN_ROWS) {
        return false;
    }
    let (scores_entry, values_entry) = match grouped {
        true => ("attention_scores_grouped", "attention_values_grouped"),
        false => ("attention_scores", "attention_values"),
    };
    let scores = ctx.pipeline(key(Shader::Attention, scores_entry));
    let values = ctx.pipeline(key(Shader::Attention, values_entry));
    let pairs = (s.head_dim / 4).div_ceil(2);
    for row0 in (0..rows).step_by(block_rows) {
        let row_end = (row0 + block_rows).min(rows);
        let block = AttentionParams {
            row0: u(row0),
            row_end: u(row_end),
            ..params
        };
        let block = bytemuck::bytes_of(&block);
        // What one invocation's (token, head) rows are: one row, or four heads of a group.
        let n = row_end - row0;
        let units = match grouped {
            true => n / s.heads * s.kv_heads * group.div_ceil(4),
            false => n,
        };
        let bindings = vec![(5, b(partials)), (6, wide(ctx, q)), (7, wide(ctx, k_cache))];
        let invocations = units * keys.div_ceil(4);
        batch.dispatch(scores.clone(), block, bindings, u(invocations.div_ceil(64)));
        let bindings = vec![(4, b(out)), (5, b(partials)), (8, wide(ctx, v_cache))];
        let invocations = units * pairs;
        batch.dispatch(values.clone(), block, bindings, u(invocations.div_ceil(16)));
    }
    true
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CountParams {
    count: u32,
    _pad: [u32; 3],
}

fn elementwise(
    batch: &mut Batch,
    entry: &'static str,
    a: &wgpu::Buffer,
    bb: &wgpu::Buffer,
    out: &wgpu::Buffer,
    count: usize,
) {
    let params = CountParams {
        count: u(count),
        _pad: [0; 3],
    };
    let pipeline = batch.ctx().pipeline(key(Shader::Activation, entry));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(1, b(a)), (2, b(bb)), (3, b(out))],
        u(count.div_ceil(256)),
    );
}

/// x[t, n] += sigmoid(gate[t]) · y[t, n] for `tokens` rows of `dim` (qwen2_moe's shared
/// expert).
pub fn gated_add(
    batch: &mut Batch,
    y: &wgpu::Buffer,
    gate: &wgpu::Buffer,
    x: &wgpu::Buffer,
    tokens: usize,
    dim: usize,
) {
    let bindings = vec![(1, b(y)), (2, b(gate)), (3, b(x))];
    rows_op(batch, "gated_add", bindings, tokens, dim);
}

/// x[i] += y[i] for `count` values (a block's normalised output joining the residual stream).
pub fn add_into(batch: &mut Batch, y: &wgpu::Buffer, x: &wgpu::Buffer, count: usize) {
    // One row of `count`: the bias kernel adds y element for element.
    add_bias(batch, y, x, 1, count);
}

/// x[t, n] += bias[n] for `tokens` rows of `dim`.
pub fn add_bias(
    batch: &mut Batch,
    bias: &wgpu::Buffer,
    x: &wgpu::Buffer,
    tokens: usize,
    dim: usize,
) {
    rows_op(
        batch,
        "add_bias",
        vec![(2, b(bias)), (3, b(x))],
        tokens,
        dim,
    );
}

fn rows_op(
    batch: &mut Batch,
    entry: &'static str,
    bindings: Vec<(u32, Binding)>,
    tokens: usize,
    dim: usize,
) {
    let count = tokens * dim;
    let params = CountParams {
        count: u(count),
        _pad: [u(dim), 0, 0],
    };
    let pipeline = batch.ctx().pipeline(key(Shader::Activation, entry));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        bindings,
        u(count.div_ceil(256)),
    );
}

/// out = silu(gate) · up, element-wise over `count` values.
pub fn swiglu(
    batch: &mut Batch,
    gate: &wgpu::Buffer,
    up: &wgpu::Buffer,
    out: &wgpu::Buffer,
    count: usize,
) {
    elementwise(batch, "swiglu", gate, up, out, count);
}

/// out = a + b, element-wise.
pub fn add(
    batch: &mut Batch,
    a: &wgpu::Buffer,
    bb: &wgpu::Buffer,
    out: &wgpu::Buffer,
    count: usize,
) {
    elementwise(batch, "add", a, bb, out, count);
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct EmbedParams {
    tokens: u32,
    cols: u32,
    row_words: u32,
    row_start: u32,
    chunk_rows: u32,
    scale: f32,
    _pad: [u32; 2],
}

/// out[t] = table[ids[t]] as f32.
pub fn embed(
    batch: &mut Batch,
    ids: &wgpu::Buffer,
    table: &GpuMatrix,
    out: &wgpu::Buffer,
    tokens: usize,
) {
    embed_scaled(batch, ids, table, out, tokens, 1.0);
}

/// out[t] = table[ids[t]] · scale as f32 (gemma's √hidden).
pub fn embed_scaled(
    batch: &mut Batch,
    ids: &wgpu::Buffer,
    table: &GpuMatrix,
    out: &wgpu::Buffer,
    tokens: usize,
    scale: f32,
) {
    let pipeline = batch.ctx().pipeline(PipelineKey {
        shader: Shader::Embed,
        entry: "embed",
        weight_format: Some(table.format),
        swiglu: false,
        gelu: false,
    });
    for chunk in &table.chunks {
        if chunk.rows == 0 {
            continue;
        }
        let params = EmbedParams {
            tokens: u(tokens),
            cols: u(table.cols),
            row_words: u(table.row_words),
            row_start: u(chunk.row_start),
            chunk_rows: u(chunk.rows),
            scale,
            _pad: [0; 2],
        };
        batch.dispatch(
            pipeline.clone(),
            bytemuck::bytes_of(&params),
            vec![(1, b(ids)), (2, b(&chunk.buffer)), (3, b(out))],
            u((tokens * table.cols).div_ceil(64)),
        );
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct MoeParams {
    tokens: u32,
    experts: u32,
    top_k: u32,
    renormalize: u32,
    rows: u32,
    cols: u32,
    row_words: u32,
    chunk_row_start: u32,
    chunk_rows: u32,
    x_per_slot: u32,
    _unused: u32,
    forced_expert: u32,
    has_bias: u32,
    _pad: [u32; 3],
}

/// How routing departs from the router's own choice (see `model::routing::RouterMode`).
#[derive(Clone, Copy, Default)]
pub struct RouteSteer<'a> {
    /// [tokens, experts] added to the router logits before the softmax.
    pub bias: Option<&'a wgpu::Buffer>,
    /// Every token to this expert with weight 1 (other slots: the same id, weight 0).
    pub forced_expert: Option<usize>,
}

/// Router probabilities → top-k expert ids and weights per token, on the GPU.
#[allow(clippy::too_many_arguments)]
pub fn route_topk(
    batch: &mut Batch,
    router_logits: &wgpu::Buffer,
    ids: &wgpu::Buffer,
    weights: &wgpu::Buffer,
    tokens: usize,
    experts: usize,
    top_k: usize,
    renormalize: bool,
    steer: RouteSteer,
) {
    let params = MoeParams {
        tokens: u(tokens),
        experts: u(experts),
        top_k: u(top_k),
        renormalize: renormalize as u32,
        forced_expert: steer.forced_expert.map_or(u32::MAX, u),
        has_bias: steer.bias.is_some() as u32,
        ..Default::default()
    };
    let pipeline = batch.ctx().pipeline(key(Shader::Moe, "route_topk"));
    // Without a bias the logits stand in for it: the binding must exist but is never read.
    let bias = steer.bias.unwrap_or(router_logits);
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![
            (1, b(router_logits)),
            (2, b(ids)),
            (3, b(weights)),
            (11, b(bias)),
        ],
        u(tokens.div_ceil(64)),
    );
}

/// One expert projection for every (token, slot): `w` stacks the experts' [rows, cols]
/// matrices; the expert of each slot is read from `ids` on the GPU.
#[allow(clippy::too_many_arguments)]
pub fn expert_matvec(
    batch: &mut Batch,
    x: &wgpu::Buffer,
    w: &GpuMatrix,
    rows_per_expert: usize,
    ids: &wgpu::Buffer,
    y: &wgpu::Buffer,
    tokens: usize,
    top_k: usize,
    x_per_slot: bool,
) {
    let slots = Slots {
        ids,
        tokens,
        top_k,
        x_per_slot,
    };
    expert_projection(batch, x, w, rows_per_expert, slots, y, false);
}

/// The experts' gate and up projections and the SwiGLU in one pass: `gate_up` stacks each
/// expert's gate and up rows interleaved (as `GpuContext::create_matrix_in_pairs` keeps them),
/// `intermediate` pairs per expert; y[(t, s), n] = silu(gate_n · x_t) · (up_n · x_t).
#[allow(clippy::too_many_arguments)]
pub fn expert_swiglu(
    batch: &mut Batch,
    x: &wgpu::Buffer,
    gate_up: &GpuMatrix,
    intermediate: usize,
    ids: &wgpu::Buffer,
    y: &wgpu::Buffer,
    tokens: usize,
    top_k: usize,
) {
    let slots = Slots {
        ids,
        tokens,
        top_k,
        x_per_slot: false,
    };
    expert_projection(batch, x, gate_up, intermediate, slots, y, true);
}

/// Which expert each (token, slot) uses, and whether x holds a row per slot or per token.
struct Slots<'a> {
    ids: &'a wgpu::Buffer,
    tokens: usize,
    top_k: usize,
    x_per_slot: bool,
}

fn expert_projection(
    batch: &mut Batch,
    x: &wgpu::Buffer,
    w: &GpuMatrix,
    rows_per_expert: usize,
    slots: Slots,
    y: &wgpu::Buffer,
    swiglu: bool,
) {
    let rows = batch.ctx().layout == KernelLayout::Rows;
    // With swiglu the kernel's rows are gate/up pairs (chunks hold whole pairs).
    let per_row = if swiglu { 2 } else { 1 };
    let (entry, rows_per_group) = match (rows, wide_rows(w, w.cols)) {
        (true, true) => ("expert_matvec_rows4", 64 / per_row),
        (true, false) => ("expert_matvec_rows", 64),
        (false, _) => ("expert_matvec", 4),
    };
    let pipeline = batch.ctx().pipeline(PipelineKey {
        shader: Shader::Moe,
        entry,
        weight_format: Some(w.format),
        swiglu,
        gelu: false,
    });
    for chunk in &w.chunks {
        if chunk.rows == 0 {
            continue;
        }
        let params = MoeParams {
            tokens: u(slots.tokens),
            top_k: u(slots.top_k),
            rows: u(rows_per_expert),
            cols: u(w.cols),
            row_words: u(w.row_words),
            chunk_row_start: u(chunk.row_start / per_row),
            chunk_rows: u(chunk.rows / per_row),
            x_per_slot: slots.x_per_slot as u32,
            ..Default::default()
        };
        batch.dispatch(
            pipeline.clone(),
            bytemuck::bytes_of(&params),
            four_row_bindings(
                entry,
                [(4, b(x)), (5, b(&chunk.buffer))],
                vec![
                    (6, b(slots.ids)),
                    (7, b(y)),
                    (12, wide(batch.ctx(), &chunk.buffer)),
                    (13, wide(batch.ctx(), x)),
                ],
            ),
            u(rows_per_expert.div_ceil(rows_per_group) * slots.tokens * slots.top_k),
        );
    }
}

/// The experts' down projection and the weighted combine in one pass: hidden[t] +=
/// Σ_s weight[t, s] · W_{ids[t, s]} · x[(t, s)], `w` stacking the experts' [rows, cols]
/// matrices and x holding one row per (token, slot).
#[allow(clippy::too_many_arguments)]
pub fn expert_down_combine(
    batch: &mut Batch,
    x: &wgpu::Buffer,
    w: &GpuMatrix,
    rows_per_expert: usize,
    ids: &wgpu::Buffer,
    weights: &wgpu::Buffer,
    hidden: &wgpu::Buffer,
    tokens: usize,
    top_k: usize,
) {
    let rows = batch.ctx().layout == KernelLayout::Rows;
    let (entry, rows_per_group) = match (rows, wide_rows(w, w.cols)) {
        (true, true) => ("expert_down_combine_rows4", 64),
        (true, false) => ("expert_down_combine_rows", 64),
        (false, _) => ("expert_down_combine", 4),
    };
    let pipeline = batch.ctx().pipeline(PipelineKey {
        shader: Shader::Moe,
        entry,
        weight_format: Some(w.format),
        swiglu: false,
        gelu: false,
    });
    for chunk in &w.chunks {
        if chunk.rows == 0 {
            continue;
        }
        let params = MoeParams {
            tokens: u(tokens),
            top_k: u(top_k),
            rows: u(rows_per_expert),
            cols: u(w.cols),
            row_words: u(w.row_words),
            chunk_row_start: u(chunk.row_start),
            chunk_rows: u(chunk.rows),
            x_per_slot: 1,
            ..Default::default()
        };
        batch.dispatch(
            pipeline.clone(),
            bytemuck::bytes_of(&params),
            four_row_bindings(
                entry,
                [(4, b(x)), (5, b(&chunk.buffer))],
                vec![
                    (6, b(ids)),
                    (9, b(weights)),
                    (10, b(hidden)),
                    (12, wide(batch.ctx(), &chunk.buffer)),
                    (13, wide(batch.ctx(), x)),
                ],
            ),
            u(rows_per_expert.div_ceil(rows_per_group) * tokens),
        );
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SampleParams {
    count: u32,
    offset: u32,
    greedy: u32,
    top_k: u32,
    temperature: f32,
    top_p: f32,
    u: f32,
    _pad: u32,
}

/// How to pick the next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleSettings {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    /// 1 means no nucleus cut.
    pub top_p: f32,
}

/// Writes the chosen token id to `result[0]`; `u` is a uniform draw in [0, 1).
pub fn sample(
    batch: &mut Batch,
    logits: &wgpu::Buffer,
    offset: usize,
    count: usize,
    s: SampleSettings,
    u_draw: f32,
    result: &wgpu::Buffer,
) {
    let params = SampleParams {
        count: u(count),
        offset: u(offset),
        greedy: (s.temperature <= 0.0) as u32,
        top_k: u(s.top_k),
        temperature: s.temperature.max(1e-6),
        top_p: s.top_p.clamp(0.0, 1.0),
        u: u_draw,
        _pad: 0,
    };
    let pipeline = batch.ctx().pipeline(key(Shader::Sample, "sample"));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(1, b(logits)), (2, b(result))],
        1,
    );
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GraftParams {
    count: u32,
    delta_len: u32,
    alpha: f32,
    _pad: u32,
}

/// The graft kernel's pipelines, one per (target, instruct, base, output) dtype quadruple —
/// four override constants a `PipelineKey` cannot name — compiled on first use.
#[derive(Default)]
pub struct GraftPipelines {
    built: std::collections::HashMap<[crate::checkpoint::DType; 4], wgpu::ComputePipeline>,
}

impl GraftPipelines {
    fn get(
        &mut self,
        ctx: &super::GpuContext,
        dtypes: [crate::checkpoint::DType; 4],
    ) -> wgpu::ComputePipeline {
        use super::shaders::weight_dtype_constant as c;
        self.built
            .entry(dtypes)
            .or_insert_with(|| {
                ctx.create_pipeline(
                    Shader::Graft,
                    "graft",
                    &[
                        ("T_DTYPE", c(dtypes[0]) as f64),
                        ("I_DTYPE", c(dtypes[1]) as f64),
                        ("B_DTYPE", c(dtypes[2]) as f64),
                        ("O_DTYPE", c(dtypes[3]) as f64),
                    ],
                )
            })
            .clone()
    }
}

/// One of the graft kernel's four buffers: u32-packed elements of `dtype` from byte `offset`
/// (a multiple of the storage-offset alignment) on.
#[derive(Clone, Copy)]
pub struct Packed<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub dtype: crate::checkpoint::DType,
}

impl<'a> Packed<'a> {
    /// A whole buffer from its start.
    pub fn whole(buffer: &'a wgpu::Buffer, dtype: crate::checkpoint::DType) -> Self {
        Packed {
            buffer,
            offset: 0,
            dtype,
        }
    }

    /// The binding of `elements` elements, padded as the kernel reads and writes them; an
    /// error if the buffer is too short.
    fn binding(&self, elements: usize) -> Result<Binding> {
        let size = graft_binding_bytes(self.dtype, elements);
        if self.offset + size > self.buffer.size() {
            return Err(Error::gpu(format!(
                "graft: a buffer of {} bytes cannot bind {size} bytes at {} ({elements} {} \
                 elements padded to groups of eight)",
                self.buffer.size(),
                self.offset,
                self.dtype.safetensors_name(),
            )));
        }
        Ok(Binding {
            buffer: self.buffer.clone(),
            offset: self.offset,
            size: Some(size),
        })
    }
}

/// Elements one graft invocation merges (`shaders/graft.wgsl` reads and writes them as whole
/// vec4s of words).
pub const GRAFT_GROUP: usize = 8;

/// Bytes the graft kernel binds for `elements` elements of `dtype`: whole groups of eight.
pub fn graft_binding_bytes(dtype: crate::checkpoint::DType, elements: usize) -> u64 {
    (elements.max(1).div_ceil(GRAFT_GROUP) * GRAFT_GROUP * dtype.size()) as u64
}

/// out[i] = t[i] + alpha · (inst[i] − base[i]) for i < delta_len, out[i] = t[i] for
/// delta_len ≤ i < count (rows beyond the base's vocabulary), computed in f32 and written
/// u32-packed in `out.dtype` (16-bit types rounded to nearest even). Every buffer must hold
/// its elements padded to whole groups of eight (`graft_binding_bytes`); inst and base are
/// not read past delta_len.
#[allow(clippy::too_many_arguments)]
pub fn graft(
    batch: &mut Batch,
    pipelines: &mut GraftPipelines,
    t: Packed,
    inst: Packed,
    base: Packed,
    out: Packed,
    count: usize,
    delta_len: usize,
    alpha: f32,
) -> Result<()> {
    let delta_len = delta_len.min(count);
    let dtypes = [t.dtype, inst.dtype, base.dtype, out.dtype];
    let t_binding = t.binding(count)?;
    // Without Δ the kernel reads neither: bind t's range in their place.
    let (i_binding, b_binding) = if delta_len == 0 {
        (t_binding.clone(), t_binding.clone())
    } else {
        (inst.binding(delta_len)?, base.binding(delta_len)?)
    };
    let out_binding = out.binding(count)?;
    let pipeline = pipelines.get(batch.ctx(), dtypes);
    let params = GraftParams {
        count: u(count),
        delta_len: u(delta_len),
        alpha,
        _pad: 0,
    };
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![
            (1, t_binding),
            (2, i_binding),
            (3, b_binding),
            (4, out_binding),
        ],
        u(count.div_ceil(GRAFT_GROUP).div_ceil(256)),
    );
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReadSweepParams {
    vec4s: u32,
    invocations: u32,
    _pad: [u32; 2],
}

/// How a read sweep shares the buffer among its invocations (see `shaders/bandwidth.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadPattern {
    /// Neighbouring invocations read neighbouring vec4s (what a GPU coalesces).
    Strided,
    /// Each invocation reads one contiguous run (what a CPU adapter's lanes prefer).
    Blocks,
}

impl ReadPattern {
    pub const ALL: [ReadPattern; 2] = [ReadPattern::Strided, ReadPattern::Blocks];

    pub fn name(self) -> &'static str {
        match self {
            ReadPattern::Strided => "strided",
            ReadPattern::Blocks => "blocks",
        }
    }

    fn entry(self) -> &'static str {
        match self {
            ReadPattern::Strided => "read_strided",
            ReadPattern::Blocks => "read_blocks",
        }
    }
}

/// Invocations of one read sweep: enough to fill a large GPU (about 64 vec4s each for a
/// quarter-GiB buffer), never more than there are vec4s.
pub fn read_sweep_invocations(vec4s: usize) -> usize {
    const MOST: usize = 4096 * 64;
    vec4s.clamp(1, MOST)
}

/// Reads the first `bytes` (a multiple of 16) of `src` once: invocation i folds its share of
/// vec4s with xor into `folds[i]` (`read_sweep_invocations` words), so every word read counts.
/// The read ceiling the benchmark measures.
pub fn read_sweep(
    batch: &mut Batch,
    pattern: ReadPattern,
    src: &wgpu::Buffer,
    bytes: u64,
    folds: &wgpu::Buffer,
) {
    let vec4s = (bytes / 16) as usize;
    let invocations = read_sweep_invocations(vec4s);
    let params = ReadSweepParams {
        vec4s: u(vec4s),
        invocations: u(invocations),
        _pad: [0; 2],
    };
    let pipeline = batch
        .ctx()
        .pipeline(key(Shader::Bandwidth, pattern.entry()));
    let src = Binding {
        size: Some(bytes),
        ..b(src)
    };
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(1, src), (2, b(folds))],
        u(invocations.div_ceil(64)),
    );
}
