//! config.json: any text must give Ok or Err, and an accepted config's derived sizes must be
//! computable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moegraft::checkpoint::ModelConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = ModelConfig::from_json(text, "config.json") else {
        return;
    };
    assert!(config.hidden_size > 0 && config.num_heads > 0 && config.num_kv_heads > 0);
    assert_eq!(config.num_heads % config.num_kv_heads, 0);
    let _ = (config.q_dim(), config.kv_dim());
    assert_eq!(config.rope_inv_freq().len(), config.head_dim / 2);
});
