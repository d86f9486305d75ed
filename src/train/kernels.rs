//! Typed launchers for the training kernels (`shaders/gemm.wgsl`, `cross_entropy.wgsl`,
//! `norm_grad.wgsl`, `swiglu_grad.wgsl`, `moe_grad.wgsl`, `adamw.wgsl`): each packs its
//! parameters exactly as the shader's `Params` and records its dispatches into a batch.

use bytemuck::{Pod, Zeroable};

use crate::checkpoint::DType;
use crate::gpu::batch::Binding;
pub use crate::gpu::kernels::Output;
use crate::gpu::kernels::{b, key, u};
use crate::gpu::shaders::{PipelineKey, Shader};
use crate::gpu::{Batch, GpuMatrix, WeightFormat};

/// An f32 operand read through strides: element (i, j) at `offset + i·row + j·col`.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: usize,
    pub row: usize,
    pub col: usize,
}

impl<'a> Strided<'a> {
    /// Row-major, rows `stride` elements apart.
    pub fn rows(buffer: &'a wgpu::Buffer, stride: usize) -> Self {
        Self {
            buffer,
            offset: 0,
            row: stride,
            col: 1,
        }
    }

    /// The transpose of a row-major matrix whose rows are `stride` apart.
    pub fn transposed(buffer: &'a wgpu::Buffer, stride: usize) -> Self {
        Self {
            buffer,
            offset: 0,
            row: 1,
            col: stride,
        }
    }

    pub fn at(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }
}

/// The B operand: a matrix in its stored format, row r at word `offset_words + r·row_words`;
/// B[k, n] is element n of row k, or with `transposed` element k of row n.
#[derive(Clone, Copy)]
pub struct Stored<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub format: WeightFormat,
    pub offset_words: usize,
    pub row_words: usize,
    pub transposed: bool,
}

impl<'a> Stored<'a> {
    /// A row-major f32 matrix (activations, a trained weight), rows `stride` apart.
    pub fn f32_rows(buffer: &'a wgpu::Buffer, stride: usize) -> Self {
        Self {
            buffer,
            format: WeightFormat::Plain(DType::F32),
            offset_words: 0,
            row_words: stride,
            transposed: false,
        }
    }

    pub fn at(mut self, offset_words: usize) -> Self {
        self.offset_words = offset_words;
        self
    }

    pub fn transposed(mut self) -> Self {
        self.transposed = true;
        self
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    a_offset: u32,
    a_row: u32,
    a_col: u32,
    b_offset: u32,
    row_words: u32,
    b_transposed: u32,
    c_offset: u32,
    c_row: u32,
    accumulate: u32,
}

const GEMM_TILE: usize = 64;

/// C[m, n] (+)= Σ_k A[m, k] · B[k, n], C at `c.offset + m · c.stride + n`.
pub fn gemm(batch: &mut Batch, m: usize, n: usize, k: usize, a: Strided, bm: Stored, c: Output) {
    let params = GemmParams {
        m: u(m),
        n: u(n),
        k: u(k),
        a_offset: u(a.offset),
        a_row: u(a.row),
        a_col: u(a.col),
        b_offset: u(bm.offset_words),
        row_words: u(bm.row_words),
        b_transposed: u32::from(bm.transposed),
        c_offset: u(c.offset),
        c_row: u(c.stride),
        accumulate: u32::from(c.accumulate),
    };
    let pipeline = batch.ctx().pipeline(PipelineKey {
        weight_format: Some(bm.format),
        ..key(Shader::Gemm, "gemm")
    });
    let tiles = m.div_ceil(GEMM_TILE) * n.div_ceil(GEMM_TILE);
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(1, b(a.buffer)), (2, b(bm.buffer)), (3, b(c.buffer))],
        u(tiles),
    );
}

/// A linear layer's forward, Y[t, o] (+)= Σ_i X[t, i] · W[o, i], over W's row chunks.
pub fn linear(batch: &mut Batch, tokens: usize, x: Strided, w: &GpuMatrix, y: Output) {
    for chunk in &w.chunks {
        let b = Stored {
            buffer: &chunk.buffer,
            format: w.format,
            offset_words: 0,
            row_words: w.row_words,
            transposed: true,
        };
        gemm(
            batch,
            tokens,
            chunk.rows,
            w.cols,
            x,
            b,
            y.at(y.offset + chunk.row_start),
        );
    }
}

