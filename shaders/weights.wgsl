// Shared by every kernel that reads weights (included, not a kernel family of its own).
// Weights live in u32 words so the baseline needs no shader-f16: f32 is one element per
// word; f16 and bf16 are two per word, element 2i in the low half. Rows of 16-bit matrices
// are padded to a whole word, so a row always starts on a word boundary.
// Q8_0 rows are blocks of 32 elements in superblocks of four (see q8_0.rs), 36 words each:
// the four scales d as f32 bits, then the four blocks' quants, 8 words a block, four int8 q to
// a word (element 4i + b of a block in byte b of its word i); the element is d · q. Every
// superblock starts 16-byte aligned; a row's short last one keeps its four scale words.
// The including shader declares `w: array<u32>`.

// 0 = f32, 1 = f16, 2 = bf16, 3 = q8_0 (a pipeline constant: each format gets its own
// pipeline).
override W_DTYPE: u32 = 0u;

const Q8_SUPER_WORDS: u32 = 36u;

// Word offsets, in the Q8_0 row at `row`, of quant word j (elements 4j..4j + 3) and of its
// block's scale.
fn q8_quants_at(row: u32, j: u32) -> u32 {
    return row + Q8_SUPER_WORDS * (j >> 5u) + 4u + (j & 31u);
}

fn q8_scale_at(row: u32, j: u32) -> u32 {
    return row + Q8_SUPER_WORDS * (j >> 5u) + ((j >> 3u) & 3u);
}

// The same in vec4s from a row's start, for the kernels that read whole vec4s: superblock s's
// vec4 of scales, and the first of block b's two vec4s of quants.
fn q8_scales_vec4(s: u32) -> u32 {
    return (Q8_SUPER_WORDS / 4u) * s;
}

fn q8_quants_vec4(b: u32) -> u32 {
    return q8_scales_vec4(b >> 2u) + 1u + 2u * (b & 3u);
}

// Byte b of a word as a signed int8, in f32. Shifts, not unpack4xI8 (not in the baseline):
// the byte to the top, then an arithmetic shift back.
fn q8_at(word: u32, b: u32) -> f32 {
    return f32(bitcast<i32>(word << (24u - 8u * b)) >> 24u);
}

// The four int8 of a word, element 4i + b in lane b.
fn q8_word(word: u32) -> vec4<f32> {
    let bytes = bitcast<vec4<i32>>(vec4<u32>(word) << vec4<u32>(24u, 16u, 8u, 0u));
    return vec4<f32>(bytes >> vec4<u32>(24u));
}

// Element k of the row starting at word `row`.
fn load_w(row: u32, k: u32) -> f32 {
    if (W_DTYPE == 0u) {
        return bitcast<f32>(w[row + k]);
    }
    if (W_DTYPE == 3u) {
        let j = k >> 2u;
        return bitcast<f32>(w[q8_scale_at(row, j)]) * q8_at(w[q8_quants_at(row, j)], k & 3u);
    }
    let word = w[row + (k >> 1u)];
    let high = (k & 1u) == 1u;
    if (W_DTYPE == 1u) {
        let pair = unpack2x16float(word);
        return select(pair.x, pair.y, high);
    }
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, high));
}

// Elements k and k+1 (k even, k+1 inside the row) — one word for 16-bit types and Q8_0.
fn load_w2(row: u32, k: u32) -> vec2<f32> {
    if (W_DTYPE == 0u) {
        return vec2<f32>(bitcast<f32>(w[row + k]), bitcast<f32>(w[row + k + 1u]));
    }
    if (W_DTYPE == 3u) {
        let j = k >> 2u;
        let word = w[q8_quants_at(row, j)];
        let b = k & 3u;
        return bitcast<f32>(w[q8_scale_at(row, j)]) * vec2<f32>(q8_at(word, b), q8_at(word, b + 1u));
    }
    let word = w[row + (k >> 1u)];
    if (W_DTYPE == 1u) {
        return unpack2x16float(word);
    }
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}
