// Expert routing for Mixtral-layout MoE layers, entirely on the GPU: the router's top-k is
// chosen here and the expert kernels read the chosen ids from a buffer, so decode needs no
// read-back and only the chosen experts' weights are read.
//
// Expert matrices are stacked: expert e's row n is global row e·rows + n, and the stack may be
// split into row chunks (chunk_row_start, chunk_rows) to fit the storage-binding limit.

struct Params {
    tokens: u32,
    experts: u32,
    top_k: u32,
    renormalize: u32,  // Mixtral renormalises the top-k probabilities
    rows: u32,         // rows per expert (output features)
    cols: u32,         // K
    row_words: u32,
    chunk_row_start: u32,
    chunk_rows: u32,
    x_per_slot: u32,   // 0: input row is the token's; 1: one input row per (token, slot)
    out_dim: u32,      // combine: hidden size
    forced_expert: u32, // route_topk: every slot to this expert (0xffffffff: none)
    has_bias: u32,     // route_topk: add route_bias to the logits before the softmax
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// route_topk
@group(0) @binding(1) var<storage, read> router_logits: array<f32>; // [tokens, experts]
@group(0) @binding(2) var<storage, read_write> route_ids: array<u32>; // [tokens, top_k]
@group(0) @binding(3) var<storage, read_write> route_weights: array<f32>;
@group(0) @binding(11) var<storage, read> route_bias: array<f32>; // [tokens, experts]
// expert_matvec
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> w: array<u32>;
@group(0) @binding(6) var<storage, read> ids: array<u32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;       // [tokens·top_k, rows]
// expert_combine
@group(0) @binding(8) var<storage, read> expert_out: array<f32>;    // [tokens·top_k, out_dim]
@group(0) @binding(9) var<storage, read> weights: array<f32>;
@group(0) @binding(10) var<storage, read_write> hidden: array<f32>; // [tokens, out_dim], += 

//!include weights
//!include row_dot

// The logit the router gives expert e for token t, plus the per-token bias (a language prior)
// when there is one.
fn biased_logit(t: u32, e: u32) -> f32 {
    let i = t * p.experts + e;
    var l = router_logits[i];
    if (p.has_bias != 0u) {
        l += route_bias[i];
    }
    return l;
}

// softmax over the experts → top-k (ties to the lower index) → optional renormalisation.
// A forced expert bypasses the router: slot 0 gets it with weight 1 and the other slots repeat
// it with weight 0, so the expert kernels still read valid ids but add nothing for them.
@compute @workgroup_size(64)
fn route_topk(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (t >= p.tokens) {
        return;
    }
    if (p.forced_expert != 0xffffffffu) {
        for (var s = 0u; s < p.top_k; s++) {
            route_ids[t * p.top_k + s] = p.forced_expert;
            route_weights[t * p.top_k + s] = select(0.0, 1.0, s == 0u);
        }
        return;
    }
    var m = biased_logit(t, 0u);
    for (var e = 1u; e < p.experts; e++) {
        m = max(m, biased_logit(t, e));
    }
    var z = 0.0;
    for (var e = 0u; e < p.experts; e++) {
        z += exp(biased_logit(t, e) - m);
    }
    var chosen: array<u32, 8>; // bitmask over up to 256 experts
    var total = 0.0;
    for (var s = 0u; s < p.top_k; s++) {
        var best = 0u;
        var best_p = -1.0;
        for (var e = 0u; e < p.experts; e++) {
            let taken = (chosen[e / 32u] >> (e % 32u)) & 1u;
            let prob = exp(biased_logit(t, e) - m) / z;
            if (taken == 0u && prob > best_p) {
                best = e;
                best_p = prob;
            }
        }
        chosen[best / 32u] |= 1u << (best % 32u);
        route_ids[t * p.top_k + s] = best;
        route_weights[t * p.top_k + s] = best_p;
        total += best_p;
    }
    if (p.renormalize != 0u) {
        for (var s = 0u; s < p.top_k; s++) {
            route_weights[t * p.top_k + s] /= total;
        }
    }
}

// y[(t, s), n] = Σ_k x[·, k] · W_e[n, k] for e = ids[t, s]: 4 rows per workgroup, 16 lanes each.
var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn expert_matvec(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let blocks = (p.rows + 3u) / 4u;
    let slots = p.tokens * p.top_k;
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= blocks * slots) {
        return;
    }
    let slot = wid / blocks;
    let n = (wid % blocks) * 4u + lid / 16u;
    let lane = lid % 16u;
    let global_row = ids[slot] * p.rows + n;
    let mine = n < p.rows && global_row >= p.chunk_row_start
        && global_row < p.chunk_row_start + p.chunk_rows;
    var acc = 0.0;
    if (mine) {
        let row = (global_row - p.chunk_row_start) * p.row_words;
        acc = row_dot(row, expert_input(slot), p.cols, lane, 16u);
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = 8u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u && mine) {
        y[slot * p.rows + n] = partial[lid];
    }
}

// The same on CPU adapters: one invocation per row, no barriers (see matmul.wgsl's matvec_rows).
@compute @workgroup_size(64)
fn expert_matvec_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let blocks = (p.rows + 63u) / 64u;
    let wid = wg.x + wg.y * nwg.x;
    let slot = wid / blocks;
    let n = (wid % blocks) * 64u + lid;
    if (slot >= p.tokens * p.top_k || n >= p.rows) {
        return;
    }
    let global_row = ids[slot] * p.rows + n;
    if (global_row >= p.chunk_row_start && global_row < p.chunk_row_start + p.chunk_rows) {
        let row = (global_row - p.chunk_row_start) * p.row_words;
        y[slot * p.rows + n] = row_dot(row, expert_input(slot), p.cols, 0u, 1u);
    }
}

// Where slot (t, s)'s input row starts in x.
fn expert_input(slot: u32) -> u32 {
    return select(slot / p.top_k, slot, p.x_per_slot != 0u) * p.cols;
}

// hidden[t, j] += Σ_s weight[t, s] · expert_out[(t, s), j]
@compute @workgroup_size(64)
fn expert_combine(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p.tokens * p.out_dim) {
        return;
    }
    let t = i / p.out_dim;
    let j = i % p.out_dim;
    var sum = 0.0;
    for (var s = 0u; s < p.top_k; s++) {
        let slot = t * p.top_k + s;
        sum += weights[slot] * expert_out[slot * p.out_dim + j];
    }
    hidden[i] += sum;
}