/// A linear layer's input gradient, dX[t, i] (+)= Σ_o dY[t, o] · W[o, i]; each row chunk of W
/// adds its share of the sum over o.
pub fn linear_dx(batch: &mut Batch, tokens: usize, dy: Strided, w: &GpuMatrix, dx: Output) {
    for (i, chunk) in w.chunks.iter().enumerate() {
        let b = Stored {
            buffer: &chunk.buffer,
            format: w.format,
            offset_words: 0,
            row_words: w.row_words,
            transposed: false,
        };
        let a = dy.at(dy.offset + chunk.row_start * dy.col);
        let out = Output {
            accumulate: dx.accumulate || i > 0,
            ..dx
        };
        gemm(batch, tokens, w.cols, chunk.rows, a, b, out);
    }
}

/// A linear layer's weight gradient, dW[o, i] (+)= Σ_t dY[t, o] · X[t, i]: dY's rows are
/// `dy_stride` apart, X's `x_stride`, and dW is [outputs, inputs] row-major.
#[allow(clippy::too_many_arguments)]
pub fn linear_dw(
    batch: &mut Batch,
    tokens: usize,
    outputs: usize,
    inputs: usize,
    dy: (&wgpu::Buffer, usize, usize),
    x: (&wgpu::Buffer, usize, usize),
    dw: Output,
) {
    let (dy_buffer, dy_offset, dy_stride) = dy;
    let (x_buffer, x_offset, x_stride) = x;
    gemm(
        batch,
        outputs,
        inputs,
        tokens,
        Strided::transposed(dy_buffer, dy_stride).at(dy_offset),
        Stored::f32_rows(x_buffer, x_stride).at(x_offset),
        dw,
    );
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CrossEntropyParams {
    tokens: u32,
    vocab: u32,
    stride: u32,
    scale: f32,
}

/// The target id of a token that takes no loss (a chat prompt's).
pub const IGNORE: u32 = u32::MAX;

/// Per token, `losses[t]` = −log softmax(logits[t])[target]; the logits are overwritten with
/// `scale` · (softmax − onehot(target)). Targets must be below `vocab` or `IGNORE`.
pub fn cross_entropy(
    batch: &mut Batch,
    logits: &wgpu::Buffer,
    targets: &wgpu::Buffer,
    losses: &wgpu::Buffer,
    tokens: usize,
    vocab: usize,
    scale: f32,
) {
    let params = CrossEntropyParams {
        tokens: u(tokens),
        vocab: u(vocab),
        stride: u(vocab),
        scale,
    };
    let pipeline = batch
        .ctx()
        .pipeline(key(Shader::CrossEntropy, "cross_entropy"));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(1, b(logits)), (2, b(targets)), (3, b(losses))],
        u(tokens),
    );
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct NormGradParams {
    rows: u32,
    dim: u32,
    eps: f32,
    accumulate: u32,
    heads: u32,
    x_stride: u32,
    x_offset: u32,
    w_offset: u32,
}

/// RMSNorm's input gradient from its saved input `x` and the output's gradient `dy`;
/// added to `dx` when `accumulate`.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_backward(
    batch: &mut Batch,
    x: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    tokens: usize,
    dim: usize,
    eps: f32,
    accumulate: bool,
) {
    let params = NormGradParams {
        rows: u(tokens),
        dim: u(dim),
        eps,
        accumulate: u32::from(accumulate),
        heads: 1,
        x_stride: u(dim),
        x_offset: 0,
        w_offset: 0,
    };
    norm_backward(batch, params, [x, weight, dy, dx]);
}

/// The saved input of a per-head RMSNorm (qwen3's q_norm or k_norm): `heads` heads of
/// `head_dim` per token, in rows of `stride` from `offset` (the q|k|v projection before
/// the norm), normalised with `weight` from `weight_offset`.
pub struct HeadNormInput<'a> {
    pub x: &'a wgpu::Buffer,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub stride: usize,
    pub offset: usize,
    pub weight: &'a wgpu::Buffer,
    pub weight_offset: usize,
}

/// A per-head RMSNorm's input gradient: dy and dx are [tokens, heads · head_dim].
pub fn head_rms_norm_backward(
    batch: &mut Batch,
    input: HeadNormInput,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    eps: f32,
) {
    let params = NormGradParams {
        rows: u(input.tokens * input.heads),
        dim: u(input.head_dim),
        eps,
        accumulate: 0,
        heads: u(input.heads),
        x_stride: u(input.stride),
        x_offset: u(input.offset),
        w_offset: u(input.weight_offset),
    };
    norm_backward(batch, params, [input.x, input.weight, dy, dx]);
}

