//! One forward pass over a chunk of tokens, recorded into a batch: the decoder layers of
//! Llama/Mistral/Qwen2/Qwen3 and Gemma 3 (its blocks' outputs normalised before the residual
//! add, sliding layers with their own RoPE) and, for MoE layers (Mixtral, qwen2_moe,
//! qwen3_moe), the shared expert if any, then router → GPU top-k → the chosen experts'
//! projections → weighted combine.

use super::routing::RouterMode;
use super::session::Session;
use super::weights::{DenseFfn, Ffn, LayerWeights, MoeFfn, SharedExpert};
use super::Model;
use crate::gpu::kernels::{
    self, AttentionShape, GatedFfn, HeadNormTarget, Output, QkvSplit, RouteSteer,
};
use crate::gpu::Batch;

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    /// Only the chunk's last token (generation).
    Last,
    /// Every token of the chunk (perplexity).
    All,
}

impl Model {
    /// Records the pass for `tokens` tokens whose ids are already in `scratch.ids`, at
    /// positions session.pos…; advances nothing (the caller moves `session.pos`).
    pub(crate) fn record_chunk(
        &self,
        batch: &mut Batch,
        s: &Session,
        tokens: usize,
        wanted: LogitsWanted,
    ) {
        let c = &self.config;
        let sc = &s.scratch;
        let w = &self.weights;
        kernels::embed_scaled(batch, &sc.ids, &w.embed, &sc.x, tokens, self.embed_scale);
        for (i, layer) in w.layers.iter().enumerate() {
            self.record_attention(batch, s, i, layer, tokens);
            kernels::rms_norm(
                batch,
                &sc.x,
                &layer.post_attention_norm,
                &sc.h,
                tokens,
                c.hidden_size,
                c.rms_norm_eps,
            );
            if let Some(captured) = &s.captured {
                let row = (c.hidden_size * 4) as u64;
                let at = (i * sc.chunk) as u64 * row;
                batch.copy(&sc.h, 0, captured, at, tokens as u64 * row);
            }
            match &layer.ffn {
                Ffn::Dense(ffn) => {
                    let norm = layer.output_norms.as_ref().map(|n| &n.ffn);
                    let out = self.residual_output(s, norm);
                    self.record_dense_ffn(batch, s, ffn, c.intermediate_size, out, tokens);
                    self.join_residual(batch, s, norm, tokens);
                }
                Ffn::Moe(moe) => self.record_moe_ffn(batch, s, moe, i, tokens),
            }
        }
        let h = c.hidden_size;
        let v = c.vocab_size;
        match wanted {
            LogitsWanted::All => {
                kernels::rms_norm(
                    batch,
                    &sc.x,
                    &w.final_norm,
                    &sc.h,
                    tokens,
                    h,
                    c.rms_norm_eps,
                );
                kernels::matmul(
                    batch,
                    &sc.h,
                    tokens,
                    h,
                    &w.lm_head,
                    None,
                    Output::new(&sc.logits, v),
                );
            }
            LogitsWanted::Last => {
                batch.copy(
                    &sc.x,
                    ((tokens - 1) * h * 4) as u64,
                    &sc.last_hidden,
                    0,
                    (h * 4) as u64,
                );
                kernels::rms_norm(
                    batch,
                    &sc.last_hidden,
                    &w.final_norm,
                    &sc.last_normed,
                    1,
                    h,
                    c.rms_norm_eps,
                );
                kernels::matmul(
                    batch,
                    &sc.last_normed,
                    1,
                    h,
                    &w.lm_head,
                    None,
                    Output::new(&sc.logits, v),
                );
            }
        }
    }

    fn record_attention(
        &self,
        batch: &mut Batch,
        s: &Session,
        i: usize,
        layer: &LayerWeights,
        tokens: usize,
    ) {
        let c = &self.config;
        let sc = &s.scratch;
        let a = &layer.attention;
        let (h, qd, kvd) = (c.hidden_size, c.q_dim(), c.kv_dim());
        let (k_cache, v_cache) = (&s.k_cache[i], &s.v_cache[i]);
        let (rope_cos, rope_sin) = match (&self.rope_local, c.local_rope(i)) {
            (Some((cos, sin)), true) => (cos, sin),
            _ => (&self.rope_cos, &self.rope_sin),
        };
        kernels::rms_norm(
            batch,
            &sc.x,
            &layer.input_norm,
            &sc.h,
            tokens,
            h,
            c.rms_norm_eps,
        );
        // One projection for q, k and v; then RoPE, with k and v going straight into their
        // cache slots.
        kernels::matmul(
            batch,
            &sc.h,
            tokens,
            h,
            &a.qkv,
            a.qkv_bias.as_ref(),
            Output::new(&sc.qkv, qd + 2 * kvd),
        );
        if let Some(weight) = &a.qk_norm {
            let target = HeadNormTarget {
                qkv: &sc.qkv,
                tokens,
                q_heads: c.num_heads,
                kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                stride: qd + 2 * kvd,
            };
            kernels::head_rms_norm(batch, target, weight, c.rms_norm_eps);
        }
        kernels::rope_qkv(
            batch,
            QkvSplit {
                qkv: &sc.qkv,
                q: &sc.q,
                k_cache,
                v_cache,
                tokens,
                pos0: s.pos,
                heads: c.num_heads,
                kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                slot: s.pos * kvd,
            },
            rope_cos,
            rope_sin,
        );
        let shape = AttentionShape {
            tokens,
            pos0: s.pos,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            window: c.window(i).unwrap_or(0),
        };
        kernels::attention(
            batch,
            &sc.q,
            k_cache,
            v_cache,
            &sc.attn,
            &sc.attn_partials,
            shape,
        );
        let norm = layer.output_norms.as_ref().map(|n| &n.attention);
        let out = self.residual_output(s, norm);
        kernels::matmul(batch, &sc.attn, tokens, qd, &a.o, a.o_bias.as_ref(), out);
        self.join_residual(batch, s, norm, tokens);
    }

