//! The MoE a lesson trains, built from the model it is given: a dense model is upcycled
//! (expert 0 = its FFN, one copy per new language, centroid router rows from samples of the
//! texts); an MoE (the kit's cpt-moe, an earlier lesson's output) gains one expert per new
//! language, a copy of expert 0, and keeps every expert it has frozen.

use serde_json::Value;

use super::lesson::{sample_of, ROUTER_SAMPLE_CHARS};
use crate::checkpoint::moegraft_section::MoegraftSection;
use crate::checkpoint::provenance::MANIFEST_FILE;
use crate::checkpoint::writer::OutputFiles;
use crate::checkpoint::{Checkpoint, ModelConfig, ModelFiles};
use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::graft::centroid::DEFAULT_TEMPERATURE;
use crate::graft::extend::{extend_to, ExtendSources};
use crate::graft::upcycle::{upcycle_to, UpcycleRouter, UpcycleSettings, UpcycleSources};

/// What the built model carries over from the one it was built from.
#[derive(Debug, Clone, Default)]
pub struct LessonModel {
    /// Experts 0 … frozen − 1 came from the input and do not learn.
    pub frozen_experts: usize,
    /// An earlier lesson's record (`moegraft.json`'s `teach`), kept in the new one's.
    pub earlier: Option<Value>,
}

/// Writes the MoE to train into `out`. `model()` opens the input's files (called once per
/// use: upcycling reads the dense model as base and as every expert); `new` and `replay` are
/// (language, text) pairs.
pub async fn build<O: OutputFiles>(
    model: &dyn Fn() -> Result<ModelFiles>,
    new: &[(String, String)],
    replay: &[(String, String)],
    top_k: usize,
    gpu: &GpuOptions,
    out: O,
) -> Result<LessonModel> {
    let input = Checkpoint::open(model()?).await?;
    let sample =
        |(lang, text): &(String, String)| (lang.clone(), sample_of(text, ROUTER_SAMPLE_CHARS));
    let replay_languages: Vec<String> = replay.iter().map(|(l, _)| l.clone()).collect();
    if !input.config.is_moe() {
        let mut experts = Vec::with_capacity(new.len());
        for (lang, _) in new {
            experts.push((model()?, vec![lang.clone()]));
        }
        let sources = UpcycleSources {
            base: model()?,
            base_languages: replay_languages,
            experts,
            samples: new.iter().chain(replay).map(sample).collect(),
        };
        let settings = UpcycleSettings {
            router: UpcycleRouter::Centroid,
            top_k,
            temperature: DEFAULT_TEMPERATURE,
            average_non_ffn: false,
            gpu: gpu.clone(),
        };
        upcycle_to(sources, &settings, out).await?;
        return Ok(LessonModel {
            frozen_experts: 1,
            earlier: None,
        });
    }
    let earlier = match input.files.read_bytes(MANIFEST_FILE).await? {
        Some(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("teach").cloned()),
        None => None,
    };
    let frozen_experts = input.config.num_experts;
    let sources = ExtendSources {
        moe: model()?,
        base_languages: replay_languages,
        languages: new.iter().map(sample).collect(),
    };
    extend_to(sources, top_k, gpu, out).await?;
    Ok(LessonModel {
        frozen_experts,
        earlier,
    })
}

/// Each expert's languages as the built model's config records them.
pub fn expert_languages(config: &ModelConfig) -> Result<Vec<Vec<String>>> {
    Ok(MoegraftSection::from_config(config, "config.json")?
        .unwrap_or_default()
        .expert_languages)
}

/// Which replay streams the review's language prior pulls to expert 0: those of expert 0's
/// languages (MoE-LPR's original languages). Replay text of a language an earlier lesson
/// taught (another frozen expert's) is learnt from by the LM loss alone.
pub fn prior_streams(config: &ModelConfig, replay_languages: &[&str]) -> Result<Vec<bool>> {
    let languages = expert_languages(config)?;
    let first = languages.first().cloned().unwrap_or_default();
    if first.is_empty() {
        return Err(Error::config(
            "config.json",
            "the model records no languages for expert 0 (the 'moegraft' section)",
        ));
    }
    Ok(replay_languages
        .iter()
        .map(|l| first.iter().any(|f| f == l))
        .collect())
}