fn norm_backward(
    batch: &mut Batch,
    params: NormGradParams,
    [x, weight, dy, dx]: [&wgpu::Buffer; 4],
) {
    let pipeline = batch
        .ctx()
        .pipeline(key(Shader::NormGrad, "rms_norm_backward"));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(1, b(x)), (2, b(weight)), (3, b(dy)), (4, b(dx))],
        params.rows,
    );
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CountParams {
    count: u32,
    _pad: [u32; 3],
}

/// SwiGLU's gradient on the fused gate/up layout: from the saved projection `gu`
/// ([pairs · 2], gate and up side by side) and dh ([pairs]), dgu in gu's layout.
pub fn swiglu_pairs_backward(
    batch: &mut Batch,
    gu: &wgpu::Buffer,
    dh: &wgpu::Buffer,
    dgu: &wgpu::Buffer,
    pairs: usize,
) {
    let params = CountParams {
        count: u(pairs),
        _pad: [0; 3],
    };
    let pipeline = batch
        .ctx()
        .pipeline(key(Shader::SwigluGrad, "swiglu_pairs_backward"));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(1, b(gu)), (2, b(dh)), (3, b(dgu))],
        u(pairs.div_ceil(256)),
    );
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MoeParams {
    tokens: u32,
    experts: u32,
    top_k: u32,
    renormalize: u32,
    dim: u32,
    accumulate: u32,
    has_lpr: u32,
    lb_scale: f32,
}

/// The shape of one MoE layer in training.
#[derive(Clone, Copy, Debug)]
pub struct MoeShape {
    pub tokens: usize,
    pub experts: usize,
    pub top_k: usize,
    /// Mixtral renormalises the chosen probabilities to sum to 1.
    pub renormalize: bool,
    pub dim: usize,
}

impl MoeShape {
    fn params(&self) -> MoeParams {
        MoeParams {
            tokens: u(self.tokens),
            experts: u(self.experts),
            top_k: u(self.top_k),
            renormalize: u32::from(self.renormalize),
            dim: u(self.dim),
            accumulate: 0,
            has_lpr: 0,
            lb_scale: 0.0,
        }
    }
}

fn moe_dispatch(
    batch: &mut Batch,
    entry: &'static str,
    params: MoeParams,
    bindings: Vec<(u32, Binding)>,
    workgroups: usize,
) {
    let pipeline = batch.ctx().pipeline(key(Shader::MoeGrad, entry));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        bindings,
        u(workgroups),
    );
}

/// Where one layer's routing is kept for the backward pass: the softmax over all experts,
/// the dense gates ([tokens, experts], 0 where not chosen) and each token's choice as bits.
#[derive(Clone, Copy)]
pub struct Routing<'a> {
    pub probs: &'a wgpu::Buffer,
    pub gates: &'a wgpu::Buffer,
    pub chosen: &'a wgpu::Buffer,
}

/// Routes every token from its router logits: softmax, top k, renormalised or not.
pub fn route_dense(batch: &mut Batch, s: MoeShape, logits: &wgpu::Buffer, r: Routing) {
    moe_dispatch(
        batch,
        "route_dense",
        s.params(),
        vec![
            (1, b(logits)),
            (2, b(r.probs)),
            (3, b(r.gates)),
            (4, b(r.chosen)),
        ],
        s.tokens.div_ceil(64),
    );
}

/// hidden[t] (+)= Σ_e gates[t, e] · ye[e, t] (ye: [experts, tokens, dim]).
pub fn combine(
    batch: &mut Batch,
    s: MoeShape,
    ye: &wgpu::Buffer,
    gates: &wgpu::Buffer,
    hidden: &wgpu::Buffer,
    accumulate: bool,
) {
    let params = MoeParams {
        accumulate: u32::from(accumulate),
        ..s.params()
    };
    moe_dispatch(
        batch,
        "combine",
        params,
        vec![(5, b(ye)), (6, b(gates)), (7, b(hidden))],
        (s.tokens * s.dim).div_ceil(256),
    );
}

/// From dy: each expert's output gradient dye[e, t] = gates[t, e] · dy[t] and the gates'
/// gradient dgates[t, e] = ⟨dy[t], ye[e, t]⟩.
pub fn combine_backward(
    batch: &mut Batch,
    s: MoeShape,
    dy: &wgpu::Buffer,
    ye: &wgpu::Buffer,
    gates: &wgpu::Buffer,
    dye: &wgpu::Buffer,
    dgates: &wgpu::Buffer,
) {
    moe_dispatch(
        batch,
        "combine_backward",
        s.params(),
        vec![
            (5, b(ye)),
            (6, b(gates)),
            (7, b(dy)),
            (8, b(dye)),
            (9, b(dgates)),
        ],
        s.tokens,
    );
}

