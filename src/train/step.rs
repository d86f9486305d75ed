//! One training step of MoE-LPR on the GPU, in llm.c's shape: a forward pass that keeps what
//! the backward pass needs, the backward pass from the loss down to the lowest trained layer,
//! then the gradient clip and AdamW, all recorded into one command encoder.
//!
//! Stage 1 trains the new experts (1…) and the routers on new-language text with the LM loss
//! plus the load-balancing loss; stage 2 (the review) trains the routers alone with the LM
//! loss plus the language-prior loss on original-language tokens. Attention, norms,
//! embeddings and expert 0 never learn: they get no gradient and no optimiser state, and
//! gradients pass through them in dX-only form.

use super::kernels::{
    self as k, AdamwBuffers, AdamwStep, AttentionGrads, AttentionInput, MoeShape, Output,
    RouterLosses, Routing, Stored, Strided,
};
use super::memory;
use super::state::{self, LayerTensors, SavedLayer, Scratch, Trained};
use crate::checkpoint::config::ExpertProj;
use crate::checkpoint::{Checkpoint, ModelConfig};
use crate::error::{Error, Result};
use crate::gpu::batch::PendingReadback;
use crate::gpu::kernels::{self as gk, HeadNormTarget, RopeTarget};
use crate::gpu::{Batch, GpuContext, GpuMatrix};
use crate::model::weights::{Ffn, ModelWeights, MoeFfn};
use crate::model::{rope_tables, Model};

/// Which of MoE-LPR's two stages a step belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// New experts and routers; LM loss + `load_balance` × the load-balancing loss.
    NewExperts,
    /// Routers alone; LM loss + `language_prior` × the LPR loss.
    Review,
}

/// Hyper-parameters of a run (PyTorch's meaning for AdamW's).
#[derive(Clone, Copy, Debug)]
pub struct TrainOptions {
    pub batch: usize,
    pub seq: usize,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 0: no clipping.
    pub max_grad_norm: f32,
    /// MoE-LPR: 0.01 on the Switch/Mixtral loss, per layer and averaged over layers.
    pub load_balance: f32,
    /// MoE-LPR: 0.1 on −log G_0, averaged over the original-language tokens and the layers.
    pub language_prior: f32,
    /// Experts 0 … frozen − 1 stay as the model holds them (1 for an upcycled dense model:
    /// its FFN; the input's expert count when an MoE gains experts); the rest learn.
    pub frozen_experts: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            batch: 8,
            seq: 128,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            load_balance: 0.01,
            language_prior: 0.1,
            frozen_experts: 1,
        }
    }
}

/// A submitted step's loss, on its way back from the GPU.
pub struct PendingLoss {
    losses: PendingReadback,
    submission: Option<wgpu::SubmissionIndex>,
    tokens: usize,
    counted: usize,
}

impl PendingLoss {
    /// Waits for the step (only it: later submissions may still run) and returns its mean LM
    /// loss over the targets.
    pub async fn wait(self, ctx: &GpuContext) -> Result<f32> {
        let (n, counted) = (self.tokens, self.counted);
        let sum = self
            .losses
            .read(ctx, self.submission, |bytes| {
                let losses: Vec<f32> = bytemuck::pod_collect_to_vec(bytes);
                losses.iter().take(n).sum::<f32>()
            })
            .await?;
        Ok(sum / counted.max(1) as f32)
    }
}

/// One step's batch: `batch · seq` token ids, each row's next-token targets (`kernels::IGNORE`
/// where none) and, for the review, which tokens are original-language ones.
pub struct StepInput<'a> {
    pub ids: &'a [u32],
    pub targets: &'a [u32],
    pub original: Option<&'a [bool]>,
}

