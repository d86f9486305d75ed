//! config.json: the model's architecture and sizes, validated before any weight is read.

use serde_json::Value;

pub use super::moe_layout::{ExpertProj, MoeLayout};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    /// Qwen2's layout without q/k/v biases, plus a per-head RMSNorm of q and k before RoPE.
    Qwen3,
    Mixtral,
    /// Qwen2's attention; routed experts (softmax, then top-k) beside a shared expert with a
    /// sigmoid gate.
    Qwen2Moe,
    /// Qwen3's attention; routed experts, no shared expert.
    Qwen3Moe,
    /// Gemma 3's text model: embeddings × √hidden, (1 + w) norms around both blocks, q/k
    /// norms, GELU-tanh, sliding and full layers with their own RoPE bases.
    Gemma3,
}

/// The FFN's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// silu(gate) · up (SwiGLU).
    Silu,
    /// gelu_tanh(gate) · up (GeGLU, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Architecture {
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Mixtral => "mixtral",
            Architecture::Qwen2Moe => "qwen2_moe",
            Architecture::Qwen3Moe => "qwen3_moe",
            Architecture::Gemma3 => "gemma3_text",
        }
    }

    pub fn class_name(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
            Architecture::Mixtral => "MixtralForCausalLM",
            Architecture::Qwen2Moe => "Qwen2MoeForCausalLM",
            Architecture::Qwen3Moe => "Qwen3MoeForCausalLM",
            Architecture::Gemma3 => "Gemma3ForCausalLM",
        }
    }

    /// Where the MoE blocks' tensors live, for the MoE architectures.
    pub fn moe_layout(self) -> Option<MoeLayout> {
        match self {
            Architecture::Mixtral => Some(MoeLayout::Mixtral),
            Architecture::Qwen2Moe | Architecture::Qwen3Moe => Some(MoeLayout::Qwen),
            _ => None,
        }
    }

    /// The MoE architecture a dense model of this one is upcycled into, or None where no MoE
    /// layout that transformers, vLLM and llama.cpp load holds it.
    pub fn upcycled(self) -> Option<Architecture> {
        match self {
            Architecture::Llama | Architecture::Mistral => Some(Architecture::Mixtral),
            Architecture::Qwen2 => Some(Architecture::Qwen2Moe),
            Architecture::Qwen3 => Some(Architecture::Qwen3Moe),
            _ => None,
        }
    }

    /// Qwen2's attention: q/k/v biases, no q/k norms.
    fn has_qwen2_attention(self) -> bool {
        matches!(self, Architecture::Qwen2 | Architecture::Qwen2Moe)
    }

    /// Per-head q/k norms, `attention_bias` for all four projections.
    fn has_qwen3_attention(self) -> bool {
        matches!(
            self,
            Architecture::Qwen3 | Architecture::Qwen3Moe | Architecture::Gemma3
        )
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "llama" | "LlamaForCausalLM" => Some(Architecture::Llama),
            "mistral" | "MistralForCausalLM" => Some(Architecture::Mistral),
            "qwen2" | "Qwen2ForCausalLM" => Some(Architecture::Qwen2),
            "qwen3" | "Qwen3ForCausalLM" => Some(Architecture::Qwen3),
            "mixtral" | "MixtralForCausalLM" => Some(Architecture::Mixtral),
            "qwen2_moe" | "Qwen2MoeForCausalLM" => Some(Architecture::Qwen2Moe),
            "qwen3_moe" | "Qwen3MoeForCausalLM" => Some(Architecture::Qwen3Moe),
            "gemma3_text" | "Gemma3ForCausalLM" => Some(Architecture::Gemma3),
            _ => None,
        }
    }
}

