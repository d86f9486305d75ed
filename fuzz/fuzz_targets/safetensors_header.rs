//! A safetensors file's header: any bytes must give Ok or Err, and an accepted header's
//! tensors must lie inside the data section without overlapping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moegraft::checkpoint::safetensors::read_header;
use moegraft::checkpoint::MemorySource;

fuzz_target!(|data: &[u8]| {
    let size = data.len() as u64;
    let source = MemorySource::new("fuzz.safetensors", data.to_vec());
    let Ok(header) = pollster::block_on(read_header(&source)) else {
        return;
    };
    // Accepted means the length prefix was readable and the JSON fit in the file.
    let json_len = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let data_start = 8 + json_len;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for t in header.tensors.values() {
        let end = t.offset.checked_add(t.len).expect("range overflows");
        assert!(t.offset >= data_start && end <= size, "{t:?} outside the data");
        if let Some(dtype) = t.dtype {
            assert_eq!(t.numel() as u64 * dtype.size() as u64, t.len, "{t:?}");
        }
        ranges.push((t.offset, end));
    }
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap {w:?}");
    }
});