    /// Where a block writes its output: straight into the residual stream, or (gemma, whose
    /// blocks' outputs are normalised first) into `branch`.
    fn residual_output<'a>(&self, s: &'a Session, norm: Option<&wgpu::Buffer>) -> Output<'a> {
        let h = self.config.hidden_size;
        match norm {
            Some(_) => Output::new(&s.scratch.branch, h),
            None => Output::new(&s.scratch.x, h).accumulate(),
        }
    }

    /// Gemma: x += RMSNorm(branch); nothing when the block wrote into x itself.
    fn join_residual(
        &self,
        batch: &mut Batch,
        s: &Session,
        norm: Option<&wgpu::Buffer>,
        tokens: usize,
    ) {
        let Some(weight) = norm else {
            return;
        };
        let (c, sc) = (&self.config, &s.scratch);
        let h = c.hidden_size;
        kernels::rms_norm(batch, &sc.branch, weight, &sc.h, tokens, h, c.rms_norm_eps);
        kernels::add_into(batch, &sc.h, &sc.x, tokens * h);
    }

    /// The routing mode as the route_topk kernel takes it (the bias was uploaded by `feed`).
    fn route_steer<'a>(&self, s: &'a Session) -> RouteSteer<'a> {
        match &self.router {
            RouterMode::Learned => RouteSteer::default(),
            RouterMode::Expert(n) => RouteSteer {
                forced_expert: Some(*n),
                ..Default::default()
            },
            RouterMode::LanguagePrior(_) => RouteSteer {
                bias: Some(&s.scratch.route_bias),
                ..Default::default()
            },
        }
    }

    /// A dense FFN of width `i` over `sc.h`, its down projection written to `out`.
    fn record_dense_ffn(
        &self,
        batch: &mut Batch,
        s: &Session,
        f: &DenseFfn,
        i: usize,
        out: Output,
        tokens: usize,
    ) {
        let sc = &s.scratch;
        let h = self.config.hidden_size;
        let gated = GatedFfn {
            gate_up: &f.gate_up,
            bias: f.gate_up_bias.as_ref(),
            activation: self.config.activation,
        };
        kernels::matmul_gated(batch, &sc.h, tokens, h, gated, &sc.act, &sc.gate);
        kernels::matmul(
            batch,
            &sc.act,
            tokens,
            i,
            &f.down,
            f.down_bias.as_ref(),
            out,
        );
    }

    /// qwen2_moe's shared expert: x += sigmoid(gate · h) · FFN(h).
    fn record_shared_expert(
        &self,
        batch: &mut Batch,
        s: &Session,
        e: &SharedExpert,
        tokens: usize,
    ) {
        let c = &self.config;
        let sc = &s.scratch;
        let out = Output::new(&sc.branch, c.hidden_size);
        let width = c.shared_expert_intermediate_size;
        self.record_dense_ffn(batch, s, &e.ffn, width, out, tokens);
        let gate = Output::new(&sc.shared_gate, 1);
        kernels::matmul(batch, &sc.h, tokens, c.hidden_size, &e.gate, None, gate);
        kernels::gated_add(
            batch,
            &sc.branch,
            &sc.shared_gate,
            &sc.x,
            tokens,
            c.hidden_size,
        );
    }

    fn record_moe_ffn(
        &self,
        batch: &mut Batch,
        s: &Session,
        m: &MoeFfn,
        layer: usize,
        tokens: usize,
    ) {
        let c = &self.config;
        let sc = &s.scratch;
        let (h, i, e, k) = (
            c.hidden_size,
            c.expert_intermediate_size,
            c.num_experts,
            c.experts_per_token,
        );
        if let Some(shared) = &m.shared {
            self.record_shared_expert(batch, s, shared, tokens);
        }
        kernels::matmul(
            batch,
            &sc.h,
            tokens,
            h,
            &m.router,
            None,
            Output::new(&sc.router_logits, e),
        );
        kernels::route_topk(
            batch,
            &sc.router_logits,
            &sc.route_ids,
            &sc.route_weights,
            tokens,
            e,
            k,
            c.norm_topk_prob,
            self.route_steer(s),
        );
        if let Some(routes) = &s.routes {
            let row = (k * 4) as u64;
            let at = (layer * sc.chunk) as u64 * row;
            batch.copy(&sc.route_ids, 0, routes, at, tokens as u64 * row);
        }
        kernels::expert_swiglu(
            batch,
            &sc.h,
            &m.gate_up,
            i,
            &sc.route_ids,
            &sc.act,
            tokens,
            k,
        );
        kernels::expert_down_combine(
            batch,
            &sc.act,
            &m.w2,
            h,
            &sc.route_ids,
            &sc.route_weights,
            &sc.x,
            tokens,
            k,
        );
    }
}
