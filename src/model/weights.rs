//! Moving a checkpoint's tensors onto the GPU, one tensor at a time, each shape-checked
//! against config.json first so a mismatch names its file and tensor.

use crate::checkpoint::{dtype, Checkpoint, DType, ModelConfig};
use crate::error::Result;
use crate::gpu::{GpuContext, GpuMatrix};

pub struct AttentionWeights {
    pub q: GpuMatrix,
    pub k: GpuMatrix,
    pub v: GpuMatrix,
    pub o: GpuMatrix,
    pub q_bias: Option<wgpu::Buffer>,
    pub k_bias: Option<wgpu::Buffer>,
    pub v_bias: Option<wgpu::Buffer>,
    pub o_bias: Option<wgpu::Buffer>,
}

pub struct DenseFfn {
    pub gate: GpuMatrix,
    pub up: GpuMatrix,
    pub down: GpuMatrix,
    pub gate_bias: Option<wgpu::Buffer>,
    pub up_bias: Option<wgpu::Buffer>,
    pub down_bias: Option<wgpu::Buffer>,
}

/// A Mixtral-layout MoE block: the experts' matrices stacked, expert e at rows e·rows…
pub struct MoeFfn {
    pub router: GpuMatrix,
    /// [experts·intermediate, hidden]
    pub w1: GpuMatrix,
    /// [experts·intermediate, hidden]
    pub w3: GpuMatrix,
    /// [experts·hidden, intermediate]
    pub w2: GpuMatrix,
}

pub enum Ffn {
    Dense(DenseFfn),
    Moe(MoeFfn),
}

pub struct LayerWeights {
    pub input_norm: wgpu::Buffer,
    pub post_attention_norm: wgpu::Buffer,
    pub attention: AttentionWeights,
    pub ffn: Ffn,
}

pub struct ModelWeights {
    pub embed: GpuMatrix,
    pub layers: Vec<LayerWeights>,
    pub final_norm: wgpu::Buffer,
    /// The embedding matrix itself when embeddings are tied.
    pub lm_head: GpuMatrix,
}

/// Reports bytes moved so far and the total, for progress bars.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

struct Loader<'a> {
    ckpt: &'a Checkpoint,
    ctx: &'a GpuContext,
    done: u64,
    total: u64,
    progress: Progress<'a>,
}

