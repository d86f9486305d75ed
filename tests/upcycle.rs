//! `moegraft upcycle` on inputs built here from tiny-llama with the crate's writer: an MoE of
//! identical experts is the dense model, the layout is Mixtral's and loads, centroid rows are
//! the normalised mean router input, mismatched experts fail before anything is written, and
//! the language prior sends Japanese tokens to the ja expert.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use moegraft::checkpoint::moegraft_section::RouterChoice;
use moegraft::checkpoint::writer::{
    write_dir_atomically, write_file, write_json, ModelWriter, TensorSpec, DEFAULT_MAX_SHARD_BYTES,
};
use moegraft::checkpoint::{Checkpoint, DType, ModelFiles};
use moegraft::gpu::GpuOptions;
use moegraft::graft::centroid::centroid_row;
use moegraft::graft::upcycle::{upcycle, ExpertSource, UpcycleOptions, UpcycleRouter};
use moegraft::model::routing::RouterMode;
use moegraft::model::script::{text_script, Script};
use moegraft::model::{LoadOptions, LogitsWanted};

fn tiny_llama() -> PathBuf {
    fixtures().join("tiny/tiny-llama")
}

fn options(out: &Path, experts: Vec<ExpertSource>) -> UpcycleOptions {
    UpcycleOptions {
        base: tiny_llama(),
        base_languages: vec!["en".into()],
        experts,
        router: UpcycleRouter::Centroid,
        samples: Vec::new(),
        top_k: 1,
        temperature: 1.0,
        average_non_ffn: false,
        out: out.to_path_buf(),
        gpu: GpuOptions::default(),
    }
}

fn expert(dir: &Path, langs: &[&str]) -> ExpertSource {
    ExpertSource {
        dir: dir.to_path_buf(),
        languages: langs.iter().map(|s| s.to_string()).collect(),
    }
}

fn samples(dir: &Path) -> Vec<(String, PathBuf)> {
    let texts = [
        ("en", "The quick brown fox jumps over the lazy dog. Once upon a time there was a small robot who loved to read books."),
        ("ja", "今日はとても良い天気ですね。私は本を読むのが好きです。"),
        ("de", "Der schnelle braune Fuchs springt über den faulen Hund."),
    ];
    texts
        .iter()
        .map(|(lang, text)| {
            let path = dir.join(format!("{lang}.txt"));
            std::fs::write(&path, text).unwrap();
            (lang.to_string(), path)
        })
        .collect()
}

fn all_logits(dir: &Path, router: Option<RouterChoice>, ids: &[u32]) -> Vec<f32> {
    let opened = open_with(
        dir,
        LoadOptions {
            router,
            ..Default::default()
        },
        GpuOptions::default(),
    );
    let model = &opened.model;
    let mut s = model.session_with(LogitsWanted::All).unwrap();
    pollster::block_on(model.logits_all(&mut s, ids)).unwrap()
}

fn prompt_ids(case: usize) -> Vec<u32> {
    let reference = json(&fixtures().join("tiny/reference.json"));
    u32s(&reference["models"]["tiny-llama"]["cases"][case]["input_ids"])
}

/// Two experts that are copies of `base`'s FFN (ja, de), top-2, into `dir`/moe.
fn identical_experts(base: &Path, dir: &Path) -> (PathBuf, UpcycleOptions) {
    let out = dir.join("moe");
    let mut o = options(&out, vec![expert(base, &["ja"]), expert(base, &["de"])]);
    o.base = base.to_path_buf();
    o.samples = samples(dir);
    o.top_k = 2;
    (out, o)
}

