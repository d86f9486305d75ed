//! A generation session: the KV cache and the scratch buffers one forward pass needs.
//! Buffers are allocated once per session, never per token.

use crate::checkpoint::ModelConfig;
use crate::error::{Error, Result};
use std::cell::RefCell;

use crate::gpu::batch::{readback_buffer, Reuse};
use crate::gpu::{kernels, GpuContext};
use crate::model::script::Script;

pub struct Scratch {
    /// Tokens one pass processes at most (prompts are fed in chunks of this size).
    pub chunk: usize,
    pub ids: wgpu::Buffer,
    pub x: wgpu::Buffer,
    pub h: wgpu::Buffer,
    /// [chunk, q_dim + 2·kv_dim]: the fused q/k/v projection.
    pub qkv: wgpu::Buffer,
    pub q: wgpu::Buffer,
    pub attn: wgpu::Buffer,
    /// Dense prefill: the gate/up pairs before the SwiGLU pass (unused by routed experts).
    pub gate: wgpu::Buffer,
    /// The SwiGLU's output: a dense layer's per token, an MoE layer's per (token, slot).
    pub act: wgpu::Buffer,
    /// [chunk]: the shared expert's gate logits (qwen2_moe).
    pub shared_gate: wgpu::Buffer,
    /// [chunk, hidden]: a block's output before it joins the residual stream: gemma's before
    /// its norm, qwen2_moe's shared expert's before its gate.
    pub branch: wgpu::Buffer,
    /// Decoding attention's per-key-range partial softmaxes (`kernels::attention`).
    pub attn_partials: wgpu::Buffer,
    pub router_logits: wgpu::Buffer,
    pub route_ids: wgpu::Buffer,
    pub route_weights: wgpu::Buffer,
    /// [chunk, experts] per-token router-logit bias (the language prior), uploaded per chunk.
    pub route_bias: wgpu::Buffer,
    pub last_hidden: wgpu::Buffer,
    pub last_normed: wgpu::Buffer,
    /// [chunk, vocab] when every position's logits are wanted, else [1, vocab].
    pub logits: wgpu::Buffer,
    pub logits_rows: usize,
    pub sampled: wgpu::Buffer,
    /// Where the sampled id is read back, every step.
    pub sampled_readback: wgpu::Buffer,
}

pub struct Session {
    /// Tokens already in the cache.
    pub pos: usize,
    pub max_context: usize,
    pub k_cache: Vec<wgpu::Buffer>,
    pub v_cache: Vec<wgpu::Buffer>,
    pub scratch: Scratch,
    /// The script of the last token fed, so the language prior's letterless tokens inherit it
    /// across chunks.
    pub last_script: Option<Script>,
    /// Tokens in the last chunk fed (the rows `routes` and `captured` hold).
    pub last_chunk: usize,
    /// When set, every MoE layer copies its route ids here: [layers, chunk, top_k].
    pub routes: Option<wgpu::Buffer>,
    /// When set, every layer copies its post-attention-norm hidden state (the router's input)
    /// here: [layers, chunk, hidden]. Off the hot path unless asked for.
    pub captured: Option<wgpu::Buffer>,
    /// The uniform buffer and bind groups every step reuses.
    pub reuse: RefCell<Reuse>,
}

