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
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> v: array<f32>;
@group(0) @binding(2) var<storage, read> cos_table: array<f32>;
@group(0) @binding(3) var<storage, read> sin_table: array<f32>;

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
    let table = (p.pos0 + t) * half + j;
    let c = cos_table[table];
    let s = sin_table[table];
    let x1 = v[base + j];
    let x2 = v[base + j + half];
    v[base + j] = x1 * c - x2 * s;
    v[base + j + half] = x2 * c + x1 * s;
}
