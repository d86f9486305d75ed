//! Hostile files (tests/fixtures/hostile/, written by tools/make_hostile_fixtures.py): each
//! must give an error that names the file (and tensor, where there is one) — never a panic,
//! a hang or a huge allocation — both from the library and through the CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use moegraft::checkpoint::gguf::read_gguf;
use moegraft::checkpoint::source::{ByteSource, FileSource, ReadFuture};
use moegraft::checkpoint::{Checkpoint, ModelFiles};
use moegraft::tokenizer::{ChatMessage, Tokenizer};

fn hostile(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hostile")
        .join(case)
}

/// One hostile case: the file its message must name and texts the message must contain.
#[derive(serde::Deserialize)]
struct Case {
    case: String,
    file: String,
    needles: Vec<String>,
}

/// The cases of one kind (`checkpoints`, `ggufs`, `tokenizers`), from
/// tests/fixtures/hostile/expected.json, which the browser test reads too.
fn cases(kind: &str) -> Vec<Case> {
    let path = hostile("expected.json");
    let text = std::fs::read_to_string(&path).expect("expected.json");
    let mut all: std::collections::BTreeMap<String, Vec<Case>> =
        serde_json::from_str(&text).expect("expected.json is valid");
    all.remove(kind)
        .unwrap_or_else(|| panic!("no '{kind}' in expected.json"))
}

fn assert_names(case: &str, err: &str, file: &str, needles: &[String]) {
    let path = hostile(case).join(file);
    let mentions_file = err.contains(&path.display().to_string())
        || err.contains(&format!("{}/{file}", hostile(case).display()));
    assert!(mentions_file, "{case}: message does not name {file}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{case}: no '{needle}' in: {err}");
    }
    assert!(
        !err.contains('\n'),
        "{case}: message is not one line: {err}"
    );
}

#[test]
fn hostile_checkpoints_give_clear_errors() {
    for Case {
        case,
        file,
        needles,
    } in cases("checkpoints")
    {
        let files = ModelFiles::from_dir(&hostile(&case)).expect("fixture dir");
        let err = match pollster::block_on(Checkpoint::open(files)) {
            Ok(_) => panic!("{case}: opened without error"),
            Err(e) => e.to_string(),
        };
        assert_names(&case, &err, &file, &needles);
    }
}

#[test]
fn hostile_ggufs_give_clear_errors() {
    for Case { case, needles, .. } in cases("ggufs") {
        let path = hostile(&case).join("model.gguf");
        let source = FileSource::open(&path).expect("fixture");
        let err = match pollster::block_on(read_gguf(&source)) {
            Ok(_) => panic!("{case}: parsed without error"),
            Err(e) => e.to_string(),
        };
        assert_names(&case, &err, "model.gguf", &needles);
    }
}

#[test]
fn hostile_tokenizers_and_templates_give_clear_errors() {
    for Case {
        case,
        file,
        needles,
    } in cases("tokenizers")
    {
        let files = ModelFiles::from_dir(&hostile(&case)).expect("fixture dir");
        let result = pollster::block_on(Tokenizer::from_files(&files)).and_then(|t| {
            t.apply_chat_template(&[ChatMessage::user("hi")], true)
                .map(drop)
        });
        let err = match result {
            Ok(()) => panic!("{case}: no error"),
            Err(e) => e.to_string(),
        };
        assert_names(&case, &err, &file, &needles);
    }
}

/// Runs the CLI; it must fail with exactly one line on stderr naming the file.
fn cli_fails_cleanly(case: &str, args: &[&str], file: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_moegraft"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("run moegraft");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{case}: exited 0");
    assert_eq!(out.status.code(), Some(1), "{case}: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{case}: stderr is not one line: {stderr}"
    );
    assert!(
        stderr.contains(file),
        "{case}: stderr does not name {file}: {stderr}"
    );
}

#[test]
fn cli_inspect_rejects_hostile_checkpoints() {
    for Case { case, file, .. } in cases("checkpoints") {
        let dir = hostile(&case).display().to_string();
        cli_fails_cleanly(&case, &["inspect", &dir], &file);
    }
}

