//! Whole training steps on a tiny Mixtral against PyTorch (`tools/make_train_fixture.py`,
//! fixture in tests/fixtures/train_step): MoE-LPR's stage 1 (two steps: the new experts and
//! routers, LM + load-balancing loss) and stage 2 (the routers alone, LM + language-prior
//! loss) — the loss, the gradient of every trained tensor and its values after AdamW.

mod common;

use moegraft::checkpoint::{Checkpoint, ModelFiles};
use moegraft::gpu::GpuOptions;
use moegraft::model::LoadOptions;
use moegraft::train::{Stage, StepInput, TrainOptions, Trainer};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    common::f32s(v)
}

/// `got` against PyTorch's `want`, within `rel` of the tensor's largest magnitude.
fn assert_tensor(label: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale + 1e-7,
            "{label}[{i}]: got {g}, PyTorch {w} (largest |value| {scale})"
        );
    }
}

/// The weights after AdamW. Its first steps move a weight by about lr whatever the size of
/// its gradient, so where PyTorch's gradient is at f32's noise (below 1e-5 of the tensor's
/// largest) the direction is a coin toss: there only the step's size is checked.
fn assert_updated(label: &str, got: &[f32], want: &[f32], grads: &[f32], before: &[f32], lr: f32) {
    let top = grads.iter().fold(0f32, |m, v| m.max(v.abs()));
    for i in 0..got.len() {
        if grads[i].abs() >= 1e-5 * top {
            assert!(
                (got[i] - want[i]).abs() <= 2e-5 * (1.0 + want[i].abs()),
                "{label}[{i}]: got {}, PyTorch {} (gradient {})",
                got[i],
                want[i],
                grads[i]
            );
        } else {
            assert!(
                (got[i] - before[i]).abs() <= 2.5 * lr,
                "{label}[{i}]: moved {} (gradient {})",
                got[i] - before[i],
                grads[i]
            );
        }
    }
}

#[test]
fn training_steps_match_pytorch() {
    check_steps("train_step");
}

/// An MoE that gains experts: experts 0 and 1 both frozen, 2 and 3 learn.
#[test]
fn training_steps_with_two_frozen_experts_match_pytorch() {
    check_steps("train_step_frozen2");
}

/// qwen3_moe: the backward runs through the per-head q/k norms of the frozen attention.
#[test]
fn training_steps_on_qwen3_moe_match_pytorch() {
    check_steps("train_step_qwen3moe");
}

/// qwen2_moe as upcycle writes it: q/k/v biases in the forward, the zero shared expert left
/// out (it adds exactly 0).
#[test]
fn training_steps_on_qwen2_moe_match_pytorch() {
    check_steps("train_step_qwen2moe");
}

fn check_steps(fixture_dir: &str) {
    let dir = common::fixtures().join(fixture_dir);
    let fixture = common::json(&dir.join("steps.json"));
    let opened = common::open_with(&dir, LoadOptions::default(), GpuOptions::default());
    let ckpt = pollster::block_on(Checkpoint::open(
        ModelFiles::from_dir(&dir).expect("fixture files"),
    ))
    .expect("fixture checkpoint");
    let options = TrainOptions {
        batch: fixture["batch"].as_u64().unwrap() as usize,
        seq: fixture["seq"].as_u64().unwrap() as usize,
        beta1: fixture["betas"][0].as_f64().unwrap() as f32,
        beta2: fixture["betas"][1].as_f64().unwrap() as f32,
        eps: fixture["eps"].as_f64().unwrap() as f32,
        weight_decay: fixture["weight_decay"].as_f64().unwrap() as f32,
        max_grad_norm: fixture["max_grad_norm"].as_f64().unwrap() as f32,
        load_balance: fixture["load_balance"].as_f64().unwrap() as f32,
        language_prior: fixture["language_prior"].as_f64().unwrap() as f32,
        frozen_experts: fixture["frozen_experts"].as_u64().unwrap_or(1) as usize,
    };
    let lr = fixture["lr"].as_f64().unwrap() as f32;
    let ids = common::u32s(&fixture["ids"]);
    let targets = common::u32s(&fixture["targets"]);
    let original: Vec<bool> = fixture["original"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bool().unwrap())
        .collect();

    for (stage, key) in [(Stage::NewExperts, "stage1"), (Stage::Review, "stage2")] {
        let mut trainer =
            pollster::block_on(Trainer::new(&opened.model, &ckpt, options)).expect("trainer");
        // The estimate made before allocating is what was allocated.
        assert_eq!(trainer.memory.total_bytes, trainer.allocated_bytes);
        let names = |t: &Trainer| -> Vec<(String, usize, &'static str)> {
            (0..t.layers.len())
                .flat_map(|l| {
                    [("router", 0), ("gate_up", 1), ("down", 2)].map(|(name, which)| {
                        (
                            format!("{name}.{l}"),
                            l,
                            ["router", "gate_up", "down"][which],
                        )
                    })
                })
                .collect()
        };
        for (s, want) in fixture[key]["steps"].as_array().unwrap().iter().enumerate() {
            let label = format!("{key} step {}", s + 1);
            let tensors = names(&trainer);
            let before: Vec<Vec<f32>> = tensors
                .iter()
                .map(|(_, l, which)| {
                    let t = &trainer.layers[*l];
                    let tensor = match *which {
                        "router" => &t.router,
                        "gate_up" => &t.gate_up,
                        _ => &t.down,
                    };
                    pollster::block_on(trainer.read(tensor)).expect("read")
                })
                .collect();
            let input = StepInput {
                ids: &ids,
                targets: &targets,
                original: Some(&original),
            };
            let loss = pollster::block_on(trainer.step(input, stage, lr)).expect("step");
            let want_loss = want["loss"].as_f64().unwrap() as f32;
            assert!(
                (loss - want_loss).abs() <= 1e-5 * want_loss.abs(),
                "{label}: loss {loss}, PyTorch {want_loss}"
            );
            for ((name, l, which), before) in tensors.iter().zip(&before) {
                let t = &trainer.layers[*l];
                let tensor = match *which {
                    "router" => &t.router,
                    "gate_up" => &t.gate_up,
                    _ => &t.down,
                };
                let now = pollster::block_on(trainer.read(tensor)).expect("read");
                let Some(want_grad) = want["grads"].get(name) else {
                    // Not trained in this stage: it must not move.
                    assert_eq!(&now, before, "{label}: {name} is frozen in this stage");
                    continue;
                };
                let want_grad = floats(want_grad);
                let grad = pollster::block_on(trainer.read_grad(tensor)).expect("grad");
                assert_tensor(&format!("{label} grad {name}"), &grad, &want_grad, 2e-4);
                let want_now = floats(&want["updated"][name.as_str()]);
                assert_updated(
                    &format!("{label} {name}"),
                    &now,
                    &want_now,
                    &want_grad,
                    before,
                    lr,
                );
            }
        }
    }
}