/// RoPE frequency scaling (`rope_scaling` / `rope_parameters`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f32,
    },
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (always for qwen2; llama's `attention_bias`).
    pub qkv_bias: bool,
    /// o_proj carries a bias (llama's `attention_bias`).
    pub o_bias: bool,
    /// gate/up/down carry a bias (llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// q and k are RMS-normalised per head (weights `q_norm`/`k_norm` of `head_dim`) before
    /// RoPE (qwen3).
    pub qk_norm: bool,
    /// Attention window (mistral/qwen2 sliding window), `None` for full causal attention.
    pub sliding_window: Option<usize>,
    /// Per layer: whether it uses `sliding_window` (gemma3's `layer_types`); empty: all do.
    pub sliding_layers: Vec<bool>,
    /// The RoPE base of sliding layers where it differs from full ones' (gemma3).
    pub rope_local_theta: Option<f32>,
    /// Norm weights are stored as w and used as 1 + w (gemma).
    pub norm_offset: f32,
    /// Each block's output is normalised before the residual add, and the FFN's input by its
    /// own norm (gemma's four norms a layer).
    pub sandwich_norms: bool,
    /// Embeddings are scaled by √hidden (gemma).
    pub scale_embeddings: bool,
    pub activation: Activation,
    /// Attention scores' scale where it is not 1/√head_dim (gemma's query_pre_attn_scalar).
    pub attention_scale: Option<f32>,
    /// MoE: number of experts per layer (0 for dense models).
    pub num_experts: usize,
    pub experts_per_token: usize,
    /// An expert's intermediate size (Mixtral: `intermediate_size`; Qwen MoE:
    /// `moe_intermediate_size`, dense layers keeping `intermediate_size`).
    pub expert_intermediate_size: usize,
    /// The shared expert's intermediate size (qwen2_moe), 0 without one.
    pub shared_expert_intermediate_size: usize,
    /// The chosen experts' softmax weights are renormalised to sum to 1 (Mixtral always).
    pub norm_topk_prob: bool,
    /// Per layer: an MoE block (else a dense FFN of `intermediate_size`). Empty when dense.
    pub sparse_layers: Vec<bool>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The raw JSON, so exports can carry fields moegraft does not interpret.
    pub raw: Value,
}

impl ModelConfig {
    pub fn is_moe(&self) -> bool {
        self.num_experts > 0
    }

    /// Layer `l`'s attention window, if it has one.
    pub fn window(&self, l: usize) -> Option<usize> {
        match self.sliding_layers.get(l) {
            Some(false) => None,
            _ => self.sliding_window,
        }
    }

    /// Whether layer `l` rotates with the sliding layers' RoPE base.
    pub fn local_rope(&self, l: usize) -> bool {
        self.rope_local_theta.is_some() && self.sliding_layers.get(l) == Some(&true)
    }

    /// Whether layer `l` holds an MoE block.
    pub fn is_moe_layer(&self, l: usize) -> bool {
        self.sparse_layers.get(l).copied().unwrap_or(false)
    }

    /// Every layer is an MoE block of routed experts alone (the Mixtral shape).
    pub fn all_layers_moe(&self) -> bool {
        self.is_moe() && self.sparse_layers.iter().all(|s| *s)
    }

    /// The widest dense FFN the model runs: a dense layer's or the shared expert's (0: none).
    pub fn widest_dense_ffn(&self) -> usize {
        let dense_layers = (0..self.num_layers).any(|l| !self.is_moe_layer(l));
        let dense = if dense_layers {
            self.intermediate_size
        } else {
            0
        };
        dense.max(self.shared_expert_intermediate_size)
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    pub fn from_json(text: &str, file: &str) -> Result<Self> {
        let raw: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(file, format!("not valid JSON: {e}")))?;
        Self::from_value(raw, file)
    }

    pub fn from_value(raw: Value, file: &str) -> Result<Self> {
        let err = |m: String| Error::config(file, m);
        if !raw.is_object() {
            return Err(err("config.json is not a JSON object".into()));
        }
        let arch_name = raw
            .get("model_type")
            .and_then(Value::as_str)
            .or_else(|| {
                raw.get("architectures")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(Value::as_str)
            })
            .ok_or_else(|| err("no 'model_type' or 'architectures' field".into()))?;
        let architecture =
            Architecture::from_name(arch_name).ok_or_else(|| Error::UnsupportedArchitecture {
                file: file.to_string(),
                arch: arch_name.to_string(),
            })?;

        let size = |key: &str| -> Result<usize> {
            let v = raw
                .get(key)
                .ok_or_else(|| err(format!("missing '{key}'")))?;
            let n = v
                .as_u64()
                .ok_or_else(|| err(format!("'{key}' must be a positive integer, got {v}")))?;
            if n == 0 || n > (1 << 31) {
                return Err(err(format!("'{key}' = {n} is out of range")));
            }
            Ok(n as usize)
        };
        let opt_size = |key: &str| -> Result<Option<usize>> {
            match raw.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(_) => size(key).map(Some),
            }
        };
        let flag =
            |key: &str, default: bool| raw.get(key).and_then(Value::as_bool).unwrap_or(default);
        let float = |key: &str| raw.get(key).and_then(Value::as_f64);

