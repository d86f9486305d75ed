//! `moegraft eval`: perplexity against the same model's per-position logits taken another
//! way, instruction scoring against the model's own greedy answers, the table's shape, and
//! the CLI (the demo kit's own table is checked where the kit is built).

mod common;

use std::path::Path;

use common::*;
use moegraft::checkpoint::ModelFiles;
use moegraft::eval::{evaluate, EvalOptions, Report, Suite};
use moegraft::generate::{self, GenerateOptions};

fn write_suite(dir: &Path, text: &str, instructions: &[serde_json::Value]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let suite = serde_json::json!({
        "languages": {"en": "original", "de": "new"},
        "perplexity": {"en": "en.txt", "de": "de.txt"},
        "instructions": "instructions.jsonl",
    });
    std::fs::write(dir.join("suite.json"), suite.to_string()).expect("suite");
    std::fs::write(dir.join("en.txt"), text).expect("en");
    std::fs::write(dir.join("de.txt"), "Der schnelle braune Fuchs springt.").expect("de");
    let lines: String = instructions.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(dir.join("instructions.jsonl"), lines).expect("jsonl");
}

fn load_suite(dir: &Path) -> Suite {
    pollster::block_on(Suite::load(&ModelFiles::from_dir(dir).expect("files"))).expect("suite")
}

#[test]
fn perplexity_and_instructions_are_scored_from_the_model_itself() {
    let tmp = tempfile::tempdir().expect("tmp");
    let opened = open(&fixtures().join("tiny/tiny-llama"));
    let tok = opened.tokenizer.as_ref().expect("tokenizer");
    let text = "The quick brown fox jumps over the lazy dog and then runs away.";

    // What the model answers greedily to a chat prompt, to build a right and a wrong item.
    let prompt = "Repeat: hello";
    let ids = tok.prompt_ids(prompt, true).expect("ids");
    let options = GenerateOptions {
        max_tokens: 6,
        stop_ids: generate::stop_ids(&opened.model, Some(tok)),
        ..Default::default()
    };
    let g = pollster::block_on(generate::generate(
        &opened.model,
        Some(tok),
        &ids,
        &options,
        &mut |_, _| true,
    ))
    .expect("generate");
    let stopped = g.stop_reason == generate::StopReason::EndOfSequence;
    let own = g.text.trim().to_string();
    let items = [
        serde_json::json!({"lang": "en", "task": "repeat", "prompt": prompt, "answer": own}),
        serde_json::json!({"lang": "de", "task": "repeat", "prompt": prompt, "answer": format!("{own} nicht")}),
    ];
    write_suite(tmp.path(), text, &items);
    let suite = load_suite(tmp.path());
    // A window shorter than the text: several fresh contexts.
    let eval_options = EvalOptions {
        window: 5,
        per_task: None,
        // The expected answer's own length: the model generates what it generated above.
        slack_tokens: 0,
    };
    let score = pollster::block_on(evaluate(
        "tiny",
        &opened.model,
        Some(tok),
        &suite,
        &eval_options,
    ))
    .expect("eval");

    // Perplexity over windows of 5 tokens, each next token's NLL from logits_last of its
    // prefix within the window.
    let text_ids = tok.encode(text, false).expect("encode");
    let (mut nll, mut n) = (0f64, 0usize);
    for window in text_ids.chunks(5).filter(|w| w.len() >= 2) {
        for k in 1..window.len() {
            let mut s = opened.model.session().expect("session");
            let logits =
                pollster::block_on(opened.model.logits_last(&mut s, &window[..k])).expect("logits");
            let max = logits.iter().copied().fold(f32::MIN, f32::max) as f64;
            let z: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
            nll += max + z.ln() - logits[window[k] as usize] as f64;
            n += 1;
        }
    }
    let p = &score.perplexity["en"];
    assert_eq!(p.tokens, n);
    let want = (nll / n as f64).exp();
    assert!(
        (p.perplexity - want).abs() <= want * 1e-4,
        "{} vs {want}",
        p.perplexity
    );

    // The right item is right exactly when the model stopped on its own; the wrong one never.
    assert_eq!(score.instructions["en"].total, 1);
    assert_eq!(
        score.instructions["en"].correct, stopped as usize,
        "{:?}",
        score.outcomes
    );
    assert_eq!(score.instructions["de"].correct, 0);
    assert_eq!(score.outcomes[0].stopped, stopped);

    // The table: a header, a rule, one row per model, then the note on new languages.
    let report = Report::new(&suite, vec![score.clone(), score]);
    let table = report.markdown();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows[0].starts_with("| model | ppl en | ppl de* | instr. en | instr. de* |"),
        "{table}"
    );
    assert!(rows.iter().all(|r| r.matches('|').count() == 7), "{table}");
    assert!(table.contains("a new language"));
}

