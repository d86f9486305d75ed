// Causal self-attention for training, forward and backward, over `seqs` packed sequences of
// `seq_len` tokens (token row b·seq_len + t), grouped-query heads (query head h reads KV head
// h / (heads / kv_heads)). q, k and v are read through offsets and strides, so they may be
// parts of one fused projection; RoPE is applied before (and undone after) these kernels.
//
// The forward keeps only the log-sum-exp of each query row's scores; the backward recomputes
// the probabilities from it (FlashAttention's trade: T² probabilities are never stored):
//   P_ij = exp(s · q_i·k_j − lse_i),  dV_j = Σ_i P_ij dO_i,  dP_ij = dO_i·V_j,
//   D_i = dO_i·O_i = Σ_j P_ij dP_ij,  dS_ij = P_ij (dP_ij − D_i),
//   dQ_i = s Σ_j dS_ij K_j,  dK_j = s Σ_i dS_ij Q_i (summed over the KV head's query heads:
//   the GQA reduce). WebGPU has no float atomics, so dQ comes from a pass over query rows and
//   dK, dV from a pass over key rows.

struct Params {
    seqs: u32,
    seq_len: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    q_stride: u32,   // elements between tokens in q
    kv_stride: u32,  // elements between tokens in k and v
    q_offset: u32,
    k_offset: u32,
    v_offset: u32,
    o_stride: u32,   // elements between tokens in o and do
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
// attention_forward writes o and lse; the backward passes read them.
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;   // [rows, heads]
@group(0) @binding(6) var<storage, read> d_o: array<f32>;
@group(0) @binding(7) var<storage, read_write> delta: array<f32>; // [rows, heads]: D_i
// The gradients, each packed: [rows, heads · head_dim] and [rows, kv_heads · head_dim].
@group(0) @binding(8) var<storage, read_write> dq: array<f32>;
@group(0) @binding(9) var<storage, read_write> dk: array<f32>;
@group(0) @binding(10) var<storage, read_write> dv: array<f32>;

// Longest sequence the kernels take (one query row's scores in workgroup memory).
const MAX_SEQ: u32 = 1024u;
const LANES: u32 = 64u;

var<workgroup> scores: array<f32, MAX_SEQ>;
var<workgroup> second: array<f32, MAX_SEQ>;
var<workgroup> reduce_buf: array<f32, LANES>;

fn q_at(row: u32, h: u32) -> u32 {
    return p.q_offset + row * p.q_stride + h * p.head_dim;
}

fn kv_at(offset: u32, row: u32, g: u32) -> u32 {
    return offset + row * p.kv_stride + g * p.head_dim;
}

fn dot_q_k(qa: u32, ka: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < p.head_dim; d++) {
        s += q[qa + d] * k[ka + d];
    }
    return s;
}

fn reduce_max(lid: u32, value: f32) -> f32 {
    workgroupBarrier();
    reduce_buf[lid] = value;
    workgroupBarrier();
    for (var half = LANES / 2u; half > 0u; half >>= 1u) {
        if (lid < half) {
            reduce_buf[lid] = max(reduce_buf[lid], reduce_buf[lid + half]);
        }
        workgroupBarrier();
    }
    return reduce_buf[0];
}

fn reduce_sum(lid: u32, value: f32) -> f32 {
    workgroupBarrier();
    reduce_buf[lid] = value;
    workgroupBarrier();
    for (var half = LANES / 2u; half > 0u; half >>= 1u) {
        if (lid < half) {
            reduce_buf[lid] += reduce_buf[lid + half];
        }
        workgroupBarrier();
    }
    return reduce_buf[0];
}

// (sequence's first row, position in it, head) of workgroup `wid`, one per (row, head).
fn query_row(wid: u32) -> vec3<u32> {
    let row = wid / p.heads;
    let b = row / p.seq_len;
    return vec3<u32>(b * p.seq_len, row % p.seq_len, wid % p.heads);
}

// One workgroup per (query row, head): O_i = softmax(s · q_i·K_{≤i}) V and lse_i.
@compute @workgroup_size(64)
fn attention_forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= p.seqs * p.seq_len * p.heads) {
        return;
    }
    let at = query_row(wid);
    let first = at.x;
    let i = at.y;
    let h = at.z;
    let g = h / (p.heads / p.kv_heads);
    let qa = q_at(first + i, h);
    var top = -3.4e38;
    for (var j = lid; j <= i; j += LANES) {
        let s = p.scale * dot_q_k(qa, kv_at(p.k_offset, first + j, g));
        scores[j] = s;
        top = max(top, s);
    }
    top = reduce_max(lid, top);
    var sum = 0.0;
    for (var j = lid; j <= i; j += LANES) {
        sum += exp(scores[j] - top);
    }
    sum = reduce_sum(lid, sum);
    let l = top + log(sum);
    for (var d = lid; d < p.head_dim; d += LANES) {
        var acc = 0.0;
        for (var j = 0u; j <= i; j++) {
            acc += exp(scores[j] - l) * v[kv_at(p.v_offset, first + j, g) + d];
        }
        o[(first + i) * p.o_stride + h * p.head_dim + d] = acc;
    }
    if (lid == 0u) {
        lse[(first + i) * p.heads + h] = l;
    }
}

