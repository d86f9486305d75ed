// RMSNorm backward, the input's gradient only (the trainer never trains a norm): with
// y = x · r · w and r = 1 / sqrt(mean(x²) + eps),
//   dx_i = r · w_i · dy_i − x_i · r³ · mean_j(x_j · w_j · dy_j),
// added to dx when `accumulate` (the residual stream's gradient). r is recomputed from x,
// the saved input, instead of being kept. One workgroup per row of `dim`.
//
// Rows of dy/dx are contiguous; x's row r is head r % heads of token r / heads in a buffer
// of `x_stride` per token from `x_offset` (a whole token when heads = 1 and x_stride = dim;
// qwen3's per-head q/k norm reads the saved q|k|v projection), and the weight starts at
// `w_offset` (q_norm's or k_norm's half of the stacked pair).

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    accumulate: u32,
    heads: u32,
    x_stride: u32,
    x_offset: u32,
    w_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

var<workgroup> sums: array<vec2<f32>, 64>;

@compute @workgroup_size(64)
fn rms_norm_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.dim;
    let xb = (row / p.heads) * p.x_stride + p.x_offset + (row % p.heads) * p.dim;
    let wb = p.w_offset;
    // (Σ x², Σ x·w·dy)
    var s = vec2<f32>(0.0);
    for (var i = lid; i < p.dim; i += 64u) {
        let v = x[xb + i];
        s += vec2<f32>(v * v, v * weight[wb + i] * dy[base + i]);
    }
    sums[lid] = s;
    workgroupBarrier();
    for (var half = 32u; half > 0u; half >>= 1u) {
        if (lid < half) {
            sums[lid] += sums[lid + half];
        }
        workgroupBarrier();
    }
    let dim = f32(p.dim);
    let r = inverseSqrt(sums[0].x / dim + p.eps);
    let c = r * r * r * sums[0].y / dim;
    for (var i = lid; i < p.dim; i += 64u) {
        var g = r * weight[wb + i] * dy[base + i] - x[xb + i] * c;
        if (p.accumulate != 0u) {
            g += dx[base + i];
        }
        dx[base + i] = g;
    }
}
