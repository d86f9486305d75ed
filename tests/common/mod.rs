//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use moegraft::gpu::GpuOptions;
use moegraft::model::open::{open_dir, OpenedModel};
use moegraft::model::LoadOptions;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn open(dir: &Path) -> OpenedModel {
    open_with(dir, LoadOptions::default(), GpuOptions::default())
}

pub fn open_with(dir: &Path, options: LoadOptions, gpu: GpuOptions) -> OpenedModel {
    pollster::block_on(open_dir(dir, options, gpu))
        .unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()))
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Indices of the k largest values, highest first (lower index first on ties).
pub fn top_ids(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("float") as f32)
        .collect()
}

/// KL(softmax(p) ‖ softmax(q)) in nats, computed in f64: how far logits q's next-token
/// distribution is from p's.
pub fn kl_divergence(p: &[f32], q: &[f32]) -> f64 {
    let log_softmax = |v: &[f32]| {
        let m = v.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let z = v.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
        v.iter().map(|&x| x as f64 - z).collect::<Vec<f64>>()
    };
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}
