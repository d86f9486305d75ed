//! The transformer: weights on the GPU, sessions with a KV cache, and forward passes for
//! dense (Llama, Mistral, Qwen2, Qwen3, Gemma 3) and MoE (Mixtral, qwen2_moe, qwen3_moe)
//! decoders.

pub mod estimate;
pub mod forward;
pub mod open;
pub mod routing;
pub mod script;
pub mod session;
pub mod weight_choice;
pub mod weights;

use std::rc::Rc;

pub use forward::LogitsWanted;
pub use session::Session;
pub use weight_choice::WeightChoice;

use crate::checkpoint::moegraft_section::RouterChoice;
use crate::checkpoint::{Checkpoint, ModelConfig};
use crate::error::{Error, Result};
use crate::gpu::kernels::{self, SampleSettings};
use crate::gpu::{Batch, GpuContext};
use routing::RouterMode;
use weights::ModelWeights;

/// Options for loading a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Longest context any session may hold (KV cache and RoPE table size).
    pub max_context: usize,
    /// Tokens per forward pass when feeding a prompt.
    pub prefill_chunk: usize,
    /// How MoE layers route; `None`: the config's `moegraft.router`, else the learned router.
    pub router: Option<RouterChoice>,
    /// The weight format: as stored, or Q8_0 for the large matrices.
    pub weights: WeightChoice,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_context: 4096,
            prefill_chunk: 128,
            router: None,
            weights: WeightChoice::AsStored,
        }
    }
}

pub struct Model {
    pub ctx: Rc<GpuContext>,
    pub config: ModelConfig,
    pub weights: ModelWeights,
    pub options: LoadOptions,
    rope_cos: wgpu::Buffer,
    rope_sin: wgpu::Buffer,
    /// Sliding layers' own RoPE tables (gemma3), cos then sin.
    rope_local: Option<(wgpu::Buffer, wgpu::Buffer)>,
    /// What embeddings are multiplied by: 1, or gemma's √hidden in the embedding's dtype.
    embed_scale: f32,
    /// How MoE layers choose experts (`Learned` unless set).
    router: RouterMode,
}

impl Model {
    pub async fn load(
        ctx: Rc<GpuContext>,
        ckpt: &Checkpoint,
        options: LoadOptions,
    ) -> Result<Self> {
        Self::load_with_progress(ctx, ckpt, options, &mut |_, _| {}).await
    }

    pub async fn load_with_progress(
        ctx: Rc<GpuContext>,
        ckpt: &Checkpoint,
        mut options: LoadOptions,
        progress: weights::Progress<'_>,
    ) -> Result<Self> {
        let config = ckpt.config.clone();
        options.max_context = options
            .max_context
            .min(config.max_position_embeddings)
            .max(1);
        options.prefill_chunk = options.prefill_chunk.clamp(1, options.max_context);
        check_rows(&ctx, ckpt, options.weights)?;
        check_kv_cache(&ctx, &config, options.max_context)?;
        let weights = weights::load(ckpt, &ctx, options.weights, progress).await?;
        let (cos, sin) = rope_tables(&config, options.max_context);
        let rope_cos = ctx.upload_f32("rope_cos", &cos);
        let rope_sin = ctx.upload_f32("rope_sin", &sin);
        let rope_local = config.rope_inv_freq_local().map(|inv_freq| {
            let (cos, sin) = rope_tables_of(&inv_freq, options.max_context);
            (
                ctx.upload_f32("rope_local_cos", &cos),
                ctx.upload_f32("rope_local_sin", &sin),
            )
        });
        ctx.check_device_error()?;
        let embed_scale = if config.scale_embeddings {
            // transformers multiplies by √hidden cast to the embedding's dtype.
            let scale = (config.hidden_size as f32).sqrt();
            crate::checkpoint::dtype::round_to(weights.embed.dtype, scale)
        } else {
            1.0
        };
        Ok(Self {
            ctx,
            config,
            weights,
            options,
            rope_cos,
            rope_sin,
            rope_local,
            embed_scale,
            router: RouterMode::Learned,
        })
    }

    /// Chooses how MoE layers route tokens from now on; refused for dense models and for
    /// experts the model does not have.
    pub fn set_router_mode(&mut self, mode: RouterMode) -> Result<()> {
        mode.check(&self.config)?;
        self.router = mode;
        Ok(())
    }

