//! Moving a checkpoint's tensors onto the GPU, one tensor at a time, each shape-checked
//! against config.json first so a mismatch names its file and tensor, and its matrices held
//! in the format the user picked (see `WeightChoice`).

use super::weight_choice::WeightChoice;
use crate::checkpoint::config::{ExpertProj, MoeLayout};
use crate::checkpoint::{Checkpoint, DType, ModelConfig};
use crate::error::Result;
use crate::gpu::{GpuContext, GpuMatrix, WeightFormat};

pub struct AttentionWeights {
    /// q_proj, k_proj and v_proj stacked, [q_dim + 2·kv_dim, hidden]: one projection per step.
    pub qkv: GpuMatrix,
    pub o: GpuMatrix,
    pub qkv_bias: Option<wgpu::Buffer>,
    pub o_bias: Option<wgpu::Buffer>,
    /// qwen3: q_norm's then k_norm's weights ([2·head_dim]), applied per head before RoPE.
    pub qk_norm: Option<wgpu::Buffer>,
}

pub struct DenseFfn {
    /// gate_proj and up_proj rows interleaved (gate n at row 2n, up n at 2n + 1), so one
    /// invocation reads both and applies the SwiGLU.
    pub gate_up: GpuMatrix,
    pub down: GpuMatrix,
    /// Interleaved like `gate_up`.
    pub gate_up_bias: Option<wgpu::Buffer>,
    pub down_bias: Option<wgpu::Buffer>,
}

/// An MoE block: the routed experts' matrices stacked, expert e at rows e·rows…
pub struct MoeFfn {
    pub router: GpuMatrix,
    /// [experts·2·intermediate, hidden]: each expert's gate (w1) and up (w3) rows interleaved
    /// as in `DenseFfn::gate_up`, expert e's pair n at rows e·2·intermediate + 2n, + 1.
    pub gate_up: GpuMatrix,
    /// [experts·hidden, intermediate]: the down projections (w2).
    pub w2: GpuMatrix,
    /// qwen2_moe's shared expert, added to every token's output.
    pub shared: Option<Box<SharedExpert>>,
}

/// A dense FFN every token goes through, scaled by sigmoid(gate · x).
pub struct SharedExpert {
    pub ffn: DenseFfn,
    /// [1, hidden]
    pub gate: GpuMatrix,
}

pub enum Ffn {
    Dense(DenseFfn),
    Moe(MoeFfn),
}

pub struct LayerWeights {
    pub input_norm: wgpu::Buffer,
    /// The FFN's input norm (llama's post_attention_layernorm, gemma's pre_feedforward one).
    pub post_attention_norm: wgpu::Buffer,
    /// Gemma: the norms of the attention's and the FFN's outputs before each residual add.
    pub output_norms: Option<OutputNorms>,
    pub attention: AttentionWeights,
    pub ffn: Ffn,
}

pub struct OutputNorms {
    pub attention: wgpu::Buffer,
    pub ffn: wgpu::Buffer,
}

pub struct ModelWeights {
    pub embed: GpuMatrix,
    pub layers: Vec<LayerWeights>,
    pub final_norm: wgpu::Buffer,
    /// The embedding matrix itself when embeddings are tied.
    pub lm_head: GpuMatrix,
    /// The format asked for at load time.
    pub choice: WeightChoice,
    /// Matrices that keep their dtype although Q8_0 was asked for (rows that are not whole
    /// 32-element blocks), by name.
    pub kept: Vec<String>,
}

/// Reports bytes moved so far and the total, for progress bars.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

struct Loader<'a> {
    ckpt: &'a Checkpoint,
    ctx: &'a GpuContext,
    choice: WeightChoice,
    kept: Vec<String>,
    done: u64,
    total: u64,
    progress: Progress<'a>,
}

