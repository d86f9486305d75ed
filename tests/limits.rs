//! Small devices and lost devices. Lowered limits (as on phones and small laptops): a model
//! whose matrices exceed the storage-binding limit is split into row chunks and computes the
//! same logits; one whose single rows exceed it is refused with the numbers, naming the file and
//! tensor. A device lost under a loaded model gives an error, not a hang, and a new device
//! works again.

mod common;

use common::*;
use moegraft::gpu::GpuOptions;
use moegraft::model::LoadOptions;

fn tiny_llama() -> std::path::PathBuf {
    fixtures().join("tiny/tiny-llama")
}

/// A short context and prefill chunk, so that only the weights meet the lowered limits.
fn short() -> LoadOptions {
    LoadOptions {
        max_context: 16,
        prefill_chunk: 4,
        ..Default::default()
    }
}

fn logits(gpu: GpuOptions, ids: &[u32]) -> moegraft::Result<Vec<f32>> {
    let opened = pollster::block_on(moegraft::model::open::open_dir(&tiny_llama(), short(), gpu))?;
    let m = &opened.model;
    let mut s = m.session()?;
    pollster::block_on(m.logits_last(&mut s, ids))
}

#[test]
fn lowered_binding_limits_split_matrices_or_refuse_with_the_numbers() {
    let ids = [1u32, 5, 9, 3, 7];
    let full = logits(GpuOptions::default(), &ids).expect("default limits");

    // 4 KiB bindings: the matrices (the embedding is 400 × 64 f32 = 100 KiB) in many chunks.
    let small = GpuOptions {
        max_binding_override: Some(4096),
        ..Default::default()
    };
    let opened = open_with(&tiny_llama(), short(), small.clone());
    assert!(
        opened.model.weights.embed.chunks.len() > 1,
        "the embedding was not split"
    );
    let split = logits(small, &ids).expect("split matrices");
    assert!(max_abs_diff(&full, &split) < 1e-5);

    // 64-byte bindings: not even one row fits. The message names the file, the tensor and
    // both numbers.
    let tiny = GpuOptions {
        max_binding_override: Some(64),
        ..Default::default()
    };
    let err = logits(tiny, &ids).expect_err("refused").to_string();
    let dir = tiny_llama().display().to_string();
    assert!(!err.contains("KV cache"), "{err}");
    assert!(
        err.starts_with(&format!("{dir}/model.safetensors: tensor '")),
        "{err}"
    );
    assert!(
        err.contains("needs 256 bytes per buffer but the GPU allows 64"),
        "{err}"
    );
}

/// A context whose KV cache exceeds one buffer is refused at load, before the weights go up.
#[test]
fn a_context_too_long_for_the_device_is_refused_with_the_numbers() {
    let gpu = GpuOptions {
        max_binding_override: Some(8192),
        ..Default::default()
    };
    let long = LoadOptions {
        max_context: 256,
        ..Default::default()
    };
    let err = match pollster::block_on(moegraft::model::open::open_dir(&tiny_llama(), long, gpu)) {
        Ok(_) => panic!("a 32 KiB KV cache loaded under 8 KiB bindings"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err,
        "KV cache: tensor 'k_cache.0' needs 32768 bytes per buffer but the GPU allows 8192 \
         (a context of 256 tokens: choose a shorter context length)"
    );
}

#[test]
fn a_lost_device_is_an_error_and_a_new_one_works() {
    let opened = open(&tiny_llama());
    let m = &opened.model;
    let mut s = m.session().expect("session");
    pollster::block_on(m.logits_last(&mut s, &[1, 2, 3])).expect("before the loss");
    m.ctx.device.destroy();
    let err = pollster::block_on(m.logits_last(&mut s, &[4]))
        .expect_err("a destroyed device cannot compute")
        .to_string();
    assert!(err.contains("GPU"), "{err}");
    assert!(err.contains("lost"), "{err}");
    // The user retries: a fresh device loads the model again.
    logits(GpuOptions::default(), &[1, 2, 3]).expect("after the loss");
}
