// Token sampling on the GPU, so decode reads back one u32: greedy (argmax, first index on
// ties) or temperature sampling restricted to top-k and then top-p (nucleus).
// Thresholds are found by bisection over the order-preserving u32 keys of the logits, so no
// sort is needed; the draw then scans the kept tokens in index order with the uniform `u`.

struct Params {
    count: u32,       // vocabulary size
    offset: u32,      // element offset of the logits row
    greedy: u32,
    top_k: u32,       // 0 = off
    temperature: f32,
    top_p: f32,       // 1 = off
    u: f32,           // uniform random number in [0, 1)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> result: array<u32>;

const WG: u32 = 256u;
var<workgroup> red_f: array<f32, WG>;
var<workgroup> red_u: array<u32, WG>;
var<workgroup> shared_f: f32;
var<workgroup> shared_u: u32;

// Order-preserving map from f32 to u32.
fn key(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn weight(v: f32, m: f32) -> f32 {
    return exp((v - m) / p.temperature);
}

// Number of logits whose key is ≥ tau (same value in every invocation).
fn count_at_least(lid: u32, tau: u32) -> u32 {
    var c = 0u;
    for (var i = lid; i < p.count; i += WG) {
        c += select(0u, 1u, key(logits[p.offset + i]) >= tau);
    }
    red_u[lid] = c;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0u;
        for (var j = 0u; j < WG; j++) {
            total += red_u[j];
        }
        shared_u = total;
    }
    workgroupBarrier();
    let total = shared_u;
    workgroupBarrier();
    return total;
}

// Softmax mass (unnormalised) of logits whose key is ≥ tau.
fn mass_at_least(lid: u32, tau: u32, m: f32) -> f32 {
    var s = 0.0;
    for (var i = lid; i < p.count; i += WG) {
        let v = logits[p.offset + i];
        if (key(v) >= tau) {
            s += weight(v, m);
        }
    }
    red_f[lid] = s;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var j = 0u; j < WG; j++) {
            total += red_f[j];
        }
        shared_f = total;
    }
    workgroupBarrier();
    let total = shared_f;
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn sample(@builtin(local_invocation_index) lid: u32) {
    // Max and first argmax.
    var best = -3.4e38;
    var best_i = 0xffffffffu;
    for (var i = lid; i < p.count; i += WG) {
        let v = logits[p.offset + i];
        if (v > best) {
            best = v;
            best_i = i;
        }
    }
    red_f[lid] = best;
    red_u[lid] = best_i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let ov = red_f[lid + s];
            let oi = red_u[lid + s];
            if (ov > red_f[lid] || (ov == red_f[lid] && oi < red_u[lid])) {
                red_f[lid] = ov;
                red_u[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    let m = red_f[0];
    let argmax = red_u[0];
    workgroupBarrier();
    if (p.greedy != 0u) {
        if (lid == 0u) {
            result[0] = argmax;
        }
        return;
    }

    // Top-k: the largest key tau with at least k logits ≥ tau.
    var lo = 0u;
    var hi = key(m);
    if (p.top_k > 0u && p.top_k < p.count) {
        for (var it = 0u; it < 33u; it++) {
            let mid = lo + (hi - lo + 1u) / 2u;
            let ok = count_at_least(lid, mid) >= p.top_k;
            if (lo < hi) {
                lo = select(lo, mid, ok);
                hi = select(mid - 1u, hi, ok);
            }
        }
    }
    let tau_k = lo;

    // Top-p: the largest key tau ≥ tau_k whose kept mass reaches top_p of the top-k mass.
    var tau = tau_k;
    if (p.top_p < 1.0) {
        let goal = p.top_p * mass_at_least(lid, tau_k, m);
        lo = tau_k;
        hi = key(m);
        for (var it = 0u; it < 33u; it++) {
            let mid = lo + (hi - lo + 1u) / 2u;
            let ok = mass_at_least(lid, mid, m) >= goal;
            if (lo < hi) {
                lo = select(lo, mid, ok);
                hi = select(mid - 1u, hi, ok);
            }
        }
        tau = lo;
    }

    // Draw: contiguous index ranges per invocation, prefix over invocations, scan one range.
    let chunk = (p.count + WG - 1u) / WG;
    let begin = lid * chunk;
    let end = min(p.count, begin + chunk);
    var s = 0.0;
    for (var i = begin; i < end; i++) {
        let v = logits[p.offset + i];
        if (key(v) >= tau) {
            s += weight(v, m);
        }
    }
    red_f[lid] = s;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var j = 0u; j < WG; j++) {
            total += red_f[j];
        }
        let goal = p.u * total;
        var acc = 0.0;
        var picked = argmax;
        var done = false;
        for (var j = 0u; j < WG && !done; j++) {
            if (red_f[j] > 0.0 && acc + red_f[j] > goal) {
                let b = j * chunk;
                let e = min(p.count, b + chunk);
                for (var i = b; i < e && !done; i++) {
                    let v = logits[p.offset + i];
                    if (key(v) >= tau) {
                        picked = i;
                        acc += weight(v, m);
                        done = acc > goal;
                    }
                }
            } else {
                acc += red_f[j];
            }
        }
        result[0] = picked;
    }
}
