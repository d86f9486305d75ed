//! An MoE gains experts: one per new language, each a copy of expert 0 (the original FFN),
//! with a router row per new expert. The model's other tensors, its experts and their router
//! rows stay as they are, so an earlier lesson's experts (the kit's cpt-moe, a `teach`
//! output) keep what they learnt while `teach` trains the new ones (MoE-LPR's stage 1 on an
//! MoE: the input's experts all frozen).
//!
//! A new row is the centroid of the new language's router inputs in *this* MoE (as
//! `upcycle`'s centroid router, `centroid.rs`), scaled to the mean length of the layer's
//! existing rows: the new expert starts out sought by its language's tokens about as strongly
//! as the trained rows seek theirs.

use std::rc::Rc;

use serde_json::{json, Value};

use super::centroid::{centroid_row, mean_router_inputs, router_warnings, DEFAULT_TEMPERATURE};
use super::upcycle::{copy_side_files, UpcycleSummary};
use crate::checkpoint::config::{ExpertProj, MoeLayout};
use crate::checkpoint::dtype::from_f32;
use crate::checkpoint::moegraft_section::MoegraftSection;
use crate::checkpoint::writer::{OutputFiles, ShardedWriter, TensorSpec, DEFAULT_MAX_SHARD_BYTES};
use crate::checkpoint::{Checkpoint, ModelFiles};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};
use crate::model::open::largest_tensor_bytes;
use crate::model::script::language_scripts;
use crate::model::{LoadOptions, Model};
use crate::tokenizer::Tokenizer;

pub struct ExtendSources {
    /// An MoE of routed experts in every layer (Mixtral, qwen3_moe, a shared-expert-free
    /// qwen2_moe).
    pub moe: ModelFiles,
    /// Expert 0's languages where the model's config does not record them.
    pub base_languages: Vec<String>,
    /// One new expert per entry: its language and a sample of its text (the router row).
    pub languages: Vec<(String, String)>,
}

/// Where an output tensor's bytes come from.
enum Source {
    /// The input's tensor of this name.
    Copy(String),
    /// Layer l's router with the new rows appended.
    Router(usize),
}

/// The layer whose router `name` is, if it is one.
fn router_layer(layout: MoeLayout, name: &str) -> Option<usize> {
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, _) = rest.split_once('.')?;
    let layer = layer.parse().ok()?;
    (layout.router(layer) == name).then_some(layer)
}

/// Writes the MoE with `sources.languages.len()` more experts into `out`, routing `top_k`;
/// everything is checked and the new rows computed before the first file is written.
pub async fn extend_to<O: OutputFiles>(
    sources: ExtendSources,
    top_k: usize,
    gpu: &GpuOptions,
    mut out: O,
) -> Result<UpcycleSummary> {
    let ckpt = Checkpoint::open(sources.moe).await?;
    let c = &ckpt.config;
    let label = ckpt.files.label().to_string();
    let layout = match c.architecture.moe_layout() {
        Some(layout) if c.all_layers_moe() => layout,
        _ => {
            return Err(Error::config(
                &label,
                format!(
                    "adding experts needs an MoE whose every layer routes (mixtral, qwen2_moe, qwen3_moe); this is {}",
                    c.architecture.model_type()
                ),
            ))
        }
    };
    if sources.languages.is_empty() {
        return Err(Error::InvalidArgument(
            "adding experts needs at least one new language".into(),
        ));
    }
    if let Some((bad, _)) = sources
        .languages
        .iter()
        .find(|(l, _)| language_scripts(l).is_none())
    {
        return Err(Error::InvalidArgument(format!(
            "unknown language code '{bad}' (use ISO 639-1, e.g. en, ja)"
        )));
    }
    let (old, added) = (c.num_experts, sources.languages.len());
    let experts = old + added;
    if top_k == 0 || top_k > experts {
        return Err(Error::InvalidArgument(format!(
            "--top-k {top_k} must be between 1 and the number of experts ({experts})"
        )));
    }
    let (h, layers) = (c.hidden_size, c.num_layers);
    let mut routers = Vec::with_capacity(layers);
    for l in 0..layers {
        let name = layout.router(l);
        ckpt.expect_shape(&name, &[old, h])?;
        routers.push(ckpt.read(&name).await?.to_f32());
    }
    let rows = new_rows(&ckpt, &sources.languages, gpu).await?;
    let mut warnings = Vec::new();
    for (l, router) in routers.iter_mut().enumerate() {
        let lengths: Vec<f64> = router.chunks_exact(h).map(length).collect();
        let scale = lengths.iter().sum::<f64>() / old as f64;
        for row in &rows[l] {
            let len = length(row).max(f64::MIN_POSITIVE);
            router.extend(row.iter().map(|v| (*v as f64 * scale / len) as f32));
        }
        let all: Vec<Vec<f32>> = router.chunks_exact(h).map(<[f32]>::to_vec).collect();
        warnings.extend(router_warnings(l, &all));
    }

    let mut plan: Vec<(TensorSpec, Source)> = Vec::new();
    for name in ckpt.tensor_names() {
        let (_, info) = ckpt.info(name)?;
        let dtype = info.dtype.ok_or_else(|| {
            Error::tensor_format(ckpt.files.display_name(""), name, "not a weight dtype")
        })?;
        let mut shape = info.shape.clone();
        let source = match router_layer(layout, name) {
            Some(l) if l < layers => {
                shape[0] = experts;
                Source::Router(l)
            }
            _ => Source::Copy(name.to_string()),
        };
        plan.push((TensorSpec::new(name, dtype, shape), source));
    }
    for l in 0..layers {
        for e in old..experts {
            for proj in ExpertProj::ALL {
                let from = layout.expert(l, 0, proj);
                let (dtype, shape) = plan
                    .iter()
                    .find(|(s, _)| s.name == from)
                    .map(|(s, _)| (s.dtype, s.shape.clone()))
                    .ok_or_else(|| {
                        Error::tensor_format(ckpt.files.display_name(""), &from, "missing")
                    })?;
                let spec = TensorSpec::new(layout.expert(l, e, proj), dtype, shape);
                plan.push((spec, Source::Copy(from)));
            }
        }
    }
    let specs: Vec<TensorSpec> = plan.iter().map(|(s, _)| s.clone()).collect();
    let mut writer = ShardedWriter::to(&mut out, specs, DEFAULT_MAX_SHARD_BYTES)?;
    for (spec, source) in &plan {
        let bytes = match source {
            Source::Router(l) => from_f32(spec.dtype, &routers[*l]),
            Source::Copy(from) => ckpt.read(from).await?.into_dtype(spec.dtype),
        };
        writer.write_tensor(&spec.name, &bytes)?;
    }
    let mut files = writer.finish()?;
    let new_languages: Vec<String> = sources.languages.iter().map(|(l, _)| l.clone()).collect();
    let config = extended_config(&ckpt, &sources.base_languages, &new_languages, top_k)?;
    out.write_json("config.json", &config)?;
    files.push("config.json".into());
    copy_side_files(&ckpt.files, &mut out, &mut files).await?;
    Ok(UpcycleSummary {
        experts,
        layers,
        top_k,
        files,
        warnings,
    })
}