/// fractions[e] = the share of the layer's tokens that chose expert e.
pub fn route_fractions(
    batch: &mut Batch,
    s: MoeShape,
    chosen: &wgpu::Buffer,
    fractions: &wgpu::Buffer,
) {
    moe_dispatch(
        batch,
        "route_fractions",
        s.params(),
        vec![(10, b(chosen)), (11, b(fractions))],
        s.experts,
    );
}

/// What the router's gradient is made of beyond the gates': the load-balancing term
/// (`lb_scale` = coefficient · experts / tokens, from the layer's `fractions`) and the
/// language prior's per-token weights λ_t (MoE-LPR's review: −λ_t · log p_0).
pub struct RouterLosses<'a> {
    pub fractions: &'a wgpu::Buffer,
    pub lb_scale: f32,
    pub lpr_weight: Option<&'a wgpu::Buffer>,
}

/// The router logits' gradient from the gates' gradient and the routing losses.
pub fn router_backward(
    batch: &mut Batch,
    s: MoeShape,
    r: Routing,
    dgates: &wgpu::Buffer,
    losses: RouterLosses,
    dlogits: &wgpu::Buffer,
) {
    let ctx = batch.ctx();
    let params = MoeParams {
        has_lpr: u32::from(losses.lpr_weight.is_some()),
        lb_scale: losses.lb_scale,
        ..s.params()
    };
    moe_dispatch(
        batch,
        "router_backward",
        params,
        vec![
            (6, b(r.gates)),
            (10, b(r.chosen)),
            (11, b(losses.fractions)),
            (12, b(r.probs)),
            (13, b(dgates)),
            (14, b(losses.lpr_weight.unwrap_or(&ctx.dummy))),
            (15, b(dlogits)),
        ],
        s.tokens.div_ceil(64),
    );
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AdamwParams {
    count: u32,
    slot: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias1: f32,
    bias2_sqrt: f32,
    max_norm: f32,
    _pad: [u32; 2],
}

/// Partial sums of squares each gradient buffer writes (`shaders/adamw.wgsl`).
pub const NORM_PARTIALS: usize = 64;

fn adamw_params(count: usize, slot: usize) -> AdamwParams {
    AdamwParams {
        count: u(count),
        slot: u(slot),
        lr: 0.0,
        beta1: 0.0,
        beta2: 0.0,
        eps: 0.0,
        weight_decay: 0.0,
        bias1: 1.0,
        bias2_sqrt: 1.0,
        max_norm: 0.0,
        _pad: [0; 2],
    }
}

/// Gradient buffer number `index` (of `count` elements) adds its squares to
/// `partials[index · NORM_PARTIALS ..]`.
pub fn sum_squares(
    batch: &mut Batch,
    grads: &wgpu::Buffer,
    count: usize,
    index: usize,
    partials: &wgpu::Buffer,
) {
    let params = adamw_params(count, index * NORM_PARTIALS);
    let pipeline = batch.ctx().pipeline(key(Shader::Adamw, "sum_squares"));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(1, b(grads)), (2, b(partials))],
        u(NORM_PARTIALS),
    );
}

/// norm[0] = the global gradient norm over `buffers` gradient buffers' partial sums; norm[1]
/// the factor that clips it to `max_norm` (1 when `max_norm` is 0).
pub fn clip_scale(
    batch: &mut Batch,
    partials: &wgpu::Buffer,
    buffers: usize,
    norm: &wgpu::Buffer,
    max_norm: f32,
) {
    let params = AdamwParams {
        max_norm,
        ..adamw_params(0, buffers * NORM_PARTIALS)
    };
    let pipeline = batch.ctx().pipeline(key(Shader::Adamw, "clip_scale"));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![(2, b(partials)), (3, b(norm))],
        1,
    );
}

/// AdamW's settings for one step (PyTorch's meaning of each).
#[derive(Clone, Copy, Debug)]
pub struct AdamwStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1-based, for the bias corrections.
    pub step: u32,
}

/// The tensors one AdamW dispatch updates: `count` parameters with their gradients and moments.
pub struct AdamwBuffers<'a> {
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    pub m: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    pub count: usize,
}

