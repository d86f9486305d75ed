//! What a training run keeps on the GPU: the trained tensors with their gradients and AdamW
//! moments, and the activations the forward pass saves for the backward one.

use std::cell::Cell;

use crate::checkpoint::config::{ExpertProj, MoeLayout};
use crate::checkpoint::{Checkpoint, ModelConfig};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;

/// One trained tensor: its values, gradient and AdamW moments, all f32 and the same length.
pub struct Trained {
    pub name: String,
    pub len: usize,
    pub param: wgpu::Buffer,
    pub grad: wgpu::Buffer,
    pub m: wgpu::Buffer,
    pub v: wgpu::Buffer,
}

impl Trained {
    fn new(ctx: &GpuContext, name: String, values: &[f32], allocated: &Cell<u64>) -> Result<Self> {
        allocated.set(allocated.get() + 4 * 4 * values.len() as u64);
        Ok(Self {
            len: values.len(),
            param: ctx.upload_f32(&name, values),
            grad: ctx.create_storage(&format!("{name}.grad"), values.len())?,
            m: ctx.create_storage(&format!("{name}.m"), values.len())?,
            v: ctx.create_storage(&format!("{name}.v"), values.len())?,
            name,
        })
    }
}

/// One MoE layer's learnable part: the router [experts, hidden] and the new experts (F… for
/// F frozen ones), their gate/up rows interleaved as the model holds them ([(experts − F) ·
/// 2I, hidden]) and their down projections ([(experts − F) · hidden, I]). The frozen experts
/// stay in the model.
pub struct LayerTensors {
    pub router: Trained,
    pub gate_up: Trained,
    pub down: Trained,
}

/// The MoE layout of a model the trainer accepted.
pub fn layout(c: &ModelConfig) -> Result<MoeLayout> {
    c.architecture.moe_layout().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{} is not an MoE architecture",
            c.architecture.model_type()
        ))
    })
}

/// The checkpoint's MoE tensors of layer `l` as f32, in `LayerTensors`' layout.
async fn read_layer(ckpt: &Checkpoint, l: usize, frozen: usize) -> Result<[Vec<f32>; 3]> {
    let c = &ckpt.config;
    let layout = layout(c)?;
    let (h, i) = (c.hidden_size, c.expert_intermediate_size);
    let read = |name: String, shape: [usize; 2]| async move {
        ckpt.expect_shape(&name, &shape)?;
        Ok::<_, Error>(ckpt.read(&name).await?.to_f32())
    };
    let router = read(layout.router(l), [c.num_experts, h]).await?;
    let new = c.num_experts - frozen;
    let mut gate_up = Vec::with_capacity(new * 2 * i * h);
    let mut down = Vec::with_capacity(new * h * i);
    for e in frozen..c.num_experts {
        let w1 = read(layout.expert(l, e, ExpertProj::Gate), [i, h]).await?;
        let w3 = read(layout.expert(l, e, ExpertProj::Up), [i, h]).await?;
        for (g, u) in w1.chunks_exact(h).zip(w3.chunks_exact(h)) {
            gate_up.extend_from_slice(g);
            gate_up.extend_from_slice(u);
        }
        down.extend(read(layout.expert(l, e, ExpertProj::Down), [h, i]).await?);
    }
    Ok([router, gate_up, down])
}

/// Every buffer made here adds its bytes to `allocated` (held to `memory::estimate` by a test).
pub async fn layer_tensors(
    ctx: &GpuContext,
    ckpt: &Checkpoint,
    frozen: usize,
    allocated: &Cell<u64>,
) -> Result<Vec<LayerTensors>> {
    let layout = layout(&ckpt.config)?;
    let [gate, up, down_name] = ExpertProj::ALL.map(|p| layout.proj_name(p));
    let mut out = Vec::with_capacity(ckpt.config.num_layers);
    for l in 0..ckpt.config.num_layers {
        let [router, gate_up, down] = read_layer(ckpt, l, frozen).await?;
        let m = layout.block(l);
        out.push(LayerTensors {
            router: Trained::new(ctx, layout.router(l), &router, allocated)?,
            gate_up: Trained::new(
                ctx,
                format!("{m}.experts.{{{frozen}..}}.{{{gate},{up}}}"),
                &gate_up,
                allocated,
            )?,
            down: Trained::new(
                ctx,
                format!("{m}.experts.{{{frozen}..}}.{down_name}"),
                &down,
                allocated,
            )?,
        });
    }
    Ok(out)
}

/// What one layer's forward pass keeps for the backward one (N = batch · seq tokens).
pub struct SavedLayer {
    /// The residual stream entering the layer and after its attention (the norms' inputs).
    pub res_in: wgpu::Buffer,
    pub res_mid: wgpu::Buffer,
    /// q | k | v per token, after RoPE.
    pub qkv: wgpu::Buffer,
    /// qwen3: the same before the per-head q/k norm (its backward's input).
    pub qkv_pre_norm: Option<wgpu::Buffer>,
    pub attn_out: wgpu::Buffer,
    pub lse: wgpu::Buffer,
    /// The post-attention norm's output: the router's and the experts' input.
    pub xn2: wgpu::Buffer,
    pub probs: wgpu::Buffer,
    pub gates: wgpu::Buffer,
    pub chosen: wgpu::Buffer,
    /// Per expert: the gate/up projection [N, 2I] and its SwiGLU [N, I].
    pub gate_up: Vec<wgpu::Buffer>,
    pub hidden: Vec<wgpu::Buffer>,
    /// Every expert's output, [experts, N, hidden].
    pub expert_out: wgpu::Buffer,
}

