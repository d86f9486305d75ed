// Grafting a post-training delta: out[i] = t[i] + alpha · (inst[i] − base[i]), computed in f32
// and written in the output dtype, for one piece of a flattened tensor. The three inputs and
// the output may have different dtypes (u32-packed as in weights.wgsl: f32 one per word,
// f16/bf16 two per word, element 2i in the low half); each gets its own pipeline constant.
// Pieces start on an even element, so a 16-bit piece starts on a word boundary. Rounding to
// 16 bits here (to nearest, ties to even, as the `half` crate does on the host) halves the
// read-back and spares the host a conversion pass.
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
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

// 0 = f32, 1 = f16, 2 = bf16, as W_DTYPE in weights.wgsl.
override T_DTYPE: u32 = 0u;
override I_DTYPE: u32 = 0u;
override B_DTYPE: u32 = 0u;
override O_DTYPE: u32 = 0u;

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

fn merged(i: u32) -> f32 {
    var value = load_t(i);
    if (i < p.delta_len) {
        value = value + p.alpha * (load_inst(i) - load_base(i));
    }
    return value;
}

// f32 → f16 bits, rounded to nearest, ties to even; overflow to infinity, NaN kept quiet.
fn f16_bits(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    let sign = (bits >> 16u) & 0x8000u;
    let biased = (bits >> 23u) & 0xffu;
    let man = bits & 0x7fffffu;
    if (biased == 0xffu) {
        return sign | 0x7c00u | select(0u, 0x200u | (man >> 13u), man != 0u);
    }
    let e = i32(biased) - 112; // the f16 exponent field: 127 − 15
    if (e >= 31) {
        return sign | 0x7c00u;
    }
    if (e <= 0) {
        // Subnormal (or zero): the significand with its implicit bit, shifted into 2^-24 units.
        if (e < -10) {
            return sign;
        }
        let full = man | 0x800000u;
        let shift = u32(14 - e);
        var h = full >> shift;
        let rest = full & ((1u << shift) - 1u);
        let half = 1u << (shift - 1u);
        if (rest > half || (rest == half && (h & 1u) == 1u)) {
            h += 1u;
        }
        return sign | h;
    }
    var h = (u32(e) << 10u) | (man >> 13u);
    let rest = man & 0x1fffu;
    // A carry out of the significand steps the exponent up, to infinity at the top: right.
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) == 1u)) {
        h += 1u;
    }
    return sign | h;
}

// f32 → bf16 bits, rounded to nearest, ties to even; NaN kept quiet.
fn bf16_bits(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return (bits >> 16u) | 0x40u;
    }
    return (bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u;
}

fn bits16(x: f32) -> u32 {
    if (O_DTYPE == 1u) {
        return f16_bits(x);
    }
    return bf16_bits(x);
}

// One output word per invocation: one f32 element, or two 16-bit ones.
@compute @workgroup_size(256)
fn graft(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let word = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (O_DTYPE == 0u) {
        if (word < p.count) {
            out[word] = bitcast<u32>(merged(word));
        }
        return;
    }
    let i = 2u * word;
    if (i >= p.count) {
        return;
    }
    var high = 0u;
    if (i + 1u < p.count) {
        high = bits16(merged(i + 1u));
    }
    out[word] = bits16(merged(i)) | (high << 16u);
}
