// The MoE layer in training, forward and backward, with every expert run on every token
// (few experts: dense matmuls and a gate of 0 where an expert was not chosen, instead of
// gathering tokens per expert, which would need atomics). Gates are dense [tokens, experts];
// `chosen` holds each token's top-k as bits (experts ≤ 32); expert e's output for token t is
// ye[(e · tokens + t) · dim + d].

struct Params {
    tokens: u32,
    experts: u32,
    top_k: u32,
    renormalize: u32,  // Mixtral: the top-k probabilities renormalised to sum to 1
    dim: u32,
    accumulate: u32,   // combine: add to hidden (the residual connection)
    has_lpr: u32,      // router_backward: lpr_weight is bound
    lb_scale: f32,     // router_backward: the load-balancing term's factor (see there)
}

@group(0) @binding(0) var<uniform> p: Params;
// route_dense
@group(0) @binding(1) var<storage, read> router_logits: array<f32>; // [tokens, experts]
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;   // softmax over all experts
@group(0) @binding(3) var<storage, read_write> gates: array<f32>;
@group(0) @binding(4) var<storage, read_write> chosen: array<u32>;
// combine, combine_backward
@group(0) @binding(5) var<storage, read> ye: array<f32>;
@group(0) @binding(6) var<storage, read> gate_in: array<f32>;
@group(0) @binding(7) var<storage, read_write> hidden: array<f32>;  // combine: out; backward: dy
@group(0) @binding(8) var<storage, read_write> dye: array<f32>;
@group(0) @binding(9) var<storage, read_write> dgates: array<f32>;
// route_fractions, router_backward
@group(0) @binding(10) var<storage, read> chosen_in: array<u32>;
@group(0) @binding(11) var<storage, read_write> fractions: array<f32>; // [experts]
@group(0) @binding(12) var<storage, read> probs_in: array<f32>;
@group(0) @binding(13) var<storage, read> dgates_in: array<f32>;
@group(0) @binding(14) var<storage, read> lpr_weight: array<f32>;  // [tokens]
@group(0) @binding(15) var<storage, read_write> dlogits: array<f32>;

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, size: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * size + lid;
}

// Softmax over all experts, then the top k (ties to the lower id), renormalised or not.
@compute @workgroup_size(64)
fn route_dense(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = linear_id(wg, nwg, lid, 64u);
    if (t >= p.tokens) {
        return;
    }
    let row = t * p.experts;
    var top = -3.4e38;
    for (var e = 0u; e < p.experts; e++) {
        top = max(top, router_logits[row + e]);
    }
    var total = 0.0;
    for (var e = 0u; e < p.experts; e++) {
        total += exp(router_logits[row + e] - top);
    }
    var bits = 0u;
    var kept = 0.0;
    for (var s = 0u; s < p.top_k; s++) {
        var best = 0u;
        var best_logit = -3.4e38;
        var found = false;
        for (var e = 0u; e < p.experts; e++) {
            let z = router_logits[row + e];
            if ((bits & (1u << e)) == 0u && (!found || z > best_logit)) {
                best = e;
                best_logit = z;
                found = true;
            }
        }
        bits |= 1u << best;
        kept += exp(best_logit - top) / total;
    }
    for (var e = 0u; e < p.experts; e++) {
        let prob = exp(router_logits[row + e] - top) / total;
        probs[row + e] = prob;
        var g = 0.0;
        if ((bits & (1u << e)) != 0u) {
            g = select(prob, prob / kept, p.renormalize != 0u);
        }
        gates[row + e] = g;
    }
    chosen[t] = bits;
}

// hidden[t, d] (+)= Σ_e gate[t, e] · ye[e, t, d].
@compute @workgroup_size(256)
fn combine(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_id(wg, nwg, lid, 256u);
    if (i >= p.tokens * p.dim) {
        return;
    }
    let t = i / p.dim;
    var v = 0.0;
    for (var e = 0u; e < p.experts; e++) {
        let g = gate_in[t * p.experts + e];
        if (g != 0.0) {
            v += g * ye[e * p.tokens * p.dim + i];
        }
    }
    if (p.accumulate != 0u) {
        v += hidden[i];
    }
    hidden[i] = v;
}