impl Loader<'_> {
    fn advance(&mut self, bytes: usize) {
        self.done += bytes as u64;
        (self.progress)(self.done, self.total);
    }

    /// The format of matrix `name` (rows of `cols`, stored as `dtype`), noting the ones that
    /// keep their dtype against the user's choice.
    fn format(&mut self, name: &str, dtype: DType, cols: usize) -> WeightFormat {
        if self.choice.kept(name, cols) {
            self.kept.push(name.to_string());
        }
        self.choice.format_for(name, dtype, cols)
    }

    async fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<GpuMatrix> {
        self.ckpt.expect_shape(name, &[rows, cols])?;
        let t = self.ckpt.read(name).await?;
        let format = self.format(name, t.dtype, cols);
        let m = self
            .ctx
            .create_matrix_as(name, t.dtype, format, rows, cols, 1)?;
        m.write_rows(self.ctx, 0, &t.bytes)?;
        self.advance(t.bytes.len());
        Ok(m)
    }

    async fn read_vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        self.ckpt.expect_shape(name, &[len])?;
        let t = self.ckpt.read(name).await?;
        self.advance(t.bytes.len());
        Ok(t.to_f32())
    }

    async fn vector(&mut self, name: &str, len: usize) -> Result<wgpu::Buffer> {
        let values = self.read_vector(name, len).await?;
        Ok(self.ctx.upload_f32(name, &values))
    }

    /// An RMSNorm's weight as the kernels use it: w, or 1 + w where the model stores the
    /// offset from 1 (gemma), added in f32 as transformers does.
    async fn norm(&mut self, c: &ModelConfig, name: &str, len: usize) -> Result<wgpu::Buffer> {
        let values: Vec<f32> = self
            .read_vector(name, len)
            .await?
            .into_iter()
            .map(|w| c.norm_offset + w)
            .collect();
        Ok(self.ctx.upload_f32(name, &values))
    }

    /// q_norm's then k_norm's weights, as `norm` makes them; q's also carry the ratio of the
    /// model's score scale to the attention kernel's 1/√head_dim (gemma's
    /// query_pre_attn_scalar): RoPE is a rotation, so scaling q before it scales the scores.
    async fn qk_norm(&mut self, c: &ModelConfig, attn: &str) -> Result<wgpu::Buffer> {
        let d = c.head_dim;
        let q_scale = c.attention_scale.map_or(1.0, |s| s * (d as f32).sqrt());
        let mut values = Vec::with_capacity(2 * d);
        for (which, scale) in [("q", q_scale), ("k", 1.0)] {
            let w = self
                .read_vector(&format!("{attn}.{which}_norm.weight"), d)
                .await?;
            values.extend(w.into_iter().map(|w| (c.norm_offset + w) * scale));
        }
        Ok(self
            .ctx
            .upload_f32(&format!("{attn}.{{q,k}}_norm.weight"), &values))
    }

    async fn optional_vector(
        &mut self,
        present: bool,
        name: &str,
        len: usize,
    ) -> Result<Option<wgpu::Buffer>> {
        if present {
            Ok(Some(self.vector(name, len).await?))
        } else {
            Ok(None)
        }
    }

    /// Stacks `parts` ([rows, cols] each, rows as given) into one matrix; all take the first
    /// one's dtype (or are quantized from their own).
    async fn stacked(
        &mut self,
        label: &str,
        parts: &[(String, usize)],
        cols: usize,
    ) -> Result<GpuMatrix> {
        let total: usize = parts.iter().map(|(_, rows)| rows).sum();
        let mut stack: Option<GpuMatrix> = None;
        let mut at = 0;
        for (name, rows) in parts {
            self.ckpt.expect_shape(name, &[*rows, cols])?;
            let t = self.ckpt.read(name).await?;
            let m = match &stack {
                Some(m) => m.clone(),
                None => {
                    let format = self.format(label, t.dtype, cols);
                    let m = self
                        .ctx
                        .create_matrix_as(label, t.dtype, format, total, cols, 1)?;
                    stack = Some(m.clone());
                    m
                }
            };
            m.write_rows_from(self.ctx, at, t.dtype, &t.bytes)?;
            at += rows;
            self.advance(t.bytes.len());
        }
        stack.ok_or_else(|| crate::Error::config(label, "an MoE layer needs at least one expert"))
    }

    /// Pairs of [rows, cols] matrices, each pair's rows interleaved (a's row n at 2n, b's at
    /// 2n + 1) and the pairs stacked (an MoE layer's experts; a dense layer has one pair).
    /// Everything takes the first matrix's dtype (and is quantized from it).
    async fn interleaved(
        &mut self,
        label: &str,
        pairs: &[(String, String)],
        rows: usize,
        cols: usize,
    ) -> Result<GpuMatrix> {
        let mut stack: Option<GpuMatrix> = None;
        for (k, (a, b)) in pairs.iter().enumerate() {
            self.ckpt.expect_shape(a, &[rows, cols])?;
            self.ckpt.expect_shape(b, &[rows, cols])?;
            let ta = self.ckpt.read(a).await?;
            let m = match &stack {
                Some(m) => m.clone(),
                None => {
                    let total = 2 * rows * pairs.len();
                    let format = self.format(label, ta.dtype, cols);
                    let m = self
                        .ctx
                        .create_matrix_as(label, ta.dtype, format, total, cols, 2)?;
                    stack = Some(m.clone());
                    m
                }
            };
            let a_bytes = ta.into_dtype(m.dtype);
            let b_bytes = self.ckpt.read(b).await?.into_dtype(m.dtype);
            let row = cols * m.dtype.size();
            let mut rows_ab = Vec::with_capacity(2 * rows * row);
            for (ra, rb) in a_bytes.chunks_exact(row).zip(b_bytes.chunks_exact(row)) {
                rows_ab.extend_from_slice(ra);
                rows_ab.extend_from_slice(rb);
            }
            m.write_rows(self.ctx, 2 * rows * k, &rows_ab)?;
            self.advance(rows_ab.len());
        }
        stack.ok_or_else(|| crate::Error::config(label, "an MoE layer needs at least one expert"))
    }

    /// The vectors `parts` ([len] each) end to end, or None when the model has none.
    async fn optional_stacked_vector(
        &mut self,
        present: bool,
        label: &str,
        parts: &[(String, usize)],
    ) -> Result<Option<wgpu::Buffer>> {
        if !present {
            return Ok(None);
        }
        let mut values = Vec::new();
        for (name, len) in parts {
            values.extend(self.read_vector(name, *len).await?);
        }
        Ok(Some(self.ctx.upload_f32(label, &values)))
    }

    /// Two [len] vectors interleaved like `interleaved`'s rows, or None when absent.
    async fn optional_interleaved_vector(
        &mut self,
        present: bool,
        label: &str,
        a: &str,
        b: &str,
        len: usize,
    ) -> Result<Option<wgpu::Buffer>> {
        if !present {
            return Ok(None);
        }
        let va = self.read_vector(a, len).await?;
        let vb = self.read_vector(b, len).await?;
        let pairs: Vec<f32> = va.iter().zip(&vb).flat_map(|(x, y)| [*x, *y]).collect();
        Ok(Some(self.ctx.upload_f32(label, &pairs)))
    }
}

