//! Teaching in the page: the CLI's `teach` from a picked model folder and pasted text into
//! `Blob`s. Building the MoE, the lesson and the writing are the library's
//! (`train::lesson_model`, `train::lesson`); only the edges differ: text comes as strings, the upcycled model and
//! the taught one live in memory, and a stopped run hands its training checkpoint back to the
//! page (to keep, or to pass to a later `teach` to resume).

use std::cell::RefCell;

use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use super::files::{picked_files, BlobOutput};
use super::{from_js, init, js_error, to_js};
use crate::checkpoint::{Checkpoint, ModelConfig};
use crate::error::Error;
use crate::gpu::GpuOptions;
use crate::model::open::open_files;
use crate::model::{LoadOptions, WeightChoice};
use crate::train::lesson::{self, Flow, Lesson, Resume, Settings, StepReport, Stream};
use crate::train::lesson_model;
use crate::train::memory::{self, TrainMemory};
use crate::train::resume;
use crate::train::{Stage, TrainOptions, Trainer};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebTeachOptions {
    steps: usize,
    review_steps: usize,
    batch: usize,
    seq: usize,
    lr: f32,
    top_k: usize,
    seed: u64,
    /// Hand a checkpoint to `on_step` every this many steps (0: only when stopped).
    checkpoint_every: usize,
    /// Cap on one storage binding in bytes (to try small devices).
    max_binding: Option<u64>,
}