        let hidden_size = size("hidden_size")?;
        let num_heads = size("num_attention_heads")?;
        let num_kv_heads = opt_size("num_key_value_heads")?.unwrap_or(num_heads);
        let head_dim = match opt_size("head_dim")? {
            Some(d) => d,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(err(format!(
                        "hidden_size {hidden_size} is not divisible by num_attention_heads {num_heads}"
                    )));
                }
                hidden_size / num_heads
            }
        };
        if num_heads % num_kv_heads != 0 {
            return Err(err(format!(
                "num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}"
            )));
        }
        if head_dim % 2 != 0 || head_dim > 256 {
            return Err(err(format!(
                "head_dim {head_dim} must be even and at most 256"
            )));
        }

        // Gemma 3 keys its RoPE parameters by layer type; full layers' are the model's own.
        let typed_rope = raw
            .get("rope_parameters")
            .and_then(|p| p.get("full_attention"));
        let rope_params = typed_rope
            .or_else(|| raw.get("rope_parameters"))
            .filter(|v| v.is_object());
        let rope_theta = rope_params
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .or_else(|| float("rope_theta"))
            .unwrap_or(10000.0) as f32;
        if !(rope_theta.is_finite() && rope_theta > 0.0) {
            return Err(err(format!("rope_theta {rope_theta} must be positive")));
        }
        let scaling_value = raw
            .get("rope_scaling")
            .filter(|v| v.is_object())
            .or(rope_params);
        let rope_scaling = parse_rope_scaling(scaling_value, file)?;

        let num_layers = size("num_hidden_layers")?;
        let intermediate_size = size("intermediate_size")?;
        let moe = match architecture.moe_layout() {
            Some(layout) => Some(parse_moe(
                &raw,
                architecture,
                layout,
                num_layers,
                intermediate_size,
                file,
            )?),
            None => None,
        };

        let attention_bias = flag("attention_bias", false);
        let qkv_bias = if architecture.has_qwen2_attention() {
            // qwen2_moe names it (default true); qwen2 always has them.
            flag("qkv_bias", true)
        } else {
            attention_bias
        };
        let qwen = architecture.has_qwen2_attention()
            || matches!(architecture, Architecture::Qwen3 | Architecture::Qwen3Moe);
        let sliding_window = match architecture {
            _ if qwen && !flag("use_sliding_window", false) => None,
            Architecture::Qwen2 => opt_size("sliding_window")?,
            _ if qwen => {
                return Err(err(format!(
                    "{} with use_sliding_window (per-layer windows from layer_types) is not supported yet",
                    architecture.model_type()
                )))
            }
            Architecture::Llama => None,
            _ => opt_size("sliding_window")?,
        };
        let gemma = architecture == Architecture::Gemma3;
        let (sliding_layers, rope_local_theta, attention_scale) = if gemma {
            parse_gemma(&raw, num_layers, head_dim, file)?
        } else {
            (Vec::new(), None, None)
        };
        let activation = match raw
            .get("hidden_activation")
            .or_else(|| raw.get("hidden_act"))
            .and_then(Value::as_str)
        {
            None | Some("silu") | Some("swish") => Activation::Silu,
            Some("gelu_pytorch_tanh") if gemma => Activation::GeluTanh,
            Some(other) => {
                return Err(err(format!(
                    "activation '{other}' is not supported (silu; gelu_pytorch_tanh for gemma)"
                )))
            }
        };
        let rms_norm_eps = float("rms_norm_eps").unwrap_or(1e-6) as f32;
        if !(rms_norm_eps.is_finite() && rms_norm_eps >= 0.0) {
            return Err(err(format!("rms_norm_eps {rms_norm_eps} is invalid")));
        }

        Ok(Self {
            architecture,
            vocab_size: size("vocab_size")?,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings: opt_size("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: flag("tie_word_embeddings", false),
            qkv_bias,
            o_bias: attention_bias
                && (architecture == Architecture::Llama || architecture.has_qwen3_attention()),
            qk_norm: architecture.has_qwen3_attention(),
            mlp_bias: flag("mlp_bias", false) && architecture == Architecture::Llama,
            sliding_window,
            sliding_layers,
            rope_local_theta,
            norm_offset: if gemma { 1.0 } else { 0.0 },
            sandwich_norms: gemma,
            scale_embeddings: gemma,
            activation,
            attention_scale,
            num_experts: moe.as_ref().map_or(0, |m| m.experts),
            experts_per_token: moe.as_ref().map_or(0, |m| m.top_k),
            expert_intermediate_size: moe.as_ref().map_or(0, |m| m.intermediate),
            shared_expert_intermediate_size: moe.as_ref().map_or(0, |m| m.shared_intermediate),
            norm_topk_prob: moe.as_ref().is_some_and(|m| m.norm_topk_prob),
            sparse_layers: moe.map_or_else(Vec::new, |m| m.sparse_layers),
            bos_token_id: token_id(raw.get("bos_token_id")),
            eos_token_ids: token_ids(raw.get("eos_token_id")),
            raw,
        })
    }

    /// The sliding layers' RoPE inverse frequencies (gemma3: their own base, no scaling).
    pub fn rope_inv_freq_local(&self) -> Option<Vec<f32>> {
        let theta = self.rope_local_theta?;
        Some(self.base_inv_freq(theta))
    }

    fn base_inv_freq(&self, theta: f32) -> Vec<f32> {
        (0..self.head_dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / self.head_dim as f32;
                1.0 / theta.powf(exponent)
            })
            .collect()
    }

    /// RoPE inverse frequencies, as transformers computes them (f32).
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let base = self.base_inv_freq(self.rope_theta);
        match &self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_ctx,
            } => {
                let low_freq_wavelen = old_ctx / low_freq_factor;
                let high_freq_wavelen = old_ctx / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen > low_freq_wavelen {
                            f / factor
                        } else if wavelen < high_freq_wavelen {
                            f
                        } else {
                            let smooth = (old_ctx / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Gemma 3's per-layer attention: which layers slide (`layer_types`, or every sixth layer
/// full as `sliding_window_pattern` says), the sliding layers' RoPE base, and the score scale
/// `query_pre_attn_scalar`^-½. Soft-caps and bidirectional attention are refused.
fn parse_gemma(
    raw: &Value,
    layers: usize,
    head_dim: usize,
    file: &str,
) -> Result<(Vec<bool>, Option<f32>, Option<f32>)> {
    let err = |m: String| Error::config(file, m);
    for key in ["final_logit_softcapping", "attn_logit_softcapping"] {
        match raw.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => {
                return Err(err(format!(
                    "'{key}' = {v}: soft-capping is not supported yet (gemma2)"
                )))
            }
        }
    }
    if raw
        .get("use_bidirectional_attention")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Err(err("bidirectional attention is not supported".into()));
    }
    let sliding = match raw.get("layer_types") {
        Some(Value::Array(types)) => {
            if types.len() != layers {
                return Err(err(format!(
                    "layer_types has {} entries for {layers} layers",
                    types.len()
                )));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    _ => Err(err(format!(
                        "layer_types holds {t}, not sliding_attention or full_attention"
                    ))),
                })
                .collect::<Result<Vec<bool>>>()?
        }
        None | Some(Value::Null) => {
            let pattern = raw
                .get("sliding_window_pattern")
                .and_then(Value::as_u64)
                .unwrap_or(6)
                .max(1) as usize;
            (0..layers).map(|l| (l + 1) % pattern != 0).collect()
        }
        Some(v) => return Err(err(format!("layer_types must be a list, got {v}"))),
    };
    let local = raw
        .get("rope_parameters")
        .and_then(|p| p.get("sliding_attention"))
        .and_then(|p| p.get("rope_theta"))
        .or_else(|| raw.get("rope_local_base_freq"))
        .and_then(Value::as_f64)
        .unwrap_or(10000.0) as f32;
    let scalar = match raw.get("query_pre_attn_scalar") {
        None | Some(Value::Null) => head_dim as f64,
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| err(format!("query_pre_attn_scalar {v} must be positive")))?,
    };
    if !(local.is_finite() && local > 0.0) {
        return Err(err(format!(
            "the sliding layers' rope_theta {local} must be positive"
        )));
    }
    Ok((sliding, Some(local), Some(scalar.powf(-0.5) as f32)))
}

