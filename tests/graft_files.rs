//! The files of a graft: sharded inputs and outputs, and the tokenizer settings merged from
//! the instruct side (chat template, eos) and the target (its added tokens).

mod common;
mod graft_models;

use std::path::Path;

use graft_models::{tiny, Model};
use moegraft::checkpoint::DType;
use moegraft::gpu::{GpuContext, GpuOptions};
use moegraft::graft::plan::GraftOptions;
use moegraft::graft::run::{graft_dirs, GraftInputs};

fn graft(b: &Path, i: &Path, t: &Path, out: &Path, max_shard_bytes: u64) -> String {
    let ctx = pollster::block_on(GpuContext::new(GpuOptions::default())).expect("GPU");
    let inputs = GraftInputs {
        base: b,
        instruct: i,
        target: t,
    };
    let options = GraftOptions {
        alpha: 1.0,
        ..Default::default()
    };
    pollster::block_on(graft_dirs(&ctx, &inputs, out, &options, max_shard_bytes))
        .expect("graft")
        .to_string()
}

#[test]
fn sharded_bf16_qwen2_inputs_and_a_sharded_output() {
    // The committed qwen2 fixture is sharded bf16 with q/k/v biases: it is the base as is.
    let tmp = tempfile::tempdir().expect("tempdir");
    let bd = tiny("tiny-qwen2");
    let b = Model::read(&bd);
    let i = b.perturbed(4, 0.05);
    let t = b.perturbed(6, 0.05);
    let id = tmp.path().join("inst");
    let td = tmp.path().join("cpt");
    i.write(&id, DType::BF16, &bd);
    t.write(&td, DType::F32, &bd);
    let out = tmp.path().join("out");
    let summary = graft(&bd, &id, &td, &out, 64 << 10);
    assert!(summary.starts_with("paramdelta:"), "{summary}");
    let shards = std::fs::read_dir(&out)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .count();
    assert!(
        shards > 1,
        "expected a sharded output, got {shards} file(s)"
    );
    assert!(out.join("model.safetensors.index.json").exists());

    let got = Model::read(&out);
    let (bq, iq) = (Model::read(&bd), Model::read(&id));
    assert_eq!(got.tensors.len(), t.tensors.len());
    for (name, _, v) in &got.tensors {
        let want: Vec<f32> = t
            .get(name)
            .iter()
            .zip(iq.get(name).iter().zip(bq.get(name)))
            .map(|(x, (a, c))| x + (a - c))
            .collect();
        // Output in the target's f32; the fused multiply-add may differ in the last bit.
        let tol = want.iter().fold(0f32, |m, x| m.max(x.abs())) * 4.0 * f32::EPSILON;
        let diff = common::max_abs_diff(v, &want);
        assert!(diff <= tol, "{name}: {diff}");
    }
    // And the sharded output runs.
    let opened = common::open(&out);
    let mut s = opened.model.session().expect("session");
    let logits = pollster::block_on(opened.model.logits_last(&mut s, &[1, 2, 3])).expect("run");
    assert!(logits.iter().all(|x| x.is_finite()));
    // The target's dtype (f32), not the base's bf16.
    let config = common::json(&out.join("config.json"));
    assert_eq!(config["torch_dtype"], "float32");
    let header = std::fs::read_to_string(out.join("model.safetensors.index.json")).expect("index");
    assert!(header.contains("total_size"));
}

#[test]
fn tokenizer_settings_come_from_instruct_with_the_targets_added_tokens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tiny("tiny-llama");
    let b = Model::read(&src);
    let (bd, id, td) = (
        tmp.path().join("base"),
        tmp.path().join("inst"),
        tmp.path().join("cpt"),
    );
    b.write(&bd, DType::F32, &src);
    let mut inst = b.perturbed(1, 0.01);
    inst.config["eos_token_id"] = 1.into();
    inst.write(&id, DType::F32, &src);
    b.perturbed(2, 0.01).write(&td, DType::F32, &src);

    let mut itc = common::json(&id.join("tokenizer_config.json"));
    itc["chat_template"] = "INSTRUCT TEMPLATE".into();
    itc["eos_token"] = "<|im_start|>".into();
    std::fs::write(id.join("tokenizer_config.json"), itc.to_string()).expect("write");
    let mut ttc = common::json(&td.join("tokenizer_config.json"));
    ttc["chat_template"] = "TARGET TEMPLATE".into();
    ttc["added_tokens_decoder"]["399"] = serde_json::json!({
        "content": "<|new_lang|>", "lstrip": false, "normalized": false,
        "rstrip": false, "single_word": false, "special": true
    });
    std::fs::write(td.join("tokenizer_config.json"), ttc.to_string()).expect("write");

    let out = tmp.path().join("out");
    graft(&bd, &id, &td, &out, u64::MAX);
    let tc = common::json(&out.join("tokenizer_config.json"));
    assert_eq!(tc["chat_template"], "INSTRUCT TEMPLATE");
    assert_eq!(tc["eos_token"], "<|im_start|>");
    assert_eq!(tc["added_tokens_decoder"]["399"]["content"], "<|new_lang|>");
    assert_eq!(tc["added_tokens_decoder"]["2"]["content"], "<|im_end|>");
    let config = common::json(&out.join("config.json"));
    assert_eq!(config["eos_token_id"], 1, "eos from the instruct side");
    assert_eq!(config["torch_dtype"], "float32");
    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).expect("read"),
        std::fs::read(td.join("tokenizer.json")).expect("read"),
        "the target's tokenizer"
    );
}