impl Session {
    pub fn new(
        ctx: &GpuContext,
        c: &ModelConfig,
        max_context: usize,
        chunk: usize,
        all_logits: bool,
    ) -> Result<Self> {
        let per_layer = max_context * c.kv_dim();
        let mut k_cache = Vec::with_capacity(c.num_layers);
        let mut v_cache = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            k_cache.push(ctx.create_storage(&format!("k_cache.{i}"), per_layer)?);
            v_cache.push(ctx.create_storage(&format!("v_cache.{i}"), per_layer)?);
        }
        let chunk = fit_chunk(ctx, c, chunk, all_logits);
        let slots = chunk * c.experts_per_token.max(1);
        let logits_rows = if all_logits { chunk } else { 1 };
        let s = |label: &str, len: usize| ctx.create_storage(label, len);
        let shared = |len: usize| {
            if c.shared_expert_intermediate_size > 0 {
                len
            } else {
                1
            }
        };
        let scratch = Scratch {
            chunk,
            ids: s("ids", chunk)?,
            x: s("x", chunk * c.hidden_size)?,
            h: s("h", chunk * c.hidden_size)?,
            qkv: s("qkv", chunk * qkv_width(c))?,
            q: s("q", chunk * c.q_dim())?,
            attn: s("attn", chunk * c.q_dim())?,
            // A dense FFN's prefill projects gate/up pairs here before the SwiGLU pass.
            gate: s("gate", (2 * chunk * c.widest_dense_ffn()).max(1))?,
            act: s(
                "act",
                (slots * c.expert_intermediate_size).max(chunk * c.widest_dense_ffn()),
            )?,
            shared_gate: s("shared_gate", shared(chunk))?,
            branch: s(
                "branch",
                if c.sandwich_norms || c.shared_expert_intermediate_size > 0 {
                    chunk * c.hidden_size
                } else {
                    1
                },
            )?,
            // Past the binding limit (a huge context) attention keeps its keys whole.
            attn_partials: s(
                "attn_partials",
                kernels::attention_partials_len(
                    chunk * c.num_heads,
                    max_context,
                    c.head_dim,
                    ctx.layout,
                )
                .min((ctx.buffer_limit() / 4) as usize),
            )?,
            router_logits: s("router_logits", chunk * c.num_experts.max(1))?,
            route_ids: s("route_ids", slots)?,
            route_weights: s("route_weights", slots)?,
            route_bias: s("route_bias", chunk * c.num_experts.max(1))?,
            last_hidden: s("last_hidden", c.hidden_size)?,
            last_normed: s("last_normed", c.hidden_size)?,
            logits: s("logits", logits_rows * c.vocab_size)?,
            logits_rows,
            sampled: s("sampled", 4)?,
            sampled_readback: readback_buffer(ctx, 4),
        };
        Ok(Self {
            pos: 0,
            max_context,
            k_cache,
            v_cache,
            scratch,
            last_script: None,
            last_chunk: 0,
            routes: None,
            captured: None,
            reuse: RefCell::default(),
        })
    }

    /// Forgets the cached context (the buffers are kept).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.last_script = None;
    }

    /// Starts recording each MoE layer's route ids for every later chunk (see
    /// `Model::last_routes`).
    pub fn record_routes(&mut self, ctx: &GpuContext, c: &ModelConfig) -> Result<()> {
        let len = c.num_layers * self.scratch.chunk * c.experts_per_token.max(1);
        self.routes = Some(ctx.create_storage("routes", len)?);
        Ok(())
    }

    /// Starts capturing each layer's router input for every later chunk (see
    /// `Model::last_captured`).
    pub fn capture_router_inputs(&mut self, ctx: &GpuContext, c: &ModelConfig) -> Result<()> {
        let len = c.num_layers * self.scratch.chunk * c.hidden_size;
        self.captured = Some(ctx.create_storage("captured", len)?);
        Ok(())
    }

    pub fn check_room(&self, tokens: usize) -> Result<()> {
        if self.pos + tokens > self.max_context {
            return Err(Error::InvalidArgument(format!(
                "context is full: {} cached + {tokens} new tokens exceed the session's {} (raise --max-context)",
                self.pos, self.max_context
            )));
        }
        Ok(())
    }
}

/// The largest prompt chunk whose scratch buffers fit one storage binding: on small devices
/// prompts are fed in smaller pieces rather than refused (the KV cache still must fit).
fn fit_chunk(ctx: &GpuContext, c: &ModelConfig, wanted: usize, all_logits: bool) -> usize {
    let widest_row = [
        c.hidden_size,
        qkv_width(c),
        c.experts_per_token * c.expert_intermediate_size,
        2 * c.widest_dense_ffn(),
        if all_logits { c.vocab_size } else { 0 },
    ]
    .into_iter()
    .max()
    .unwrap_or(1) as u64
        * 4;
    let limit = ctx.buffer_limit();
    wanted.min((limit / widest_row).max(1) as usize)
}

fn qkv_width(c: &ModelConfig) -> usize {
    c.q_dim() + 2 * c.kv_dim()
}
