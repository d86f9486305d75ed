//! `inspect` and `delta-stats` against independent computations: parameter counts from the
//! config formula, languages and provenance read back from real upcycle and graft outputs,
//! and Δ's norms recomputed here in f64 from the tensors.

mod common;
mod graft_models;

use std::collections::BTreeMap;
use std::path::Path;

use graft_models::{tiny, upcycled, Model};
use moegraft::checkpoint::summary::{summarize, ModelSummary};
use moegraft::checkpoint::{Checkpoint, DType, ModelFiles};
use moegraft::gpu::{GpuContext, GpuOptions};
use moegraft::graft::plan::GraftOptions;
use moegraft::graft::run::{graft_dirs, GraftInputs};
use moegraft::graft::stats::{delta_stats, delta_stats_sliced, DeltaStats};
use moegraft::graft::stats_rows::token_row_deltas;
use moegraft::graft::upcycle::{upcycle, ExpertSource, UpcycleOptions, UpcycleRouter};
use serde_json::Value;

fn checkpoint(dir: &Path) -> Checkpoint {
    pollster::block_on(Checkpoint::open(ModelFiles::from_dir(dir).expect("dir"))).expect("open")
}

fn summary(dir: &Path) -> ModelSummary {
    pollster::block_on(summarize(&checkpoint(dir))).expect("summarize")
}

fn stats(base: &Path, instruct: &Path) -> moegraft::Result<DeltaStats> {
    pollster::block_on(delta_stats(&checkpoint(base), &checkpoint(instruct)))
}

/// Parameters from config.json by the architecture's formula: (total, active, embeddings).
fn formula(config: &Value) -> (u64, u64, u64) {
    let n = |k: &str| {
        config[k]
            .as_u64()
            .unwrap_or_else(|| panic!("config has no {k}"))
    };
    let (v, h, i, l) = (
        n("vocab_size"),
        n("hidden_size"),
        n("intermediate_size"),
        n("num_hidden_layers"),
    );
    let heads = n("num_attention_heads");
    let head_dim = config["head_dim"].as_u64().unwrap_or(h / heads);
    let (q, kv) = (heads * head_dim, n("num_key_value_heads") * head_dim);
    let tied = config["tie_word_embeddings"].as_bool().unwrap_or(false);
    let embeddings = v * h * if tied { 1 } else { 2 };
    let biases = if config["model_type"] == "qwen2" {
        q + 2 * kv
    } else {
        0
    };
    let attention = h * q + 2 * h * kv + q * h + biases;
    let ffn = 3 * h * i;
    let (experts, k) = match config["model_type"].as_str() {
        Some("mixtral") => (n("num_local_experts"), n("num_experts_per_tok")),
        _ => (1, 1),
    };
    let router = if experts > 1 { experts * h } else { 0 };
    let layer_fixed = attention + 2 * h + router;
    let total = embeddings + h + l * (layer_fixed + experts * ffn);
    let active = embeddings + h + l * (layer_fixed + k * ffn);
    (total, active, embeddings)
}

#[test]
fn parameter_counts_match_the_config_formula() {
    for name in ["tiny-llama", "tiny-qwen2", "tiny-mixtral"] {
        let dir = tiny(name);
        let s = summary(&dir);
        let (total, active, embeddings) = formula(&common::json(&dir.join("config.json")));
        let p = s.parameters;
        assert_eq!(p.total, total, "{name}: total");
        assert_eq!(p.active, active, "{name}: active");
        assert_eq!(p.embedding, embeddings, "{name}: embeddings");
        assert_eq!(p.active_non_embedding, active - embeddings, "{name}");
        if name == "tiny-mixtral" {
            assert!(p.active < p.total, "top-2 of 4 experts is not all of them");
            let moe = s.moe.as_ref().expect("MoE");
            assert_eq!((moe.experts, moe.experts_per_token), (4, 2));
            assert_eq!(moe.expert_parameters, 2 * 4 * 3 * 64 * 64);
            assert_eq!(moe.router, "learned");
        } else {
            assert_eq!(p.active, p.total, "{name}: dense");
            assert!(s.moe.is_none());
        }
    }
}

