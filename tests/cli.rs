//! The CLI contract (tests and users rely on it exactly): `logits --json` and
//! `generate --json` output shapes, and one clear line with a non-zero exit on bad input —
//! naming the file and tensor, never a panic.

mod common;
mod graft_models;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn moegraft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moegraft"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("run moegraft")
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}"))
}

fn tiny(name: &str) -> PathBuf {
    fixtures().join("tiny").join(name)
}

/// Copies a fixture model into a temp dir for corrupting.
fn copy_model(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(tiny(name)).expect("fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    dir
}

/// Runs `logits` on a model that must be refused; returns the one-line error.
fn refused(model: &Path, extra: &[&str]) -> String {
    let mut args = vec!["logits", "--model", model.to_str().expect("utf-8 path")];
    if !extra.iter().any(|a| *a == "--ids" || *a == "--prompt") {
        args.extend(["--ids", "1,2,3"]);
    }
    args.extend(extra);
    fails(&args)
}

/// Runs a command that must fail; returns its one-line error.
fn fails(args: &[&str]) -> String {
    let out = moegraft(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert_eq!(err.trim().lines().count(), 1, "expected one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn logits_json_has_the_contracted_fields() {
    let dir = tiny("tiny-llama");
    let out = moegraft(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--ids",
        "1,2,3,4,5",
        "--top",
        "7",
        "--json",
    ]);
    let v = stdout_json(&out);
    assert_eq!(u32s(&v["input_ids"]), vec![1, 2, 3, 4, 5]);
    assert_eq!(v["top_ids"].as_array().unwrap().len(), 7);
    let logits = f32s(&v["top_logits"]);
    assert!(
        logits.windows(2).all(|w| w[0] >= w[1]),
        "top logits not sorted: {logits:?}"
    );
    let reference = json(&fixtures().join("tiny/reference.json"));
    let want = &u32s(&reference["models"]["tiny-llama"]["cases"][0]["top_ids"])[..7];
    assert_eq!(u32s(&v["top_ids"]), want);
}

#[test]
fn generate_json_and_chat_prompt() {
    let dir = tiny("tiny-mixtral");
    let out = moegraft(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "Hello",
        "--chat",
        "--max-tokens",
        "5",
        "--json",
    ]);
    let v = stdout_json(&out);
    let input = u32s(&v["input_ids"]);
    assert!(
        input.len() > 3,
        "chat template should wrap the prompt: {input:?}"
    );
    assert!(u32s(&v["output_ids"]).len() <= 5);
    assert!(v["text"].is_string());

    // Sampling is reproducible for a seed.
    let sampled = |seed: &str| {
        let out = moegraft(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt",
            "Hello",
            "--max-tokens",
            "8",
            "--temperature",
            "1.0",
            "--top-p",
            "0.9",
            "--seed",
            seed,
            "--json",
        ]);
        u32s(&stdout_json(&out)["output_ids"])
    };
    assert_eq!(sampled("3"), sampled("3"));
}

#[test]
fn streaming_generate_prints_text() {
    let dir = tiny("tiny-llama");
    let out = moegraft(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "The quick",
        "--max-tokens",
        "6",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}

#[test]
fn truncated_safetensors_names_the_file() {
    let dir = copy_model("tiny-llama");
    let file = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len / 2).unwrap();
    let err = refused(dir.path(), &[]);
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
    assert!(err.contains("tensor '"), "should name the tensor: {err}");
}

#[test]
fn garbage_header_is_refused() {
    let dir = copy_model("tiny-llama");
    let file = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[8..40].copy_from_slice(&[b'#'; 32]);
    std::fs::write(&file, &bytes).unwrap();
    let err = refused(dir.path(), &[]);
    assert!(
        err.contains("model.safetensors") && err.contains("JSON"),
        "{err}"
    );

    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&file, &bytes).unwrap();
    let err = refused(dir.path(), &[]);
    assert!(err.contains("header length"), "{err}");
}

/// Rewrites a safetensors header through `edit` (data section unchanged).
fn edit_header(file: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(&bytes[8 + n..]);
    std::fs::write(file, out).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_model("tiny-llama");
    edit_header(&dir.path().join("model.safetensors"), |h| {
        h.remove("model.layers.1.mlp.down_proj.weight");
    });
    let err = refused(dir.path(), &[]);
    assert!(
        err.contains("'model.layers.1.mlp.down_proj.weight' is missing"),
        "{err}"
    );
}

