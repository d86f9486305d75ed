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
    _unused: u32,
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
// expert_matvec, expert_down_combine
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> w: array<u32>;
@group(0) @binding(6) var<storage, read> ids: array<u32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;       // [tokens·top_k, rows]
// x and w again, read a vec4 at a time (row_dot's wide path).
@group(0) @binding(12) var<storage, read> w_vec4: array<vec4<u32>>;
@group(0) @binding(13) var<storage, read> x_vec4: array<vec4<f32>>;
// expert_down_combine
@group(0) @binding(9) var<storage, read> weights: array<f32>;       // [tokens·top_k]
@group(0) @binding(10) var<storage, read_write> hidden: array<f32>; // [tokens, rows], += 

//!include weights
//!include row_dot

// The fused gate/up projection (a pipeline constant): each expert's gate and up rows are
// interleaved (gate n at row 2n, up n at 2n + 1 of the expert), `rows`, `chunk_row_start` and
// `chunk_rows` count pairs, and y gets silu(gate) · up: no gate, up or separate SwiGLU pass.
override SWIGLU: bool = false;

//!include silu

// The kernels' share of row (pair) `row` over this lane's part of K: .x, or the gate/up pair.
fn expert_dots(row: u32, xb: u32, lane: u32, lanes: u32) -> vec2<f32> {
    if (SWIGLU) {
        return row_dot2(2u * row * p.row_words, p.row_words, xb, p.cols, lane, lanes);
    }
    return vec2<f32>(row_dot(row * p.row_words, xb, p.cols, lane, lanes), 0.0);
}

fn expert_value(sums: vec2<f32>) -> f32 {
    if (SWIGLU) {
        return silu(sums.x) * sums.y;
    }
    return sums.x;
}

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
var<workgroup> partial: array<vec2<f32>, 64>;

// Sums `partial` over each row's 16 lanes (into lane 0's entry).
fn reduce_lanes(lid: u32, lane: u32) {
    workgroupBarrier();
    for (var s = 8u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
}

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
    var acc = vec2<f32>(0.0);
    if (mine) {
        acc = expert_dots(global_row - p.chunk_row_start, expert_input(slot), lane, 16u);
    }
    partial[lid] = acc;
    reduce_lanes(lid, lane);
    if (lane == 0u && mine) {
        y[slot * p.rows + n] = expert_value(partial[lid]);
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
        let sums = expert_dots(global_row - p.chunk_row_start, expert_input(slot), 0u, 1u);
        y[slot * p.rows + n] = expert_value(sums);
    }
}

// expert_matvec_rows for 16-bit or Q8_0 rows that all take the wide path (the host checks): each
// invocation owns four consecutive rows of its slot's expert (two gate/up pairs when SWIGLU),
// so each load of x serves four rows (see matmul.wgsl's matvec_rows4).
@compute @workgroup_size(16)
fn expert_matvec_rows4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let units = select(4u, 2u, SWIGLU);
    let per_group = 16u * units;
    let blocks = (p.rows + per_group - 1u) / per_group;
    let wid = wg.x + wg.y * nwg.x;
    let slot = wid / blocks;
    let n0 = ((wid % blocks) * 16u + lid) * units;
    if (slot >= p.tokens * p.top_k || n0 >= p.rows) {
        return;
    }
    let chunk = chunk_units(ids[slot] * p.rows + n0);
    let sums = row_dot4_wide(unit_rows(chunk.local), expert_input(slot), p.cols);
    for (var i = 0u; i < units; i++) {
        if (n0 + i < p.rows && chunk.mine[i]) {
            if (SWIGLU) {
                y[slot * p.rows + n0 + i] = silu(sums[2u * i]) * sums[2u * i + 1u];
            } else {
                y[slot * p.rows + n0 + i] = sums[i];
            }
        }
    }
}

// Global units (rows, or gate/up pairs) g0..g0 + 3 against this dispatch's chunk: which lie
// in it, and their chunk-local indices (clamped into it, so reads stay in the binding).
struct ChunkUnits {
    mine: vec4<bool>,
    local: vec4<u32>,
}