impl Loader<'_> {
    fn advance(&mut self, bytes: usize) {
        self.done += bytes as u64;
        (self.progress)(self.done, self.total);
    }

    async fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<GpuMatrix> {
        self.ckpt.expect_shape(name, &[rows, cols])?;
        let t = self.ckpt.read(name).await?;
        let m = self
            .ctx
            .upload_matrix(name, t.dtype, rows, cols, &t.bytes)?;
        self.advance(t.bytes.len());
        Ok(m)
    }

    async fn vector(&mut self, name: &str, len: usize) -> Result<wgpu::Buffer> {
        self.ckpt.expect_shape(name, &[len])?;
        let t = self.ckpt.read(name).await?;
        self.advance(t.bytes.len());
        Ok(self.ctx.upload_f32(name, &t.to_f32()))
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

    /// Stacks `names` ([rows, cols] each) into one matrix; all take the first one's dtype.
    async fn stacked(
        &mut self,
        label: &str,
        names: &[String],
        rows: usize,
        cols: usize,
    ) -> Result<GpuMatrix> {
        let mut stack: Option<GpuMatrix> = None;
        for (e, name) in names.iter().enumerate() {
            self.ckpt.expect_shape(name, &[rows, cols])?;
            let t = self.ckpt.read(name).await?;
            let m = match &stack {
                Some(m) => m.clone(),
                None => {
                    let m = self
                        .ctx
                        .create_matrix(label, t.dtype, rows * names.len(), cols)?;
                    stack = Some(m.clone());
                    m
                }
            };
            let bytes = if t.dtype == m.dtype {
                t.bytes
            } else {
                dtype::from_f32(m.dtype, &t.to_f32())
            };
            m.write_rows(self.ctx, e * rows, &bytes)?;
            self.advance(bytes.len());
        }
        stack.ok_or_else(|| crate::Error::config(label, "an MoE layer needs at least one expert"))
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
    progress: Progress<'_>,
) -> Result<ModelWeights> {
    let c: &ModelConfig = &ckpt.config;
    let mut l = Loader {
        ckpt,
        ctx,
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
        let attention = AttentionWeights {
            q: l.matrix(&format!("{a}.q_proj.weight"), c.q_dim(), h)
                .await?,
            k: l.matrix(&format!("{a}.k_proj.weight"), c.kv_dim(), h)
                .await?,
            v: l.matrix(&format!("{a}.v_proj.weight"), c.kv_dim(), h)
                .await?,
            o: l.matrix(&format!("{a}.o_proj.weight"), h, c.q_dim())
                .await?,
            q_bias: l
                .optional_vector(c.qkv_bias, &format!("{a}.q_proj.bias"), c.q_dim())
                .await?,
            k_bias: l
                .optional_vector(c.qkv_bias, &format!("{a}.k_proj.bias"), c.kv_dim())
                .await?,
            v_bias: l
                .optional_vector(c.qkv_bias, &format!("{a}.v_proj.bias"), c.kv_dim())
                .await?,
            o_bias: l
                .optional_vector(c.o_bias, &format!("{a}.o_proj.bias"), h)
                .await?,
        };
        let ffn = if c.is_moe() {
            let m = format!("{p}.block_sparse_moe");
            let names = |w: &str| -> Vec<String> {
                (0..c.num_experts)
                    .map(|e| format!("{m}.experts.{e}.{w}.weight"))
                    .collect()
            };
            let i_size = c.intermediate_size;
            Ffn::Moe(MoeFfn {
                router: l
                    .matrix(&format!("{m}.gate.weight"), c.num_experts, h)
                    .await?,
                w1: l
                    .stacked(&format!("{m}.experts.*.w1"), &names("w1"), i_size, h)
                    .await?,
                w3: l
                    .stacked(&format!("{m}.experts.*.w3"), &names("w3"), i_size, h)
                    .await?,
                w2: l
                    .stacked(&format!("{m}.experts.*.w2"), &names("w2"), h, i_size)
                    .await?,
            })
        } else {
            let m = format!("{p}.mlp");
            let i_size = c.intermediate_size;
            Ffn::Dense(DenseFfn {
                gate: l
                    .matrix(&format!("{m}.gate_proj.weight"), i_size, h)
                    .await?,
                up: l.matrix(&format!("{m}.up_proj.weight"), i_size, h).await?,
                down: l
                    .matrix(&format!("{m}.down_proj.weight"), h, i_size)
                    .await?,
                gate_bias: l
                    .optional_vector(c.mlp_bias, &format!("{m}.gate_proj.bias"), i_size)
                    .await?,
                up_bias: l
                    .optional_vector(c.mlp_bias, &format!("{m}.up_proj.bias"), i_size)
                    .await?,
                down_bias: l
                    .optional_vector(c.mlp_bias, &format!("{m}.down_proj.bias"), h)
                    .await?,
            })
        };
        layers.push(LayerWeights {
            input_norm: l.vector(&format!("{p}.input_layernorm.weight"), h).await?,
            post_attention_norm: l
                .vector(&format!("{p}.post_attention_layernorm.weight"), h)
                .await?,
            attention,
            ffn,
        });
    }
    let final_norm = l.vector("model.norm.weight", h).await?;
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
    })
}

/// The dtype most of the model's matrices are stored in (for display).
pub fn main_dtype(w: &ModelWeights) -> DType {
    w.layers
        .first()
        .map(|l| l.attention.q.dtype)
        .unwrap_or(w.embed.dtype)
}