/// (a) Experts that are all copies of the base FFN make the MoE the dense model, whatever the
/// router picks and however many experts each token mixes: llama → Mixtral, qwen2 (q/k/v
/// biases) → qwen2_moe with its zero shared expert, qwen3 (q/k norms) → qwen3_moe.
#[test]
fn identical_experts_give_the_dense_logits() {
    for (dense, arch) in [
        ("tiny-llama", "mixtral"),
        ("tiny-qwen2", "qwen2_moe"),
        ("tiny-qwen3", "qwen3_moe"),
    ] {
        let base = fixtures().join("tiny").join(dense);
        let tmp = tempfile::tempdir().unwrap();
        let (out, mut o) = identical_experts(&base, tmp.path());
        o.router = UpcycleRouter::LanguagePrior;
        upcycle(&o).unwrap();
        assert_eq!(json(&out.join("config.json"))["model_type"], arch);
        let mut ids = prompt_ids(1);
        ids.extend(prompt_ids(2));
        let dense_logits = all_logits(&base, None, &ids);
        for router in [
            None,
            Some(RouterChoice::Learned),
            Some(RouterChoice::LanguagePrior),
            Some(RouterChoice::Expert(2)),
        ] {
            let moe = all_logits(&out, router, &ids);
            let diff = max_abs_diff(&moe, &dense_logits);
            assert!(
                diff < 1e-4,
                "{dense} router {router:?}: max |Δlogit| {diff}"
            );
        }
    }
}

/// What upcycle writes is still the layout transformers was seen to load, with the dense
/// model's logits from identical experts (tools/check_upcycle.py, which ran the CLI with these
/// settings): the config keys it builds the MoE from and every tensor's name, shape and dtype.
#[test]
fn writes_the_layouts_transformers_was_checked_to_load() {
    let checked = json(&fixtures().join("upcycle/transformers.json"));
    let tolerance = checked["tolerance"].as_f64().unwrap();
    let models = checked["models"].as_object().unwrap();
    assert_eq!(models.len(), 3);
    for (dense, want) in models {
        let diff = want["max_abs_logit_diff"].as_f64().unwrap();
        assert!(
            diff <= tolerance,
            "{dense}: transformers saw |Δlogit| {diff}"
        );
        let base = fixtures().join("tiny").join(dense);
        let tmp = tempfile::tempdir().unwrap();
        let (out, o) = identical_experts(&base, tmp.path());
        upcycle(&o).unwrap();
        let config = json(&out.join("config.json"));
        for (key, value) in want["config"].as_object().unwrap() {
            assert_eq!(&config[key], value, "{dense}: config.json '{key}'");
        }
        let ckpt =
            pollster::block_on(Checkpoint::open(ModelFiles::from_dir(&out).unwrap())).unwrap();
        let mut tensors: Vec<serde_json::Value> = ckpt
            .tensor_names()
            .map(|n| {
                let (_, info) = ckpt.info(n).unwrap();
                serde_json::json!([n, info.shape, info.dtype_name])
            })
            .collect();
        tensors.sort_by_key(|t| t[0].as_str().unwrap().to_string());
        assert_eq!(
            &serde_json::Value::Array(tensors),
            &want["tensors"],
            "{dense}: tensors"
        );
    }
}

/// Gemma has no MoE layout engines load: refused with the reason, nothing written.
#[test]
fn gemma_is_refused_with_the_reason() {
    let base = fixtures().join("tiny/tiny-gemma3");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moe");
    let mut o = options(&out, vec![expert(&base, &["ja"])]);
    o.base = base;
    o.samples = samples(tmp.path());
    let e = upcycle(&o).unwrap_err().to_string();
    assert!(
        e.contains("gemma3_text") && e.contains("no MoE layout"),
        "{e}"
    );
    assert!(!out.exists());
}

/// qwen2 → qwen2_moe in the names and keys transformers and vLLM read: biases kept, every
/// layer an MoE of the dense FFN's width renormalised top-k, a shared expert of zeros.
#[test]
fn writes_a_qwen2_moe_layout_that_loads() {
    let base = fixtures().join("tiny/tiny-qwen2");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moe");
    let mut o = options(&out, vec![expert(&base, &["ja"])]);
    o.base = base.clone();
    o.samples = samples(tmp.path());
    upcycle(&o).unwrap();
    let config = json(&out.join("config.json"));
    assert_eq!(config["architectures"][0], "Qwen2MoeForCausalLM");
    assert_eq!(config["num_experts"], 2);
    assert_eq!(config["norm_topk_prob"], true);
    assert_eq!(config["shared_expert_intermediate_size"], 1);
    let ckpt = pollster::block_on(Checkpoint::open(ModelFiles::from_dir(&out).unwrap())).unwrap();
    let (h, i) = (ckpt.config.hidden_size, ckpt.config.intermediate_size);
    assert_eq!(ckpt.config.expert_intermediate_size, i);
    for l in 0..ckpt.config.num_layers {
        let m = format!("model.layers.{l}.mlp");
        ckpt.expect_shape(&format!("{m}.gate.weight"), &[2, h])
            .unwrap();
        ckpt.expect_shape(&format!("{m}.experts.1.up_proj.weight"), &[i, h])
            .unwrap();
        ckpt.expect_shape(&format!("{m}.shared_expert.down_proj.weight"), &[h, 1])
            .unwrap();
        let gate =
            pollster::block_on(ckpt.read_f32(&format!("{m}.shared_expert_gate.weight"))).unwrap();
        assert!(gate.iter().all(|v| *v == 0.0));
        assert!(ckpt.has(&format!("model.layers.{l}.self_attn.q_proj.bias")));
        assert!(!ckpt.has(&format!("{m}.up_proj.weight")));
    }
}

