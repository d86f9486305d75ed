// Rotary position embedding, "rotate half" convention of Hugging Face Llama/Qwen2/Mistral:
// (x1, x2) → (x1·cos − x2·sin, x2·cos + x1·sin) with x1 = first half of the head, x2 the
// second. cos/sin come from a table computed on the CPU (exact for any position, and any
// frequency scaling), rows indexed by absolute position.

struct Params {
    tokens: u32,
    pos0: u32,      // absolute position of token 0
    heads: u32,
    head_dim: u32,
    stride: u32,    // elements between tokens
    offset: u32,    // element offset of token 0 (e.g. a KV-cache slot)
    kv_heads: u32,  // rope_qkv only
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> v: array<f32>;
@group(0) @binding(2) var<storage, read> cos_table: array<f32>;
@group(0) @binding(3) var<storage, read> sin_table: array<f32>;
// rope_qkv's: the fused projection's output and where its parts go.
@group(0) @binding(4) var<storage, read> qkv: array<f32>;
@group(0) @binding(5) var<storage, read_write> q_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(7) var<storage, read_write> v_cache: array<f32>;

// The rotation of one (x1, x2) pair: element j of its head's first half at position pos.
fn rotate(x1: f32, x2: f32, pos: u32, j: u32) -> vec2<f32> {
    let table = pos * (p.head_dim / 2u) + j;
    let c = cos_table[table];
    let s = sin_table[table];
    return vec2<f32>(x1 * c - x2 * s, x2 * c + x1 * s);
}

@compute @workgroup_size(64)
fn rope(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let half = p.head_dim / 2u;
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p.tokens * p.heads * half) {
        return;
    }
    let j = i % half;
    let h = (i / half) % p.heads;
    let t = i / (half * p.heads);
    let base = p.offset + t * p.stride + h * p.head_dim;
    let r = rotate(v[base + j], v[base + j + half], p.pos0 + t, j);
    v[base + j] = r.x;
    v[base + j + half] = r.y;
}

// After the fused q/k/v projection (rows of q | k | v, `stride` apart): RoPE on q into q_out,
// RoPE on k and a copy of v into the caches' slots from element `offset`. One dispatch where
// there were two ropes and two cache writes. Each invocation takes one pair of elements.
@compute @workgroup_size(64)
fn rope_qkv(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let half = p.head_dim / 2u;
    let q_pairs = p.heads * half;
    let kv_pairs = p.kv_heads * half;
    let per_token = q_pairs + 2u * kv_pairs;
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p.tokens * per_token) {
        return;
    }
    let t = i / per_token;
    let row = t * p.stride;
    let pos = p.pos0 + t;
    let qd = p.heads * p.head_dim;
    let kvd = p.kv_heads * p.head_dim;
    var e = i % per_token;
    if (e < q_pairs) {
        let at = (e / half) * p.head_dim + e % half;
        let r = rotate(qkv[row + at], qkv[row + at + half], pos, e % half);
        q_out[t * qd + at] = r.x;
        q_out[t * qd + at + half] = r.y;
        return;
    }
    e -= q_pairs;
    let slot = p.offset + t * kvd;
    if (e < kv_pairs) {
        let at = (e / half) * p.head_dim + e % half;
        let r = rotate(qkv[row + qd + at], qkv[row + qd + at + half], pos, e % half);
        k_cache[slot + at] = r.x;
        k_cache[slot + at + half] = r.y;
        return;
    }
    e -= kv_pairs;
    let src = row + qd + kvd + 2u * e;
    v_cache[slot + 2u * e] = qkv[src];
    v_cache[slot + 2u * e + 1u] = qkv[src + 1u];
}
