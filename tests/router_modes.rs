//! Routing modes at run time on tiny-mixtral: `expert=0` is exactly a dense Llama whose FFN is
//! expert 0 (built here with the crate's writer), each forced expert gives its own logits, and
//! the CLI refuses router modes a model cannot apply.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use moegraft::checkpoint::moegraft_section::RouterChoice;
use moegraft::checkpoint::writer::{
    write_dir_atomically, write_file, write_json, ModelWriter, TensorSpec, DEFAULT_MAX_SHARD_BYTES,
};
use moegraft::checkpoint::{Checkpoint, ModelFiles};
use moegraft::generate::{self, GenerateOptions};
use moegraft::gpu::GpuOptions;
use moegraft::model::{LoadOptions, LogitsWanted};

fn tiny_mixtral() -> std::path::PathBuf {
    fixtures().join("tiny/tiny-mixtral")
}

/// A dense Llama checkpoint with tiny-mixtral's attention, norms and embeddings and expert
/// `e`'s FFN (w1 → gate_proj, w3 → up_proj, w2 → down_proj).
fn dense_from_expert(out: &Path, e: usize) {
    let src = tiny_mixtral();
    let ckpt = pollster::block_on(Checkpoint::open(ModelFiles::from_dir(&src).unwrap())).unwrap();
    let mut tensors = Vec::new();
    for name in ckpt.tensor_names() {
        let Some((prefix, rest)) = name.split_once(".block_sparse_moe.") else {
            tensors.push((
                name.to_string(),
                pollster::block_on(ckpt.read(name)).unwrap(),
            ));
            continue;
        };
        for (w, proj) in [("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")] {
            if rest == format!("experts.{e}.{w}.weight") {
                let t = pollster::block_on(ckpt.read(name)).unwrap();
                tensors.push((format!("{prefix}.mlp.{proj}.weight"), t));
            }
        }
    }
    let mut config = ckpt.config.raw.clone();
    let map = config.as_object_mut().unwrap();
    map.insert("model_type".into(), "llama".into());
    map.insert(
        "architectures".into(),
        serde_json::json!(["LlamaForCausalLM"]),
    );
    for key in ["num_local_experts", "num_experts_per_tok", "sliding_window"] {
        map.remove(key);
    }
    write_dir_atomically(out, |dir| {
        let specs = tensors
            .iter()
            .map(|(n, t)| TensorSpec::new(n, t.dtype, t.shape.clone()))
            .collect();
        let mut w = ModelWriter::new(dir, specs, DEFAULT_MAX_SHARD_BYTES)?;
        for (n, t) in &tensors {
            w.write_tensor(n, &t.bytes)?;
        }
        w.finish()?;
        write_json(dir, "config.json", &config)?;
        write_file(
            dir,
            "tokenizer.json",
            &std::fs::read(src.join("tokenizer.json")).unwrap(),
        )
    })
    .unwrap();
}

fn all_logits(dir: &Path, router: Option<RouterChoice>, ids: &[u32], chunk: usize) -> Vec<f32> {
    let opened = open_with(
        dir,
        LoadOptions {
            router,
            prefill_chunk: chunk,
            ..Default::default()
        },
        GpuOptions::default(),
    );
    let model = &opened.model;
    let mut s = model.session_with(LogitsWanted::All).unwrap();
    pollster::block_on(model.logits_all(&mut s, ids)).unwrap()
}

fn prompt() -> Vec<u32> {
    let reference = json(&fixtures().join("tiny/reference.json"));
    let cases = &reference["models"]["tiny-mixtral"]["cases"];
    let mut ids = u32s(&cases[1]["input_ids"]);
    ids.extend(u32s(&cases[2]["input_ids"]));
    ids
}