/// (b) Mixtral's config and tensor names, every FFN gone, and moegraft runs it as an MoE.
#[test]
fn writes_a_mixtral_layout_that_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moe");
    let mut o = options(&out, vec![expert(&tiny_llama(), &["ja"])]);
    o.samples = samples(tmp.path());
    let summary = upcycle(&o).unwrap();
    assert_eq!(summary.experts, 2);
    let config = json(&out.join("config.json"));
    assert_eq!(config["model_type"], "mixtral");
    assert_eq!(config["architectures"][0], "MixtralForCausalLM");
    assert_eq!(config["num_local_experts"], 2);
    assert_eq!(config["num_experts_per_tok"], 1);
    assert_eq!(config["moegraft"]["expert_languages"][1][0], "ja");
    assert_eq!(config["moegraft"]["router"], "centroid");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f} not copied");
    }
    let ckpt = pollster::block_on(Checkpoint::open(ModelFiles::from_dir(&out).unwrap())).unwrap();
    assert!(!ckpt.tensor_names().any(|n| n.contains(".mlp.")));
    let base = pollster::block_on(Checkpoint::open(
        ModelFiles::from_dir(&tiny_llama()).unwrap(),
    ))
    .unwrap();
    let (h, i) = (base.config.hidden_size, base.config.intermediate_size);
    for l in 0..base.config.num_layers {
        let m = format!("model.layers.{l}.block_sparse_moe");
        ckpt.expect_shape(&format!("{m}.gate.weight"), &[2, h])
            .unwrap();
        for e in 0..2 {
            ckpt.expect_shape(&format!("{m}.experts.{e}.w1.weight"), &[i, h])
                .unwrap();
            ckpt.expect_shape(&format!("{m}.experts.{e}.w3.weight"), &[i, h])
                .unwrap();
            ckpt.expect_shape(&format!("{m}.experts.{e}.w2.weight"), &[h, i])
                .unwrap();
        }
        // Expert 1 is the expert checkpoint's FFN, bit for bit.
        let w2 = pollster::block_on(ckpt.read(&format!("{m}.experts.1.w2.weight"))).unwrap();
        let down = pollster::block_on(base.read(&format!("model.layers.{l}.mlp.down_proj.weight")))
            .unwrap();
        assert_eq!(w2.bytes, down.bytes);
    }
    let opened = open(&out);
    assert!(opened.model.config.is_moe());
    assert!(matches!(opened.model.router_mode(), RouterMode::Learned));
}

