// RMSNorm: y = x / sqrt(mean(x²) + eps) · weight, one workgroup per token.

struct Params {
    tokens: u32,
    dim: u32,       // head_rms_norm: head_dim
    eps: f32,
    heads: u32,     // head_rms_norm: q heads + kv heads per token
    q_heads: u32,   // head_rms_norm
    stride: u32,    // head_rms_norm: elements per token row (q | k | v)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

var<workgroup> sums: array<f32, 64>;

// The sum of every invocation's `v`, returned to all of them. Called from uniform control
// flow only (it holds barriers).
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    sums[lid] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            sums[lid] += sums[lid + s];
        }
        workgroupBarrier();
    }
    return sums[0];
}

@compute @workgroup_size(64)
fn rms_norm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = wg.x + wg.y * nwg.x;
    if (t >= p.tokens) {
        return;
    }
    let base = t * p.dim;
    var ss = 0.0;
    for (var i = lid; i < p.dim; i += 64u) {
        let v = x[base + i];
        ss += v * v;
    }
    let scale = inverseSqrt(workgroup_sum(lid, ss) / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += 64u) {
        y[base + i] = x[base + i] * scale * weight[i];
    }
}

// Per-head RMSNorm of q and k in place (qwen3's q_norm / k_norm, before RoPE): one workgroup
// per (token, head); heads 0 … q_heads − 1 are q's and take weight[0 … head_dim), the rest
// k's and take weight[head_dim … 2·head_dim). Each token's heads sit contiguously from the
// start of its row of `stride` elements (q | k | v).

@group(0) @binding(4) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(5) var<storage, read> qk_weight: array<f32>;

@compute @workgroup_size(64)
fn head_rms_norm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.tokens * p.heads) {
        return;
    }
    let t = row / p.heads;
    let head = row % p.heads;
    let base = t * p.stride + head * p.dim;
    let w0 = select(0u, p.dim, head >= p.q_heads);
    var ss = 0.0;
    for (var i = lid; i < p.dim; i += 64u) {
        let v = qkv[base + i];
        ss += v * v;
    }
    let scale = inverseSqrt(workgroup_sum(lid, ss) / f32(p.dim) + p.eps);
    // Every invocation has read its elements (the barriers above) before any is written.
    for (var i = lid; i < p.dim; i += 64u) {
        qkv[base + i] = qkv[base + i] * scale * qk_weight[w0 + i];
    }
}