/// The MoE keys of config.json, as one architecture's layout reads them.
struct MoeKeys {
    experts: usize,
    top_k: usize,
    intermediate: usize,
    shared_intermediate: usize,
    norm_topk_prob: bool,
    sparse_layers: Vec<bool>,
}

fn parse_moe(
    raw: &Value,
    architecture: Architecture,
    layout: MoeLayout,
    layers: usize,
    intermediate_size: usize,
    file: &str,
) -> Result<MoeKeys> {
    let err = |m: String| Error::config(file, m);
    let positive = |key: &str| -> Result<Option<usize>> {
        match raw.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 && n <= 1 << 31 => Ok(Some(n as usize)),
                _ => Err(err(format!("'{key}' must be a positive integer, got {v}"))),
            },
        }
    };
    let required = |key: &str| positive(key)?.ok_or_else(|| err(format!("missing '{key}'")));
    // Qwen's configs say num_experts; transformers 5 writes num_local_experts for qwen3_moe.
    let experts = match layout {
        MoeLayout::Mixtral => required("num_local_experts")?,
        MoeLayout::Qwen => match positive("num_experts")? {
            Some(e) => e,
            None => required("num_local_experts")?,
        },
    };
    let top_k = required("num_experts_per_tok")?;
    if top_k > experts || experts > 256 || top_k > 16 {
        return Err(err(format!(
            "num_experts_per_tok {top_k} / {experts} experts out of range (k ≤ experts, experts ≤ 256, k ≤ 16)"
        )));
    }
    if layout == MoeLayout::Mixtral {
        return Ok(MoeKeys {
            experts,
            top_k,
            intermediate: intermediate_size,
            shared_intermediate: 0,
            norm_topk_prob: true,
            sparse_layers: vec![true; layers],
        });
    }
    let step = positive("decoder_sparse_step")?.unwrap_or(1);
    let dense: Vec<usize> = match raw.get("mlp_only_layers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .filter(|n| *n < layers)
                    .ok_or_else(|| {
                        err(format!(
                            "mlp_only_layers holds {v}, not a layer index below {layers}"
                        ))
                    })
            })
            .collect::<Result<_>>()?,
        Some(v) => return Err(err(format!("mlp_only_layers must be a list, got {v}"))),
    };
    let shared_intermediate = match architecture {
        Architecture::Qwen2Moe => required("shared_expert_intermediate_size")?,
        _ => 0,
    };
    Ok(MoeKeys {
        experts,
        top_k,
        intermediate: required("moe_intermediate_size")?,
        shared_intermediate,
        norm_topk_prob: raw
            .get("norm_topk_prob")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        // transformers: an MoE block where the layer is not MLP-only and (l + 1) % step == 0.
        sparse_layers: (0..layers)
            .map(|l| !dense.contains(&l) && (l + 1) % step == 0)
            .collect(),
    })
}