impl Loader<'_> {
    /// A dense FFN of width `i_size` whose projections are `names("gate_proj")` … (biases
    /// where the config has them).
    async fn dense_ffn(
        &mut self,
        c: &ModelConfig,
        names: &dyn Fn(&str) -> String,
        i_size: usize,
    ) -> Result<DenseFfn> {
        let h = c.hidden_size;
        let (gate, up, down) = (names("gate_proj"), names("up_proj"), names("down_proj"));
        let label = names("{gate,up}_proj");
        Ok(DenseFfn {
            gate_up: self
                .interleaved(
                    &format!("{label}.weight"),
                    &[(format!("{gate}.weight"), format!("{up}.weight"))],
                    i_size,
                    h,
                )
                .await?,
            down: self.matrix(&format!("{down}.weight"), h, i_size).await?,
            gate_up_bias: self
                .optional_interleaved_vector(
                    c.mlp_bias,
                    &format!("{label}.bias"),
                    &format!("{gate}.bias"),
                    &format!("{up}.bias"),
                    i_size,
                )
                .await?,
            down_bias: self
                .optional_vector(c.mlp_bias, &format!("{down}.bias"), h)
                .await?,
        })
    }

    /// Layer `l`'s MoE block in `layout`: router, stacked experts, shared expert if any.
    async fn moe_ffn(&mut self, c: &ModelConfig, layout: MoeLayout, l: usize) -> Result<MoeFfn> {
        let (h, i_size, experts) = (c.hidden_size, c.expert_intermediate_size, c.num_experts);
        let block = layout.block(l);
        let names = |proj: ExpertProj, rows: usize| -> Vec<(String, usize)> {
            (0..experts)
                .map(|e| (layout.expert(l, e, proj), rows))
                .collect()
        };
        let pairs: Vec<(String, String)> = (0..experts)
            .map(|e| {
                (
                    layout.expert(l, e, ExpertProj::Gate),
                    layout.expert(l, e, ExpertProj::Up),
                )
            })
            .collect();
        let (gate, up, down) = ExpertProj::ALL.map(|p| layout.proj_name(p)).into();
        let shared = if c.shared_expert_intermediate_size > 0 {
            let prefix = format!("{block}.shared_expert");
            let names = |proj: &str| format!("{prefix}.{proj}");
            Some(Box::new(SharedExpert {
                ffn: self
                    .dense_ffn(c, &names, c.shared_expert_intermediate_size)
                    .await?,
                gate: self.matrix(&layout.shared_gate(l), 1, h).await?,
            }))
        } else {
            None
        };
        Ok(MoeFfn {
            router: self.matrix(&layout.router(l), experts, h).await?,
            gate_up: self
                .interleaved(
                    &format!("{block}.experts.*.{{{gate},{up}}}"),
                    &pairs,
                    i_size,
                    h,
                )
                .await?,
            w2: self
                .stacked(
                    &format!("{block}.experts.*.{down}"),
                    &names(ExpertProj::Down, h),
                    i_size,
                )
                .await?,
            shared,
        })
    }
}