fn chunk_units(g0: u32) -> ChunkUnits {
    let g = vec4<u32>(g0) + vec4<u32>(0u, 1u, 2u, 3u);
    let start = vec4<u32>(p.chunk_row_start);
    let mine = (g >= start) & (g < start + vec4<u32>(p.chunk_rows));
    let local = clamp(g, start, start + vec4<u32>(p.chunk_rows - 1u)) - start;
    return ChunkUnits(mine, local);
}

// Word offsets of the four stored rows of chunk-local units `local`: rows, or the gate and up
// rows of the first two pairs when SWIGLU.
fn unit_rows(local: vec4<u32>) -> vec4<u32> {
    if (SWIGLU) {
        return vec4<u32>(2u * local.x, 2u * local.x + 1u, 2u * local.y, 2u * local.y + 1u) * p.row_words;
    }
    return local * p.row_words;
}

// expert_down_combine_rows with four rows an invocation (see expert_matvec_rows4).
@compute @workgroup_size(16)
fn expert_down_combine_rows4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let blocks = (p.rows + 63u) / 64u;
    let wid = wg.x + wg.y * nwg.x;
    let t = wid / blocks;
    let n0 = ((wid % blocks) * 16u + lid) * 4u;
    if (t >= p.tokens || n0 >= p.rows) {
        return;
    }
    var sum = vec4<f32>(0.0);
    for (var s = 0u; s < p.top_k; s++) {
        let slot = t * p.top_k + s;
        let chunk = chunk_units(ids[slot] * p.rows + n0);
        if (any(chunk.mine)) {
            let rows = row_dot4_wide(chunk.local * p.row_words, expert_input(slot), p.cols);
            sum += select(vec4<f32>(0.0), weights[slot] * rows, chunk.mine);
        }
    }
    for (var i = 0u; i < 4u; i++) {
        if (n0 + i < p.rows) {
            hidden[t * p.rows + n0 + i] += sum[i];
        }
    }
}

// The down projection and the combine in one: hidden[t, n] += Σ_s weight[t, s] ·
// (W_e · x_(t, s))[n] for e = ids[t, s], over the slots whose expert's row n lies in this
// chunk (a later chunk's dispatch adds the others). No per-slot output is written or read.
@compute @workgroup_size(64)
fn expert_down_combine(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let blocks = (p.rows + 3u) / 4u;
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= blocks * p.tokens) {
        return;
    }
    let t = wid / blocks;
    let n = (wid % blocks) * 4u + lid / 16u;
    let lane = lid % 16u;
    var acc = 0.0;
    if (n < p.rows) {
        acc = weighted_rows(t, n, lane, 16u);
    }
    partial[lid] = vec2<f32>(acc, 0.0);
    reduce_lanes(lid, lane);
    if (lane == 0u && n < p.rows) {
        hidden[t * p.rows + n] += partial[lid].x;
    }
}

// The same on CPU adapters: one invocation per (token, row).
@compute @workgroup_size(64)
fn expert_down_combine_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let blocks = (p.rows + 63u) / 64u;
    let wid = wg.x + wg.y * nwg.x;
    let t = wid / blocks;
    let n = (wid % blocks) * 64u + lid;
    if (t >= p.tokens || n >= p.rows) {
        return;
    }
    hidden[t * p.rows + n] += weighted_rows(t, n, 0u, 1u);
}

// Σ_s weight[t, s] · (this lane's share of) row n of slot s's expert · x_(t, s), over the
// slots whose row lies in this chunk.
fn weighted_rows(t: u32, n: u32, lane: u32, lanes: u32) -> f32 {
    var sum = 0.0;
    for (var s = 0u; s < p.top_k; s++) {
        let slot = t * p.top_k + s;
        let global_row = ids[slot] * p.rows + n;
        if (global_row >= p.chunk_row_start && global_row < p.chunk_row_start + p.chunk_rows) {
            let row = (global_row - p.chunk_row_start) * p.row_words;
            sum += weights[slot] * row_dot(row, expert_input(slot), p.cols, lane, lanes);
        }
    }
    return sum;
}

// Where slot (t, s)'s input row starts in x.
fn expert_input(slot: u32) -> u32 {
    return select(slot / p.top_k, slot, p.x_per_slot != 0u) * p.cols;
}