fn parse_rope_scaling(value: Option<&Value>, file: &str) -> Result<RopeScaling> {
    let Some(v) = value else {
        return Ok(RopeScaling::None);
    };
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str, default: Option<f64>| -> Result<f32> {
        v.get(key)
            .and_then(Value::as_f64)
            .or(default)
            .map(|x| x as f32)
            .ok_or_else(|| Error::config(file, format!("rope scaling '{kind}' needs '{key}'")))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor", None)?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor", None)?,
            low_freq_factor: num("low_freq_factor", Some(1.0))?,
            high_freq_factor: num("high_freq_factor", Some(4.0))?,
            original_max_position_embeddings: num(
                "original_max_position_embeddings",
                Some(8192.0),
            )?,
        }),
        other => Err(Error::config(
            file,
            format!("unsupported rope scaling type '{other}' (supported: default, linear, llama3)"),
        )),
    }
}

fn token_id(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(|x| token_id(Some(x))).collect(),
        other => token_id(other).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA: &str = r#"{"model_type":"llama","vocab_size":100,"hidden_size":64,"intermediate_size":128,
        "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,
        "rope_theta":10000.0,"tie_word_embeddings":true,"eos_token_id":[2,3]}"#;

    #[test]
    fn parses_llama() {
        let c = ModelConfig::from_json(LLAMA, "config.json").unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.eos_token_ids, vec![2, 3]);
        assert!(c.tie_word_embeddings && !c.is_moe());
    }

    #[test]
    fn accepts_rope_parameters() {
        let text = LLAMA.replace(
            r#""rope_theta":10000.0"#,
            r#""rope_parameters":{"rope_type":"default","rope_theta":500000.0}"#,
        );
        let c = ModelConfig::from_json(&text, "config.json").unwrap();
        assert_eq!(c.rope_theta, 500000.0);
    }

    /// Each config is refused with an error that names the file and says `needle`.
    fn assert_refused(cases: &[(String, &str)]) {
        for (text, needle) in cases {
            let e = ModelConfig::from_json(text, "m/config.json")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(needle) && e.starts_with("m/config.json"),
                "{needle}: {e}"
            );
        }
    }

    const QWEN2_MOE: &str = r#"{"model_type":"qwen2_moe","vocab_size":100,"hidden_size":64,
        "intermediate_size":128,"moe_intermediate_size":32,"shared_expert_intermediate_size":48,
        "num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,"num_experts":8,
        "num_experts_per_tok":2,"decoder_sparse_step":2,"mlp_only_layers":[3]}"#;

    #[test]
    fn parses_qwen_moe_layouts() {
        let c = ModelConfig::from_json(QWEN2_MOE, "config.json").unwrap();
        assert_eq!(c.architecture.moe_layout(), Some(MoeLayout::Qwen));
        assert_eq!((c.num_experts, c.experts_per_token), (8, 2));
        assert_eq!(c.expert_intermediate_size, 32);
        assert_eq!(c.shared_expert_intermediate_size, 48);
        assert!(!c.norm_topk_prob && c.qkv_bias && !c.qk_norm);
        // (l + 1) % 2 == 0, and layer 3 is MLP-only.
        assert_eq!(c.sparse_layers, vec![false, true, false, false]);
        assert_eq!(c.widest_dense_ffn(), 128);
        // qwen3_moe: Qwen's own configs say num_experts, transformers 5 num_local_experts.
        let qwen3 = QWEN2_MOE
            .replace("qwen2_moe", "qwen3_moe")
            .replace("\"num_experts\"", "\"num_local_experts\"")
            .replace("\"mlp_only_layers\":[3]", "\"norm_topk_prob\":true");
        let c = ModelConfig::from_json(&qwen3, "config.json").unwrap();
        assert_eq!(c.num_experts, 8);
        assert!(c.norm_topk_prob && c.qk_norm && !c.qkv_bias);
        assert_eq!(c.shared_expert_intermediate_size, 0);
        assert_eq!(c.sparse_layers, vec![false, true, false, true]);
        let mixtral = LLAMA.replace("\"llama\"", "\"mixtral\"").replace(
            "\"vocab_size\"",
            "\"num_local_experts\":4,\"num_experts_per_tok\":2,\"vocab_size\"",
        );
        let c = ModelConfig::from_json(&mixtral, "config.json").unwrap();
        assert!(c.all_layers_moe() && c.norm_topk_prob);
        assert_eq!(c.expert_intermediate_size, c.intermediate_size);
        assert_eq!(c.widest_dense_ffn(), 0);
    }

    #[test]
    fn rejects_bad_moe_configs() {
        let cases = [
            (
                QWEN2_MOE.replace("[3]", "[4]"),
                "mlp_only_layers holds 4, not a layer index below 4",
            ),
            (
                QWEN2_MOE.replace("[3]", "3"),
                "mlp_only_layers must be a list",
            ),
            (
                QWEN2_MOE.replace("\"moe_intermediate_size\":32,", ""),
                "missing 'moe_intermediate_size'",
            ),
            (
                QWEN2_MOE.replace("\"shared_expert_intermediate_size\":48,", ""),
                "missing 'shared_expert_intermediate_size'",
            ),
            (
                QWEN2_MOE.replace("\"num_experts_per_tok\":2", "\"num_experts_per_tok\":9"),
                "out of range",
            ),
            (
                QWEN2_MOE.replace("\"decoder_sparse_step\":2", "\"decoder_sparse_step\":0"),
                "'decoder_sparse_step' must be a positive integer",
            ),
            (
                QWEN2_MOE.replace("}", ",\"use_sliding_window\":true}"),
                "qwen2_moe with use_sliding_window",
            ),
        ];
        assert_refused(&cases);
    }

    const GEMMA3: &str = r#"{"model_type":"gemma3_text","vocab_size":100,"hidden_size":64,
        "intermediate_size":128,"num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,
        "head_dim":32,"query_pre_attn_scalar":16,"sliding_window":8,
        "layer_types":["sliding_attention","sliding_attention","full_attention"],
        "rope_parameters":{"sliding_attention":{"rope_type":"default","rope_theta":10000.0},
        "full_attention":{"rope_type":"linear","factor":8.0,"rope_theta":1000000.0}},
        "hidden_activation":"gelu_pytorch_tanh","final_logit_softcapping":null}"#;

    #[test]
    fn parses_gemma3() {
        let c = ModelConfig::from_json(GEMMA3, "config.json").unwrap();
        assert_eq!(c.architecture, Architecture::Gemma3);
        assert_eq!((c.window(0), c.window(2)), (Some(8), None));
        assert!(c.local_rope(1) && !c.local_rope(2));
        assert_eq!((c.rope_theta, c.rope_local_theta), (1e6, Some(1e4)));
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 8.0 });
        assert_eq!(c.attention_scale, Some(0.25));
        assert_eq!(c.activation, Activation::GeluTanh);
        assert!(c.qk_norm && c.sandwich_norms && c.scale_embeddings && c.norm_offset == 1.0);
        // Older configs: rope_theta, rope_local_base_freq and a sliding-window pattern.
        let old = r#"{"model_type":"gemma3_text","vocab_size":100,"hidden_size":64,
            "intermediate_size":128,"num_hidden_layers":7,"num_attention_heads":4,"head_dim":16,
            "rope_theta":1000000.0,"rope_local_base_freq":10000.0,"sliding_window":512,
            "sliding_window_pattern":6}"#;
        let c = ModelConfig::from_json(old, "config.json").unwrap();
        let sliding: Vec<bool> = (0..7).map(|l| c.window(l).is_some()).collect();
        assert_eq!(sliding, [true, true, true, true, true, false, true]);
        assert_eq!(
            c.attention_scale,
            Some(0.25),
            "query_pre_attn_scalar defaults to head_dim"
        );
    }

    #[test]
    fn rejects_bad_gemma3_configs() {
        let cases = [
            (
                GEMMA3.replace(r#","full_attention"]"#, "]"),
                "layer_types has 2 entries for 3 layers",
            ),
            (
                GEMMA3.replace(r#""full_attention"]"#, r#""local"]"#),
                "not sliding_attention or full_attention",
            ),
            (
                GEMMA3.replace(
                    r#""final_logit_softcapping":null"#,
                    r#""final_logit_softcapping":30.0"#,
                ),
                "soft-capping is not supported",
            ),
            (
                GEMMA3.replace(
                    r#""query_pre_attn_scalar":16"#,
                    r#""query_pre_attn_scalar":-4"#,
                ),
                "query_pre_attn_scalar -4 must be positive",
            ),
            (
                GEMMA3.replace("gelu_pytorch_tanh", "relu"),
                "activation 'relu' is not supported",
            ),
            (
                GEMMA3.replace(r#""head_dim":32"#, r#""head_dim":-32"#),
                "'head_dim' must be a positive integer",
            ),
            (
                GEMMA3.replace(r#""head_dim":32"#, r#""head_dim":31"#),
                "head_dim 31 must be even",
            ),
        ];
        assert_refused(&cases);
    }

    #[test]
    fn rejects_bad_configs() {
        let cases = [
            (
                LLAMA.replace("\"llama\"", "\"gpt_neox\""),
                "unsupported architecture 'gpt_neox'",
            ),
            (
                LLAMA.replace("\"num_attention_heads\":4", "\"num_attention_heads\":5"),
                "not divisible",
            ),
            (
                LLAMA.replace("\"hidden_size\":64", "\"hidden_size\":-1"),
                "positive integer",
            ),
            (
                LLAMA.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":3"),
                "multiple",
            ),
            ("{".to_string(), "not valid JSON"),
        ];
        assert_refused(&cases);
    }
}
