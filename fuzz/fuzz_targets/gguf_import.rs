//! A whole GGUF import (metadata, architecture keys — llama, qwen2/3, qwen2moe, qwen3moe —,
//! the tensor plan, the BPE or SentencePiece vocabulary, dequantisation): any bytes must give
//! Ok or Err, never a panic; output goes nowhere.
#![no_main]

use std::io::{Sink, Write};

use libfuzzer_sys::fuzz_target;
use moegraft::checkpoint::import::import_gguf_to;
use moegraft::checkpoint::writer::OutputFiles;
use moegraft::checkpoint::{DType, MemorySource};

struct Nowhere;

impl OutputFiles for Nowhere {
    type File = Sink;
    fn create(&mut self, _: &str) -> moegraft::Result<Sink> {
        Ok(std::io::sink())
    }
    fn complete(&mut self, _: &str, mut file: Sink) -> moegraft::Result<()> {
        let _ = file.flush();
        Ok(())
    }
    fn label(&self, name: &str) -> String {
        name.to_string()
    }
}

fuzz_target!(|data: &[u8]| {
    let source = MemorySource::new("fuzz.gguf", data.to_vec());
    let _ = pollster::block_on(import_gguf_to(&source, Nowhere, DType::F32, 1 << 20));
});
