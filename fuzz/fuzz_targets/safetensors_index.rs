//! A sharded checkpoint: the input is split on "\n--\n" into an index JSON and the shards it
//! may name (model-0000N-of-0000M.safetensors). Opening must give Ok or Err, and an opened
//! checkpoint must find every tensor the index lists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moegraft::checkpoint::{Checkpoint, MemorySource, ModelFiles, INDEX_FILE};

/// A valid config, so the fuzzer spends its time on the index and shards.
const CONFIG: &str = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":96,
"num_attention_heads":4,"num_key_value_heads":2,"num_hidden_layers":2,"vocab_size":400}"#;

fn split<'a>(data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(sep.len()).position(|w| w == sep) {
        parts.push(&rest[..i]);
        rest = &rest[i + sep.len()..];
    }
    parts.push(rest);
    parts
}

fuzz_target!(|data: &[u8]| {
    let parts = split(data, b"\n--\n");
    let mut files = ModelFiles::new("fuzz");
    files.insert("config.json", Box::new(MemorySource::new("config.json", CONFIG.into())));
    files.insert(INDEX_FILE, Box::new(MemorySource::new(INDEX_FILE, parts[0].to_vec())));
    let shards = parts.len() - 1;
    for (i, shard) in parts[1..].iter().enumerate() {
        let name = format!("model-{:05}-of-{shards:05}.safetensors", i + 1);
        files.insert(&name, Box::new(MemorySource::new(&name, shard.to_vec())));
    }
    let index: Option<serde_json::Value> = serde_json::from_slice(parts[0]).ok();
    let Ok(checkpoint) = pollster::block_on(Checkpoint::open(files)) else {
        return;
    };
    let listed = index.as_ref().and_then(|v| v.get("weight_map")?.as_object().cloned());
    for name in listed.into_iter().flatten().map(|(k, _)| k) {
        assert!(checkpoint.has(&name), "index lists {name} but it was not found");
    }
});
