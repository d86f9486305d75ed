// Grafting a post-training delta: out[i] = t[i] + alpha · (inst[i] − base[i]), in f32, for
// one piece of a flattened tensor. The three inputs may have different dtypes (u32-packed as
// in weights.wgsl: f32 one per word, f16/bf16 two per word, element 2i in the low half); each
// gets its own pipeline constant. Pieces start on an even element, so a 16-bit piece starts
// on a word boundary.
//
// Only the first `delta_len` elements of the piece have a delta: a continued-pretrained model
// with an enlarged vocabulary has embedding rows the base never had, which are copied from t
// unchanged (inst and base hold just the overlapping rows).

struct Params {
    count: u32,
    delta_len: u32,
    alpha: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> t: array<u32>;
@group(0) @binding(2) var<storage, read> inst: array<u32>;
@group(0) @binding(3) var<storage, read> base: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// 0 = f32, 1 = f16, 2 = bf16, as W_DTYPE in weights.wgsl.
override T_DTYPE: u32 = 0u;
override I_DTYPE: u32 = 0u;
override B_DTYPE: u32 = 0u;

// Element i of a buffer of `dtype`, given the word that holds it.
fn decode(word: u32, i: u32, dtype: u32) -> f32 {
    if (dtype == 0u) {
        return bitcast<f32>(word);
    }
    let high = (i & 1u) == 1u;
    if (dtype == 1u) {
        let pair = unpack2x16float(word);
        return select(pair.x, pair.y, high);
    }
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, high));
}

// Index of the word holding element i.
fn word_of(i: u32, dtype: u32) -> u32 {
    return select(i >> 1u, i, dtype == 0u);
}

fn load_t(i: u32) -> f32 {
    return decode(t[word_of(i, T_DTYPE)], i, T_DTYPE);
}

fn load_inst(i: u32) -> f32 {
    return decode(inst[word_of(i, I_DTYPE)], i, I_DTYPE);
}

fn load_base(i: u32) -> f32 {
    return decode(base[word_of(i, B_DTYPE)], i, B_DTYPE);
}

@compute @workgroup_size(256)
fn graft(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.count) {
        return;
    }
    var value = load_t(i);
    if (i < p.delta_len) {
        value = value + p.alpha * (load_inst(i) - load_base(i));
    }
    out[i] = value;
}
