//! llama.cpp's Q8_0 quantization, packed for the GPU: blocks of 32 consecutive elements of a
//! row, each one scale d = max|x| / 127 and 32 int8 q = round(x / d), x ≈ d · q.
//!
//! On the GPU a row is superblocks of four blocks, 36 u32 words each: the four scales as f32
//! bits (the values llama.cpp stores as f16, so GPU, CPU reference and GGUF dequantization agree
//! exactly), then the four blocks' quants, 8 words a block, four int8 to a word, element 4i + b
//! of a block in byte b of its word i. A row's last superblock may hold fewer blocks; its unused
//! scales are zero. So every superblock, and every block's quants, start 16-byte aligned: the
//! CPU adapters' kernels read them a vec4 at a time (a scale vec4, then two quant vec4s a block),
//! where the earlier 9-word blocks took a load a word. No f16 is needed and a kernel finds an
//! element from the row's start alone. 36 bytes per 32 weights (more only in a short last
//! superblock): 1.125 bytes a weight.

use half::f16;

use crate::checkpoint::{dtype, DType};

/// Elements per block.
pub const BLOCK: usize = 32;
/// Blocks per superblock.
pub const SUPERBLOCK_BLOCKS: usize = 4;
/// u32 words of a block's quants.
const QUANT_WORDS: usize = BLOCK / 4;
/// u32 words of a whole superblock: its scales, then its blocks' quants.
const SUPERBLOCK_WORDS: usize = SUPERBLOCK_BLOCKS * (1 + QUANT_WORDS);

/// Whether a row of `cols` elements can be held as Q8_0 (whole blocks only).
pub fn fits(cols: usize) -> bool {
    cols > 0 && cols.is_multiple_of(BLOCK)
}

/// u32 words of one Q8_0 row of `cols` elements (`cols` a multiple of 32): each superblock's
/// scale words, then its blocks' quants.
pub fn row_words(cols: usize) -> usize {
    let blocks = cols / BLOCK;
    blocks.div_ceil(SUPERBLOCK_BLOCKS) * SUPERBLOCK_BLOCKS + blocks * QUANT_WORDS
}

/// One block as llama.cpp's `quantize_row_q8_0_ref` makes it: the f16 scale and the quants.
/// q is rounded with the f32 reciprocal of the unrounded scale, ties away from zero (`roundf`).
pub fn quantize_block(x: &[f32; BLOCK]) -> (f16, [i8; BLOCK]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // |x · id| ≤ 127 up to rounding, so the cast never saturates a real weight.
    let q = x.map(|v| (v * id).round() as i8);
    (f16::from_f32(d), q)
}

/// Appends one row (`x.len()` a multiple of 32) in the GPU layout.
pub fn quantize_row(x: &[f32], out: &mut Vec<u32>) {
    let blocks: Vec<_> = x
        .chunks_exact(BLOCK)
        .map(|block| quantize_block(block.try_into().expect("chunks_exact gives whole blocks")))
        .collect();
    for superblock in blocks.chunks(SUPERBLOCK_BLOCKS) {
        let scales = superblock.iter().map(|(d, _)| d.to_f32().to_bits());
        out.extend(scales.chain(std::iter::repeat(0)).take(SUPERBLOCK_BLOCKS));
        for (_, q) in superblock {
            out.extend(
                q.chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])),
            );
        }
    }
}

/// Tightly packed little-endian `dtype` rows of `cols` elements (`cols` a multiple of 32) as
/// GPU Q8_0 bytes.
pub fn quantize_rows(dtype: DType, bytes: &[u8], cols: usize) -> Vec<u8> {
    let row_bytes = cols * dtype.size();
    if row_bytes == 0 {
        return Vec::new();
    }
    let mut words = Vec::with_capacity(bytes.len() / row_bytes * row_words(cols));
    for row in bytes.chunks_exact(row_bytes) {
        quantize_row(&dtype::to_f32(dtype, row), &mut words);
    }
    bytemuck::cast_slice(&words).to_vec()
}

/// The blocks of GPU Q8_0 rows of `cols` elements (`words` whole rows), in order: each
/// block's scale and its 8 quant words.
pub fn blocks(words: &[u32], cols: usize) -> impl Iterator<Item = (f32, &[u32])> {
    let blocks_per_row = cols / BLOCK;
    words
        .chunks_exact(row_words(cols).max(1))
        .flat_map(move |row| {
            (0..blocks_per_row).map(move |b| {
                let superblock = b / SUPERBLOCK_BLOCKS * SUPERBLOCK_WORDS;
                let quants = superblock + SUPERBLOCK_BLOCKS + b % SUPERBLOCK_BLOCKS * QUANT_WORDS;
                (
                    f32::from_bits(row[superblock + b % SUPERBLOCK_BLOCKS]),
                    &row[quants..quants + QUANT_WORDS],
                )
            })
        })
}

/// The values GPU Q8_0 rows of `cols` elements stand for (d · q in f32, as the kernels compute
/// them): the CPU reference of every kernel that reads Q8_0 weights.
pub fn dequantize_rows(words: &[u32], cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(words.len() / row_words(cols).max(1) * cols);
    for (d, quants) in blocks(words, cols) {
        for word in quants {
            out.extend(word.to_le_bytes().map(|b| d * (b as i8) as f32));
        }
    }
    out
}

