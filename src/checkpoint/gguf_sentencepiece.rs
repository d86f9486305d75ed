//! A SentencePiece vocabulary of a GGUF (`tokenizer.ggml.model = llama`: TinyLlama, Llama 2,
//! Mistral) as a tokenizer.json, laid out as transformers' GGUF loader builds it (its
//! LlamaTokenizer): BPE with byte fallback over the file's tokens, the merges the file lists or
//! else the ones its scores imply, "▁" for spaces and before the text (Metaspace), and a
//! decoder that undoes both.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

/// The merges a SentencePiece vocabulary implies: every split of a token into two tokens of
/// the vocabulary, best-scored token first — transformers' `generate_merges` (pairs of one
/// token by the pieces' ids; then, stably, by score, left length, right length, descending).
/// `Err` names a score that is not a finite number.
pub fn merges_from_scores(
    tokens: &[String],
    scores: &[f32],
) -> Result<Vec<(String, String)>, String> {
    if let Some((i, s)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(format!("token {i} ('{}') has score {s}", tokens[i]));
    }
    // As Python dicts: the last id of a repeated token, its first position, its last score.
    let mut id: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    let mut score: HashMap<&str, f32> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if id.insert(t, i).is_none() {
            order.push(t);
        }
        score.insert(t, scores[i]);
    }
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for token in order {
        let s = score[token];
        let mut local: Vec<(&str, &str, f32)> = token
            .char_indices()
            .skip(1)
            .map(|(at, _)| token.split_at(at))
            .filter(|(l, r)| id.contains_key(l) && id.contains_key(r))
            .map(|(l, r)| (l, r, s))
            .collect();
        local.sort_by_key(|(l, r, _)| (id[l], id[r]));
        merges.extend(local);
    }
    let chars = |s: &str| s.chars().count();
    merges.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then_with(|| chars(b.0).cmp(&chars(a.0)))
            .then_with(|| chars(b.1).cmp(&chars(a.1)))
    });
    Ok(merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect())
}

/// (pre-tokenizer, decoder, model) of the tokenizer.json. `add_space_prefix` (the file's
/// `tokenizer.ggml.add_space_prefix`, true unless it says otherwise) puts "▁" before the text.
pub fn parts(
    tokens: &[String],
    merges: &[(String, String)],
    add_space_prefix: bool,
) -> (Value, Value, Value) {
    let mut vocab = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), json!(i));
    }
    let pre = json!({
        "type": "Metaspace", "replacement": "▁",
        "prepend_scheme": if add_space_prefix { "first" } else { "never" }, "split": false,
    });
    let mut steps = vec![
        json!({ "type": "Replace", "pattern": { "String": "▁" }, "content": " " }),
        json!({ "type": "ByteFallback" }),
        json!({ "type": "Fuse" }),
    ];
    if add_space_prefix {
        steps.push(json!({ "type": "Strip", "content": " ", "start": 1, "stop": 0 }));
    }
    let model = json!({
        "type": "BPE", "dropout": null, "unk_token": null,
        "continuing_subword_prefix": null, "end_of_word_suffix": null,
        "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
        "vocab": vocab,
        "merges": merges.iter().map(|(l, r)| json!([l, r])).collect::<Vec<_>>(),
    });
    (pre, json!({ "type": "Sequence", "decoders": steps }), model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn merges_follow_scores_then_lengths() {
        let tokens = strings(&["a", "b", "c", "ab", "abc", "bc", "▁a"]);
        let scores = [0.0, 0.0, 0.0, -1.0, -3.0, -2.0, -0.5];
        let merges = merges_from_scores(&tokens, &scores).unwrap();
        let got: Vec<(&str, &str)> = merges
            .iter()
            .map(|(l, r)| (l.as_str(), r.as_str()))
            .collect();
        // ab (−1), bc (−2), then abc's two splits (−3) by length of the left piece.
        assert_eq!(got, [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]);
        let e = merges_from_scores(&tokens, &[0.0, f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap_err();
        assert!(e.contains("token 1 ('b') has score NaN"), "{e}");
    }
}
