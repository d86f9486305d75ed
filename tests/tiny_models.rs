//! Tiny random checkpoints of every supported architecture (llama f32 tied, qwen2 bf16 with
//! q/k/v biases, odd sizes and shards, mistral f16 with a sliding window, mixtral f16 with 4
//! experts top-2) against transformers' float32 outputs: tokenization, the full last-position
//! logits (within 2e-3), top-10 ids, and 20 greedy tokens.

mod common;

use common::*;
use moegraft::generate::{generate, GenerateOptions};
use moegraft::gpu::GpuOptions;
use moegraft::model::LoadOptions;
use moegraft::tokenizer::ChatMessage;

const TOLERANCE: f32 = 2e-3;

fn check_model(name: &str) {
    let reference = json(&fixtures().join("tiny/reference.json"));
    let spec = &reference["models"][name];
    let dir = fixtures().join("tiny").join(name);
    let opened = open(&dir);
    let (model, tokenizer) = (&opened.model, opened.tokenizer.as_ref().expect("tokenizer"));
    let cases = spec["cases"].as_array().expect("cases");
    assert!(cases.len() >= 5, "{name}: expected at least 5 cases");
    for case in cases {
        let label = format!("{name}/{}", case["name"].as_str().unwrap_or("?"));
        let ids = u32s(&case["input_ids"]);
        if let Some(prompt) = case["prompt"].as_str() {
            let ours = if case["chat"].as_bool() == Some(true) {
                let text = tokenizer
                    .apply_chat_template(&[ChatMessage::user(chat_user_text(prompt))], true)
                    .unwrap();
                assert_eq!(text, prompt, "{label}: rendered chat template");
                tokenizer.encode(&text, false).unwrap()
            } else {
                tokenizer.encode(prompt, true).unwrap()
            };
            assert_eq!(ours, ids, "{label}: tokenization");
        }

        let mut session = model.session().unwrap();
        let logits = pollster::block_on(model.logits_last(&mut session, &ids)).unwrap();
        let expected = f32s(&case["last_logits"]);
        let diff = max_abs_diff(&logits, &expected);
        assert!(diff <= TOLERANCE, "{label}: max |Δlogit| = {diff}");
        let want_top: Vec<usize> = u32s(&case["top_ids"])
            .into_iter()
            .map(|i| i as usize)
            .collect();
        assert_eq!(top_ids(&logits, 10), want_top, "{label}: top-10 ids");

        let options = GenerateOptions {
            max_tokens: 20,
            ..Default::default()
        };
        let out =
            pollster::block_on(generate(model, None, &ids, &options, &mut |_, _| true)).unwrap();
        assert_eq!(
            out.output_ids,
            u32s(&case["greedy_ids"]),
            "{label}: greedy ids"
        );
    }
}

/// The user message inside a rendered ChatML prompt.
fn chat_user_text(rendered: &str) -> &str {
    let start = rendered.find("user\n").map(|i| i + 5).expect("user turn");
    let end = rendered[start..].find("<|im_end|>").expect("end of turn") + start;
    &rendered[start..end]
}

#[test]
fn tiny_llama_matches_transformers() {
    check_model("tiny-llama");
}

#[test]
fn tiny_qwen2_with_biases_bf16_and_shards_matches_transformers() {
    check_model("tiny-qwen2");
}

#[test]
fn tiny_mistral_with_sliding_window_matches_transformers() {
    check_model("tiny-mistral");
}

#[test]
fn tiny_mixtral_moe_matches_transformers() {
    check_model("tiny-mixtral");
}

/// The estimate a page shows before loading is what loading then allocates, to the byte.
#[test]
fn memory_estimate_matches_what_loading_allocates() {
    for name in ["tiny-llama", "tiny-mixtral", "tiny-qwen2"] {
        let dir = fixtures().join("tiny").join(name);
        let ckpt = pollster::block_on(moegraft::checkpoint::Checkpoint::open(
            moegraft::checkpoint::ModelFiles::from_dir(&dir).unwrap(),
        ))
        .unwrap();
        let est = moegraft::model::estimate::estimate(&ckpt, 64);
        let opened = open_with(
            &dir,
            LoadOptions {
                max_context: 64,
                ..Default::default()
            },
            GpuOptions::default(),
        );
        let m = &opened.model;
        let loaded = moegraft::bench::memory::gpu_weight_bytes(m);
        assert_eq!(est.weight_bytes, loaded, "{name}");
        let s = m.session().unwrap();
        let kv: u64 = s.k_cache.iter().chain(&s.v_cache).map(|b| b.size()).sum();
        assert_eq!(est.kv_cache_bytes, kv, "{name}");
        assert_eq!(est.max_context, m.options.max_context, "{name}");
        assert_eq!(est.total_bytes, est.weight_bytes + est.kv_cache_bytes);
    }
}
