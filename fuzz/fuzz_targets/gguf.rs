//! A GGUF file: any bytes must give Ok or Err, and an accepted file's tensors must lie inside
//! it, after the data section's start. (Regression: tests/fixtures/fuzz-regressions/gguf/.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use moegraft::checkpoint::gguf::read_gguf;
use moegraft::checkpoint::MemorySource;

fuzz_target!(|data: &[u8]| {
    let size = data.len() as u64;
    let source = MemorySource::new("fuzz.gguf", data.to_vec());
    let Ok(gguf) = pollster::block_on(read_gguf(&source)) else {
        return;
    };
    // A file without tensors may end before its (aligned) data section: nothing reads there.
    for t in &gguf.tensors {
        let end = t.offset.checked_add(t.n_bytes).expect("range overflows");
        assert!(t.offset >= gguf.data_offset && end <= size, "{t:?} outside the file");
        let _ = t.numel();
    }
});
