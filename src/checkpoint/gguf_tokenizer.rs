//! tokenizer.json and tokenizer_config.json built from a GGUF file's vocabulary: a byte-level
//! BPE (`tokenizer.ggml.model = "gpt2"`) with the pre-tokenizer of the model family llama.cpp
//! names in `tokenizer.ggml.pre`, validated by loading it with the `tokenizers` crate.

use serde_json::{json, Map, Value};

use super::gguf::{GgufFile, MetaArray, MetaValue};
use super::gguf_sentencepiece::{self as sentencepiece, merges_from_scores};
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

/// The post-processor: byte-level offsets (`offsets`), plus BOS/EOS where the file asks for
/// them (`None`: not added), laid out as Llama 3's tokenizer.json does.
fn post_processor(
    tokens: &[String],
    bos: Option<usize>,
    eos: Option<usize>,
    offsets: Option<Value>,
) -> Value {
    if bos.is_none() && eos.is_none() {
        return offsets.unwrap_or(Value::Null);
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
    let template = json!({ "type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials });
    match offsets {
        Some(offsets) => json!({ "type": "Sequence", "processors": [offsets, template] }),
        None => template,
    }
}

/// The file's merges as (left, right) pairs.
fn split_merges(merges: &[String]) -> std::result::Result<Vec<(String, String)>, String> {
    merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format!("merge '{m}' is not two tokens separated by a space"))
        })
        .collect()
}

/// `tokenizer.ggml.scores`: one f32 per token.
fn scores(g: &GgufFile, tokens: usize) -> std::result::Result<Vec<f32>, String> {
    match g.get("tokenizer.ggml.scores") {
        Some(MetaValue::Array(MetaArray::F32(s))) if s.len() == tokens => Ok(s.clone()),
        Some(MetaValue::Array(MetaArray::F32(s))) => Err(format!(
            "tokenizer.ggml.scores has {} scores for {tokens} tokens",
            s.len()
        )),
        Some(_) => Err("tokenizer.ggml.scores is not an array of f32".into()),
        None => Err("a SentencePiece vocabulary without merges needs tokenizer.ggml.scores".into()),
    }
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
    let sentencepiece = match model {
        "gpt2" => false,
        "llama" => true,
        other => {
            return Err(err(format!(
                "tokenizer model '{other}' is not supported by import (supported: gpt2, llama)"
            )))
        }
    };
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
    // llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise.
    let add_bos = g
        .get_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(sentencepiece && bos.is_some());
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
    let (bos_added, eos_added) = (need(add_bos, bos, "bos")?, need(add_eos, eos, "eos")?);
    let merges = g.get_str_array("tokenizer.ggml.merges")?;
    let (normalizer, pre, post, decoder, model) = if sentencepiece {
        let merges = match merges {
            Some(m) => split_merges(m).map_err(err)?,
            None => {
                let scores = scores(g, tokens.len()).map_err(err)?;
                merges_from_scores(tokens, &scores)
                    .map_err(|m| err(format!("tokenizer.ggml.scores: {m}")))?
            }
        };
        let space = g
            .get_bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(true);
        let (pre, decoder, model) = sentencepiece::parts(tokens, &merges, space);
        let post = post_processor(tokens, bos_added, eos_added, None);
        (Value::Null, pre, post, decoder, model)
    } else {
        let pre_name = g.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
        let (normalizer, pre, ignore_merges) = pre_tokenizer(pre_name).ok_or_else(|| {
            err(format!(
                "pre-tokenizer '{pre_name}' is not supported by import (supported: {SUPPORTED_PRE})"
            ))
        })?;
        let merges =
            merges.ok_or_else(|| err("metadata 'tokenizer.ggml.merges' is missing".into()))?;
        let merges = split_merges(merges).map_err(err)?;
        // A vocabulary may repeat a string; a JSON vocab cannot, so the first id keeps it.
        let mut vocab = Map::new();
        for (i, t) in tokens.iter().enumerate() {
            vocab.entry(t.clone()).or_insert(json!(i));
        }
        let model = json!({
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
        });
        let offsets = Some(byte_level(true, false, true));
        let post = post_processor(tokens, bos_added, eos_added, offsets);
        (normalizer, pre, post, byte_level(true, true, true), model)
    };
    // Control tokens (type 3) are special; user-defined ones (type 4) are matched whole but
    // not special — as llama.cpp and transformers' GGUF loader treat them.
    let mut added = Vec::new();
    for (i, &ty) in types.iter().flatten().enumerate() {
        // SentencePiece's unknown token (type 2) is special too, as transformers registers it.
        let unknown = sentencepiece && ty == 2 && Some(i) == unk;
        if unknown {
            added.push(json!({
                "id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true,
            }));
        }
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
        "decoder": decoder,
        "model": model,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::gguf::read_gguf;
    use crate::checkpoint::source::MemorySource;

    /// tools/make_spm_gguf.py: a SentencePiece vocabulary (no merges, scores, byte fallback)
    /// tokenizes and decodes as transformers' GGUF loader does it.
    #[test]
    fn sentencepiece_vocabulary_tokenizes_as_transformers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf");
        let bytes = std::fs::read(dir.join("tiny-spm.gguf")).unwrap();
        let g = pollster::block_on(read_gguf(&MemorySource::new("tiny-spm.gguf", bytes))).unwrap();
        let files = build_tokenizer(&g).unwrap();
        let json = serde_json::to_vec(&files.tokenizer).unwrap();
        let tok = tokenizers::Tokenizer::from_bytes(&json).unwrap();
        let want: Value =
            serde_json::from_slice(&std::fs::read(dir.join("tiny-spm.json")).unwrap()).unwrap();
        let ids = |v: &Value| -> Vec<u32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        };
        for case in want["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let plain = tok.encode(text, false).unwrap();
            assert_eq!(plain.get_ids(), ids(&case["ids"]), "{text:?}");
            let with_bos = tok.encode(text, true).unwrap();
            assert_eq!(
                with_bos.get_ids(),
                ids(&case["with_bos"]),
                "{text:?} with BOS"
            );
            let decoded = tok.decode(plain.get_ids(), false).unwrap();
            assert_eq!(
                decoded,
                case["decoded"].as_str().unwrap(),
                "{text:?} decoded"
            );
        }
        assert_eq!(files.config["add_bos_token"], true);
    }
}