/// One GPU block (its scale and quant words) as a GGUF Q8_0 block (f16 d, then 32 int8): 34
/// bytes.
pub fn to_gguf_block((d, quants): (f32, &[u32])) -> Vec<u8> {
    let mut out = f16::from_f32(d).to_le_bytes().to_vec();
    for word in quants {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::dequant::dequantize;
    use crate::checkpoint::gguf::GgmlType;

    fn block(f: impl Fn(usize) -> f32) -> [f32; BLOCK] {
        std::array::from_fn(f)
    }

    #[test]
    fn zero_block_has_zero_scale_and_quants() {
        let (d, q) = quantize_block(&[0.0; BLOCK]);
        assert_eq!(d.to_f32(), 0.0);
        assert_eq!(q, [0; BLOCK]);
        let mut words = Vec::new();
        quantize_row(&[0.0; BLOCK], &mut words);
        assert_eq!(words, vec![0; row_words(BLOCK)]);
        assert_eq!(dequantize_rows(&words, BLOCK), vec![0.0; BLOCK]);
    }

    #[test]
    fn negative_amax_maps_to_minus_127() {
        // max |x| is |-2| at element 5: d = 2/127, that element is -127, ±0.5 are ±31.75.
        let x = block(|i| match i {
            5 => -2.0,
            6 => 0.5,
            7 => -0.5,
            _ => 0.25,
        });
        let (d, q) = quantize_block(&x);
        assert_eq!(d, f16::from_f32(2.0 / 127.0));
        assert_eq!((q[5], q[6], q[7], q[0]), (-127, 32, -32, 16));
    }

    #[test]
    fn ties_round_away_from_zero() {
        // amax 127: d = 1 and id = 1 exactly, so x · id is x and the halves are ties.
        let x = block(|i| match i {
            0 => 127.0,
            1 => 2.5,
            2 => -2.5,
            3 => 0.5,
            4 => -0.5,
            5 => 1.5,
            6 => -126.5,
            _ => 0.0,
        });
        let (d, q) = quantize_block(&x);
        assert_eq!(d.to_f32(), 1.0);
        assert_eq!(&q[..7], &[127, 3, -3, 1, -1, 2, -127]);
    }

    #[test]
    fn row_words_count_superblocks_and_padding() {
        // 1, 4, 5 and 18 blocks (SmolLM2's 576 columns): a short last superblock keeps four
        // scale words.
        assert_eq!(row_words(32), 4 + 8);
        assert_eq!(row_words(128), 36);
        assert_eq!(row_words(160), 36 + 4 + 8);
        assert_eq!(row_words(576), 4 * 36 + 4 + 16);
        for cols in (32..=1024).step_by(32) {
            assert_eq!(row_words(cols) % 4, 0, "{cols} columns");
        }
    }

    #[test]
    fn layout_is_superblocks_of_scales_then_quants_little_endian() {
        // Six blocks: a whole superblock and one of two blocks.
        let x: Vec<f32> = (0..6 * BLOCK).map(|i| (i as f32 - 90.0) * 0.01).collect();
        let mut words = Vec::new();
        quantize_row(&x, &mut words);
        assert_eq!(words.len(), 36 + 4 + 16);
        for (b, block) in x.chunks_exact(BLOCK).enumerate() {
            let (d, q) = quantize_block(block.try_into().unwrap());
            let superblock = 36 * (b / 4);
            assert_eq!(words[superblock + b % 4], d.to_f32().to_bits(), "block {b}");
            let quants = superblock + 4 + 8 * (b % 4);
            for (i, &qi) in q.iter().enumerate() {
                let byte = (words[quants + i / 4] >> (8 * (i % 4))) as u8 as i8;
                assert_eq!(byte, qi, "block {b} element {i}");
            }
        }
        // The short superblock's two unused scales.
        assert_eq!(&words[38..40], &[0, 0]);
    }

    /// Random rows quantized here and dequantized by the GGUF reader (llama.cpp's numbers)
    /// give the same f32 values bit for bit, and stay within d/2 of the input.
    #[test]
    fn matches_the_gguf_q8_0_dequantization() {
        let mut state = 0x1234_5678_u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
        };
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let cols = 224; // seven blocks: a whole superblock and one of three
            let mut values: Vec<f32> = (0..4 * cols).map(|_| next()).collect();
            values[cols..cols + BLOCK].fill(0.0); // a zero block
            for v in &mut values[2 * cols..2 * cols + BLOCK] {
                *v *= 1e-4; // a scale that is an f16 subnormal
            }
            let bytes = dtype::from_f32(dtype, &values);
            let exact = dtype::to_f32(dtype, &bytes);
            let words: Vec<u32> = bytemuck::pod_collect_to_vec(&quantize_rows(dtype, &bytes, cols));
            assert_eq!(words.len(), 4 * row_words(cols));
            let ours = dequantize_rows(&words, cols);
            let gguf: Vec<u8> = blocks(&words, cols).flat_map(to_gguf_block).collect();
            let theirs = dequantize("f", "t", GgmlType::Q8_0, &gguf, ours.len()).unwrap();
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{dtype:?} element {i}");
            }
            for (i, block) in exact.chunks_exact(BLOCK).enumerate() {
                let d = block.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
                let stored = blocks(&words, cols).nth(i).unwrap().0;
                // Half a step of rounding, plus the f16 scale's error times |q| ≤ 127.
                let bound = 0.5 * stored + 127.0 * (d - stored).abs() + 1e-9;
                for (j, (x, y)) in block.iter().zip(&ours[i * BLOCK..]).enumerate() {
                    let err = (x - y).abs();
                    assert!(err <= bound, "{dtype:?} block {i} element {j}: {x} vs {y}");
                }
            }
        }
    }
}