/// (c) Every router row is the normalised mean of that layer's captured router input over the
/// expert's sample, times the temperature; rows of different samples differ.
#[test]
fn centroid_rows_are_normalised_mean_router_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moe");
    let mut o = options(&out, vec![expert(&tiny_llama(), &["ja"])]);
    o.samples = samples(tmp.path());
    o.temperature = 2.5;
    upcycle(&o).unwrap();

    let base = open(&tiny_llama());
    let (model, tokenizer) = (&base.model, base.tokenizer.as_ref().unwrap());
    let c = &model.config;
    let moe = pollster::block_on(Checkpoint::open(ModelFiles::from_dir(&out).unwrap())).unwrap();
    for (e, lang) in ["en", "ja"].iter().enumerate() {
        let text = std::fs::read_to_string(tmp.path().join(format!("{lang}.txt"))).unwrap() + "\n";
        let ids = tokenizer.encode(&text, false).unwrap();
        // One chunk holds the whole sample: capture it directly.
        let mut s = model.session().unwrap();
        assert!(ids.len() <= s.scratch.chunk);
        s.capture_router_inputs(&model.ctx, c).unwrap();
        pollster::block_on(model.logits_last(&mut s, &ids)).unwrap();
        let captured = pollster::block_on(model.last_captured(&s)).unwrap();
        for (l, layer) in captured.iter().enumerate() {
            let mut mean = vec![0.0f64; c.hidden_size];
            for row in layer.chunks(c.hidden_size) {
                for (m, v) in mean.iter_mut().zip(row) {
                    *m += *v as f64 / ids.len() as f64;
                }
            }
            let want = centroid_row(&mean, 2.5);
            let norm: f32 = want.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 2.5).abs() < 1e-4, "row norm {norm}");
            let router = pollster::block_on(
                moe.read_f32(&format!("model.layers.{l}.block_sparse_moe.gate.weight")),
            )
            .unwrap();
            let got = &router[e * c.hidden_size..(e + 1) * c.hidden_size];
            let diff = max_abs_diff(got, &want);
            assert!(diff < 1e-4, "layer {l} expert {e}: {diff}");
        }
    }
}

/// The capture API itself against a CPU forward: for a one-token prompt attention returns the
/// token's own value vector, so layer 0's router input is computable by hand.
#[test]
fn captured_router_input_matches_a_cpu_first_layer() {
    let base = open(&tiny_llama());
    let model = &base.model;
    let c = model.config.clone();
    let ckpt = pollster::block_on(Checkpoint::open(
        ModelFiles::from_dir(&tiny_llama()).unwrap(),
    ))
    .unwrap();
    let read = |n: &str| pollster::block_on(ckpt.read_f32(n)).unwrap();
    let token = 313usize;
    let h = c.hidden_size;
    let x: Vec<f32> = read("model.embed_tokens.weight")[token * h..(token + 1) * h].to_vec();
    let rms = |v: &[f32], w: &[f32]| -> Vec<f32> {
        let ms = v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>() / v.len() as f64;
        let r = 1.0 / (ms + c.rms_norm_eps as f64).sqrt();
        v.iter()
            .zip(w)
            .map(|(a, g)| (*a as f64 * r) as f32 * g)
            .collect()
    };
    let matvec = |w: &[f32], v: &[f32]| -> Vec<f32> {
        w.chunks(v.len())
            .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
            .collect()
    };
    let normed = rms(&x, &read("model.layers.0.input_layernorm.weight"));
    let vv = matvec(&read("model.layers.0.self_attn.v_proj.weight"), &normed);
    // Each query head reads its kv head's value (grouped-query attention).
    let group = c.num_heads / c.num_kv_heads;
    let attn: Vec<f32> = (0..c.num_heads)
        .flat_map(|head| {
            let kv = head / group;
            vv[kv * c.head_dim..(kv + 1) * c.head_dim].to_vec()
        })
        .collect();
    let o = matvec(&read("model.layers.0.self_attn.o_proj.weight"), &attn);
    let x1: Vec<f32> = x.iter().zip(&o).map(|(a, b)| a + b).collect();
    let want = rms(&x1, &read("model.layers.0.post_attention_layernorm.weight"));

    let mut s = model.session().unwrap();
    s.capture_router_inputs(&model.ctx, &c).unwrap();
    pollster::block_on(model.logits_last(&mut s, &[token as u32])).unwrap();
    let got = pollster::block_on(model.last_captured(&s)).unwrap();
    let diff = max_abs_diff(&got[0], &want);
    assert!(diff < 1e-4, "layer 0 router input: {diff}");
}

/// Copies tiny-llama into `out`, keeping the tensors `keep` accepts (f32 values rewritten by
/// `scale`: name → factor) and with `edit_config` applied to its config.
fn variant(
    out: &Path,
    edit_config: impl FnOnce(&mut serde_json::Value),
    keep: impl Fn(&str) -> bool,
) {
    variant_scaled(out, edit_config, keep, |_| 1.0)
}

