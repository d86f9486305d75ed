//! tokenizer.json and tokenizer_config.json built from a GGUF file's vocabulary: a byte-level
//! BPE (`tokenizer.ggml.model = "gpt2"`) with the pre-tokenizer of the model family llama.cpp
//! names in `tokenizer.ggml.pre`, validated by loading it with the `tokenizers` crate.

use serde_json::{json, Map, Value};

use super::gguf::GgufFile;
use crate::error::{Error, Result};

/// tokenizer.json and tokenizer_config.json, plus the ids config.json repeats.
pub(super) struct TokenizerFiles {
    pub(super) tokenizer: Value,
    pub(super) config: Value,
    pub(super) bos_id: Option<u32>,
    pub(super) eos_id: Option<u32>,
}

/// Llama 3's pre-tokenizer split (as in its tokenizer.json).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: as Llama 3's but digits one at a time.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const SUPPORTED_PRE: &str = "default, gpt2, smollm, llama-bpe, llama3, llama-v3, qwen2";

fn byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> Value {
    json!({
        "type": "ByteLevel",
        "add_prefix_space": add_prefix_space,
        "trim_offsets": trim_offsets,
        "use_regex": use_regex,
    })
}

fn split_regex(pattern: &str) -> Value {
    json!({ "type": "Split", "pattern": { "Regex": pattern }, "behavior": "Isolated", "invert": false })
}

/// (normalizer, pre-tokenizer, ignore_merges) for a `tokenizer.ggml.pre` value, as the Hugging
/// Face tokenizer.json of the models llama.cpp names so.
fn pre_tokenizer(pre: &str) -> Option<(Value, Value, bool)> {
    Some(match pre {
        "default" | "gpt2" => (Value::Null, byte_level(false, true, true), false),
        "smollm" => (
            Value::Null,
            json!({ "type": "Sequence", "pretokenizers": [
                { "type": "Digits", "individual_digits": true },
                byte_level(false, true, true),
            ]}),
            false,
        ),
        "llama-bpe" | "llama3" | "llama-v3" => (
            Value::Null,
            json!({ "type": "Sequence", "pretokenizers": [
                split_regex(LLAMA3_SPLIT),
                byte_level(false, true, false),
            ]}),
            true,
        ),
        "qwen2" => (
            json!({ "type": "NFC" }),
            json!({ "type": "Sequence", "pretokenizers": [
                split_regex(QWEN2_SPLIT),
                byte_level(false, false, false),
            ]}),
            false,
        ),
        _ => return None,
    })
}