#[test]
fn cli_import_rejects_hostile_ggufs() {
    let out = tempfile::tempdir().expect("tempdir");
    for Case { case, .. } in cases("ggufs") {
        let file = hostile(&case).join("model.gguf").display().to_string();
        let dest = out.path().join(&case).display().to_string();
        cli_fails_cleanly(&case, &["import-gguf", &file, "--out", &dest], "model.gguf");
        assert!(
            !Path::new(&dest).exists(),
            "{case}: left an output directory"
        );
    }
}

/// A file that claims to be a terabyte (a sparse file, or a hostile `File` in the browser).
struct Huge;

impl ByteSource for Huge {
    fn name(&self) -> &str {
        "config.json"
    }
    fn size(&self) -> u64 {
        1 << 40
    }
    fn read_range(&self, _offset: u64, _len: usize) -> ReadFuture<'_> {
        panic!("a terabyte config.json must be refused before it is read")
    }
}

#[test]
fn huge_metadata_files_are_refused_before_reading() {
    let mut files = ModelFiles::new("dir");
    files.insert("config.json", Box::new(Huge));
    let err = match pollster::block_on(Checkpoint::open(files)) {
        Ok(_) => panic!("opened a terabyte config.json"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("dir/config.json: "), "{err}");
    assert!(err.contains("more than the"), "{err}");
}

/// Inputs the fuzz targets once failed on (tests/fixtures/fuzz-regressions/<target>/): each
/// must still parse to Ok or Err without panicking.
#[test]
fn fuzz_regressions_do_not_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-regressions");
    for target in std::fs::read_dir(&root).expect("regressions dir") {
        let target = target.expect("entry").path();
        for input in std::fs::read_dir(&target).expect("target dir") {
            let path = input.expect("entry").path();
            let bytes = std::fs::read(&path).expect("regression input");
            let name = path.display().to_string();
            let source = moegraft::checkpoint::MemorySource::new(&name, bytes);
            match target.file_name().and_then(|n| n.to_str()) {
                Some("gguf") => drop(pollster::block_on(read_gguf(&source))),
                Some("safetensors_header") => drop(pollster::block_on(
                    moegraft::checkpoint::safetensors::read_header(&source),
                )),
                Some("tokenizer_json") => drop(Tokenizer::from_parts(
                    &pollster::block_on(source.read_range(0, source.size() as usize))
                        .expect("read"),
                    &name,
                    &serde_json::Value::Null,
                    None,
                )),
                Some("chat_template") => {
                    let text = std::fs::read_to_string(&path).expect("UTF-8 template");
                    let template = text.split('\0').next().unwrap_or_default();
                    let messages = [ChatMessage::user("hi")];
                    let rendered =
                        moegraft::tokenizer::chat::render(template, &messages, true, None, None);
                    assert!(rendered.is_err(), "{name}: rendered");
                }
                other => panic!("no parser for fuzz regressions of {other:?}"),
            }
        }
    }
}

/// The gguf target's first find: no tensors and no padding up to the aligned data section.
/// Valid (nothing lives there), so it parses.
#[test]
fn gguf_without_tensors_may_end_before_its_data_section() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz-regressions/gguf/no_tensors_unpadded");
    let source = FileSource::open(&path).expect("fixture");
    let gguf = pollster::block_on(read_gguf(&source)).expect("parses");
    assert!(gguf.tensors.is_empty());
}

/// The tokenizer_json target's find: a syntax error inside `decoder` made tokenizers panic.
#[test]
fn tokenizer_with_broken_decoder_json_is_an_error() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz-regressions/tokenizer_json/decoder_syntax_error");
    let json = std::fs::read(&path).expect("fixture");
    let err = match Tokenizer::from_parts(&json, "t/tokenizer.json", &serde_json::Value::Null, None)
    {
        Ok(_) => panic!("loaded a tokenizer.json with a syntax error"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.starts_with("t/tokenizer.json: cannot load tokenizer: not valid JSON"),
        "{err}"
    );
}