fn variant_scaled(
    out: &Path,
    edit_config: impl FnOnce(&mut serde_json::Value),
    keep: impl Fn(&str) -> bool,
    scale: impl Fn(&str) -> f32,
) {
    let src = tiny_llama();
    let ckpt = pollster::block_on(Checkpoint::open(ModelFiles::from_dir(&src).unwrap())).unwrap();
    let names: Vec<String> = ckpt
        .tensor_names()
        .filter(|n| keep(n))
        .map(str::to_string)
        .collect();
    let tensors: Vec<_> = names
        .iter()
        .map(|n| {
            let mut t = pollster::block_on(ckpt.read(n)).unwrap();
            assert_eq!(t.dtype, DType::F32, "tiny-llama is f32");
            let f = scale(n);
            let scaled: Vec<f32> = t.to_f32().iter().map(|v| v * f).collect();
            t.bytes = bytemuck::cast_slice(&scaled).to_vec();
            t
        })
        .collect();
    let mut config = ckpt.config.raw.clone();
    edit_config(&mut config);
    write_dir_atomically(out, |dir| {
        let specs = tensors
            .iter()
            .map(|t| TensorSpec::new(&t.name, t.dtype, t.shape.clone()))
            .collect();
        let mut w = ModelWriter::new(dir, specs, DEFAULT_MAX_SHARD_BYTES)?;
        for t in &tensors {
            w.write_tensor(&t.name, &t.bytes)?;
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

fn assert_nothing_written(parent: &Path, out: &Path) {
    assert!(!out.exists(), "{} was created", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("moe"))
        .collect();
    assert!(leftovers.is_empty(), "left on disk: {leftovers:?}");
}

/// (d) A missing tensor or a different size is refused before anything is written, naming it.
#[test]
fn mismatched_experts_fail_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    variant(
        &missing,
        |_| {},
        |n| n != "model.layers.1.mlp.up_proj.weight",
    );
    let out = tmp.path().join("moe");
    let mut o = options(&out, vec![expert(&missing, &["ja"])]);
    o.samples = samples(tmp.path());
    let err = upcycle(&o).unwrap_err().to_string();
    assert!(
        err.contains("model.layers.1.mlp.up_proj.weight") && err.contains("missing"),
        "{err}"
    );
    assert_nothing_written(tmp.path(), &out);

    let other = fixtures().join("tiny/tiny-mistral");
    let mut o = options(&out, vec![expert(&other, &["ja"])]);
    o.samples = samples(tmp.path());
    let err = upcycle(&o).unwrap_err().to_string();
    assert!(err.contains("differ from the base"), "{err}");
    assert!(err.contains("has shape"), "{err}");
    assert_nothing_written(tmp.path(), &out);

    // Bad options are refused before writing too.
    let mut o = options(&out, vec![expert(&tiny_llama(), &["ja"])]);
    o.samples = samples(tmp.path());
    o.top_k = 3;
    let err = upcycle(&o).unwrap_err().to_string();
    assert!(err.contains("--top-k 3"), "{err}");
    o.top_k = 1;
    o.experts = vec![expert(&tiny_llama(), &["xx"])];
    let err = upcycle(&o).unwrap_err().to_string();
    assert!(err.contains("unknown language code 'xx'"), "{err}");
    assert_nothing_written(tmp.path(), &out);

    // Centroid routing without samples for an expert is refused, also before writing.
    let o = options(&out, vec![expert(&tiny_llama(), &["ja"])]);
    let err = upcycle(&o).unwrap_err().to_string();
    assert!(
        err.contains("--samples") && err.contains("expert 0"),
        "{err}"
    );
    assert_nothing_written(tmp.path(), &out);
}

/// (e) With the language prior (the model's default routing, from its config), Japanese tokens
/// go to the ja expert and Latin ones to expert 0 — read back from the GPU's route ids.
#[test]
fn language_prior_routes_japanese_to_the_ja_expert() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moe");
    let mut o = options(
        &out,
        vec![
            expert(&tiny_llama(), &["de"]),
            expert(&tiny_llama(), &["ja"]),
        ],
    );
    o.router = UpcycleRouter::LanguagePrior;
    // No samples: zero router rows, so without the prior every token would tie to expert 0.
    let summary = upcycle(&o).unwrap();
    assert!(summary.warnings.iter().any(|w| w.contains("no samples")));
    let opened = open(&out);
    let (model, tokenizer) = (&opened.model, opened.tokenizer.as_ref().unwrap());
    assert!(matches!(model.router_mode(), RouterMode::LanguagePrior(_)));
    let mut ids = prompt_ids(1);
    let english = ids.len();
    ids.extend(prompt_ids(2));
    let mut s = model.session().unwrap();
    s.record_routes(&model.ctx, &model.config).unwrap();
    pollster::block_on(model.logits_last(&mut s, &ids)).unwrap();
    let routes = pollster::block_on(model.last_routes(&s)).unwrap();
    assert_eq!(routes.len(), model.config.num_layers);
    let mut japanese = 0;
    let mut previous = None;
    for (t, &id) in ids.iter().enumerate() {
        let piece = tokenizer.decode(&[id], false).unwrap();
        let script = text_script(&piece).or(previous);
        previous = script;
        let want = match script {
            Some(Script::Kana | Script::Han) => {
                japanese += 1;
                2
            }
            _ => 0,
        };
        if t < english {
            assert_eq!(want, 0, "token {t} {piece:?} of the English prompt");
        }
        for (l, layer) in routes.iter().enumerate() {
            assert_eq!(layer[t], vec![want], "layer {l} token {t} {piece:?}");
        }
    }
    assert!(japanese >= 5, "only {japanese} Japanese tokens");
    // The learned (zero) router instead ties every token to expert 0.
    let mut learned = open_with(&out, LoadOptions::default(), GpuOptions::default());
    learned.model.set_router_mode(RouterMode::Learned).unwrap();
    let mut s = learned.model.session().unwrap();
    s.record_routes(&learned.model.ctx, &learned.model.config)
        .unwrap();
    pollster::block_on(learned.model.logits_last(&mut s, &ids)).unwrap();
    let routes = pollster::block_on(learned.model.last_routes(&s)).unwrap();
    assert!(routes.iter().flatten().all(|r| r == &vec![0]));
}

/// --average-non-ffn: attention, norms and embeddings are the mean over base and experts
/// (Branch-Train-MiX); FFNs are still each checkpoint's own.
#[test]
fn average_non_ffn_takes_the_mean_of_non_ffn_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let scaled = tmp.path().join("scaled");
    // Everything ×3: the mean of base and this expert is ×2 for non-FFN tensors.
    variant_scaled(&scaled, |_| {}, |_| true, |_| 3.0);
    let out = tmp.path().join("moe");
    let mut o = options(&out, vec![expert(&scaled, &["ja"])]);
    o.samples = samples(tmp.path());
    o.average_non_ffn = true;
    upcycle(&o).unwrap();
    let read = |dir: &Path, n: &str| {
        let c = pollster::block_on(Checkpoint::open(ModelFiles::from_dir(dir).unwrap())).unwrap();
        pollster::block_on(c.read_f32(n)).unwrap()
    };
    for name in [
        "model.embed_tokens.weight",
        "model.layers.1.self_attn.q_proj.weight",
        "model.norm.weight",
    ] {
        let base = read(&tiny_llama(), name);
        let want: Vec<f32> = base.iter().map(|v| v * 2.0).collect();
        let diff = max_abs_diff(&read(&out, name), &want);
        assert!(diff < 1e-5, "{name}: {diff}");
    }
    let down = "model.layers.0.mlp.down_proj.weight";
    let w2 = |e: usize| {
        read(
            &out,
            &format!("model.layers.0.block_sparse_moe.experts.{e}.w2.weight"),
        )
    };
    assert_eq!(w2(0), read(&tiny_llama(), down));
    assert_eq!(w2(1), read(&scaled, down));
}

/// The CLI face: flags parse, warnings go to stderr, a missing-samples error is clear.
#[test]
fn cli_upcycle() {
    let tmp = tempfile::tempdir().unwrap();
    let s = samples(tmp.path());
    let bin = env!("CARGO_BIN_EXE_moegraft");
    let base = tiny_llama();
    let base = base.to_str().unwrap();
    let out = tmp.path().join("moe");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "upcycle".to_string(),
            "--base".into(),
            base.into(),
            "--expert".into(),
            format!("{base}=ja"),
            "--out".into(),
            out.to_str().unwrap().into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        std::process::Command::new(bin)
            .args(&args)
            .output()
            .unwrap()
    };
    let r = run(&[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("--samples"), "{err}");
    assert!(!out.exists());
    let en = format!("en={}", s[0].1.display());
    let ja = format!("ja={}", s[1].1.display());
    let r = run(&[
        "--samples",
        &en,
        "--samples",
        &ja,
        "--top-k",
        "2",
        "--router",
        "language-prior",
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    let config = json(&out.join("config.json"));
    assert_eq!(config["num_experts_per_tok"], 2);
    assert_eq!(config["moegraft"]["router"], "language-prior");
}

/// With the centroid router alone, tokens of each expert's own sample go to that expert more
/// often than chance (1/2) in every layer.
#[test]
fn centroid_router_prefers_the_sample_language_expert() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moe");
    let mut o = options(&out, vec![expert(&tiny_llama(), &["ja"])]);
    o.samples = samples(tmp.path());
    upcycle(&o).unwrap();
    let opened = open(&out);
    let (model, tokenizer) = (&opened.model, opened.tokenizer.as_ref().unwrap());
    for (e, lang) in ["en", "ja"].iter().enumerate() {
        let text = std::fs::read_to_string(tmp.path().join(format!("{lang}.txt"))).unwrap();
        let ids = tokenizer.encode(&text, false).unwrap();
        let mut s = model.session().unwrap();
        s.record_routes(&model.ctx, &model.config).unwrap();
        pollster::block_on(model.logits_last(&mut s, &ids)).unwrap();
        for (l, layer) in pollster::block_on(model.last_routes(&s))
            .unwrap()
            .iter()
            .enumerate()
        {
            let hits = layer.iter().filter(|r| r[0] as usize == e).count();
            assert!(
                2 * hits > ids.len(),
                "{lang} layer {l}: {hits}/{} to expert {e}",
                ids.len()
            );
        }
    }
}

/// The prior's script memory crosses chunk boundaries: fed three tokens at a time, every chunk
/// routes as the whole prompt would (a letterless token opening a chunk inherits the script
/// of the previous chunk's last token).
#[test]
fn language_prior_carries_the_script_across_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moe");
    let mut o = options(&out, vec![expert(&tiny_llama(), &["ja"])]);
    o.router = UpcycleRouter::LanguagePrior;
    upcycle(&o).unwrap();
    let opened = open_with(
        &out,
        LoadOptions {
            prefill_chunk: 3,
            ..Default::default()
        },
        GpuOptions::default(),
    );
    let (model, tokenizer) = (&opened.model, opened.tokenizer.as_ref().unwrap());
    // Japanese, then punctuation and digits only: those must stay with the ja expert.
    let mut ids = prompt_ids(2);
    let tail = tokenizer.encode("。 123 、", false).unwrap();
    assert!(tail
        .iter()
        .all(|&t| text_script(&tokenizer.decode(&[t], false).unwrap()).is_none()));
    ids.extend(&tail);
    let mut previous = None;
    let want: Vec<u32> = ids
        .iter()
        .map(|&id| {
            previous = text_script(&tokenizer.decode(&[id], false).unwrap()).or(previous);
            u32::from(matches!(previous, Some(Script::Kana | Script::Han)))
        })
        .collect();
    assert_eq!(want.last(), Some(&1));
    let letterless = |id: u32| text_script(&tokenizer.decode(&[id], false).unwrap()).is_none();
    assert!(
        (0..ids.len())
            .step_by(3)
            .any(|i| i > 0 && letterless(ids[i]) && want[i] == 1),
        "no chunk opens with a letterless Japanese-context token"
    );
    let mut s = model.session().unwrap();
    s.record_routes(&model.ctx, &model.config).unwrap();
    for (n, piece) in ids.chunks(3).enumerate() {
        pollster::block_on(model.logits_last(&mut s, piece)).unwrap();
        let routes = pollster::block_on(model.last_routes(&s)).unwrap();
        for (t, r) in routes[0].iter().enumerate() {
            assert_eq!(r[0], want[n * 3 + t], "chunk {n} token {t}");
        }
    }
}