fn length(row: &[f32]) -> f64 {
    row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()
}

/// [layer][new expert][hidden]: each new language's centroid row in this MoE.
async fn new_rows(
    ckpt: &Checkpoint,
    languages: &[(String, String)],
    gpu: &GpuOptions,
) -> Result<Vec<Vec<Vec<f32>>>> {
    if ckpt.files.get("tokenizer.json").is_none() {
        return Err(Error::io(
            ckpt.files.display_name("tokenizer.json"),
            "the new experts' router rows need the model's tokenizer to read the samples",
        ));
    }
    let tokenizer = Tokenizer::from_files(&ckpt.files).await?;
    let gpu = GpuOptions {
        wanted_binding_bytes: gpu.wanted_binding_bytes.max(largest_tensor_bytes(ckpt)),
        ..gpu.clone()
    };
    let ctx = Rc::new(GpuContext::new(gpu).await?);
    let model = Model::load(ctx, ckpt, LoadOptions::default()).await?;
    let mut rows = vec![Vec::with_capacity(languages.len()); ckpt.config.num_layers];
    for (lang, text) in languages {
        let ids = tokenizer.encode(text, false)?;
        if ids.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "the {lang} sample has no tokens"
            )));
        }
        let means = mean_router_inputs(&model, &ids).await?;
        for (l, mean) in means.iter().enumerate() {
            rows[l].push(centroid_row(mean, DEFAULT_TEMPERATURE));
        }
    }
    Ok(rows)
}

/// The input's config with the new expert count, top-k and each expert's languages.
fn extended_config(
    ckpt: &Checkpoint,
    base_languages: &[String],
    new_languages: &[String],
    top_k: usize,
) -> Result<Value> {
    let c = &ckpt.config;
    let section = MoegraftSection::from_config(c, &ckpt.files.display_name("config.json"))?
        .unwrap_or_default();
    let mut languages = section.expert_languages.clone();
    languages.resize(c.num_experts, Vec::new());
    if languages[0].is_empty() {
        languages[0] = base_languages.to_vec();
    }
    languages.extend(new_languages.iter().map(|l| vec![l.clone()]));
    let mut labels = section.experts.clone();
    labels.resize(c.num_experts, String::new());
    let label = ckpt.files.label().to_string();
    labels.extend(new_languages.iter().map(|_| format!("{label} (expert 0)")));
    let mut raw = c.raw.clone();
    match c.architecture.moe_layout() {
        Some(MoeLayout::Qwen) => {
            raw["num_experts"] = json!(languages.len());
            if let Some(map) = raw.as_object_mut() {
                map.remove("num_local_experts");
            }
        }
        _ => raw["num_local_experts"] = json!(languages.len()),
    }
    raw["num_experts_per_tok"] = json!(top_k);
    let mut moegraft = raw
        .get(MoegraftSection::KEY)
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    moegraft["expert_languages"] = json!(languages);
    moegraft["experts"] = json!(labels);
    moegraft["router"] = json!("learned");
    raw[MoegraftSection::KEY] = moegraft;
    Ok(raw)
}
