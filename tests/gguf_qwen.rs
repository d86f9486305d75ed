//! GGUF files of the Qwen families as llama.cpp's converter writes them (tools/make_tiny_gguf.py:
//! qwen3 with q/k norms, qwen2moe with biases and a shared expert, qwen3moe), imported by
//! moegraft and compared with what transformers' GGUF loader read from the same files: every
//! tensor bit for bit (as f32) under its Hugging Face per-expert name, the config's sizes, and
//! the tokenizer on multilingual text. Then the imported model runs.

mod common;

use moegraft::checkpoint::import::import_gguf;
use moegraft::checkpoint::{Checkpoint, DType, ModelFiles};
use moegraft::tokenizer::Tokenizer;
use sha2::{Digest, Sha256};

#[test]
fn qwen_ggufs_import_as_transformers_reads_them() {
    let dir = common::fixtures().join("gguf");
    let record = common::json(&dir.join("tiny-qwen.json"));
    let models = record["models"].as_object().expect("models");
    assert_eq!(models.len(), 3);
    for (arch, want) in models {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("imported");
        let gguf = dir.join(want["file"].as_str().expect("file"));
        import_gguf(&gguf, &out, DType::F32).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let ckpt = pollster::block_on(Checkpoint::open(ModelFiles::from_dir(&out).unwrap()))
            .expect("opens");
        let tensors = want["tensors"].as_object().expect("tensors");
        let mut ours: Vec<&str> = ckpt.tensor_names().collect();
        ours.sort_unstable();
        let theirs: Vec<&str> = tensors.keys().map(String::as_str).collect();
        assert_eq!(ours, theirs, "{arch}: tensor names");
        for (name, sha) in tensors {
            let values = pollster::block_on(ckpt.read_f32(name)).expect("tensor");
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let got = format!("{:x}", Sha256::digest(&bytes));
            assert_eq!(&got, sha, "{arch}: {name} differs from transformers'");
        }
        let config = &ckpt.config.raw;
        for (key, value) in want["config"].as_object().expect("config") {
            assert_eq!(&config[key], value, "{arch}: config.json '{key}'");
        }
        let tokenizer = pollster::block_on(Tokenizer::from_files(&ckpt.files)).expect("tokenizer");
        for (text, ids) in want["tokens"].as_object().expect("tokens") {
            let want_ids: Vec<u32> = common::u32s(ids);
            assert_eq!(
                tokenizer.encode(text, false).unwrap(),
                want_ids,
                "{arch}: {text:?}"
            );
        }
        let opened = common::open(&out);
        let mut session = opened.model.session().expect("session");
        let logits = pollster::block_on(opened.model.logits_last(&mut session, &[1, 42, 303]))
            .expect("runs");
        assert!(
            logits.iter().all(|v| v.is_finite()),
            "{arch}: finite logits"
        );
    }
}