/// Buffers one step uses once: the inputs, the residual stream, the logits, and the
/// backward pass's scratch, shared by every layer.
pub struct Scratch {
    pub ids: wgpu::Buffer,
    pub targets: wgpu::Buffer,
    pub lpr_weight: wgpu::Buffer,
    pub x: wgpu::Buffer,
    pub xn: wgpu::Buffer,
    pub final_in: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    pub losses: wgpu::Buffer,
    pub router_logits: wgpu::Buffer,
    pub d_res: wgpu::Buffer,
    pub d_xn: wgpu::Buffer,
    pub d_attn_out: wgpu::Buffer,
    pub delta: wgpu::Buffer,
    pub dq: wgpu::Buffer,
    pub dk: wgpu::Buffer,
    pub dv: wgpu::Buffer,
    /// qwen3: dq and dk before the per-head q/k norm.
    pub dq_pre_norm: wgpu::Buffer,
    pub dk_pre_norm: wgpu::Buffer,
    pub d_expert_out: wgpu::Buffer,
    pub d_gates: wgpu::Buffer,
    pub d_hidden: wgpu::Buffer,
    pub d_gate_up: wgpu::Buffer,
    pub d_router: wgpu::Buffer,
    pub fractions: wgpu::Buffer,
    pub partials: wgpu::Buffer,
    pub norm: wgpu::Buffer,
}

pub fn saved_layers(
    ctx: &GpuContext,
    c: &ModelConfig,
    n: usize,
    allocated: &Cell<u64>,
) -> Result<Vec<SavedLayer>> {
    let (h, i, e) = (c.hidden_size, c.expert_intermediate_size, c.num_experts);
    let qkv = c.q_dim() + 2 * c.kv_dim();
    (0..c.num_layers)
        .map(|l| {
            let s = |what: &str, len: usize| {
                allocated.set(allocated.get() + 4 * len as u64);
                ctx.create_storage(&format!("{what}.{l}"), len)
            };
            Ok(SavedLayer {
                res_in: s("res_in", n * h)?,
                res_mid: s("res_mid", n * h)?,
                qkv: s("qkv", n * qkv)?,
                qkv_pre_norm: if c.qk_norm {
                    Some(s("qkv_pre_norm", n * qkv)?)
                } else {
                    None
                },
                attn_out: s("attn_out", n * c.q_dim())?,
                lse: s("lse", n * c.num_heads)?,
                xn2: s("xn2", n * h)?,
                probs: s("probs", n * e)?,
                gates: s("gates", n * e)?,
                chosen: s("chosen", n)?,
                gate_up: (0..e)
                    .map(|x| s(&format!("gate_up.{x}"), n * 2 * i))
                    .collect::<Result<_>>()?,
                hidden: (0..e)
                    .map(|x| s(&format!("hidden.{x}"), n * i))
                    .collect::<Result<_>>()?,
                expert_out: s("expert_out", e * n * h)?,
            })
        })
        .collect()
}

pub fn scratch(
    ctx: &GpuContext,
    c: &ModelConfig,
    n: usize,
    trained: usize,
    allocated: &Cell<u64>,
) -> Result<Scratch> {
    let (h, i, e) = (c.hidden_size, c.expert_intermediate_size, c.num_experts);
    let s = |what: &str, len: usize| {
        allocated.set(allocated.get() + 4 * len as u64);
        ctx.create_storage(what, len)
    };
    Ok(Scratch {
        ids: s("ids", n)?,
        targets: s("targets", n)?,
        lpr_weight: s("lpr_weight", n)?,
        x: s("x", n * h)?,
        xn: s("xn", n * h)?,
        final_in: s("final_in", n * h)?,
        logits: s("logits", n * c.vocab_size)?,
        losses: s("losses", n)?,
        router_logits: s("router_logits", n * e)?,
        d_res: s("d_res", n * h)?,
        d_xn: s("d_xn", n * h)?,
        d_attn_out: s("d_attn_out", n * c.q_dim())?,
        delta: s("delta", n * c.num_heads)?,
        dq: s("dq", n * c.q_dim())?,
        dk: s("dk", n * c.kv_dim())?,
        dv: s("dv", n * c.kv_dim())?,
        dq_pre_norm: s("dq_pre_norm", if c.qk_norm { n * c.q_dim() } else { 1 })?,
        dk_pre_norm: s("dk_pre_norm", if c.qk_norm { n * c.kv_dim() } else { 1 })?,
        d_expert_out: s("d_expert_out", e * n * h)?,
        d_gates: s("d_gates", n * e)?,
        d_hidden: s("d_hidden", n * i)?,
        d_gate_up: s("d_gate_up", n * 2 * i)?,
        d_router: s("d_router", n * e)?,
        fractions: s("fractions", e)?,
        partials: s("partials", trained.max(1) * super::kernels::NORM_PARTIALS)?,
        norm: s("norm", 2)?,
    })
}