impl Default for WebTeachOptions {
    fn default() -> Self {
        Self {
            steps: 200,
            review_steps: 50,
            batch: 8,
            seq: 128,
            lr: 2e-3,
            top_k: 2,
            seed: 0,
            checkpoint_every: 0,
            max_binding: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Text {
    lang: String,
    text: String,
    /// Where it came from, for messages and moegraft.json (default "pasted").
    #[serde(default)]
    source: Option<String>,
}

#[derive(Serialize)]
struct WebStep {
    stage: u8,
    step: usize,
    steps: usize,
    loss: f32,
    tokens_per_second: f64,
    memory: Option<TrainMemory>,
}

fn texts(value: JsValue, what: &str) -> Result<Vec<Text>, JsError> {
    serde_wasm_bindgen::from_value(value)
        .map_err(|e| JsError::new(&format!("{what} must be [{{lang, text}}]: {e}")))
}

/// What training a model (its `config.json` text, dense or MoE) on `languages` new languages will
/// hold on the GPU besides its weights, for `batch` × `seq` tokens a step.
#[wasm_bindgen]
pub fn teach_memory(
    config_json: &str,
    languages: usize,
    batch: usize,
    seq: usize,
) -> Result<JsValue, JsError> {
    init();
    let mut c = ModelConfig::from_json(config_json, "config.json").map_err(js_error)?;
    // A dense model's FFN becomes the one frozen expert; an MoE keeps all of its frozen.
    let frozen = if c.is_moe() { c.num_experts } else { 1 };
    c.num_experts = frozen + languages;
    to_js(&memory::estimate(&c, frozen, batch, seq))
}

/// Teaches the model `base` (picked files: dense, or an MoE that gains experts) the `languages` (`[{lang, text}]`, one new
/// expert each), reviewing the routers on `replay` (`[{lang, text}]`). `on_step(step)` hears
/// of every step (`{stage, step, steps, loss, tokens_per_second, memory}`) and stops the run by
/// returning `true`. `resume`, if given, is a checkpoint an earlier stopped run returned.
/// Resolves to `{files: [{name, blob}], report}` when done, or `{stopped, checkpoint: {state,
/// tensors}}` when stopped; bad input rejects before the first step.
#[wasm_bindgen]
pub async fn teach(
    base: Array,
    languages: JsValue,
    replay: JsValue,
    options: JsValue,
    resume_from: JsValue,
    on_step: Function,
) -> Result<JsValue, JsError> {
    init();
    let o: WebTeachOptions = from_js(options, "teach options")?;
    let (new_texts, replay_texts) = (
        texts(languages, "languages")?,
        texts(replay, "replay text")?,
    );
    if new_texts.is_empty() || replay_texts.is_empty() {
        return Err(JsError::new(
            "give text of at least one new language and of one language the model knows (the replay)",
        ));
    }
    let settings = Settings {
        steps: o.steps,
        review_steps: o.review_steps,
        batch: o.batch,
        seq: o.seq,
        lr: o.lr,
        top_k: o.top_k,
        seed: o.seed,
        checkpoint_every: o.checkpoint_every,
    };
    settings.check().map_err(js_error)?;
    let gpu = GpuOptions {
        max_binding_override: o.max_binding,
        ..Default::default()
    };
    let base_files = || picked_files(&base, None, "model", None);
    let model_label = base_files().map_err(js_error)?.label().to_string();
    let pairs = |list: &[Text]| -> Vec<(String, String)> {
        list.iter()
            .map(|t| (t.lang.clone(), t.text.clone()))
            .collect()
    };
    let mut upcycled = BlobOutput::default();
    let built = lesson_model::build(
        &base_files,
        &pairs(&new_texts),
        &pairs(&replay_texts),
        o.top_k,
        &gpu,
        &mut upcycled,
    )
    .await
    .map_err(js_error)?;
    let label = format!("{model_label} (upcycled)");
    let load = LoadOptions {
        max_context: o.seq,
        weights: WeightChoice::AsStored,
        ..Default::default()
    };
    let opened = open_files(upcycled.model_files(&label), load, gpu, &mut |_, _| {})
        .await
        .map_err(js_error)?;
    let ckpt = Checkpoint::open(upcycled.model_files(&label))
        .await
        .map_err(js_error)?;
    let tokenizer = opened.tokenizer.as_ref().ok_or_else(|| {
        JsError::new(&format!(
            "{model_label}: no tokenizer.json to read the text with"
        ))
    })?;
    let eos = lesson::end_of_text(tokenizer, &opened.model.config);
    let streams = |list: &[Text]| -> crate::error::Result<Vec<Stream>> {
        list.iter()
            .map(|t| {
                let source = t.source.clone().unwrap_or_else(|| "pasted".into());
                let source = format!("{} text ({source})", t.lang);
                Stream::from_text(tokenizer, eos, &t.lang, &source, t.text.as_bytes(), o.seq)
            })
            .collect()
    };
    let new = streams(&new_texts).map_err(js_error)?;
    let replay = streams(&replay_texts).map_err(js_error)?;
    let options = TrainOptions {
        batch: o.batch,
        seq: o.seq,
        frozen_experts: built.frozen_experts,
        ..Default::default()
    };
    let replay_languages: Vec<&str> = replay.iter().map(|r| r.lang.as_str()).collect();
    let prior = lesson_model::prior_streams(&ckpt.config, &replay_languages).map_err(js_error)?;
    let expert_languages = lesson_model::expert_languages(&ckpt.config).map_err(js_error)?;
    let mut trainer = Trainer::new(&opened.model, &ckpt, options)
        .await
        .map_err(js_error)?;
    let resume = if resume_from.is_undefined() || resume_from.is_null() {
        None
    } else {
        let part = |key: &str| -> Result<Vec<u8>, JsError> {
            Reflect::get(&resume_from, &key.into())
                .ok()
                .filter(|v| v.is_instance_of::<Uint8Array>())
                .map(|v| Uint8Array::from(v).to_vec())
                .ok_or_else(|| JsError::new(&format!("resume: {key} must be a Uint8Array")))
        };
        let (state, tensors) =
            resume::decode("the page's checkpoint", &part("state")?, part("tensors")?)
                .await
                .map_err(js_error)?;
        Some(Resume {
            label: "the page's checkpoint".into(),
            state,
            tensors,
        })
    };
    let saved: RefCell<Option<(Vec<u8>, Vec<u8>)>> = RefCell::new(None);
    let mut save = |state: &resume::RunState, tensors: resume::TensorState| {
        *saved.borrow_mut() = Some(resume::encode(state, &tensors)?);
        Ok("the page's checkpoint".to_string())
    };
    let mut progress = |r: StepReport| {
        let step = WebStep {
            stage: if r.stage == Stage::NewExperts { 1 } else { 2 },
            step: r.step,
            steps: r.steps,
            loss: r.loss,
            tokens_per_second: r.tokens_per_second,
            memory: r.memory,
        };
        let value = step
            .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
            .unwrap_or(JsValue::NULL);
        match on_step.call1(&JsValue::NULL, &value) {
            Ok(v) if v.is_truthy() => Flow::Stop,
            _ => Flow::Continue,
        }
    };
    let fingerprint = lesson::fingerprint(&model_label, &settings, &new, &replay);
    let run = Lesson {
        settings: &settings,
        fingerprint,
        new: &new,
        replay: &replay,
        prior,
        resume,
    };
    let outcome = lesson::run(&mut trainer, run, &mut progress, &mut save).await;
    let result = Object::new();
    let set = |key: &str, value: JsValue| {
        Reflect::set(&result, &key.into(), &value)
            .map(|_| ())
            .map_err(|_| JsError::new("cannot build the teach result object"))
    };
    let state = match outcome {
        Ok(state) => state,
        Err(Error::Stopped { done, .. }) => {
            let (state, tensors) = saved
                .borrow_mut()
                .take()
                .ok_or_else(|| JsError::new("stopped without a checkpoint"))?;
            let checkpoint = Object::new();
            let _ = Reflect::set(&checkpoint, &"state".into(), &Uint8Array::from(&state[..]));
            let _ = Reflect::set(
                &checkpoint,
                &"tensors".into(),
                &Uint8Array::from(&tensors[..]),
            );
            set("stopped", JsValue::from_str(&done))?;
            set("checkpoint", checkpoint.into())?;
            return Ok(result.into());
        }
        Err(e) => return Err(js_error(e)),
    };
    let shares = lesson::expert_shares(&trainer, &settings, &new, &replay)
        .await
        .map_err(js_error)?;
    let record = lesson::record(
        &model_label,
        &settings,
        &options,
        (&new, &replay),
        &state,
        &shares,
        (&built, expert_languages.as_slice()),
    );
    let trained = lesson::read_trained(&trainer).await.map_err(js_error)?;
    let mut taught = BlobOutput::default();
    lesson::write_taught(&ckpt, &trained, &record, &mut taught)
        .await
        .map_err(js_error)?;
    set("files", taught.into_js().into())?;
    set("report", to_js(&record["teach"])?)?;
    set("memory", to_js(&trainer.memory)?)?;
    Ok(result.into())
}
