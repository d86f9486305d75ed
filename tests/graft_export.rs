//! A committed DeltaMoE export (tests/fixtures/graft/deltamoe-tiny, f16) checked against
//! transformers: `tools/check_graft_export.py` loaded it as MixtralForCausalLM in float32
//! and wrote the top-10 ids and logits of a few id sequences to reference.json; moegraft's
//! runtime must agree on the same files.
//!
//! Regenerate the export (then rerun the Python tool):
//!     cargo test --test graft_export -- --ignored regenerate
//!     /opt/refvenv/bin/python tools/check_graft_export.py tests/fixtures/graft

mod common;
mod graft_models;

use std::path::PathBuf;

use common::*;
use graft_models::{base, tiny, upcycled};
use moegraft::checkpoint::{Checkpoint, DType, ModelFiles};
use moegraft::gpu::{GpuContext, GpuOptions};
use moegraft::graft::plan::GraftOptions;
use moegraft::graft::run::{graft_dirs, GraftInputs};

const TOLERANCE: f32 = 2e-3;

fn export_dir() -> PathBuf {
    fixtures().join("graft/deltamoe-tiny")
}

#[test]
fn runtime_matches_transformers_on_the_committed_export() {
    let reference = json(&fixtures().join("graft/reference.json"));
    let opened = open(&export_dir());
    let cases = reference["cases"].as_array().expect("cases");
    assert!(cases.len() >= 2, "expected at least two cases");
    for case in cases {
        let ids = u32s(&case["input_ids"]);
        let mut session = opened.model.session().expect("session");
        let logits =
            pollster::block_on(opened.model.logits_last(&mut session, &ids)).expect("logits");
        let top: Vec<usize> = u32s(&case["top_ids"]).iter().map(|&i| i as usize).collect();
        assert_eq!(top_ids(&logits, 10), top, "{ids:?}: top-10 ids");
        let want = f32s(&case["top_logits"]);
        let got: Vec<f32> = top.iter().map(|&i| logits[i]).collect();
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= TOLERANCE, "{ids:?}: max |Δlogit| = {diff}");
        let full = f32s(&case["last_logits"]);
        let diff = max_abs_diff(&logits, &full);
        assert!(diff <= TOLERANCE, "{ids:?}: full logits differ by {diff}");
    }
}

/// The committed inputs of the export (f16): base, instruct and the upcycled target.
fn triple_dir() -> PathBuf {
    fixtures().join("graft/triple")
}

#[test]
fn committed_triple_grafts_to_the_committed_export() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    graft_triple(&out);
    let want = raw_tensors(&export_dir());
    let got = raw_tensors(&out);
    assert_eq!(got.len(), want.len(), "tensor count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0, "tensor order");
        assert!(g.1 == w.1, "{}: bytes differ", w.0);
    }
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert_eq!(
            std::fs::read(out.join(file)).expect("read"),
            std::fs::read(export_dir().join(file)).expect("read"),
            "{file}"
        );
    }
}

/// Every tensor's name and stored bytes, in file order.
fn raw_tensors(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    pollster::block_on(async {
        let cp = Checkpoint::open(ModelFiles::from_dir(dir).expect("files"))
            .await
            .expect("open");
        let mut out = Vec::new();
        for name in cp.tensor_names().map(str::to_string).collect::<Vec<_>>() {
            let t = cp.read(&name).await.expect("read");
            out.push((name, t.bytes));
        }
        out
    })
}

/// The graft the fixture was made with.
fn graft_triple(out: &std::path::Path) {
    let ctx = pollster::block_on(GpuContext::new(GpuOptions::default())).expect("GPU");
    let dirs = ["base", "instruct", "target"].map(|n| triple_dir().join(n));
    let inputs = GraftInputs {
        base: &dirs[0],
        instruct: &dirs[1],
        target: &dirs[2],
    };
    let options = GraftOptions {
        alpha: 1.0,
        expert_alpha: Some(vec![1.0, 0.8, 0.5, 1.2]),
        dtype: Some(DType::F16),
    };
    let summary =
        pollster::block_on(graft_dirs(&ctx, &inputs, out, &options, u64::MAX)).expect("graft");
    println!("{summary}");
}

#[test]
#[ignore = "writes the committed fixtures; run by hand to regenerate them"]
fn regenerate() {
    let b = base();
    let i = b.perturbed(11, 0.05);
    let t = upcycled(&b, 21);
    for (name, m) in [("base", &b), ("instruct", &i), ("target", &t)] {
        let dir = triple_dir().join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("remove old input");
        }
        m.write(&dir, DType::F16, &tiny("tiny-llama"));
    }
    let out = export_dir();
    if out.exists() {
        std::fs::remove_dir_all(&out).expect("remove old export");
    }
    graft_triple(&out);
}
