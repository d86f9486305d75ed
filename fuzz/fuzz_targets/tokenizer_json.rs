//! tokenizer.json: any bytes must give Ok or Err; an accepted tokenizer must encode and decode
//! a short text without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moegraft::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(tok) = Tokenizer::from_parts(data, "tokenizer.json", &serde_json::Value::Null, None)
    else {
        return;
    };
    if let Ok(ids) = tok.encode("Hello wörld <s> 123", true) {
        let _ = tok.decode(&ids, false);
    }
    let _ = tok.vocab_size();
});
