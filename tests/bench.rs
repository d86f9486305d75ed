//! `moegraft bench` works end to end on a tiny synthetic model: the documented fields are
//! present with positive numbers. Speeds are never asserted (the machine decides them).

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn bench(extra: &[&str]) -> Value {
    let config = fixtures().join("tiny/tiny-llama/config.json");
    let mut args = vec![
        "bench",
        "--synthetic",
        config.to_str().expect("utf-8 path"),
        "--json",
        "--prompt-tokens",
        "16",
        "--contexts",
        "8,40",
        "--decode-tokens",
        "3",
        "--warmup",
        "1",
        "--repeats",
        "2",
        "--copy-mib",
        "4",
    ];
    args.extend(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_moegraft"))
        .args(&args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("run moegraft");
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn positive(v: &Value, path: &str) -> f64 {
    let x = v
        .pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing in {v}"));
    assert!(x > 0.0 && x.is_finite(), "{path} = {x}");
    x
}

#[test]
fn bench_reports_every_figure() {
    let r = bench(&["--merge-repeats", "1"]);
    for path in [
        "/model/parameters",
        "/model/decode_weight_bytes",
        "/copy_bandwidth/gpu_fence_gbps/median",
        "/copy_bandwidth/host_gbps/median",
        "/copy_bandwidth/shader_read_bytes",
        "/prefill/tokens_per_s/median",
        "/merge/input_bytes",
        "/merge/merge_gbps/median",
        "/merge/fraction_of_host_copy",
        "/memory/gpu_weight_bytes",
        "/memory/gpu_kv_cache_bytes",
    ] {
        positive(&r, path);
    }
    let decode = r["decode"].as_array().expect("decode list");
    let contexts: Vec<u64> = decode
        .iter()
        .filter_map(|d| d["context"].as_u64())
        .collect();
    assert_eq!(contexts, [8, 40]);
    for d in decode {
        positive(d, "/tokens_per_s/median");
        positive(d, "/weight_bound_tokens_per_s");
        positive(d, "/fraction_of_weight_bound");
        positive(d, "/fraction_of_weight_kv_bound");
        positive(d, "/read_ceiling_tokens_per_s");
        positive(d, "/fraction_of_read_ceiling");
    }
    // Both read patterns are timed; the ceiling is the faster one.
    let reads = r["copy_bandwidth"]["shader_reads"]
        .as_array()
        .expect("shader reads");
    let patterns: Vec<&str> = reads.iter().filter_map(|x| x["pattern"].as_str()).collect();
    assert_eq!(patterns, ["strided", "blocks"]);
    let fastest = reads
        .iter()
        .map(|x| positive(x, "/gbps/median"))
        .fold(0.0, f64::max);
    let weights = positive(&r, "/model/decode_weight_bytes");
    for d in decode {
        let ceiling = positive(d, "/read_ceiling_tokens_per_s");
        assert!(
            (ceiling - fastest * 1e9 / weights).abs() <= 1e-9 * ceiling,
            "{d}"
        );
    }
    // Kernel times where the adapter has timestamps, else a note saying why not.
    match r["kernels"].as_object() {
        Some(_) => {
            positive(&r, "/kernels/kernel_ms");
            let groups = r["kernels"]["groups"].as_array().expect("groups");
            // matvec, matvec_rows, matvec_rows4 or matvec_subgroup, by adapter and weights.
            assert!(
                groups.iter().any(|g| g["kernel"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("matvec"))),
                "{groups:?}"
            );
        }
        None => assert!(r["kernels_note"].is_string(), "{r}"),
    }
    if cfg!(target_os = "linux") {
        positive(&r, "/memory/peak_host_rss_bytes");
    }
}

#[test]
fn bench_without_merge_or_profile_says_so() {
    let r = bench(&["--merge-repeats", "0", "--no-profile"]);
    assert!(r["merge"].is_null() && r["merge_note"].is_string(), "{r}");
    assert!(
        r["kernels"].is_null() && r["kernels_note"].is_string(),
        "{r}"
    );
}

#[test]
fn bench_refuses_contexts_beyond_the_model() {
    let config = fixtures().join("tiny/tiny-llama/config.json");
    let out = Command::new(env!("CARGO_BIN_EXE_moegraft"))
        .args(["bench", "--synthetic", config.to_str().expect("utf-8 path")])
        .args(["--contexts", "100000", "--merge-repeats", "0"])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("run moegraft");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("positions"), "{err}");
}

#[test]
fn bench_says_the_weight_format_and_counts_its_bytes() {
    let quick = ["--merge-repeats", "0", "--no-profile"];
    let stored = bench(&quick);
    let q8 = bench(&[&quick[..], &["--weights", "q8_0"]].concat());
    assert_eq!(stored["model"]["weight_format"], "f16", "{stored}");
    assert_eq!(q8["model"]["weight_format"], "q8_0", "{q8}");
    assert!(q8["model"]["weight_format_note"].is_null(), "{q8}");
    // Rows of 64 (two blocks, one short superblock with four scale words) take 80 bytes
    // instead of 128, rows of 96 take 112 instead of 192, plus the same f32 norms.
    let ratio = positive(&q8, "/model/decode_weight_bytes")
        / positive(&stored, "/model/decode_weight_bytes");
    assert!(
        (0.6..0.63).contains(&ratio),
        "q8_0 / f16 bytes per token: {ratio}"
    );
    let memory =
        positive(&q8, "/memory/gpu_weight_bytes") / positive(&stored, "/memory/gpu_weight_bytes");
    assert!(
        (0.6..0.63).contains(&memory),
        "q8_0 / f16 GPU memory: {memory}"
    );
}
