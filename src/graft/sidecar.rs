//! The non-weight files of a graft: the target's tokenizer (its vocabulary is the one the
//! weights index) with the instruct side's chat template, eos and special-token settings
//! (Chat Vector: the chat behaviour comes with Δ), and the target's config.json.
//! Target-independent: returns (file name, bytes) pairs for the caller to write.

use serde_json::Value;

use crate::checkpoint::writer::pretty_json;
use crate::checkpoint::{ModelFiles, INDEX_FILE};
use crate::error::{Error, Result};

use super::plan::GraftPlan;
use crate::checkpoint::provenance::MANIFEST_FILE;

/// Files taken from the instruct side when it has them.
const FROM_INSTRUCT: [&str; 3] = [
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Every non-weight file of the output.
pub async fn sidecar_files(
    instruct: &ModelFiles,
    target: &ModelFiles,
    plan: &GraftPlan,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let rebuilt = ["config.json", "tokenizer_config.json", MANIFEST_FILE];
    // Tokens the instruct model added (and the output appended): its tokenizer knows them.
    let appended = plan
        .tensors
        .iter()
        .any(|t| t.delta.as_ref().is_some_and(|d| d.appended > 0));
    if appended {
        if let Some(bytes) = instruct.read_bytes("tokenizer.json").await? {
            out.push(("tokenizer.json".to_string(), bytes));
        }
    }
    for name in target.names() {
        if appended && name == "tokenizer.json" {
            continue;
        }
        let weights = name.ends_with(".safetensors") || name == INDEX_FILE;
        let replaced = rebuilt.contains(&name) || FROM_INSTRUCT.contains(&name);
        if !weights && !replaced {
            if let Some(bytes) = target.read_bytes(name).await? {
                out.push((name.to_string(), bytes));
            }
        }
    }
    for name in FROM_INSTRUCT {
        let bytes = match instruct.read_bytes(name).await? {
            Some(b) => Some(b),
            None => target.read_bytes(name).await?,
        };
        if let Some(bytes) = bytes {
            out.push((name.to_string(), bytes));
        }
    }
    out.push((
        "config.json".into(),
        pretty_json(&config(instruct, target, plan).await?),
    ));
    if let Some(tc) = tokenizer_config(instruct, target).await? {
        out.push(("tokenizer_config.json".into(), pretty_json(&tc)));
    }
    Ok(out)
}

async fn read_json(files: &ModelFiles, name: &str) -> Result<Option<Value>> {
    let Some(text) = files.read_text(name).await? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::format(files.display_name(name), format!("not valid JSON: {e}")))
}

/// The target's config.json with the written dtype, vocabulary size and tying, and the
/// instruct side's eos.
async fn config(instruct: &ModelFiles, target: &ModelFiles, plan: &GraftPlan) -> Result<Value> {
    let dtype = plan.dtype;
    let mut config = read_json(target, "config.json")
        .await?
        .ok_or_else(|| Error::config(target.display_name("config.json"), "missing"))?;
    let inst = read_json(instruct, "config.json").await?;
    if let Some(obj) = config.as_object_mut() {
        obj.insert("torch_dtype".into(), dtype.torch_name().into());
        // transformers 5 writes `dtype`; keep both names in step.
        if obj.contains_key("dtype") {
            obj.insert("dtype".into(), dtype.torch_name().into());
        }
        obj.insert("vocab_size".into(), plan.vocab_size.into());
        if plan.unties_embeddings {
            obj.insert("tie_word_embeddings".into(), false.into());
        }
        if let Some(eos) = inst.as_ref().and_then(|i| i.get("eos_token_id")) {
            obj.insert("eos_token_id".into(), eos.clone());
        }
    }
    Ok(config)
}

/// The instruct side's tokenizer_config.json (chat template, eos, special tokens), keeping
/// the added tokens only the target has (a continued-pretrained vocabulary's new tokens).
async fn tokenizer_config(instruct: &ModelFiles, target: &ModelFiles) -> Result<Option<Value>> {
    let name = "tokenizer_config.json";
    let (inst, tgt) = (
        read_json(instruct, name).await?,
        read_json(target, name).await?,
    );
    let Some(mut merged) = inst else {
        return Ok(tgt);
    };
    let target_added = tgt
        .as_ref()
        .and_then(|t| t.get("added_tokens_decoder"))
        .and_then(Value::as_object);
    if let (Some(target_added), Some(obj)) = (target_added, merged.as_object_mut()) {
        let added = obj
            .entry("added_tokens_decoder")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(added) = added.as_object_mut() {
            for (id, token) in target_added {
                added.entry(id.clone()).or_insert_with(|| token.clone());
            }
        }
    }
    Ok(Some(merged))
}