/// Bytes of every tensor the model will read (for progress and memory estimates).
pub fn total_bytes(ckpt: &Checkpoint) -> u64 {
    ckpt.tensor_names()
        .filter_map(|n| ckpt.info(n).ok())
        .map(|(_, i)| i.len)
        .sum()
}

pub async fn load(
    ckpt: &Checkpoint,
    ctx: &GpuContext,
    choice: WeightChoice,
    progress: Progress<'_>,
) -> Result<ModelWeights> {
    let c: &ModelConfig = &ckpt.config;
    let mut l = Loader {
        ckpt,
        ctx,
        choice,
        kept: Vec::new(),
        done: 0,
        total: total_bytes(ckpt),
        progress,
    };
    let (h, v) = (c.hidden_size, c.vocab_size);
    let embed = l.matrix("model.embed_tokens.weight", v, h).await?;
    let mut layers = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let p = format!("model.layers.{i}");
        let a = format!("{p}.self_attn");
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let qkv_parts = |what: &str| {
            [("q", qd), ("k", kvd), ("v", kvd)]
                .map(|(x, rows)| (format!("{a}.{x}_proj.{what}"), rows))
        };
        let attention = AttentionWeights {
            qkv: l
                .stacked(
                    &format!("{a}.{{q,k,v}}_proj.weight"),
                    &qkv_parts("weight"),
                    h,
                )
                .await?,
            o: l.matrix(&format!("{a}.o_proj.weight"), h, qd).await?,
            qkv_bias: l
                .optional_stacked_vector(
                    c.qkv_bias,
                    &format!("{a}.{{q,k,v}}_proj.bias"),
                    &qkv_parts("bias"),
                )
                .await?,
            o_bias: l
                .optional_vector(c.o_bias, &format!("{a}.o_proj.bias"), h)
                .await?,
            qk_norm: if c.qk_norm {
                Some(l.qk_norm(c, &a).await?)
            } else {
                None
            },
        };
        let ffn = match c.architecture.moe_layout() {
            Some(layout) if c.is_moe_layer(i) => Ffn::Moe(l.moe_ffn(c, layout, i).await?),
            _ => {
                let m = format!("{p}.mlp");
                let names = |proj: &str| format!("{m}.{proj}");
                Ffn::Dense(l.dense_ffn(c, &names, c.intermediate_size).await?)
            }
        };
        let norm = |n: &str| format!("{p}.{n}.weight");
        let input_norm = l.norm(c, &norm("input_layernorm"), h).await?;
        let (post_attention_norm, output_norms) = if c.sandwich_norms {
            let attention = l.norm(c, &norm("post_attention_layernorm"), h).await?;
            let ffn_in = l.norm(c, &norm("pre_feedforward_layernorm"), h).await?;
            let ffn = l.norm(c, &norm("post_feedforward_layernorm"), h).await?;
            (ffn_in, Some(OutputNorms { attention, ffn }))
        } else {
            (l.norm(c, &norm("post_attention_layernorm"), h).await?, None)
        };
        layers.push(LayerWeights {
            input_norm,
            post_attention_norm,
            output_norms,
            attention,
            ffn,
        });
    }
    let final_norm = l.norm(c, "model.norm.weight", h).await?;
    // Some exports keep a copy of the embeddings as lm_head even when tied; use it if present.
    let lm_head = if ckpt.has("lm_head.weight") || !c.tie_word_embeddings {
        l.matrix("lm_head.weight", v, h).await?
    } else {
        embed.clone()
    };
    Ok(ModelWeights {
        embed,
        layers,
        final_norm,
        lm_head,
        choice,
        kept: l.kept,
    })
}

/// The matrix most of the model's weights are in (for display).
fn main_matrix(w: &ModelWeights) -> &GpuMatrix {
    w.layers.first().map_or(&w.embed, |l| &l.attention.qkv)
}

/// The dtype most of the model's matrices are stored in (for display).
pub fn main_dtype(w: &ModelWeights) -> DType {
    main_matrix(w).dtype
}

/// The format most of the model's matrices are held in on the GPU (for display).
pub fn main_format(w: &ModelWeights) -> WeightFormat {
    main_matrix(w).format
}

impl ModelWeights {
    /// One line for a user when Q8_0 was asked for but some matrices keep their dtype.
    pub fn kept_note(&self) -> Option<String> {
        let first = self.kept.first()?;
        let more = match self.kept.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        Some(format!(
            "{} of the model's matrices keep their dtype instead of {} (rows not whole blocks of {}): {first}{more}",
            self.kept.len(),
            self.choice,
            crate::gpu::q8_0::BLOCK
        ))
    }
}