#[test]
fn suite_errors_name_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_suite(
        tmp.path(),
        "text",
        &[serde_json::json!({"lang": "fr", "task": "t", "prompt": "p", "answer": "a"})],
    );
    let err = pollster::block_on(Suite::load(
        &ModelFiles::from_dir(tmp.path()).expect("files"),
    ))
    .expect_err("fr is not listed")
    .to_string();
    assert!(err.contains("suite.json") && err.contains("'fr'"), "{err}");
    std::fs::write(tmp.path().join("instructions.jsonl"), "{not json\n").expect("write");
    let err = pollster::block_on(Suite::load(
        &ModelFiles::from_dir(tmp.path()).expect("files"),
    ))
    .expect_err("bad line")
    .to_string();
    assert!(
        err.contains("instructions.jsonl") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn cli_prints_the_table_and_json() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_suite(
        tmp.path(),
        "A short English text for the perplexity.",
        &[serde_json::json!({"lang": "en", "task": "repeat", "prompt": "Say hi", "answer": "hi"})],
    );
    let model = fixtures().join("tiny/tiny-llama");
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_moegraft"));
        cmd.args(["eval", "--suite"])
            .arg(tmp.path())
            .arg("--model")
            .arg(&model);
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("run")
    };
    let out = run(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("| tiny-llama |"), "{text}");
    let out = run(true);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["models"][0]["model"], "tiny-llama");
    assert!(
        v["models"][0]["perplexity"]["en"]["perplexity"]
            .as_f64()
            .expect("ppl")
            > 1.0
    );
    assert_eq!(v["languages"]["de"], "new");
    // No suite: one line, non-zero exit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moegraft"))
        .args(["eval", "--model"])
        .arg(&model)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// The demo kit's table (`demo/eval/results.json`, written by `moegraft eval --kit demo
/// --json`) comes out of the same command again: the six models in the table's order, every
/// language's perplexity, and the answers to the instructions it asks (the first two per
/// language and task here, for time). And the paper's claim at toy scale that the kit is
/// built to show: DeltaMoE answers instructions in the new languages in the chat format and
/// stops with the end token.
#[test]
fn demo_kit_table_is_reproduced() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kit = root.join("demo");
    let committed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(kit.join("eval/results.json")).expect("demo/eval/results.json"),
    )
    .expect("results.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moegraft"))
        .args(["eval", "--kit"])
        .arg(&kit)
        .args(["--per-task", "2", "--json"])
        .output()
        .expect("run moegraft eval");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");

    let labels = |v: &serde_json::Value| -> Vec<String> {
        v["models"]
            .as_array()
            .expect("models")
            .iter()
            .map(|m| m["model"].as_str().expect("label").to_string())
            .collect()
    };
    let order = [
        "base",
        "instruct",
        "cpt-dense",
        "ParamΔ",
        "cpt-moe",
        "DeltaMoE",
    ];
    assert_eq!(labels(&now), order);
    assert_eq!(labels(&committed), order);
    assert_eq!(now["languages"], committed["languages"]);
    let languages = now["languages"].as_object().expect("languages");
    assert_eq!(languages.len(), 4);
    let new: Vec<&str> = languages
        .iter()
        .filter(|(_, kind)| *kind == "new")
        .map(|(l, _)| l.as_str())
        .collect();
    assert_eq!(new.len(), 2, "{languages:?}");

    let mut differing = Vec::new();
    let mut compared = 0;
    for (m, c) in now["models"]
        .as_array()
        .expect("models")
        .iter()
        .zip(committed["models"].as_array().expect("models"))
    {
        let label = m["model"].as_str().unwrap_or_default();
        for lang in languages.keys() {
            let got = m["perplexity"][lang]["perplexity"].as_f64().expect("ppl");
            let want = c["perplexity"][lang]["perplexity"].as_f64().expect("ppl");
            assert!(got.is_finite() && got > 1.0, "{label} {lang}: {got}");
            assert!(
                (got - want).abs() <= 1e-3 * want,
                "{label} {lang}: perplexity {got} against the table's {want}"
            );
            let tally = &m["instructions"][lang];
            assert_eq!(tally["total"], 10, "{label} {lang}: 2 per task × 5 tasks");
        }
        for o in m["outcomes"].as_array().expect("outcomes") {
            let recorded = c["outcomes"]
                .as_array()
                .expect("outcomes")
                .iter()
                .find(|r| r["lang"] == o["lang"] && r["prompt"] == o["prompt"])
                .unwrap_or_else(|| panic!("{label}: {o} is not in the table's run"));
            compared += 1;
            if recorded["output"] != o["output"] || recorded["stopped"] != o["stopped"] {
                differing.push(format!("{label}: {} now {}", recorded, o["output"]));
            }
        }
    }
    // Greedy answers are reproducible; a near-tie may flip on another adapter.
    assert!(
        differing.len() * 20 <= compared,
        "{} of {compared} answers differ from the table's run:\n{}",
        differing.len(),
        differing.join("\n")
    );

    let deltamoe = &now["models"][5];
    let answers: Vec<&serde_json::Value> = deltamoe["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .filter(|o| new.contains(&o["lang"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(answers.len(), 20);
    let stopped = answers.iter().filter(|o| o["stopped"] == true).count();
    assert!(
        stopped * 4 >= answers.len() * 3,
        "DeltaMoE stopped only {stopped} of {} new-language answers",
        answers.len()
    );
    for o in &answers {
        let text = o["output"].as_str().unwrap_or_default();
        assert!(
            !text.contains("<|im_start|>")
                && !text.contains("<|im_end|>")
                && !text.trim().is_empty(),
            "DeltaMoE's answer is not one chat turn: {o}"
        );
    }
}