#[test]
fn overlapping_tensors_are_refused() {
    let dir = copy_model("tiny-llama");
    edit_header(&dir.path().join("model.safetensors"), |h| {
        let first = h.get("model.norm.weight").cloned().unwrap();
        h.insert("model.layers.0.input_layernorm.weight".into(), first);
    });
    let err = refused(dir.path(), &[]);
    assert!(err.contains("overlaps"), "{err}");
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
}

#[test]
fn wrong_shape_names_tensor_and_shapes() {
    let dir = copy_model("tiny-llama");
    edit_config(dir.path(), |c| c["intermediate_size"] = 100.into());
    let err = refused(dir.path(), &[]);
    assert!(err.contains("model.layers.0.mlp.gate_proj.weight"), "{err}");
    assert!(
        err.contains("[96, 64]") && err.contains("[100, 64]"),
        "{err}"
    );
}

#[test]
fn unknown_architecture_is_refused() {
    let dir = copy_model("tiny-llama");
    edit_config(dir.path(), |c| {
        c["model_type"] = "gpt_neox".into();
        c["architectures"] = serde_json::json!(["GPTNeoXForCausalLM"]);
    });
    let err = refused(dir.path(), &[]);
    assert!(
        err.contains("config.json") && err.contains("unsupported architecture 'gpt_neox'"),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_refused() {
    let dir = tiny("tiny-llama");
    let err = refused(&dir, &["--ids", "1,999999"]);
    assert!(
        err.contains("999999") && err.contains("vocabulary"),
        "{err}"
    );
    let err = refused(Path::new("/nonexistent/model"), &[]);
    assert!(err.contains("/nonexistent/model"), "{err}");
}

#[test]
fn small_binding_limit_splits_the_vocabulary_projection() {
    // 16 KiB bindings force the embedding/vocabulary matrix (100 KiB) into several row
    // chunks; results must not change.
    let dir = tiny("tiny-llama");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "logits",
            "--model",
            dir.to_str().unwrap(),
            "--ids",
            "1,2,3,4,5",
            "--json",
        ];
        a.extend_from_slice(extra);
        stdout_json(&moegraft(&a))
    };
    let full = args(&[]);
    let split = args(&["--max-binding", "16384", "--max-context", "64"]);
    assert_eq!(full["top_ids"], split["top_ids"]);
    let diff = max_abs_diff(&f32s(&full["top_logits"]), &f32s(&split["top_logits"]));
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn weights_q8_0_quantizes_or_says_what_it_kept() {
    let run = |name: &str, extra: &[&str]| {
        let dir = tiny(name);
        let mut a = vec![
            "logits",
            "--model",
            dir.to_str().unwrap(),
            "--ids",
            "1,2,3,4,5",
        ];
        a.extend_from_slice(&["--json", "--max-context", "64"]);
        a.extend_from_slice(extra);
        moegraft(&a)
    };
    // tiny-llama: every matrix quantized, whole and split into 16 KiB chunks; the same top-1.
    let stored = stdout_json(&run("tiny-llama", &[]));
    for extra in [
        &["--weights", "q8_0"][..],
        &["--weights", "q8_0", "--max-binding", "16384"],
    ] {
        let out = run("tiny-llama", extra);
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let q8 = stdout_json(&out);
        assert_eq!(q8["top_ids"][0], stored["top_ids"][0], "{extra:?}");
        let diff = max_abs_diff(&f32s(&q8["top_logits"]), &f32s(&stored["top_logits"]));
        assert!(diff > 0.0 && diff < 1.0, "{extra:?}: {diff}");
    }
    // tiny-qwen2 (K = 48 and 75): nothing to quantize, and a note saying so.
    let out = run("tiny-qwen2", &["--weights", "q8_0"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.starts_with("note: ") && err.contains("q8_0"), "{err}");
    assert_eq!(stdout_json(&out), stdout_json(&run("tiny-qwen2", &[])));
}

/// Runs `import-gguf` on a file that must be refused; returns the one-line error and checks
/// that no output directory (complete or partial) was left.
fn import_refused(gguf: &Path) -> String {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("model");
    let run = moegraft(&[
        "import-gguf",
        gguf.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(!run.status.success(), "expected failure");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert_eq!(err.trim().lines().count(), 1, "expected one line: {err}");
    let left: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().collect();
    assert!(left.is_empty(), "import left files behind: {left:?}");
    err
}

#[test]
fn hostile_gguf_files_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixtures().join("gguf/types.gguf");
    let bytes = std::fs::read(&source).unwrap();

    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..300]).unwrap();
    let err = import_refused(&truncated);
    assert!(
        err.contains("truncated.gguf") && err.contains("truncated"),
        "{err}"
    );

    let not_gguf = dir.path().join("not.gguf");
    std::fs::write(&not_gguf, b"PK\x03\x04 definitely not a gguf file").unwrap();
    let err = import_refused(&not_gguf);
    assert!(
        err.contains("not.gguf") && err.to_lowercase().contains("gguf"),
        "{err}"
    );

    // A tensor count far beyond what the file could hold.
    let mut huge = bytes.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let huge_path = dir.path().join("huge.gguf");
    std::fs::write(&huge_path, &huge).unwrap();
    let err = import_refused(&huge_path);
    assert!(err.contains("huge.gguf"), "{err}");
}

#[test]
fn argument_errors_are_one_line_too() {
    for args in [
        &["logits", "--ids", "1,2"][..],
        &[
            "generate",
            "--model",
            "x",
            "--prompt",
            "hi",
            "--max-tokens",
            "many",
        ],
        &["no-such-command"],
        &["logits", "--model", "x", "--ids", "1", "--weights", "q4_0"],
    ] {
        let out = moegraft(args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    let help = moegraft(&["--help"]);
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("logits"));
}

#[test]
fn inspect_text_and_json() {
    let dir = tiny("tiny-mixtral");
    let path = dir.to_str().unwrap();
    let v = stdout_json(&moegraft(&["inspect", path, "--json"]));
    assert_eq!(v["architecture"], "mixtral");
    assert_eq!(v["layers"], 2);
    assert_eq!(v["moe"]["experts"], 4);
    assert_eq!(v["moe"]["experts_per_token"], 2);
    assert_eq!(v["dtypes"][0]["dtype"], "F16");
    let p = &v["parameters"];
    let n = |k: &str| {
        p[k].as_u64()
            .unwrap_or_else(|| panic!("parameters.{k}: {v}"))
    };
    assert_eq!(n("active") - n("embedding"), n("active_non_embedding"));
    assert!(n("active") < n("total"));
    assert!(v["provenance"].is_null());

    let out = moegraft(&["inspect", path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "mixtral (MixtralForCausalLM), MoE".to_string(),
        // The fixture's total is below a million: "174,912 (174.91K)".
        format!("{},{:03}", n("total") / 1000, n("total") % 1000),
        "active per token".to_string(),
        "4 per layer, 2 per token".to_string(),
    ] {
        assert!(text.contains(&needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn inspect_refuses_broken_directories_in_one_line() {
    let dir = copy_model("tiny-llama");
    let path = dir.path().to_str().unwrap().to_string();
    let file = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = fails(&["inspect", &path]);
    assert!(
        err.contains("model.safetensors") && err.contains("tensor '"),
        "{err}"
    );

    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let err = fails(&["inspect", &path, "--json"]);
    assert!(err.contains("config.json is missing"), "{err}");
}

#[test]
fn delta_stats_text_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny("tiny-llama");
    let inst = tmp.path().join("inst");
    graft_models::Model::read(&base).perturbed(2, 0.01).write(
        &inst,
        moegraft::checkpoint::DType::F32,
        &base,
    );
    let (b, i) = (base.to_str().unwrap(), inst.to_str().unwrap());
    let args = ["delta-stats", "--base", b, "--instruct", i];
    let v = stdout_json(&moegraft(&[&args[..], &["--json"]].concat()));
    assert_eq!(v["architecture"], "llama");
    let rel = v["total"]["relative_norm"].as_f64().expect("relative_norm");
    assert!(rel > 0.0 && rel < 0.1, "{rel}");
    assert_eq!(v["by_layer"].as_array().unwrap().len(), 2);
    assert_eq!(v["tensors"].as_array().unwrap().len(), 20);
    for family in [
        "embed_tokens",
        "q_proj",
        "down_proj",
        "input_layernorm",
        "norm",
    ] {
        assert!(
            v["by_family"][family]["delta_norm"].as_f64().unwrap() > 0.0,
            "{family}"
        );
    }

    let out = moegraft(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let table: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("0 ") || l.starts_with("1 "))
        .collect();
    assert_eq!(table.len(), 2, "one row per layer:\n{text}");
    assert!(
        text.contains("total") && text.contains("embed_tokens"),
        "{text}"
    );

    let err = fails(&[
        "delta-stats",
        "--base",
        b,
        "--instruct",
        tiny("tiny-mistral").to_str().unwrap(),
    ]);
    assert!(
        err.contains("mismatches") && err.contains("tiny-mistral"),
        "{err}"
    );
}

/// On a headless machine without XDG_RUNTIME_DIR, Mesa's Vulkan loader would print
/// "XDG_RUNTIME_DIR is invalid or not set"; a user sees only moegraft's own output.
#[test]
fn headless_runs_print_only_moegraft_output() {
    let out = Command::new(env!("CARGO_BIN_EXE_moegraft"))
        .args(["adapter"])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("run moegraft");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("XDG_RUNTIME_DIR"), "{err}");
}

/// `teach` on the kit's base: a few steps of Russian with an English review write a taught
/// MoE that loads, with its loss curves in `--json` and in moegraft.json; an MoE input and a
/// text shorter than one window are refused with the file named.
/// qwen3 and qwen2: the dense model upcycles into a qwen3_moe / qwen2_moe whose new expert
/// learns through the frozen attention's q/k norms or q/k/v biases; the output, an MoE of
/// Qwen's names, gains a second expert.
#[test]
fn teach_takes_qwen3_and_qwen2_into_their_moes_and_extends_them() {
    for (dense, arch) in [("tiny-qwen3", "qwen3_moe"), ("tiny-qwen2", "qwen2_moe")] {
        teach_qwen(dense, arch);
    }
}

fn teach_qwen(dense: &str, arch: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base = root.join("tests/fixtures/tiny").join(dense);
    let out = tempfile::tempdir().expect("tempdir");
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let (first, second) = (out.path().join("first"), out.path().join("second"));
    let teach = |model: &Path, lang: &str, dest: &Path| {
        let text = root.join(format!("demo/eval/{lang}.txt"));
        let lang = format!("{lang}={}", s(&text));
        let replay = format!("en={}", s(&root.join("demo/eval/en.txt")));
        let args = [
            "teach",
            "--model",
            &s(model),
            "--lang",
            &lang,
            "--replay",
            &replay,
            "--out",
            &s(dest),
            "--steps",
            "2",
            "--review-steps",
            "1",
            "--batch",
            "2",
            "--seq",
            "16",
            "--json",
        ];
        stdout_json(&moegraft(&args))
    };
    let report = teach(&base, "ru", &first);
    assert_eq!(report["stage1"]["loss"].as_array().map(Vec::len), Some(2));
    let open = |dir: &Path| {
        pollster::block_on(moegraft::checkpoint::Checkpoint::open(
            moegraft::checkpoint::ModelFiles::from_dir(dir).expect("files"),
        ))
        .expect("opens")
    };
    let taught = open(&first);
    assert_eq!(taught.config.raw["model_type"], arch);
    assert_eq!(taught.config.num_experts, 2);
    let name = |l: usize, e: usize| format!("model.layers.{l}.mlp.experts.{e}.down_proj.weight");
    let tensor = |c: &moegraft::checkpoint::Checkpoint, name: &str| {
        pollster::block_on(c.read(name)).expect("tensor").bytes
    };
    assert_ne!(
        tensor(&taught, &name(1, 1)),
        tensor(&taught, &name(1, 0)),
        "expert 1 learnt"
    );
    teach(&first, "it", &second);
    let extended = open(&second);
    assert_eq!(extended.config.num_experts, 3);
    assert_eq!(
        extended.config.raw["moegraft"]["expert_languages"],
        serde_json::json!([["en"], ["ru"], ["it"]])
    );
    for l in 0..extended.config.num_layers {
        for e in 0..2 {
            assert_eq!(
                tensor(&taught, &name(l, e)),
                tensor(&extended, &name(l, e)),
                "frozen"
            );
        }
    }
    let generated = moegraft(&[
        "generate",
        "--model",
        &s(&second),
        "--prompt",
        "Привет",
        "--max-tokens",
        "3",
    ]);
    assert!(generated.status.success());
}

#[test]
fn teach_writes_a_taught_moe_and_refuses_bad_input() {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
    let (base, ru, en) = (
        kit.join("base"),
        kit.join("eval/ru.txt"),
        kit.join("eval/en.txt"),
    );
    let out = tempfile::tempdir().expect("tempdir");
    let taught = out.path().join("taught");
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let lang = format!("ru={}", s(&ru));
    let replay = format!("en={}", s(&en));
    let args = [
        "teach",
        "--model",
        &s(&base),
        "--lang",
        &lang,
        "--replay",
        &replay,
        "--out",
        &s(&taught),
        "--steps",
        "3",
        "--review-steps",
        "1",
        "--batch",
        "2",
        "--seq",
        "16",
        "--json",
    ];
    let report = stdout_json(&moegraft(&args));
    assert_eq!(
        report["stage1"]["loss"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    assert_eq!(
        report["stage2"]["loss"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert!(report["tokens_per_second"].as_f64().unwrap_or(0.0) > 0.0);
    let config = moegraft::checkpoint::Checkpoint::open(
        moegraft::checkpoint::ModelFiles::from_dir(&taught).expect("files"),
    );
    let config = pollster::block_on(config)
        .expect("the taught model opens")
        .config;
    assert!(config.is_moe() && config.num_experts == 2, "one new expert");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(taught.join("moegraft.json")).expect("moegraft.json"),
    )
    .expect("json");
    let f32s = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_f64())
            .map(|x| x as f32)
            .collect()
    };
    assert_eq!(
        f32s(&record["teach"]["stage1"]["loss"]),
        f32s(&report["stage1"]["loss"])
    );
    assert_eq!(record["teach"]["languages"][0]["lang"], "ru");
    // Each language's routing after the review: per layer, top-2 shares adding up to 2.
    for lang in ["ru", "en"] {
        let layers = record["teach"]["expert_shares"][lang]
            .as_array()
            .unwrap_or_else(|| panic!("{lang}'s expert shares: {record}"));
        assert_eq!(layers.len(), config.num_layers);
        for layer in layers {
            let shares = f32s(layer);
            assert_eq!(shares.len(), 2, "{layer}");
            assert!((shares.iter().sum::<f32>() - 2.0).abs() < 1e-4, "{layer}");
        }
    }
    assert_eq!(
        record["teach"]["languages"][0]["sha256"]
            .as_str()
            .map(str::len),
        Some(64)
    );
    let moe_out = s(&out.path().join("moe"));
    let again = [
        &args[..7],
        &[
            "--out",
            moe_out.as_str(),
            "--steps",
            "1",
            "--review-steps",
            "0",
        ],
    ]
    .concat();
    // An MoE input gains an expert: the taught model learns Italian too, its two experts
    // frozen, the first lesson's record kept.
    let it = format!("it={}", s(&kit.join("eval/it.txt")));
    let mut moe_args = again.clone();
    moe_args[2] = taught.to_str().expect("utf-8 path");
    moe_args[4] = &it;
    moegraft(&moe_args);
    let open = |dir: &Path| {
        pollster::block_on(moegraft::checkpoint::Checkpoint::open(
            moegraft::checkpoint::ModelFiles::from_dir(dir).expect("files"),
        ))
        .expect("opens")
    };
    let (first, second) = (open(&taught), open(Path::new(&moe_out)));
    assert_eq!(second.config.num_experts, 3);
    let section = &second.config.raw["moegraft"]["expert_languages"];
    assert_eq!(section, &serde_json::json!([["en"], ["ru"], ["it"]]));
    let tensor = |c: &moegraft::checkpoint::Checkpoint, name: &str| {
        pollster::block_on(c.read(name)).expect("tensor").bytes
    };
    for l in 0..config.num_layers {
        for e in 0..2 {
            let name = format!("model.layers.{l}.block_sparse_moe.experts.{e}.w1.weight");
            assert_eq!(
                tensor(&first, &name),
                tensor(&second, &name),
                "{name} frozen"
            );
        }
        let m = format!("model.layers.{l}.block_sparse_moe.experts");
        assert_ne!(
            tensor(&second, &format!("{m}.2.w2.weight")),
            tensor(&second, &format!("{m}.0.w2.weight")),
            "the new expert learnt"
        );
    }
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(&moe_out).join("moegraft.json")).expect("moegraft.json"),
    )
    .expect("json");
    assert_eq!(record["teach"]["settings"]["frozen_experts"], 2);
    assert_eq!(record["teach"]["earlier"]["languages"][0]["lang"], "ru");
    let moe_out = s(&out.path().join("moe2"));
    let again = [&again[..8], &[moe_out.as_str()], &again[9..]].concat();
    let short = out.path().join("short.txt");
    std::fs::write(&short, "две слова").expect("write");
    let short_lang = format!("ru={}", s(&short));
    let mut short_args = again.clone();
    short_args[4] = &short_lang;
    assert!(fails(&short_args).contains("short.txt"));
    // 64 × 128 tokens' logits over the kit's 4 096-token vocabulary take 128 MiB: more than a
    // 64 MiB binding; refused before the first step, with the numbers.
    let mut big_args = again.clone();
    big_args.extend(["--batch", "64", "--max-binding", "67108864"]);
    let err = fails(&big_args);
    assert!(
        err.contains("logits") && err.contains("67108864") && err.contains("--batch"),
        "{err}"
    );
}