pub struct Trainer<'m> {
    ctx: &'m GpuContext,
    pub config: ModelConfig,
    weights: &'m ModelWeights,
    options: TrainOptions,
    pub layers: Vec<LayerTensors>,
    saved: Vec<SavedLayer>,
    scratch: Scratch,
    /// RoPE tables with one row per token of a batch (row b·seq + t at position t), and the
    /// sines negated: the inverse rotation, for the backward pass.
    cos: wgpu::Buffer,
    sin: wgpu::Buffer,
    neg_sin: wgpu::Buffer,
    /// AdamW steps taken so far (bias corrections).
    pub steps: u32,
    /// What the run holds besides the model's weights, estimated before anything was made.
    pub memory: memory::TrainMemory,
    /// The bytes of the training buffers actually made (the RoPE tables aside).
    pub allocated_bytes: u64,
}

/// Rows `start .. start + rows` of `m` as a gemm operand: they must lie in one chunk.
fn rows_of<'a>(
    m: &'a GpuMatrix,
    start: usize,
    rows: usize,
    transposed: bool,
) -> Result<Stored<'a>> {
    let chunk = m
        .chunks
        .iter()
        .find(|c| c.row_start <= start && start + rows <= c.row_start + c.rows)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: rows {start}..{} span two storage chunks; training needs them in one binding",
                m.name,
                start + rows
            ))
        })?;
    Ok(Stored {
        buffer: &chunk.buffer,
        format: m.format,
        offset_words: (start - chunk.row_start) * m.row_words,
        row_words: m.row_words,
        transposed,
    })
}