// One workgroup per (query row, head): D_i, then dQ_i.
@compute @workgroup_size(64)
fn attention_backward_q(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= p.seqs * p.seq_len * p.heads) {
        return;
    }
    let at = query_row(wid);
    let first = at.x;
    let i = at.y;
    let h = at.z;
    let g = h / (p.heads / p.kv_heads);
    let qa = q_at(first + i, h);
    let oa = (first + i) * p.o_stride + h * p.head_dim;
    var partial = 0.0;
    for (var d = lid; d < p.head_dim; d += LANES) {
        partial += d_o[oa + d] * o[oa + d];
    }
    let big_d = reduce_sum(lid, partial);
    let l = lse[(first + i) * p.heads + h];
    for (var j = lid; j <= i; j += LANES) {
        let prob = exp(p.scale * dot_q_k(qa, kv_at(p.k_offset, first + j, g)) - l);
        let va = kv_at(p.v_offset, first + j, g);
        var dp = 0.0;
        for (var d = 0u; d < p.head_dim; d++) {
            dp += d_o[oa + d] * v[va + d];
        }
        scores[j] = prob * (dp - big_d);
    }
    workgroupBarrier();
    for (var d = lid; d < p.head_dim; d += LANES) {
        var acc = 0.0;
        for (var j = 0u; j <= i; j++) {
            acc += scores[j] * k[kv_at(p.k_offset, first + j, g) + d];
        }
        dq[((first + i) * p.heads + h) * p.head_dim + d] = p.scale * acc;
    }
    if (lid == 0u) {
        delta[(first + i) * p.heads + h] = big_d;
    }
}

// Head dimensions up to 4 · LANES: each invocation owns up to four of dK_j's and dV_j's.
const PER_LANE: u32 = 4u;

// One workgroup per (key row, KV head): dK_j and dV_j over the query rows i ≥ j of every
// query head reading this KV head. Needs attention_backward_q's D first.
@compute @workgroup_size(64)
fn attention_backward_kv(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= p.seqs * p.seq_len * p.kv_heads) {
        return;
    }
    let row = wid / p.kv_heads;
    let g = wid % p.kv_heads;
    let first = (row / p.seq_len) * p.seq_len;
    let j = row % p.seq_len;
    let group = p.heads / p.kv_heads;
    let ka = kv_at(p.k_offset, first + j, g);
    let va = kv_at(p.v_offset, first + j, g);
    var dk_acc: array<f32, PER_LANE>;
    var dv_acc: array<f32, PER_LANE>;
    for (var hh = 0u; hh < group; hh++) {
        let h = g * group + hh;
        // P_ij in `scores`, dS_ij in `second`, for i = j … seq_len − 1.
        for (var i = j + lid; i < p.seq_len; i += LANES) {
            let qa = q_at(first + i, h);
            let oa = (first + i) * p.o_stride + h * p.head_dim;
            let prob = exp(p.scale * dot_q_k(qa, ka) - lse[(first + i) * p.heads + h]);
            var dp = 0.0;
            for (var d = 0u; d < p.head_dim; d++) {
                dp += d_o[oa + d] * v[va + d];
            }
            scores[i] = prob;
            second[i] = prob * (dp - delta[(first + i) * p.heads + h]);
        }
        workgroupBarrier();
        for (var c = 0u; c < PER_LANE; c++) {
            let d = lid + c * LANES;
            if (d < p.head_dim) {
                var sk = 0.0;
                var sv = 0.0;
                for (var i = j; i < p.seq_len; i++) {
                    sk += second[i] * q[q_at(first + i, h) + d];
                    sv += scores[i] * d_o[(first + i) * p.o_stride + h * p.head_dim + d];
                }
                dk_acc[c] += p.scale * sk;
                dv_acc[c] += sv;
            }
        }
        workgroupBarrier();
    }
    for (var c = 0u; c < PER_LANE; c++) {
        let d = lid + c * LANES;
        if (d < p.head_dim) {
            let out = ((first + j) * p.kv_heads + g) * p.head_dim + d;
            dk[out] = dk_acc[c];
            dv[out] = dv_acc[c];
        }
    }
}
