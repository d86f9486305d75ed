// Shared by every kernel that reads weights (included, not a kernel family of its own).
// Weights live in u32 words so the baseline needs no shader-f16: f32 is one element per
// word; f16 and bf16 are two per word, element 2i in the low half. Rows of 16-bit matrices
// are padded to a whole word, so a row always starts on a word boundary.
// The including shader declares `w: array<u32>`.

// 0 = f32, 1 = f16, 2 = bf16 (a pipeline constant: each dtype gets its own pipeline).
override W_DTYPE: u32 = 0u;

// Element k of the row starting at word `row`.
fn load_w(row: u32, k: u32) -> f32 {
    if (W_DTYPE == 0u) {
        return bitcast<f32>(w[row + k]);
    }
    let word = w[row + (k >> 1u)];
    let high = (k & 1u) == 1u;
    if (W_DTYPE == 1u) {
        let pair = unpack2x16float(word);
        return select(pair.x, pair.y, high);
    }
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, high));
}

// Elements k and k+1 (k even, k+1 inside the row) — one word for 16-bit types.
fn load_w2(row: u32, k: u32) -> vec2<f32> {
    if (W_DTYPE == 0u) {
        return vec2<f32>(bitcast<f32>(w[row + k]), bitcast<f32>(w[row + k + 1u]));
    }
    let word = w[row + (k >> 1u)];
    if (W_DTYPE == 1u) {
        return unpack2x16float(word);
    }
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
}
