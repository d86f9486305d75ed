// Softmax + cross-entropy over the vocabulary, loss and gradient in one kernel (llm.c's fused
// classifier): for token t, loss[t] = logsumexp(z) − z[target], and z is overwritten with
// dz = scale · (softmax(z) − onehot(target)), so the logits' buffer holds dlogits after it.
// A token whose target is IGNORE (a chat prompt's tokens) gets loss 0 and dz 0.
// One workgroup per token; the maximum and the sum of exponentials come in one pass (each
// invocation keeps a running pair, merged in a tree).

struct Params {
    tokens: u32,
    vocab: u32,
    stride: u32, // elements between tokens' logits
    scale: f32,  // 1 / the number of tokens the loss averages over
}

const IGNORE: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;

var<workgroup> maxima: array<f32, 256>;
var<workgroup> sums: array<f32, 256>;

@compute @workgroup_size(256)
fn cross_entropy(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = wg.x + wg.y * nwg.x;
    if (t >= p.tokens) {
        return;
    }
    let row = t * p.stride;
    let target_id = targets[t];
    if (target_id == IGNORE) {
        for (var i = lid; i < p.vocab; i += 256u) {
            logits[row + i] = 0.0;
        }
        if (lid == 0u) {
            losses[t] = 0.0;
        }
        return;
    }
    // -3.4e38, not -inf: WGSL lets drivers assume no infinities.
    var m = -3.4e38;
    var s = 0.0;
    for (var i = lid; i < p.vocab; i += 256u) {
        let z = logits[row + i];
        if (z > m) {
            s = s * exp(m - z) + 1.0;
            m = z;
        } else {
            s += exp(z - m);
        }
    }
    maxima[lid] = m;
    sums[lid] = s;
    workgroupBarrier();
    for (var half = 128u; half > 0u; half >>= 1u) {
        if (lid < half) {
            let m1 = maxima[lid];
            let m2 = maxima[lid + half];
            let mm = max(m1, m2);
            sums[lid] = sums[lid] * exp(m1 - mm) + sums[lid + half] * exp(m2 - mm);
            maxima[lid] = mm;
        }
        workgroupBarrier();
    }
    let top = maxima[0];
    let total = sums[0];
    let z_target = logits[row + target_id];
    // Every invocation has read what it needs before any writes dz.
    workgroupBarrier();
    for (var i = lid; i < p.vocab; i += 256u) {
        let prob = exp(logits[row + i] - top) / total;
        logits[row + i] = p.scale * (prob - select(0.0, 1.0, i == target_id));
    }
    if (lid == 0u) {
        losses[t] = log(total) + top - z_target;
    }
}
