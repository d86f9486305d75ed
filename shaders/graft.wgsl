// Grafting a post-training delta: out[i] = t[i] + alpha · (inst[i] − base[i]), computed in f32
// and written in the output dtype, for one piece of a flattened tensor. The three inputs and
// the output may have different dtypes (u32-packed as in weights.wgsl: f32 one per word,
// f16/bf16 two per word, element 2i in the low half); each gets its own pipeline constant.
// Rounding to 16 bits here (to nearest, ties to even, as the `half` crate does on the host)
// halves the read-back and spares the host a conversion pass.
//
// Each invocation merges eight elements with whole-vec4 loads and stores: on a CPU adapter
// that is what makes the pass cheap (per-word accesses cost several times as much). So every
// binding is padded to whole groups of eight elements (16 bytes of a 16-bit type, 32 of f32);
// elements in the padding are computed and written but never read back.
//
// Only the first `delta_len` elements of the piece have a delta: a continued-pretrained model
// with an enlarged vocabulary has embedding rows the base never had, which are copied from t
// unchanged (inst and base hold just the overlapping rows, and are not read past them).

struct Params {
    count: u32,
    delta_len: u32,
    alpha: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> t: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> inst: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> base: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<u32>>;

// 0 = f32, 1 = f16, 2 = bf16, as W_DTYPE in weights.wgsl.
override T_DTYPE: u32 = 0u;
override I_DTYPE: u32 = 0u;
override B_DTYPE: u32 = 0u;
override O_DTYPE: u32 = 0u;

// Eight consecutive elements: lo holds the first four, hi the next four.
struct Eight {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// Eight 16-bit elements from the four words that hold them.
fn unpack16(w: vec4<u32>, dtype: u32) -> Eight {
    if (dtype == 1u) {
        return Eight(
            vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
            vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)),
        );
    }
    let low = w << vec4<u32>(16u);
    let high = w & vec4<u32>(0xffff0000u);
    return Eight(
        bitcast<vec4<f32>>(vec4<u32>(low.x, high.x, low.y, high.y)),
        bitcast<vec4<f32>>(vec4<u32>(low.z, high.z, low.w, high.w)),
    );
}

// Group g of eight elements of each input: two vec4s of f32, one of a 16-bit type.
fn load_t(g: u32) -> Eight {
    if (T_DTYPE == 0u) {
        return Eight(bitcast<vec4<f32>>(t[2u * g]), bitcast<vec4<f32>>(t[2u * g + 1u]));
    }
    return unpack16(t[g], T_DTYPE);
}

fn load_inst(g: u32) -> Eight {
    if (I_DTYPE == 0u) {
        return Eight(bitcast<vec4<f32>>(inst[2u * g]), bitcast<vec4<f32>>(inst[2u * g + 1u]));
    }
    return unpack16(inst[g], I_DTYPE);
}

fn load_base(g: u32) -> Eight {
    if (B_DTYPE == 0u) {
        return Eight(bitcast<vec4<f32>>(base[2u * g]), bitcast<vec4<f32>>(base[2u * g + 1u]));
    }
    return unpack16(base[g], B_DTYPE);
}

// f32 → f16 bits, rounded to nearest, ties to even; overflow to infinity, NaN kept quiet.
// Branch-free over four lanes: every case is computed and the right one selected.
fn f16_bits(x: vec4<f32>) -> vec4<u32> {
    let bits = bitcast<vec4<u32>>(x);
    let sign = (bits >> vec4<u32>(16u)) & vec4<u32>(0x8000u);
    let biased = (bits >> vec4<u32>(23u)) & vec4<u32>(0xffu);
    let man = bits & vec4<u32>(0x7fffffu);
    let e = vec4<i32>(biased) - vec4<i32>(112); // the f16 exponent field: 127 − 15
    let one = vec4<u32>(1u);

    // Normal: drop 13 bits and round; a carry out of the significand steps the exponent up,
    // to infinity at the top: right.
    var normal = (vec4<u32>(max(e, vec4<i32>(0))) << vec4<u32>(10u)) | (man >> vec4<u32>(13u));
    let rest = man & vec4<u32>(0x1fffu);
    normal += select(vec4<u32>(0u), one, (rest > vec4<u32>(0x1000u))
        | ((rest == vec4<u32>(0x1000u)) & ((normal & one) == one)));

    // Subnormal (or zero): the significand with its implicit bit, shifted into 2^-24 units
    // (shifts 14..24 where used; clamped so that no lane shifts by 32 or more).
    let full = man | vec4<u32>(0x800000u);
    let shift = vec4<u32>(clamp(vec4<i32>(14) - e, vec4<i32>(1), vec4<i32>(31)));
    var sub = full >> shift;
    let sub_rest = full & ((one << shift) - one);
    let half = one << (shift - one);
    sub += select(vec4<u32>(0u), one, (sub_rest > half)
        | ((sub_rest == half) & ((sub & one) == one)));

    var h = select(normal, sub, e <= vec4<i32>(0));
    h = select(h, vec4<u32>(0u), e < vec4<i32>(-10));
    h = select(h, vec4<u32>(0x7c00u), e >= vec4<i32>(31));
    let nan = vec4<u32>(0x7e00u) | (man >> vec4<u32>(13u));
    let special = select(vec4<u32>(0x7c00u), nan, man != vec4<u32>(0u));
    h = select(h, special, biased == vec4<u32>(0xffu));
    return sign | h;
}

// f32 → bf16 bits, rounded to nearest, ties to even; NaN kept quiet.
fn bf16_bits(x: vec4<f32>) -> vec4<u32> {
    let bits = bitcast<vec4<u32>>(x);
    let rounded = (bits + vec4<u32>(0x7fffu) + ((bits >> vec4<u32>(16u)) & vec4<u32>(1u)))
        >> vec4<u32>(16u);
    let nan = (bits & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u);
    return select(rounded, (bits >> vec4<u32>(16u)) | vec4<u32>(0x40u), nan);
}

fn bits16(x: vec4<f32>) -> vec4<u32> {
    if (O_DTYPE == 1u) {
        return f16_bits(x);
    }
    return bf16_bits(x);
}

// Group g of eight elements per invocation.
@compute @workgroup_size(256)
fn graft(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = (wg.x + wg.y * nwg.x) * 256u + lid;
    let first = 8u * g;
    if (first >= p.count) {
        return;
    }
    var v = load_t(g);
    if (first < p.delta_len) {
        let i = load_inst(g);
        let b = load_base(g);
        let k = vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u);
        let limit = vec4<u32>(p.delta_len);
        v.lo += select(vec4<f32>(0.0), p.alpha * (i.lo - b.lo), k < limit);
        v.hi += select(vec4<f32>(0.0), p.alpha * (i.hi - b.hi), k + vec4<u32>(4u) < limit);
    }
    if (O_DTYPE == 0u) {
        out[2u * g] = bitcast<vec4<u32>>(v.lo);
        out[2u * g + 1u] = bitcast<vec4<u32>>(v.hi);
        return;
    }
    let lo = bits16(v.lo);
    let hi = bits16(v.hi);
    let high_halves = vec4<u32>(lo.y, lo.w, hi.y, hi.w) << vec4<u32>(16u);
    out[g] = vec4<u32>(lo.x, lo.z, hi.x, hi.z) | high_halves;
}