    pub fn router_mode(&self) -> &RouterMode {
        &self.router
    }

    /// The route ids of the last chunk fed, per MoE layer: [layer][token][slot]. The session
    /// must have been set to record them (`Session::record_routes`) before feeding.
    pub async fn last_routes(&self, s: &Session) -> Result<Vec<Vec<Vec<u32>>>> {
        let routes = s
            .routes
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("this session does not record routes".into()))?;
        let k = self.config.experts_per_token.max(1);
        let mut batch = Batch::new(&self.ctx);
        let rb = batch.read_back(
            routes,
            0,
            (self.config.num_layers * s.scratch.chunk * k * 4) as u64,
        );
        batch.submit();
        let all = rb.u32s(&self.ctx).await?;
        Ok((0..self.config.num_layers)
            .map(|l| {
                (0..s.last_chunk)
                    .map(|t| {
                        if !self.config.is_moe_layer(l) {
                            // A dense layer of a Qwen MoE routes nothing.
                            return Vec::new();
                        }
                        let at = (l * s.scratch.chunk + t) * k;
                        all.get(at..at + k).map(<[u32]>::to_vec).unwrap_or_default()
                    })
                    .collect()
            })
            .collect())
    }

    /// Each layer's router input (post-attention-norm hidden state) for the last chunk fed:
    /// [layer][token × hidden]. The session must capture them (`Session::capture_router_inputs`).
    pub async fn last_captured(&self, s: &Session) -> Result<Vec<Vec<f32>>> {
        let captured = s.captured.as_ref().ok_or_else(|| {
            Error::InvalidArgument("this session does not capture router inputs".into())
        })?;
        let h = self.config.hidden_size;
        let mut out = Vec::with_capacity(self.config.num_layers);
        for l in 0..self.config.num_layers {
            let at = l * s.scratch.chunk * h;
            out.push(self.ctx.read_f32(captured, at, s.last_chunk * h).await?);
        }
        Ok(out)
    }

    /// A fresh session (its own KV cache).
    pub fn session(&self) -> Result<Session> {
        self.session_with(LogitsWanted::Last)
    }

    pub fn session_with(&self, wanted: LogitsWanted) -> Result<Session> {
        Session::new(
            &self.ctx,
            &self.config,
            self.options.max_context,
            self.options.prefill_chunk,
            wanted == LogitsWanted::All,
        )
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::InvalidArgument("no input tokens".into()));
        }
        if let Some(bad) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// Feeds `ids` through the model in chunks, appending them to the session's cache. The
    /// last chunk's logits (its last position, or all with `LogitsWanted::All`) are left in
    /// the session's logits buffer; `finish` records extra work into the last chunk's batch.
    fn feed(
        &self,
        s: &mut Session,
        ids: &[u32],
        wanted: LogitsWanted,
        finish: impl FnOnce(&mut Batch, &Session, usize),
    ) -> Result<()> {
        self.check_ids(ids)?;
        s.check_room(ids.len())?;
        if wanted == LogitsWanted::All && s.scratch.logits_rows < s.scratch.chunk {
            return Err(Error::InvalidArgument(
                "this session keeps only the last position's logits".into(),
            ));
        }
        let chunks: Vec<&[u32]> = ids.chunks(s.scratch.chunk).collect();
        let last = chunks.len() - 1;
        let mut finish = Some(finish);
        for (n, chunk) in chunks.into_iter().enumerate() {
            self.ctx
                .queue
                .write_buffer(&s.scratch.ids, 0, bytemuck::cast_slice(chunk));
            if let RouterMode::LanguagePrior(prior) = &self.router {
                let bias = prior.bias(chunk, self.config.num_experts, &mut s.last_script);
                self.ctx
                    .queue
                    .write_buffer(&s.scratch.route_bias, 0, bytemuck::cast_slice(&bias));
            }
            s.last_chunk = chunk.len();
            let mut batch = Batch::reusing(&self.ctx, &s.reuse);
            let want = if n == last {
                wanted
            } else {
                LogitsWanted::Last
            };
            self.record_chunk(&mut batch, s, chunk.len(), want);
            if n == last {
                if let Some(f) = finish.take() {
                    f(&mut batch, s, chunk.len());
                }
            }
            batch.submit();
            s.pos += chunk.len();
        }
        Ok(())
    }

    /// Runs `ids` and returns the logits of the last position.
    pub async fn logits_last(&self, s: &mut Session, ids: &[u32]) -> Result<Vec<f32>> {
        self.feed(s, ids, LogitsWanted::Last, |_, _, _| {})?;
        self.ctx
            .read_f32(&s.scratch.logits, 0, self.config.vocab_size)
            .await
    }

    /// Runs `ids` and returns every position's logits ([ids.len(), vocab], row-major).
    /// The session must have been made with `LogitsWanted::All`.
    pub async fn logits_all(&self, s: &mut Session, ids: &[u32]) -> Result<Vec<f32>> {
        let v = self.config.vocab_size;
        let mut out = Vec::with_capacity(ids.len() * v);
        for chunk in ids.chunks(s.scratch.chunk) {
            self.feed(s, chunk, LogitsWanted::All, |_, _, _| {})?;
            out.extend(
                self.ctx
                    .read_f32(&s.scratch.logits, 0, chunk.len() * v)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Runs `ids`, picks the next token on the GPU and reads back only its id.
    pub async fn next_token(
        &self,
        s: &mut Session,
        ids: &[u32],
        settings: SampleSettings,
        draw: f32,
    ) -> Result<u32> {
        let v = self.config.vocab_size;
        let mut readback = None;
        self.feed(s, ids, LogitsWanted::Last, |batch, session, _| {
            let sc = &session.scratch;
            kernels::sample(batch, &sc.logits, 0, v, settings, draw, &sc.sampled);
            readback = Some(batch.read_back_into(&sc.sampled, 0, &sc.sampled_readback, 4));
        })?;
        let rb = readback.ok_or_else(|| Error::gpu("sampling was not recorded"))?;
        let id = rb.u32s(&self.ctx).await?;
        id.first()
            .copied()
            .filter(|&t| (t as usize) < v)
            .ok_or_else(|| Error::gpu("sampling returned no valid token"))
    }
}

/// A matrix is split into row chunks to fit the device's bindings, but one row cannot be:
/// refuse a model with a row too wide before any weight is uploaded, naming file and tensor.
fn check_rows(ctx: &GpuContext, ckpt: &Checkpoint, choice: WeightChoice) -> Result<()> {
    let limit = ctx.buffer_limit();
    for name in ckpt.tensor_names() {
        let (file, info) = ckpt.info(name)?;
        let (Some(dtype), [_, cols]) = (info.dtype, info.shape.as_slice()) else {
            continue;
        };
        let format = choice.format_for(name, dtype, *cols);
        let needed = (crate::gpu::tensor::row_words(format, *cols) * 4) as u64;
        if needed > limit {
            return Err(Error::TooLarge {
                file: ckpt.files.display_name(file),
                tensor: name.to_string(),
                needed,
                limit,
                what: "one row exceeds the storage-binding limit".into(),
            });
        }
    }
    Ok(())
}

/// Each layer's keys (and values) are one buffer: refuse a context too long for the device
/// before any weight is uploaded, with the numbers.
fn check_kv_cache(ctx: &GpuContext, c: &ModelConfig, max_context: usize) -> Result<()> {
    let needed = (max_context * c.kv_dim() * 4) as u64;
    let limit = ctx.buffer_limit();
    if needed > limit {
        return Err(Error::TooLarge {
            file: "KV cache".into(),
            tensor: "k_cache.0".into(),
            needed,
            limit,
            what: format!("a context of {max_context} tokens: choose a shorter context length"),
        });
    }
    Ok(())
}

/// cos/sin of position × inverse frequency for every position < max_context, computed like
/// transformers (f32 angle) but with an accurate cosine, since GPU trig loses precision on
/// large angles.
pub fn rope_tables(c: &ModelConfig, max_context: usize) -> (Vec<f32>, Vec<f32>) {
    rope_tables_of(&c.rope_inv_freq(), max_context)
}

fn rope_tables_of(inv_freq: &[f32], max_context: usize) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(max_context * inv_freq.len());
    let mut sin = Vec::with_capacity(max_context * inv_freq.len());
    for pos in 0..max_context {
        for f in inv_freq {
            let angle = (pos as f32 * f) as f64;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}
