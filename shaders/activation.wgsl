// Element-wise steps: SwiGLU (silu(gate) · up), the residual add, the gated residual add, a
// bias added to every row.

//!include silu

struct Params {
    count: u32,
    dim: u32,       // gated_add, add_bias: values per row
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

// out = silu(a) · b, silu(x) = x · sigmoid(x).
@compute @workgroup_size(256)
fn swiglu(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = index(wg, nwg, lid);
    if (i < p.count) {
        out[i] = silu(a[i]) * b[i];
    }
}

// out[i] = act(a[2i]) · a[2i + 1]: the fused gate/up projection's output, whose pairs are a
// gate and its up value side by side (prefill; decode fuses this into the matvec); act is
// silu, or gelu_tanh with GELU (gemma's GeGLU).
override GELU: bool = false;

@compute @workgroup_size(256)
fn swiglu_pairs(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = index(wg, nwg, lid);
    if (i < p.count) {
        let g = a[2u * i];
        out[i] = select(silu(g), gelu_tanh(g), GELU) * a[2u * i + 1u];
    }
}

// out = a + b.
@compute @workgroup_size(256)
fn add(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = index(wg, nwg, lid);
    if (i < p.count) {
        out[i] = a[i] + b[i];
    }
}

// out[t, n] += sigmoid(b[t]) · a[t, n] over rows of `dim`: qwen2_moe's shared expert joining
// the residual stream through its one-logit gate.
@compute @workgroup_size(256)
fn gated_add(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = index(wg, nwg, lid);
    if (i < p.count) {
        out[i] += sigmoid(b[i / p.dim]) * a[i];
    }
}

// out[t, n] += b[n] over rows of `dim` (a frozen projection's bias in the training forward).
@compute @workgroup_size(256)
fn add_bias(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = index(wg, nwg, lid);
    if (i < p.count) {
        out[i] += b[i % p.dim];
    }
}