var<workgroup> dots: array<f32, 64>;

// From dy (bound as `hidden`): dye[e, t] = gate[t, e] · dy[t] and dgate[t, e] = ⟨dy[t], ye[e, t]⟩.
// One workgroup per token.
@compute @workgroup_size(64)
fn combine_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = wg.x + wg.y * nwg.x;
    if (t >= p.tokens) {
        return;
    }
    let row = t * p.dim;
    for (var e = 0u; e < p.experts; e++) {
        let g = gate_in[t * p.experts + e];
        let at = e * p.tokens * p.dim + row;
        var s = 0.0;
        for (var d = lid; d < p.dim; d += 64u) {
            let dy = hidden[row + d];
            s += dy * ye[at + d];
            dye[at + d] = g * dy;
        }
        dots[lid] = s;
        workgroupBarrier();
        for (var half = 32u; half > 0u; half >>= 1u) {
            if (lid < half) {
                dots[lid] += dots[lid + half];
            }
            workgroupBarrier();
        }
        if (lid == 0u) {
            dgates[t * p.experts + e] = dots[0];
        }
        workgroupBarrier();
    }
}

// fractions[e] = the share of tokens that chose expert e (f_e of the load-balancing loss:
// Mixtral's, summed over the top-k slots). One workgroup per expert.
@compute @workgroup_size(64)
fn route_fractions(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = wg.x + wg.y * nwg.x;
    if (e >= p.experts) {
        return;
    }
    var n = 0.0;
    for (var t = lid; t < p.tokens; t += 64u) {
        n += f32((chosen_in[t] >> e) & 1u);
    }
    dots[lid] = n;
    workgroupBarrier();
    for (var half = 32u; half > 0u; half >>= 1u) {
        if (lid < half) {
            dots[lid] += dots[lid + half];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        fractions[e] = dots[0] / f32(p.tokens);
    }
}

// The router logits' gradient, one invocation per token, from three terms:
// - the gates' (top-k softmax): renormalised, w = softmax over the chosen S, so
//   dz_i = [i∈S] · w_i · (dg_i − Σ_{j∈S} w_j dg_j); else g_i = p_i on S, so
//   dz_i = p_i · ([i∈S] · dg_i − Σ_{j∈S} p_j dg_j);
// - load balancing, L = c · E · Σ_i f_i · P_i with P_i the mean of p_i over the layer's T
//   tokens and f_i constant: dz_i = lb_scale · p_i · (f_i − Σ_j f_j p_j), lb_scale = c · E / T;
// - the language prior (MoE-LPR's review), −λ_t · log p_0: dz_i = λ_t · (p_i − [i = 0]).
@compute @workgroup_size(64)
fn router_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = linear_id(wg, nwg, lid, 64u);
    if (t >= p.tokens) {
        return;
    }
    let row = t * p.experts;
    let bits = chosen_in[t];
    var chosen_sum = 0.0;
    var balance = 0.0;
    for (var e = 0u; e < p.experts; e++) {
        let prob = probs_in[row + e];
        if (((bits >> e) & 1u) != 0u) {
            let weight = select(prob, gate_in[row + e], p.renormalize != 0u);
            chosen_sum += weight * dgates_in[row + e];
        }
        balance += fractions[e] * prob;
    }
    var lpr = 0.0;
    if (p.has_lpr != 0u) {
        lpr = lpr_weight[t];
    }
    for (var e = 0u; e < p.experts; e++) {
        let prob = probs_in[row + e];
        let is_chosen = ((bits >> e) & 1u) != 0u;
        var dz = 0.0;
        if (p.renormalize != 0u) {
            if (is_chosen) {
                dz = gate_in[row + e] * (dgates_in[row + e] - chosen_sum);
            }
        } else {
            dz = prob * (select(0.0, dgates_in[row + e], is_chosen) - chosen_sum);
        }
        dz += p.lb_scale * prob * (fractions[e] - balance);
        dz += lpr * (prob - select(0.0, 1.0, e == 0u));
        dlogits[row + e] = dz;
    }
}