/// Every shared expert's down projection is zero (upcycle's qwen2_moe, or none at all): it
/// adds exactly 0 to the residual stream and passes no gradient, so training leaves it out.
async fn shared_experts_add_nothing(ckpt: &Checkpoint) -> Result<bool> {
    let c = &ckpt.config;
    let Some(layout) = c.architecture.moe_layout() else {
        return Ok(true);
    };
    if c.shared_expert_intermediate_size == 0 {
        return Ok(true);
    }
    for l in 0..c.num_layers {
        let down = ckpt
            .read(&layout.shared_expert(l, ExpertProj::Down))
            .await?;
        if down.to_f32().iter().any(|v| *v != 0.0) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn moe_of(weights: &ModelWeights, l: usize) -> Result<&MoeFfn> {
    match &weights.layers[l].ffn {
        Ffn::Moe(m) => Ok(m),
        Ffn::Dense(_) => Err(Error::InvalidArgument(format!(
            "layer {l} is dense: training needs an MoE model (upcycle it first)"
        ))),
    }
}

impl<'m> Trainer<'m> {
    /// Sets up training of `model` (loaded from `ckpt`): its new experts and routers become
    /// f32 tensors with AdamW state, and every activation buffer for `options.batch` ×
    /// `options.seq` tokens is made here, so a step allocates nothing.
    pub async fn new(model: &'m Model, ckpt: &Checkpoint, options: TrainOptions) -> Result<Self> {
        let c = model.config.clone();
        if !c.is_moe() || c.num_experts < 2 {
            return Err(Error::InvalidArgument(format!(
                "{} is not an MoE model with new experts: upcycle it first",
                c.architecture.class_name()
            )));
        }
        // The routing the kernels compute: top-k of the softmax, renormalised, in every
        // layer, routed experts only.
        if !c.all_layers_moe() || !c.norm_topk_prob || !shared_experts_add_nothing(ckpt).await? {
            return Err(Error::InvalidArgument(format!(
                "training takes MoEs whose every layer routes renormalised top-k experts, with no \
                 shared expert or a zero one (Mixtral, or a qwen2_moe / qwen3_moe as upcycle \
                 writes them); this {} is not one",
                c.architecture.model_type()
            )));
        }
        if c.num_experts > 32 {
            return Err(Error::InvalidArgument(format!(
                "{} experts: training routes at most 32",
                c.num_experts
            )));
        }
        if c.mlp_bias {
            return Err(Error::InvalidArgument(
                "training does not take MLP biases (experts have none)".into(),
            ));
        }
        if options.seq == 0 || options.seq > k::MAX_TRAIN_SEQ || options.batch == 0 {
            return Err(Error::InvalidArgument(format!(
                "batch {} × sequence {}: the sequence must be 1…{}",
                options.batch,
                options.seq,
                k::MAX_TRAIN_SEQ
            )));
        }
        let ctx = model.ctx.as_ref();
        for l in 0..c.num_layers {
            moe_of(&model.weights, l)?;
        }
        let n = options.batch * options.seq;
        if options.frozen_experts == 0 || options.frozen_experts >= c.num_experts {
            return Err(Error::InvalidArgument(format!(
                "{} frozen experts of {}: at least one must stay frozen and one learn",
                options.frozen_experts, c.num_experts
            )));
        }
        let memory = memory::estimate(&c, options.frozen_experts, options.batch, options.seq);
        let (largest, bytes) = &memory.largest_buffer;
        if *bytes > ctx.buffer_limit() {
            return Err(Error::InvalidArgument(format!(
                "training needs {:.1} MB on the GPU besides the weights, and its {largest} buffer \
                 alone takes {bytes} bytes where this GPU binds at most {} (batch {} × sequence {}): \
                 use a smaller --batch or --seq",
                memory.total_bytes as f64 / 1e6,
                ctx.buffer_limit(),
                options.batch,
                options.seq
            )));
        }
        let allocated = std::cell::Cell::new(0);
        let layers = state::layer_tensors(ctx, ckpt, options.frozen_experts, &allocated).await?;
        let saved = state::saved_layers(ctx, &c, n, &allocated)?;
        let scratch = state::scratch(ctx, &c, n, 3 * layers.len(), &allocated)?;
        let (cos, sin) = rope_tables(&c, options.seq);
        let tile = |v: &[f32]| v.repeat(options.batch);
        let neg: Vec<f32> = sin.iter().map(|s| -s).collect();
        Ok(Self {
            ctx,
            cos: ctx.upload_f32("train_cos", &tile(&cos)),
            sin: ctx.upload_f32("train_sin", &tile(&sin)),
            neg_sin: ctx.upload_f32("train_neg_sin", &tile(&neg)),
            config: c,
            weights: &model.weights,
            options,
            layers,
            saved,
            scratch,
            steps: 0,
            memory,
            allocated_bytes: allocated.get(),
        })
    }

    /// How many experts (0 …) stay as the model holds them.
    pub fn frozen_experts(&self) -> usize {
        self.options.frozen_experts
    }

    /// The GPU the trainer runs on (profiling, checks).
    pub fn context(&self) -> &'m GpuContext {
        self.ctx
    }

    fn tokens(&self) -> usize {
        self.options.batch * self.options.seq
    }

    fn moe_shape(&self) -> MoeShape {
        MoeShape {
            tokens: self.tokens(),
            experts: self.config.num_experts,
            top_k: self.config.experts_per_token,
            renormalize: true,
            dim: self.config.hidden_size,
        }
    }

    /// Expert e's gate/up rows as a gemm operand (a frozen one from the model).
    fn expert_gate_up(&self, l: usize, e: usize, transposed: bool) -> Result<Stored<'_>> {
        let two_i = 2 * self.config.expert_intermediate_size;
        let frozen = self.options.frozen_experts;
        if e < frozen {
            return rows_of(
                &moe_of(self.weights, l)?.gate_up,
                e * two_i,
                two_i,
                transposed,
            );
        }
        let h = self.config.hidden_size;
        let s = Stored::f32_rows(&self.layers[l].gate_up.param, h).at((e - frozen) * two_i * h);
        Ok(if transposed { s.transposed() } else { s })
    }

    fn expert_down(&self, l: usize, e: usize, transposed: bool) -> Result<Stored<'_>> {
        let (h, i) = (
            self.config.hidden_size,
            self.config.expert_intermediate_size,
        );
        let frozen = self.options.frozen_experts;
        if e < frozen {
            return rows_of(&moe_of(self.weights, l)?.w2, e * h, h, transposed);
        }
        let s = Stored::f32_rows(&self.layers[l].down.param, i).at((e - frozen) * h * i);
        Ok(if transposed { s.transposed() } else { s })
    }

    fn attention_input<'a>(&self, saved: &'a SavedLayer) -> AttentionInput<'a> {
        let c = &self.config;
        let stride = c.q_dim() + 2 * c.kv_dim();
        let part = |offset: usize| Strided::rows(&saved.qkv, stride).at(offset);
        AttentionInput {
            seqs: self.options.batch,
            seq_len: self.options.seq,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            q: part(0),
            k: part(c.q_dim()),
            v: part(c.q_dim() + c.kv_dim()),
        }
    }

    /// The forward pass: the loss's per-token terms in `scratch.losses` and dlogits in
    /// `scratch.logits` (the fused cross-entropy), everything the backward needs saved.
    fn forward(&self, batch: &mut Batch, scale: f32) -> Result<()> {
        let c = &self.config;
        let (n, h, i, e) = (
            self.tokens(),
            c.hidden_size,
            c.expert_intermediate_size,
            c.num_experts,
        );
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let qkv_width = qd + 2 * kvd;
        let sc = &self.scratch;
        let bytes = |len: usize| (len * 4) as u64;
        gk::embed(batch, &sc.ids, &self.weights.embed, &sc.x, n);
        for (l, saved) in self.saved.iter().enumerate() {
            let w = &self.weights.layers[l];
            batch.copy(&sc.x, 0, &saved.res_in, 0, bytes(n * h));
            gk::rms_norm(batch, &sc.x, &w.input_norm, &sc.xn, n, h, c.rms_norm_eps);
            k::linear(
                batch,
                n,
                Strided::rows(&sc.xn, h),
                &w.attention.qkv,
                Output::new(&saved.qkv, qkv_width),
            );
            if let Some(bias) = &w.attention.qkv_bias {
                gk::add_bias(batch, bias, &saved.qkv, n, qkv_width);
            }
            if let (Some(pre), Some(weight)) = (&saved.qkv_pre_norm, &w.attention.qk_norm) {
                batch.copy(&saved.qkv, 0, pre, 0, bytes(n * qkv_width));
                let target = HeadNormTarget {
                    qkv: &saved.qkv,
                    tokens: n,
                    q_heads: c.num_heads,
                    kv_heads: c.num_kv_heads,
                    head_dim: c.head_dim,
                    stride: qkv_width,
                };
                gk::head_rms_norm(batch, target, weight, c.rms_norm_eps);
            }
            for (offset, heads) in [(0, c.num_heads), (qd, c.num_kv_heads)] {
                let target = RopeTarget {
                    buffer: &saved.qkv,
                    tokens: n,
                    pos0: 0,
                    heads,
                    head_dim: c.head_dim,
                    stride: qkv_width,
                    offset,
                };
                gk::rope(batch, target, &self.cos, &self.sin);
            }
            k::attention_forward(
                batch,
                self.attention_input(saved),
                &saved.attn_out,
                &saved.lse,
            );
            k::linear(
                batch,
                n,
                Strided::rows(&saved.attn_out, qd),
                &w.attention.o,
                Output::new(&sc.x, h).accumulate(),
            );
            if let Some(bias) = &w.attention.o_bias {
                gk::add_bias(batch, bias, &sc.x, n, h);
            }
            batch.copy(&sc.x, 0, &saved.res_mid, 0, bytes(n * h));
            gk::rms_norm(
                batch,
                &sc.x,
                &w.post_attention_norm,
                &saved.xn2,
                n,
                h,
                c.rms_norm_eps,
            );
            let router = Stored::f32_rows(&self.layers[l].router.param, h).transposed();
            k::gemm(
                batch,
                n,
                e,
                h,
                Strided::rows(&saved.xn2, h),
                router,
                Output::new(&sc.router_logits, e),
            );
            let routing = Routing {
                probs: &saved.probs,
                gates: &saved.gates,
                chosen: &saved.chosen,
            };
            k::route_dense(batch, self.moe_shape(), &sc.router_logits, routing);
            for x in 0..e {
                let gu = &saved.gate_up[x];
                k::gemm(
                    batch,
                    n,
                    2 * i,
                    h,
                    Strided::rows(&saved.xn2, h),
                    self.expert_gate_up(l, x, true)?,
                    Output::new(gu, 2 * i),
                );
                gk::swiglu_pairs(batch, gu, &saved.hidden[x], n * i);
                let out = Output::new(&saved.expert_out, h).at(x * n * h);
                k::gemm(
                    batch,
                    n,
                    h,
                    i,
                    Strided::rows(&saved.hidden[x], i),
                    self.expert_down(l, x, true)?,
                    out,
                );
            }
            k::combine(
                batch,
                self.moe_shape(),
                &saved.expert_out,
                &saved.gates,
                &sc.x,
                true,
            );
        }
        batch.copy(&sc.x, 0, &sc.final_in, 0, bytes(n * h));
        gk::rms_norm(
            batch,
            &sc.x,
            &self.weights.final_norm,
            &sc.xn,
            n,
            h,
            c.rms_norm_eps,
        );
        k::linear(
            batch,
            n,
            Strided::rows(&sc.xn, h),
            &self.weights.lm_head,
            Output::new(&sc.logits, c.vocab_size),
        );
        k::cross_entropy(
            batch,
            &sc.logits,
            &sc.targets,
            &sc.losses,
            n,
            c.vocab_size,
            scale,
        );
        Ok(())
    }

    /// The backward pass from dlogits down to layer 0's MoE block.
    fn backward(&self, batch: &mut Batch, stage: Stage, lpr: bool) -> Result<()> {
        let c = &self.config;
        let (n, h, i, e) = (
            self.tokens(),
            c.hidden_size,
            c.expert_intermediate_size,
            c.num_experts,
        );
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let sc = &self.scratch;
        let train_experts = stage == Stage::NewExperts;
        let frozen = self.options.frozen_experts;
        let lb = if train_experts {
            self.options.load_balance
        } else {
            0.0
        };
        let lb_scale = lb * e as f32 / (n * c.num_layers) as f32;
        k::linear_dx(
            batch,
            n,
            Strided::rows(&sc.logits, c.vocab_size),
            &self.weights.lm_head,
            Output::new(&sc.d_xn, h),
        );
        k::rms_norm_backward(
            batch,
            &sc.final_in,
            &self.weights.final_norm,
            &sc.d_xn,
            &sc.d_res,
            n,
            h,
            c.rms_norm_eps,
            false,
        );
        for (l, saved) in self.saved.iter().enumerate().rev() {
            let w = &self.weights.layers[l];
            let t = &self.layers[l];
            // The MoE block: its output's gradient is the residual stream's.
            k::combine_backward(
                batch,
                self.moe_shape(),
                &sc.d_res,
                &saved.expert_out,
                &saved.gates,
                &sc.d_expert_out,
                &sc.d_gates,
            );
            for x in 0..e {
                let dye = Strided::rows(&sc.d_expert_out, h).at(x * n * h);
                k::gemm(
                    batch,
                    n,
                    i,
                    h,
                    dye,
                    self.expert_down(l, x, false)?,
                    Output::new(&sc.d_hidden, i),
                );
                if train_experts && x >= frozen {
                    let dw = Output::new(&t.down.grad, i).at((x - frozen) * h * i);
                    k::gemm(
                        batch,
                        h,
                        i,
                        n,
                        Strided::transposed(&sc.d_expert_out, h).at(x * n * h),
                        Stored::f32_rows(&saved.hidden[x], i),
                        dw,
                    );
                }
                k::swiglu_pairs_backward(
                    batch,
                    &saved.gate_up[x],
                    &sc.d_hidden,
                    &sc.d_gate_up,
                    n * i,
                );
                if train_experts && x >= frozen {
                    let dw = Output::new(&t.gate_up.grad, h).at((x - frozen) * 2 * i * h);
                    k::gemm(
                        batch,
                        2 * i,
                        h,
                        n,
                        Strided::transposed(&sc.d_gate_up, 2 * i),
                        Stored::f32_rows(&saved.xn2, h),
                        dw,
                    );
                }
                let mut dxn = Output::new(&sc.d_xn, h);
                dxn.accumulate = x > 0;
                k::gemm(
                    batch,
                    n,
                    h,
                    2 * i,
                    Strided::rows(&sc.d_gate_up, 2 * i),
                    self.expert_gate_up(l, x, false)?,
                    dxn,
                );
            }
            let routing = Routing {
                probs: &saved.probs,
                gates: &saved.gates,
                chosen: &saved.chosen,
            };
            k::route_fractions(batch, self.moe_shape(), &saved.chosen, &sc.fractions);
            let losses = RouterLosses {
                fractions: &sc.fractions,
                lb_scale,
                lpr_weight: lpr.then_some(&sc.lpr_weight),
            };
            k::router_backward(
                batch,
                self.moe_shape(),
                routing,
                &sc.d_gates,
                losses,
                &sc.d_router,
            );
            k::gemm(
                batch,
                e,
                h,
                n,
                Strided::transposed(&sc.d_router, e),
                Stored::f32_rows(&saved.xn2, h),
                Output::new(&t.router.grad, h),
            );
            k::gemm(
                batch,
                n,
                h,
                e,
                Strided::rows(&sc.d_router, e),
                Stored::f32_rows(&t.router.param, h),
                Output::new(&sc.d_xn, h).accumulate(),
            );
            k::rms_norm_backward(
                batch,
                &saved.res_mid,
                &w.post_attention_norm,
                &sc.d_xn,
                &sc.d_res,
                n,
                h,
                c.rms_norm_eps,
                true,
            );
            if l == 0 {
                break; // nothing below layer 0's MoE block learns
            }
            // Attention, dX only.
            k::linear_dx(
                batch,
                n,
                Strided::rows(&sc.d_res, h),
                &w.attention.o,
                Output::new(&sc.d_attn_out, qd),
            );
            let grads = AttentionGrads {
                o: &saved.attn_out,
                lse: &saved.lse,
                d_o: &sc.d_attn_out,
                delta: &sc.delta,
                dq: &sc.dq,
                dk: &sc.dk,
                dv: &sc.dv,
            };
            k::attention_backward(batch, self.attention_input(saved), grads);
            for (buffer, heads, width) in [(&sc.dq, c.num_heads, qd), (&sc.dk, c.num_kv_heads, kvd)]
            {
                let target = RopeTarget {
                    buffer,
                    tokens: n,
                    pos0: 0,
                    heads,
                    head_dim: c.head_dim,
                    stride: width,
                    offset: 0,
                };
                gk::rope(batch, target, &self.cos, &self.neg_sin);
            }
            let (dq, dk) = self.qk_norm_backward(batch, l, saved);
            let qkv = &w.attention.qkv;
            for (j, (d, start, width)) in [(dq, 0, qd), (dk, qd, kvd), (&sc.dv, qd + kvd, kvd)]
                .into_iter()
                .enumerate()
            {
                let mut out = Output::new(&sc.d_xn, h);
                out.accumulate = j > 0;
                k::gemm(
                    batch,
                    n,
                    h,
                    width,
                    Strided::rows(d, width),
                    rows_of(qkv, start, width, false)?,
                    out,
                );
            }
            k::rms_norm_backward(
                batch,
                &saved.res_in,
                &w.input_norm,
                &sc.d_xn,
                &sc.d_res,
                n,
                h,
                c.rms_norm_eps,
                true,
            );
        }
        Ok(())
    }

    /// qwen3: dq and dk through the per-head q/k norm (to the projection's output); as they
    /// are without one.
    fn qk_norm_backward<'b>(
        &'b self,
        batch: &mut Batch,
        l: usize,
        saved: &'b SavedLayer,
    ) -> (&'b wgpu::Buffer, &'b wgpu::Buffer) {
        let c = &self.config;
        let sc = &self.scratch;
        let (Some(x), Some(weight)) = (
            &saved.qkv_pre_norm,
            &self.weights.layers[l].attention.qk_norm,
        ) else {
            return (&sc.dq, &sc.dk);
        };
        let parts = [
            (&sc.dq, &sc.dq_pre_norm, c.num_heads, 0, 0),
            (
                &sc.dk,
                &sc.dk_pre_norm,
                c.num_kv_heads,
                c.q_dim(),
                c.head_dim,
            ),
        ];
        for (dy, dx, heads, offset, weight_offset) in parts {
            let input = k::HeadNormInput {
                x,
                tokens: self.tokens(),
                heads,
                head_dim: c.head_dim,
                stride: c.q_dim() + 2 * c.kv_dim(),
                offset,
                weight,
                weight_offset,
            };
            k::head_rms_norm_backward(batch, input, dy, dx, c.rms_norm_eps);
        }
        (&sc.dq_pre_norm, &sc.dk_pre_norm)
    }

    /// The tensors `stage` trains.
    fn trained(&self, stage: Stage) -> Vec<&Trained> {
        self.layers
            .iter()
            .flat_map(|t| match stage {
                Stage::NewExperts => vec![&t.router, &t.gate_up, &t.down],
                Stage::Review => vec![&t.router],
            })
            .collect()
    }

    /// One whole step: forward, backward, the clip and AdamW at rate `lr`. Returns the mean
    /// LM loss over the targets (read back, so this waits for the GPU).
    pub async fn step(&mut self, input: StepInput<'_>, stage: Stage, lr: f32) -> Result<f32> {
        let pending = self.submit(input, stage, lr)?;
        pending.wait(self.ctx).await
    }

    /// Records one whole step into one command encoder and submits it; its loss arrives
    /// through the returned `PendingLoss`, so the caller may submit the next step first and
    /// the GPU never waits for the CPU to read a loss.
    pub fn submit(&mut self, input: StepInput<'_>, stage: Stage, lr: f32) -> Result<PendingLoss> {
        let n = self.tokens();
        if input.ids.len() != n || input.targets.len() != n {
            return Err(Error::InvalidArgument(format!(
                "a step takes {n} ids and targets (batch {} × sequence {}), got {} and {}",
                self.options.batch,
                self.options.seq,
                input.ids.len(),
                input.targets.len()
            )));
        }
        let vocab = self.config.vocab_size as u32;
        if let Some(bad) = input
            .ids
            .iter()
            .chain(input.targets)
            .find(|&&t| t >= vocab && t != k::IGNORE)
        {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is not below the vocabulary's {vocab}"
            )));
        }
        let counted = input.targets.iter().filter(|&&t| t != k::IGNORE).count();
        let q = &self.ctx.queue;
        q.write_buffer(&self.scratch.ids, 0, bytemuck::cast_slice(input.ids));
        q.write_buffer(
            &self.scratch.targets,
            0,
            bytemuck::cast_slice(input.targets),
        );
        let lpr = stage == Stage::Review && input.original.is_some();
        if let (true, Some(original)) = (lpr, input.original) {
            let count = original.iter().filter(|&&o| o).count().max(1);
            let weight = self.options.language_prior / (count * self.config.num_layers) as f32;
            let weights: Vec<f32> = original
                .iter()
                .map(|&o| if o { weight } else { 0.0 })
                .collect();
            q.write_buffer(&self.scratch.lpr_weight, 0, bytemuck::cast_slice(&weights));
        }
        self.steps += 1;
        let mut batch = Batch::new(self.ctx);
        self.forward(&mut batch, 1.0 / counted.max(1) as f32)?;
        self.backward(&mut batch, stage, lpr)?;
        let trained = self.trained(stage);
        for (j, t) in trained.iter().enumerate() {
            k::sum_squares(&mut batch, &t.grad, t.len, j, &self.scratch.partials);
        }
        k::clip_scale(
            &mut batch,
            &self.scratch.partials,
            trained.len(),
            &self.scratch.norm,
            self.options.max_grad_norm,
        );
        let settings = AdamwStep {
            lr,
            beta1: self.options.beta1,
            beta2: self.options.beta2,
            eps: self.options.eps,
            weight_decay: self.options.weight_decay,
            step: self.steps,
        };
        for t in &trained {
            let buffers = AdamwBuffers {
                params: &t.param,
                grads: &t.grad,
                m: &t.m,
                v: &t.v,
                count: t.len,
            };
            k::adamw(&mut batch, settings, buffers, &self.scratch.norm);
        }
        let losses = batch.read_back(&self.scratch.losses, 0, (n * 4) as u64);
        let submission = batch.submit();
        Ok(PendingLoss {
            losses: losses.request(),
            submission,
            tokens: n,
            counted,
        })
    }

    /// How the current routers send `ids` (one batch of `batch · seq` tokens): per layer, the
    /// share of the tokens that chose each expert (top-k: a layer's shares add up to k).
    pub async fn expert_shares(&self, ids: &[u32]) -> Result<Vec<Vec<f64>>> {
        let n = self.tokens();
        if ids.len() != n {
            return Err(Error::InvalidArgument(format!(
                "expert shares take {n} ids (batch {} × sequence {}), got {}",
                self.options.batch,
                self.options.seq,
                ids.len()
            )));
        }
        let q = &self.ctx.queue;
        q.write_buffer(&self.scratch.ids, 0, bytemuck::cast_slice(ids));
        q.write_buffer(
            &self.scratch.targets,
            0,
            bytemuck::cast_slice(&vec![k::IGNORE; n]),
        );
        let mut batch = Batch::new(self.ctx);
        self.forward(&mut batch, 1.0)?;
        let reads: Vec<_> = self
            .saved
            .iter()
            .map(|s| batch.read_back(&s.chosen, 0, (n * 4) as u64))
            .collect();
        batch.submit();
        let e = self.config.num_experts;
        let mut shares = Vec::with_capacity(reads.len());
        for read in reads {
            let bits = read.u32s(self.ctx).await?;
            let mut counts = vec![0usize; e];
            for b in bits.iter().take(n) {
                for (x, count) in counts.iter_mut().enumerate() {
                    *count += ((b >> x) & 1) as usize;
                }
            }
            shares.push(counts.iter().map(|&c| c as f64 / n as f64).collect());
        }
        self.ctx.check_device_error()?;
        Ok(shares)
    }

    /// Starts the optimiser afresh (the review after stage 1): zero moments, step 0.
    pub fn reset_optimizer(&mut self) {
        for t in self.trained_tensors() {
            let zeros = vec![0u8; t.len * 4];
            self.ctx.queue.write_buffer(&t.m, 0, &zeros);
            self.ctx.queue.write_buffer(&t.v, 0, &zeros);
        }
        self.steps = 0;
    }

    /// Every trained tensor, layer by layer (router, new experts' gate/up, their down).
    pub fn trained_tensors(&self) -> impl Iterator<Item = &Trained> {
        self.layers
            .iter()
            .flat_map(|t| [&t.router, &t.gate_up, &t.down])
    }

    /// A trained tensor's values and AdamW moments (training checkpoints).
    pub async fn read_with_moments(&self, t: &Trained) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        Ok((
            self.ctx.read_f32(&t.param, 0, t.len).await?,
            self.ctx.read_f32(&t.m, 0, t.len).await?,
            self.ctx.read_f32(&t.v, 0, t.len).await?,
        ))
    }

    /// Sets the trained tensor `name`'s values and moments (a resumed run).
    pub fn write_with_moments(&self, name: &str, p: &[f32], m: &[f32], v: &[f32]) -> Result<()> {
        let t = self
            .trained_tensors()
            .find(|t| {
                t.name == name && t.len == p.len() && m.len() == p.len() && v.len() == p.len()
            })
            .ok_or_else(|| {
                Error::InvalidArgument(format!("{name}: no trained tensor of {} values", p.len()))
            })?;
        let q = &self.ctx.queue;
        q.write_buffer(&t.param, 0, bytemuck::cast_slice(p));
        q.write_buffer(&t.m, 0, bytemuck::cast_slice(m));
        q.write_buffer(&t.v, 0, bytemuck::cast_slice(v));
        Ok(())
    }

    /// The current values of a trained tensor (tests, checkpoints).
    pub async fn read(&self, t: &Trained) -> Result<Vec<f32>> {
        self.ctx.read_f32(&t.param, 0, t.len).await
    }

    pub async fn read_grad(&self, t: &Trained) -> Result<Vec<f32>> {
        self.ctx.read_f32(&t.grad, 0, t.len).await
    }
}