/// One AdamW update of `t` with its gradients multiplied by `norm[1]` (the clip factor).
pub fn adamw(batch: &mut Batch, s: AdamwStep, t: AdamwBuffers, norm: &wgpu::Buffer) {
    let step = s.step.max(1) as i32;
    let params = AdamwParams {
        lr: s.lr,
        beta1: s.beta1,
        beta2: s.beta2,
        eps: s.eps,
        weight_decay: s.weight_decay,
        bias1: (1.0 - (s.beta1 as f64).powi(step)) as f32,
        bias2_sqrt: (1.0 - (s.beta2 as f64).powi(step)).sqrt() as f32,
        ..adamw_params(t.count, 0)
    };
    let pipeline = batch.ctx().pipeline(key(Shader::Adamw, "adamw"));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&params),
        vec![
            (1, b(t.grads)),
            (4, b(t.params)),
            (5, b(t.m)),
            (6, b(t.v)),
            (7, b(norm)),
        ],
        u(t.count.div_ceil(256)),
    );
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AttentionParams {
    seqs: u32,
    seq_len: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    q_stride: u32,
    kv_stride: u32,
    q_offset: u32,
    k_offset: u32,
    v_offset: u32,
    o_stride: u32,
    scale: f32,
}

/// The longest sequence the training attention takes (`shaders/attention_grad.wgsl`).
pub const MAX_TRAIN_SEQ: usize = 1024;

/// Causal attention over `seqs` packed sequences of `seq_len` tokens. q, k and v are read at
/// `offset + row · stride + head · head_dim` (parts of one projection, or buffers of their own).
#[derive(Clone, Copy)]
pub struct AttentionInput<'a> {
    pub seqs: usize,
    pub seq_len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub q: Strided<'a>,
    pub k: Strided<'a>,
    pub v: Strided<'a>,
}

impl AttentionInput<'_> {
    fn params(&self) -> AttentionParams {
        AttentionParams {
            seqs: u(self.seqs),
            seq_len: u(self.seq_len),
            heads: u(self.heads),
            kv_heads: u(self.kv_heads),
            head_dim: u(self.head_dim),
            q_stride: u(self.q.row),
            kv_stride: u(self.k.row),
            q_offset: u(self.q.offset),
            k_offset: u(self.k.offset),
            v_offset: u(self.v.offset),
            o_stride: u(self.heads * self.head_dim),
            scale: self.scale,
        }
    }

    fn bindings(&self) -> Vec<(u32, Binding)> {
        vec![
            (1, b(self.q.buffer)),
            (2, b(self.k.buffer)),
            (3, b(self.v.buffer)),
        ]
    }
}

/// o ([rows, heads · head_dim]) and the log-sum-exp of each query row's scores ([rows, heads])
/// that the backward pass recomputes the probabilities from. k and v must share a stride.
pub fn attention_forward(
    batch: &mut Batch,
    a: AttentionInput,
    o: &wgpu::Buffer,
    lse: &wgpu::Buffer,
) {
    let mut bindings = a.bindings();
    bindings.extend([(4, b(o)), (5, b(lse))]);
    let pipeline = batch
        .ctx()
        .pipeline(key(Shader::AttentionGrad, "attention_forward"));
    batch.dispatch(
        pipeline,
        bytemuck::bytes_of(&a.params()),
        bindings,
        u(a.seqs * a.seq_len * a.heads),
    );
}

/// What the attention backward reads of the forward and writes.
pub struct AttentionGrads<'a> {
    pub o: &'a wgpu::Buffer,
    pub lse: &'a wgpu::Buffer,
    pub d_o: &'a wgpu::Buffer,
    /// D_i = dO_i · O_i per (row, head), written by the first pass for the second.
    pub delta: &'a wgpu::Buffer,
    /// [rows, heads · head_dim], [rows, kv_heads · head_dim] twice.
    pub dq: &'a wgpu::Buffer,
    pub dk: &'a wgpu::Buffer,
    pub dv: &'a wgpu::Buffer,
}

/// dQ, dK and dV from dO (the GQA reduce included), in two passes.
pub fn attention_backward(batch: &mut Batch, a: AttentionInput, g: AttentionGrads) {
    let ctx = batch.ctx();
    let mut bindings = a.bindings();
    bindings.extend([(4, b(g.o)), (5, b(g.lse)), (6, b(g.d_o)), (7, b(g.delta))]);
    let mut q_pass = bindings.clone();
    q_pass.push((8, b(g.dq)));
    batch.dispatch(
        ctx.pipeline(key(Shader::AttentionGrad, "attention_backward_q")),
        bytemuck::bytes_of(&a.params()),
        q_pass,
        u(a.seqs * a.seq_len * a.heads),
    );
    bindings.extend([(9, b(g.dk)), (10, b(g.dv))]);
    // Only o is not read by this pass; the auto layout drops its binding.
    bindings.retain(|(slot, _)| *slot != 4);
    batch.dispatch(
        ctx.pipeline(key(Shader::AttentionGrad, "attention_backward_kv")),
        bytemuck::bytes_of(&a.params()),
        bindings,
        u(a.seqs * a.seq_len * a.kv_heads),
    );
}
