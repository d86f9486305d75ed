// RMSNorm: y = x / sqrt(mean(x²) + eps) · weight, one workgroup per token.

struct Params {
    tokens: u32,
    dim: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

var<workgroup> sums: array<f32, 64>;

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
    sums[lid] = ss;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            sums[lid] += sums[lid + s];
        }
        workgroupBarrier();
    }
    let scale = inverseSqrt(sums[0] / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += 64u) {
        y[base + i] = x[base + i] * scale * weight[i];
    }
}
