//! `teach` stopped and resumed: a run stopped in stage 1 and again in the review, each time
//! continued from its training checkpoint, writes the same model and loss curves as the
//! run that was never stopped; a stopped run leaves no output that looks complete; a
//! checkpoint does not resume a run with other settings.

#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};

use moegraft::error::Error;
use moegraft::train::lesson::{Flow, Settings, StepReport};
use moegraft::train::teach::{checkpoints_dir, teach, TeachOptions};
use moegraft::train::Stage;

fn options(out: PathBuf) -> TeachOptions {
    let kit = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
    TeachOptions {
        model: kit.join("base"),
        languages: vec![("ru".into(), kit.join("eval/ru.txt"))],
        replay: vec![("en".into(), kit.join("eval/en.txt"))],
        out,
        settings: Settings {
            steps: 4,
            review_steps: 3,
            batch: 2,
            seq: 16,
            lr: 2e-3,
            top_k: 2,
            seed: 5,
            checkpoint_every: 0,
        },
        resume: None,
        gpu: Default::default(),
    }
}

fn losses(dir: &Path) -> serde_json::Value {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("moegraft.json")).expect("moegraft.json"))
            .expect("json");
    serde_json::json!([record["teach"]["stage1"], record["teach"]["stage2"]])
}

/// Runs `o`, asking it to stop at `stop`'s report (it stops after the step then under way);
/// returns the checkpoint the stop left.
fn run_until(o: &TeachOptions, stop: (Stage, usize)) -> PathBuf {
    let mut at_stop = |r: StepReport| {
        if (r.stage, r.step) == stop {
            Flow::Stop
        } else {
            Flow::Continue
        }
    };
    match teach(o, &mut at_stop) {
        Err(Error::Stopped { checkpoint, .. }) => PathBuf::from(checkpoint),
        other => panic!("expected a stop at {stop:?}, got {other:?}"),
    }
}

#[test]
fn a_stopped_run_resumes_to_the_same_model() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let whole = tmp.path().join("whole");
    teach(&options(whole.clone()), &mut |_| Flow::Continue).expect("the whole run");

    let parts = tmp.path().join("parts");
    let mut o = options(parts.clone());
    o.settings.checkpoint_every = 2;
    let first = run_until(&o, (Stage::NewExperts, 3));
    assert!(!parts.exists(), "a stopped run leaves no output");
    assert!(first.starts_with(checkpoints_dir(&parts)), "{first:?}");
    assert!(first.join("state.json").is_file() && first.join("state.safetensors").is_file());

    // The latest checkpoint in the folder is the one the stop saved (step 4, after step 2's).
    o.resume = Some(checkpoints_dir(&parts));
    let second = run_until(&o, (Stage::Review, 1));
    assert_ne!(first, second);
    assert!(!first.exists(), "older checkpoints are removed");

    let mut other = o.clone();
    other.settings.seed = 6;
    let refused = teach(&other, &mut |_| Flow::Continue).expect_err("another seed");
    assert!(refused.to_string().contains("seed"), "{refused}");

    teach(&o, &mut |_| Flow::Continue).expect("the resumed run");
    assert!(
        !checkpoints_dir(&parts).exists(),
        "a finished run drops its checkpoints"
    );
    assert_eq!(losses(&whole), losses(&parts));
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).expect("weights");
    assert!(
        weights(&whole) == weights(&parts),
        "the resumed run's weights differ from the whole run's"
    );
}