#[test]
fn sharded_bf16_dtypes_and_files() {
    let dir = tiny("tiny-qwen2");
    let s = summary(&dir);
    assert_eq!((s.architecture.as_str(), s.layers), ("qwen2", 2));
    assert_eq!((s.attention_heads, s.kv_heads, s.head_dim), (4, 2, 12));
    assert_eq!(s.config_dtype.as_deref(), Some("bfloat16"));
    assert_eq!(s.dtypes.len(), 1);
    let d = &s.dtypes[0];
    assert_eq!(d.dtype, "BF16");
    assert_eq!(d.parameters, s.parameters.total);
    assert_eq!(d.bytes, 2 * s.parameters.total);
    assert_eq!(d.tensors, s.tensors);
    let (mut count, mut bytes, mut shards, mut shard_bytes) = (0, 0, 0, 0);
    for entry in std::fs::read_dir(&dir).expect("ls") {
        let entry = entry.expect("entry");
        let size = entry.metadata().expect("stat").len();
        count += 1;
        bytes += size;
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(".safetensors")
        {
            shards += 1;
            shard_bytes += size;
        }
    }
    assert_eq!(s.files.count, count);
    assert_eq!(s.files.bytes, bytes);
    assert_eq!(
        (s.files.weight_files, s.files.weight_bytes),
        (shards, shard_bytes)
    );
    assert_eq!(shards, 3);
    let text = s.to_string();
    for needle in ["qwen2 (Qwen2ForCausalLM), dense", "BF16", "weight files"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn upcycled_model_reports_its_experts_languages() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("moe");
    let llama = tiny("tiny-llama");
    let mut samples = Vec::new();
    for (lang, text) in [
        ("en", "The quick brown fox jumps over the lazy dog."),
        ("ja", "今日はとても良い天気ですね。"),
        (
            "de",
            "Der schnelle braune Fuchs springt über den faulen Hund.",
        ),
    ] {
        let path = tmp.path().join(format!("{lang}.txt"));
        std::fs::write(&path, text).expect("sample");
        samples.push((lang.to_string(), path));
    }
    let expert = |langs: &[&str]| ExpertSource {
        dir: llama.clone(),
        languages: langs.iter().map(|s| s.to_string()).collect(),
    };
    upcycle(&UpcycleOptions {
        base: llama.clone(),
        base_languages: vec!["en".into()],
        experts: vec![expert(&["ja"]), expert(&["de"])],
        router: UpcycleRouter::LanguagePrior,
        samples,
        top_k: 1,
        temperature: 1.0,
        average_non_ffn: false,
        out: out.clone(),
        gpu: GpuOptions::default(),
    })
    .expect("upcycle");

    let s = summary(&out);
    let moe = s.moe.as_ref().expect("MoE");
    let langs: Vec<Vec<&str>> = moe
        .expert_languages
        .iter()
        .map(|l| l.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(langs, vec![vec!["en"], vec!["ja"], vec!["de"]]);
    assert_eq!((moe.experts, moe.experts_per_token), (3, 1));
    assert_eq!(
        (moe.router.as_str(), moe.routing.as_str()),
        ("language-prior", "language-prior")
    );
    assert_eq!(moe.expert_sources.len(), 3);
    assert!(moe.expert_sources.iter().all(|p| p.ends_with("tiny-llama")));
    // Three experts of the dense FFN; top-1: the active model is the dense model.
    let dense = summary(&llama).parameters;
    let (h, l) = (64u64, 2u64);
    assert_eq!(
        s.parameters.active,
        dense.total + l * 3 * h,
        "dense + routers"
    );
    assert!(s.provenance.is_none());
    let text = s.to_string();
    assert!(text.contains("expert 1") && text.contains("ja"), "{text}");
    let v = serde_json::to_value(&s).expect("json");
    assert_eq!(v["moe"]["expert_languages"][2][0], "de");
}

#[test]
fn graft_output_reports_its_provenance() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base_dir = tiny("tiny-llama");
    let base = Model::read(&base_dir);
    let (inst, target) = (tmp.path().join("inst"), tmp.path().join("moe"));
    base.perturbed(3, 0.02).write(&inst, DType::F32, &base_dir);
    upcycled(&base, 11).write(&target, DType::F16, &base_dir);
    let out = tmp.path().join("out");
    let ctx = pollster::block_on(GpuContext::new(GpuOptions::default())).expect("GPU");
    let options = GraftOptions {
        alpha: 0.5,
        expert_alpha: Some(vec![1.0, 0.25, 0.25, 0.25]),
        dtype: Some(DType::BF16),
    };
    let inputs = GraftInputs {
        base: &base_dir,
        instruct: &inst,
        target: &target,
    };
    pollster::block_on(graft_dirs(&ctx, &inputs, &out, &options, u64::MAX)).expect("graft");

    let s = summary(&out);
    let p = s.provenance.as_ref().expect("moegraft.json");
    assert_eq!(p.method.as_deref(), Some("deltamoe"));
    assert_eq!(p.alpha, Some(0.5));
    assert_eq!(p.expert_alpha, vec![1.0, 0.25, 0.25, 0.25]);
    assert_eq!(p.dtype.as_deref(), Some("bfloat16"));
    assert_eq!(p.inputs["base"], base_dir.display().to_string());
    assert_eq!(p.inputs["target"], target.display().to_string());
    assert_eq!(s.dtypes[0].dtype, "BF16");
    let text = s.to_string();
    for needle in ["deltamoe", "0.25", "provenance"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

/// Per-tensor f64 sums computed here: (Σd², Σb², Σi², Σbi, max|d|, n).
type Sums = (f64, f64, f64, f64, f64, u64);

fn sums(b: &[f32], i: &[f32]) -> Sums {
    let mut s = (0.0, 0.0, 0.0, 0.0, 0.0f64, b.len() as u64);
    for (&b, &i) in b.iter().zip(i) {
        let (b, i) = (b as f64, i as f64);
        s.0 += (i - b) * (i - b);
        s.1 += b * b;
        s.2 += i * i;
        s.3 += b * i;
        s.4 = s.4.max((i - b).abs());
    }
    s
}

fn add(a: Sums, b: Sums) -> Sums {
    (
        a.0 + b.0,
        a.1 + b.1,
        a.2 + b.2,
        a.3 + b.3,
        a.4.max(b.4),
        a.5 + b.5,
    )
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1e-12),
        "{what}: got {got}, want {want}"
    );
}

/// Compares one JSON entry of `delta-stats --json` with sums computed here.
fn check(entry: &Value, s: Sums, what: &str) {
    let f = |k: &str| {
        entry[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: no {k}: {entry}"))
    };
    assert_eq!(entry["elements"].as_u64(), Some(s.5), "{what}");
    close(f("delta_norm"), s.0.sqrt(), &format!("{what} ‖Δ‖"));
    close(f("base_norm"), s.1.sqrt(), &format!("{what} ‖θ_base‖"));
    close(f("instruct_norm"), s.2.sqrt(), &format!("{what} ‖θ_inst‖"));
    close(
        f("relative_norm"),
        s.0.sqrt() / s.1.sqrt(),
        &format!("{what} rel"),
    );
    close(
        f("cosine"),
        s.3 / (s.1.sqrt() * s.2.sqrt()),
        &format!("{what} cos"),
    );
    assert_eq!(f("max_abs_delta"), s.4, "{what} max|Δ|");
}

#[test]
fn delta_stats_match_an_independent_f64_computation() {
    // Sharded bf16 qwen2 with q/k/v biases; the instruct side is written in f32.
    let tmp = tempfile::tempdir().expect("tempdir");
    let base_dir = tiny("tiny-qwen2");
    let base = Model::read(&base_dir);
    let inst_dir = tmp.path().join("inst");
    base.perturbed(5, 0.03)
        .write(&inst_dir, DType::F32, &base_dir);
    let inst = Model::read(&inst_dir);

    let stats = stats(&base_dir, &inst_dir).expect("delta-stats");
    let v = stats.to_json();
    assert_eq!(v["architecture"], "qwen2");
    assert!(v["vocab"].is_null());
    let tensors = v["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), base.tensors.len());

    let mut total = (0.0, 0.0, 0.0, 0.0, 0.0, 0);
    let mut families: BTreeMap<String, Sums> = BTreeMap::new();
    let mut layers: BTreeMap<u64, Sums> = BTreeMap::new();
    for (name, _, b) in &base.tensors {
        let s = sums(b, inst.get(name));
        let entry = tensors
            .iter()
            .find(|t| t["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no entry for {name}"));
        check(entry, s, name);
        total = add(total, s);
        let family = entry["family"].as_str().expect("family").to_string();
        let zero = (0.0, 0.0, 0.0, 0.0, 0.0, 0);
        let f = families.entry(family).or_insert(zero);
        *f = add(*f, s);
        if let Some(layer) = entry["layer"].as_u64() {
            let l = layers.entry(layer).or_insert(zero);
            *l = add(*l, s);
        }
    }
    check(&v["total"], total, "total");
    for (family, s) in &families {
        check(&v["by_family"][family], *s, family);
    }
    for want in [
        "q_proj.bias",
        "k_proj.bias",
        "v_proj.bias",
        "embed_tokens",
        "lm_head",
        "norm",
    ] {
        assert!(families.contains_key(want), "family {want} missing");
    }
    let by_layer = v["by_layer"].as_array().expect("by_layer");
    assert_eq!(by_layer.len(), 2);
    for entry in by_layer {
        let layer = entry["layer"].as_u64().expect("layer");
        check(&entry["total"], layers[&layer], &format!("layer {layer}"));
    }

    // Slices that cut through tensors sum to the same numbers as whole tensors.
    let sliced = pollster::block_on(delta_stats_sliced(
        &checkpoint(&base_dir),
        &checkpoint(&inst_dir),
        1000,
    ))
    .expect("sliced");
    let t = (sliced.total(), stats.total());
    assert_eq!(t.0.elements, t.1.elements);
    close(t.0.delta_sq, t.1.delta_sq, "sliced Σd²");
    close(t.0.dot, t.1.dot, "sliced Σbi");
    assert_eq!(t.0.max_abs_delta, t.1.max_abs_delta);

    let text = stats.to_string();
    for needle in ["by layer", "q.b", "lm_head", "total"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn a_larger_instruct_vocabulary_is_compared_on_the_overlap() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base_dir = tiny("tiny-llama");
    let base = Model::read(&base_dir);
    let mut inst = base.perturbed(9, 0.01);
    let embed = "model.embed_tokens.weight";
    let extra = 8;
    for (name, shape, values) in inst.tensors.iter_mut() {
        if name == embed {
            shape[0] += extra;
            values.extend((0..extra * shape[1]).map(|k| k as f32 * 0.01));
        }
    }
    inst.config["vocab_size"] = (400 + extra).into();
    let inst_dir = tmp.path().join("inst");
    inst.write(&inst_dir, DType::F32, &base_dir);

    let stats = stats(&base_dir, &inst_dir).expect("delta-stats");
    let v = stats.to_json();
    assert_eq!(v["vocab"]["base_rows"], 400);
    assert_eq!(v["vocab"]["instruct_rows"], 400 + extra);
    assert_eq!(v["vocab"]["compared_rows"], 400);
    let b = base.get(embed);
    let i = &inst.get(embed)[..b.len()];
    check(
        &v["by_family"]["embed_tokens"],
        sums(b, i),
        "embed_tokens overlap",
    );
    assert!(stats.to_string().contains("vocabularies differ"));
}

#[test]
fn mismatched_models_are_refused_with_the_mismatches_listed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base_dir = tiny("tiny-llama");
    let base = Model::read(&base_dir);
    let missing = "model.layers.1.mlp.up_proj.weight";
    let mut inst = base.without(missing);
    let q = "model.layers.0.self_attn.q_proj.weight";
    for (name, shape, values) in inst.tensors.iter_mut() {
        if name == q {
            shape[0] -= 1;
            values.truncate(shape[0] * shape[1]);
        }
    }
    inst.tensors
        .push(("model.extra.weight".into(), vec![3], vec![1.0; 3]));
    let inst_dir = tmp.path().join("inst");
    inst.write(&inst_dir, DType::F32, &base_dir);

    let e = stats(&base_dir, &inst_dir)
        .expect_err("mismatch")
        .to_string();
    assert!(e.contains("3 mismatches"), "{e}");
    assert!(e.contains(&format!("tensor '{missing}' is missing")), "{e}");
    assert!(
        e.contains(&format!("tensor '{q}' has shape [63, 64]")),
        "{e}"
    );
    assert!(e.contains("tensor 'model.extra.weight' is not in"), "{e}");

    let e = stats(&base_dir, &tiny("tiny-mistral"))
        .expect_err("arch")
        .to_string();
    assert!(
        e.contains("must share an architecture") && e.contains("intermediate_size"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

/// `delta-stats --text`: Δ over each language's own embedding rows. An instruct that moved
/// rows 10 and 12 only; en's own tokens are 10 and 11, de's 12 (13 is too rare to count):
/// the sums over exactly those rows, taken here.
#[test]
fn token_row_deltas_cover_each_languages_own_rows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base_dir = tiny("tiny-llama");
    let base = Model::read(&base_dir);
    let name = "model.embed_tokens.weight";
    let (_, shape, _) = base
        .tensors
        .iter()
        .find(|t| t.0 == name)
        .expect("embedding");
    let width = shape[1];
    let mut inst = base.clone();
    for (n, _, v) in inst.tensors.iter_mut() {
        if n == name {
            for row in [10, 12] {
                for (k, x) in v[row * width..(row + 1) * width].iter_mut().enumerate() {
                    *x += 0.01 * (k as f32 + 1.0);
                }
            }
        }
    }
    let inst_dir = tmp.path().join("inst");
    inst.write(&inst_dir, DType::F32, &base_dir);
    let texts = vec![
        ("en".to_string(), [vec![10u32; 6], vec![11; 5]].concat()),
        (
            "de".to_string(),
            [vec![12u32; 9], vec![13; 4], vec![10; 1]].concat(),
        ),
    ];
    let rows = pollster::block_on(token_row_deltas(
        &checkpoint(&base_dir),
        &checkpoint(&inst_dir),
        &texts,
    ))
    .expect("token rows");
    let rows_of = |lang_rows: &[usize]| {
        let (b, i) = (base.get(name), inst.get(name));
        let pick = |v: &[f32]| -> Vec<f32> {
            lang_rows
                .iter()
                .flat_map(|&r| v[r * width..(r + 1) * width].to_vec())
                .collect()
        };
        sums(&pick(b), &pick(i))
    };
    for (l, (lang, own, tokens)) in [("en", vec![10, 11], 11), ("de", vec![12], 14)]
        .into_iter()
        .enumerate()
    {
        let got = &rows.languages[l];
        assert_eq!(
            (got.lang.as_str(), got.rows, got.tokens),
            (lang, own.len(), tokens)
        );
        let entry = serde_json::to_value(got.tensors[name]).expect("json");
        check(&entry, rows_of(&own), &format!("{lang} rows"));
    }
}