#[test]
fn forced_expert_equals_the_dense_model_of_that_expert() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = prompt();
    let learned = all_logits(&tiny_mixtral(), None, &ids, 128);
    let mut per_expert = Vec::new();
    for e in [0, 3] {
        let dense_dir = tmp.path().join(format!("dense-{e}"));
        dense_from_expert(&dense_dir, e);
        let dense = all_logits(&dense_dir, None, &ids, 128);
        // Chunks of 5 too: the forced route must hold in every chunk, not only the first.
        for chunk in [128, 5] {
            let forced = all_logits(&tiny_mixtral(), Some(RouterChoice::Expert(e)), &ids, chunk);
            let diff = max_abs_diff(&forced, &dense);
            assert!(diff < 1e-4, "expert={e} chunk {chunk}: max |Δlogit| {diff}");
        }
        per_expert.push(dense);
    }
    // The comparison has teeth: experts and the learned mixture all give different logits.
    assert!(max_abs_diff(&per_expert[0], &per_expert[1]) > 1e-2);
    assert!(max_abs_diff(&per_expert[0], &learned) > 1e-2);
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moegraft"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_refuses_router_modes_a_model_cannot_apply() {
    let mixtral = tiny_mixtral();
    let llama = fixtures().join("tiny/tiny-llama");
    let (m, l) = (mixtral.to_str().unwrap(), llama.to_str().unwrap());
    let (ok, err) = cli(&[
        "logits", "--model", m, "--ids", "1,2", "--router", "expert=4",
    ]);
    assert!(
        !ok && err.contains("expert=4") && err.contains("4 experts"),
        "{err}"
    );
    let (ok, err) = cli(&[
        "generate", "--model", l, "--ids", "1,2", "--router", "expert=0",
    ]);
    assert!(!ok && err.contains("dense"), "{err}");
    // Plain Mixtral has no expert languages for a prior.
    let (ok, err) = cli(&[
        "logits",
        "--model",
        m,
        "--ids",
        "1",
        "--router",
        "language-prior",
    ]);
    assert!(!ok && err.contains("expert_languages"), "{err}");
    let (ok, err) = cli(&["logits", "--model", m, "--ids", "1", "--router", "expert"]);
    assert!(!ok && err.contains("expert=N"), "{err}");
    let (ok, err) = cli(&[
        "logits", "--model", m, "--ids", "1,2", "--router", "expert=3",
    ]);
    assert!(ok, "{err}");
}

/// Generates 5 tokens from `prompt()` logging routes, with the prompt fed `chunk` tokens at a
/// time.
fn routed_generation(router: Option<RouterChoice>, chunk: usize) -> generate::Generation {
    let opened = open_with(
        &tiny_mixtral(),
        LoadOptions {
            router,
            prefill_chunk: chunk,
            ..Default::default()
        },
        GpuOptions::default(),
    );
    let options = GenerateOptions {
        max_tokens: 5,
        record_routes: true,
        ..Default::default()
    };
    pollster::block_on(generate::generate(
        &opened.model,
        None,
        &prompt(),
        &options,
        &mut |_, _| true,
    ))
    .unwrap()
}

#[test]
fn generation_logs_the_experts_of_every_prompt_and_output_token() {
    let ids = prompt();
    // Chunks of 4 split the prompt, so every chunk's routes must be read before the next.
    let g = routed_generation(None, 4);
    let routes = g.routes.as_ref().expect("routes");
    assert_eq!(g.output_ids.len(), 5);
    assert_eq!(
        routes.len(),
        ids.len() + 5,
        "one entry per prompt and output token"
    );
    let opened = open(&tiny_mixtral());
    let c = &opened.model.config;
    for (t, layers) in routes.iter().enumerate() {
        assert_eq!(layers.len(), c.num_layers, "token {t}");
        for slots in layers {
            assert_eq!(slots.len(), c.experts_per_token, "token {t}");
            assert!(
                slots.iter().all(|&e| (e as usize) < c.num_experts),
                "{slots:?}"
            );
            let mut distinct = slots.clone();
            distinct.dedup();
            assert_eq!(distinct.len(), slots.len(), "token {t} chose {slots:?}");
        }
    }

    // The whole sequence fed at once routes each token as generation logged it.
    let mut s = opened.model.session().unwrap();
    s.record_routes(&opened.model.ctx, c).unwrap();
    let mut all = ids.clone();
    all.extend(&g.output_ids);
    pollster::block_on(opened.model.logits_last(&mut s, &all)).unwrap();
    let per_layer = pollster::block_on(opened.model.last_routes(&s)).unwrap();
    let sorted = |mut v: Vec<u32>| {
        v.sort_unstable();
        v
    };
    for (t, layers) in routes.iter().enumerate() {
        for (l, slots) in layers.iter().enumerate() {
            assert_eq!(
                sorted(slots.clone()),
                sorted(per_layer[l][t].clone()),
                "token {t}, layer {l}"
            );
        }
    }

    // Logging changes nothing generated, and the prompt's chunking changes no route.
    let whole = routed_generation(None, 128);
    assert_eq!(whole.output_ids, g.output_ids);
    assert_eq!(whole.routes, g.routes);

    // A forced expert is what every token logs first.
    let forced = routed_generation(Some(RouterChoice::Expert(2)), 4);
    for layers in forced.routes.as_ref().expect("routes") {
        assert!(layers.iter().all(|slots| slots[0] == 2), "{layers:?}");
    }
}