/// The post-processor: byte-level offsets, plus BOS/EOS where the file asks for them (`None`:
/// not added), laid out as Llama 3's tokenizer.json does.
fn post_processor(tokens: &[String], bos: Option<usize>, eos: Option<usize>) -> Value {
    let offsets = byte_level(true, false, true);
    if bos.is_none() && eos.is_none() {
        return offsets;
    }
    let special = |id: usize, type_id: u32| json!({ "SpecialToken": { "id": tokens[id], "type_id": type_id } });
    let sequence =
        |name: &str, type_id: u32| json!({ "Sequence": { "id": name, "type_id": type_id } });
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (part, type_id) in [("A", 0), ("B", 1)] {
        let mut seq = Vec::new();
        seq.extend(bos.map(|b| special(b, type_id)));
        seq.push(sequence(part, type_id));
        seq.extend(eos.map(|e| special(e, type_id)));
        if type_id == 0 {
            single = seq.clone();
        }
        pair.extend(seq);
    }
    let mut specials = Map::new();
    for id in [bos, eos].into_iter().flatten() {
        specials.insert(
            tokens[id].clone(),
            json!({ "id": tokens[id], "ids": [id], "tokens": [tokens[id]] }),
        );
    }
    json!({ "type": "Sequence", "processors": [
        offsets,
        { "type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials },
    ]})
}

pub(super) fn build_tokenizer(g: &GgufFile) -> Result<TokenizerFiles> {
    let file = g.file.as_str();
    let err = |m: String| Error::Tokenizer {
        file: file.to_string(),
        message: m,
    };
    let model = g
        .get_str("tokenizer.ggml.model")?
        .ok_or_else(|| err("metadata 'tokenizer.ggml.model' is missing".into()))?;
    match model {
        "gpt2" => {}
        "llama" => return Err(err("SentencePiece vocabularies (tokenizer.ggml.model 'llama') are not supported by import yet; only byte-level BPE ('gpt2')".into())),
        other => return Err(err(format!("tokenizer model '{other}' is not supported by import (supported: gpt2)"))),
    }
    let pre_name = g.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let (normalizer, pre, ignore_merges) = pre_tokenizer(pre_name).ok_or_else(|| {
        err(format!(
            "pre-tokenizer '{pre_name}' is not supported by import (supported: {SUPPORTED_PRE})"
        ))
    })?;
    let tokens = g
        .get_str_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| err("metadata 'tokenizer.ggml.tokens' is missing".into()))?;
    let types = g.get_int_array("tokenizer.ggml.token_type")?;
    if let Some(t) = &types {
        if t.len() != tokens.len() {
            return Err(err(format!(
                "{} token types for {} tokens",
                t.len(),
                tokens.len()
            )));
        }
    }
    let merges = g
        .get_str_array("tokenizer.ggml.merges")?
        .ok_or_else(|| err("metadata 'tokenizer.ggml.merges' is missing".into()))?;
    let id = |k: &str| -> Result<Option<usize>> {
        match g.get_u64(&format!("tokenizer.ggml.{k}"))? {
            None => Ok(None),
            Some(v) if (v as usize) < tokens.len() => Ok(Some(v as usize)),
            Some(v) => Err(err(format!(
                "tokenizer.ggml.{k} = {v} is past the {}-token vocabulary",
                tokens.len()
            ))),
        }
    };
    let (bos, eos, unk, pad) = (
        id("bos_token_id")?,
        id("eos_token_id")?,
        id("unknown_token_id")?,
        id("padding_token_id")?,
    );
    let add_bos = g.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
    let add_eos = g.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let need = |flag: bool, id: Option<usize>, what: &str| -> Result<Option<usize>> {
        match (flag, id) {
            (false, _) => Ok(None),
            (true, Some(i)) => Ok(Some(i)),
            (true, None) => Err(err(format!(
                "add_{what}_token is set but no {what}_token_id"
            ))),
        }
    };
    let post = post_processor(
        tokens,
        need(add_bos, bos, "bos")?,
        need(add_eos, eos, "eos")?,
    );

    // A vocabulary may repeat a string; a JSON vocab cannot, so the first id keeps it.
    let mut vocab = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t.clone()).or_insert(json!(i));
    }
    let mut merge_pairs = Vec::with_capacity(merges.len());
    for m in merges {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            err(format!(
                "merge '{m}' is not two tokens separated by a space"
            ))
        })?;
        merge_pairs.push(json!([a, b]));
    }
    // Control tokens (type 3) are special; user-defined ones (type 4) are matched whole but
    // not special — as llama.cpp and transformers' GGUF loader treat them.
    let mut added = Vec::new();
    for (i, &ty) in types.iter().flatten().enumerate() {
        if ty == 3 || ty == 4 {
            added.push(json!({
                "id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == 3,
            }));
        }
    }
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre,
        "post_processor": post,
        "decoder": byte_level(true, true, true),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
            "vocab": vocab, "merges": merge_pairs,
        },
    });
    // Prove the tokenizers crate (which moegraft itself uses) accepts it.
    let bytes = serde_json::to_vec(&tokenizer).map_err(|e| err(e.to_string()))?;
    tokenizers::Tokenizer::from_bytes(&bytes)
        .map_err(|e| err(format!("generated tokenizer.json does not load: {e}")))?;

    let mut config = Map::new();
    config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    config.insert("add_bos_token".into(), json!(add_bos));
    config.insert("add_eos_token".into(), json!(add_eos));
    for (key, id) in [
        ("bos_token", bos),
        ("eos_token", eos),
        ("unk_token", unk),
        ("pad_token", pad),
    ] {
        if let Some(i) = id {
            config.insert(key.into(), json!(tokens[i]));
        }
    }
    if let Some(t) = g.get_str("tokenizer.chat_template")? {
        config.insert("chat_template".into(), json!(t));
    }
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    if let Some(ctx) = g.get_u64(&format!(
        "{}.context_length",
        g.get_str("general.architecture")?.unwrap_or_default()
    ))? {
        config.insert("model_max_length".into(), json!(ctx));
    }
    let as_u32 = |i: Option<usize>| i.and_then(|i| u32::try_from(i).ok());
    Ok(TokenizerFiles {
        tokenizer,
        config: Value::Object(config),
        bos_id: as_u32(bos),
        eos_id: as_u32(eos),
    })
}
