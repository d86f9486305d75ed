// SwiGLU backward on the fused gate/up layout (a projection whose rows interleave gate and
// up, so token t's pair i sits at gu[t·2I + 2i], gu[t·2I + 2i + 1]; the forward is
// activation.wgsl's swiglu_pairs): with h = silu(g) · u,
//   dg = dh · u · silu'(g),  du = dh · silu(g),  silu'(g) = σ(g) · (1 + g · (1 − σ(g))).
// One invocation per pair; dgu has gu's layout.

struct Params {
    count: u32, // tokens · I
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gu: array<f32>;
@group(0) @binding(2) var<storage, read> dh: array<f32>;
@group(0) @binding(3) var<storage, read_write> dgu: array<f32>;

// σ(g) from exp(−|g|) ≤ 1, as silu.wgsl: no overflow.
fn sigmoid(g: f32) -> f32 {
    let e = exp(-abs(g));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), g >= 0.0);
}

@compute @workgroup_size(256)
fn swiglu_pairs_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.count) {
        return;
    }
    let g = gu[2u * i];
    let up = gu[2u * i + 1u];
    let s = sigmoid(g);
    let d = dh[i];
    dgu[2u * i] = d * up * s * (1.0 + g * (1.0 - s));
    dgu[2u * i + 1u] = d * g * s;
}
