// The optimiser: the global gradient norm and its clip, then AdamW, all on the GPU so a
// training step needs no read-back. Trained tensors live in flat f32 buffers (parameters,
// gradients, first and second moments side by side), so each pass is one dispatch a buffer.

struct Params {
    count: u32,       // elements in this buffer
    slot: u32,        // sum_squares: this buffer's first partial sum; clip_scale: partials in all
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias1: f32,       // 1 − β1^step
    bias2_sqrt: f32,  // sqrt(1 − β2^step)
    max_norm: f32,    // clip_scale: 0 for no clipping
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
// [0] = the norm, [1] = the factor every gradient is multiplied by.
@group(0) @binding(3) var<storage, read_write> norm: array<f32>;
@group(0) @binding(4) var<storage, read_write> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;
@group(0) @binding(7) var<storage, read> scale: array<f32>;

// Partial sums a buffer: a fixed number of workgroups, each striding over the buffer, so the
// final sum is one workgroup's work.
const PARTIALS: u32 = 64u;

var<workgroup> sums: array<f32, 256>;

fn reduce(lid: u32) {
    workgroupBarrier();
    for (var half = 128u; half > 0u; half >>= 1u) {
        if (lid < half) {
            sums[lid] += sums[lid + half];
        }
        workgroupBarrier();
    }
}

// partials[slot + w] = Σ g² over workgroup w's share. Dispatched as PARTIALS workgroups.
@compute @workgroup_size(256)
fn sum_squares(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    var s = 0.0;
    for (var i = wg.x * 256u + lid; i < p.count; i += PARTIALS * 256u) {
        let g = grads[i];
        s += g * g;
    }
    sums[lid] = s;
    reduce(lid);
    if (lid == 0u) {
        partials[p.slot + wg.x] = sums[0];
    }
}

// norm = sqrt(Σ partials); the clip factor min(1, max_norm / (norm + 1e-6)) (PyTorch's
// clip_grad_norm_). One workgroup.
@compute @workgroup_size(256)
fn clip_scale(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < p.slot; i += 256u) {
        s += partials[i];
    }
    sums[lid] = s;
    reduce(lid);
    if (lid == 0u) {
        let n = sqrt(sums[0]);
        norm[0] = n;
        norm[1] = select(1.0, min(1.0, p.max_norm / (n + 1e-6)), p.max_norm > 0.0);
    }
}

// PyTorch's AdamW, in its order: decoupled decay, the moments, then
// θ −= lr / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + eps), on the clipped gradient.
@compute @workgroup_size(256)
fn adamw(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i >= p.count) {
        return;
    }
    let g = grads[i] * scale[1];
    var theta = params[i] * (1.0 - p.lr * p.weight_decay);
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    theta -= p.lr / p.bias1 * mi / (sqrt(vi) / p.bias2_sqrt + p.eps);
    params[i] = theta;
}
