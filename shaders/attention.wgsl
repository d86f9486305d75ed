// Causal attention over the KV cache with grouped-query heads. Keys are visited with an online
// softmax, so no score matrix is stored (but for the CPU adapters' decode passes below) and
// any context length fits. `attention` gives each
// (query token, head) a workgroup that scores 64 keys at a time; `attention_rows` (for CPU
// adapters, see KernelLayout) gives it one invocation that visits the keys one by one.
// Decoding has only a few (token, head) rows for many keys, so there `attention_split` gives
// each row one invocation per SPLIT_KEYS keys — many more invocations, each with a short loop —
// and `attention_combine` merges their partial softmaxes. On CPU adapters decoding and prefill
// instead score every (row, key) in one pass (`attention_scores`) and weigh the values in a
// second (`attention_values`, one invocation per eight output dims), a block of rows at a
// time: neither holds a per-invocation array, which a CPU adapter indexes through memory lane
// by lane. Where query heads share a KV head, `_grouped` passes take four of them an
// invocation, so each load of K or V serves four heads.

struct Params {
    tokens: u32,
    pos0: u32,        // absolute position of query token 0
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    window: u32,      // sliding window (0 = unlimited)
    scale: f32,       // 1 / sqrt(head_dim)
    splits: u32,      // attention_split / _combine: key ranges per row
    row0: u32,        // attention_scores / _values: the block of rows [row0, row_end) this
    row_end: u32,     // pass handles; scores row r lives at (r - row0) · keys
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;       // [tokens, heads·head_dim]
@group(0) @binding(2) var<storage, read> k_cache: array<f32>; // [positions, kv_heads·head_dim]
@group(0) @binding(3) var<storage, read> v_cache: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // like q
// attention_split: [rows, splits, 2 + head_dim], each split's running max, sum of exp and
// unnormalised output. attention_scores/_values: [row_end - row0, keys], the scaled scores of
// one block of rows (a prefill chunk's rows pass through in blocks, so the scratch stays
// small).
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;
// q and the caches again, a vec4 at a time: with head_dim a multiple of 4 every row starts
// 16-byte aligned, and a CPU adapter pays per load, not per byte.
@group(0) @binding(6) var<storage, read> q_vec4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> k_vec4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> v_vec4: array<vec4<f32>>;

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const NEG: f32 = -3.0e38;

// Where (query token, head) number i reads and which keys it sees.
struct QueryRow {
    q_base: u32,   // its q and out row
    kv_base: u32,  // its KV head's offset within a cache row
    pos: u32,      // its absolute position: keys up to it
    start: u32,    // the first key inside the sliding window
}

fn query_row(i: u32) -> QueryRow {
    let t = i / p.heads;
    let h = i % p.heads;
    let pos = p.pos0 + t;
    var start = 0u;
    if (p.window > 0u && pos + 1u > p.window) {
        start = pos + 1u - p.window;
    }
    let kv_base = (h / (p.heads / p.kv_heads)) * p.head_dim;
    return QueryRow(t * p.heads * p.head_dim + h * p.head_dim, kv_base, pos, start);
}

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> scores: array<f32, WG>;

@compute @workgroup_size(64)
fn attention(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= p.tokens * p.heads) {
        return;
    }
    let qr = query_row(wid);
    let kv_stride = p.kv_heads * p.head_dim;

    for (var d = lid; d < p.head_dim; d += WG) {
        qs[d] = q[qr.q_base + d];
    }
    workgroupBarrier();

    var m = NEG;      // running max
    var l = 0.0;      // running sum of exp
    var acc = vec4<f32>(0.0); // output dims lid, lid+64, lid+128, lid+192
    for (var k0 = qr.start; k0 <= qr.pos; k0 += WG) {
        let kp = k0 + lid;
        var s = NEG;
        if (kp <= qr.pos) {
            var dot = 0.0;
            let kb = kp * kv_stride + qr.kv_base;
            for (var d = 0u; d < p.head_dim; d++) {
                dot += qs[d] * k_cache[kb + d];
            }
            s = dot * p.scale;
        }
        scores[lid] = s;
        workgroupBarrier();

        let n = min(WG, qr.pos + 1u - k0);
        var tile_max = NEG;
        for (var j = 0u; j < n; j++) {
            tile_max = max(tile_max, scores[j]);
        }
        let m_new = max(m, tile_max);
        let correction = exp(m - m_new);
        l *= correction;
        acc *= correction;
        // Each lane exponentiates its own key's score once, for all lanes to read.
        workgroupBarrier();
        scores[lid] = exp(s - m_new);
        workgroupBarrier();
        for (var j = 0u; j < n; j++) {
            let pj = scores[j];
            l += pj;
            let vb = (k0 + j) * kv_stride + qr.kv_base;
            for (var i = 0u; i < 4u; i++) {
                let d = lid + i * WG;
                if (d < p.head_dim) {
                    acc[i] += pj * v_cache[vb + d];
                }
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let d = lid + i * WG;
        if (d < p.head_dim) {
            out[qr.q_base + d] = acc[i] / l;
        }
    }
}

// One invocation's online softmax over keys [first, end) of row qr: the unnormalised output
// in acc, and (running max, sum of exp) returned (NEG and 0 for no keys).
fn attend(qr: QueryRow, first: u32, end: u32, acc: ptr<function, array<f32, MAX_HEAD_DIM>>) -> vec2<f32> {
    let kv_stride = p.kv_heads * p.head_dim;
    var m = NEG;
    var l = 0.0;
    for (var kp = first; kp < end; kp++) {
        let kb = kp * kv_stride + qr.kv_base;
        var dot = 0.0;
        for (var d = 0u; d < p.head_dim; d++) {
            dot += q[qr.q_base + d] * k_cache[kb + d];
        }
        let s = dot * p.scale;
        let m_new = max(m, s);
        let correction = exp(m - m_new);
        let pj = exp(s - m_new);
        l = l * correction + pj;
        for (var d = 0u; d < p.head_dim; d++) {
            (*acc)[d] = (*acc)[d] * correction + pj * v_cache[kb + d];
        }
        m = m_new;
    }
    return vec2<f32>(m, l);
}

// `attend` with head_dim a multiple of 4, a vec4 at a time (acc holds head_dim / 4 vec4s).
fn attend4(qr: QueryRow, first: u32, end: u32, acc: ptr<function, array<vec4<f32>, 64>>) -> vec2<f32> {
    let quads = p.head_dim >> 2u;
    let kv_stride = (p.kv_heads * p.head_dim) >> 2u;
    let q0 = qr.q_base >> 2u;
    var m = NEG;
    var l = 0.0;
    for (var kp = first; kp < end; kp++) {
        let kb = kp * kv_stride + (qr.kv_base >> 2u);
        var dots = vec4<f32>(0.0);
        for (var d = 0u; d < quads; d++) {
            dots += q_vec4[q0 + d] * k_vec4[kb + d];
        }
        let s = dot(dots, vec4<f32>(1.0)) * p.scale;
        let m_new = max(m, s);
        let correction = exp(m - m_new);
        let pj = exp(s - m_new);
        l = l * correction + pj;
        for (var d = 0u; d < quads; d++) {
            (*acc)[d] = (*acc)[d] * correction + pj * v_vec4[kb + d];
        }
        m = m_new;
    }
    return vec2<f32>(m, l);
}

@compute @workgroup_size(64)
fn attention_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= p.tokens * p.heads) {
        return;
    }
    let qr = query_row(i);
    if ((p.head_dim & 3u) == 0u) {
        var acc4: array<vec4<f32>, 64>;
        let l = attend4(qr, qr.start, qr.pos + 1u, &acc4).y;
        for (var d = 0u; d < p.head_dim; d++) {
            out[qr.q_base + d] = acc4[d >> 2u][d & 3u] / l;
        }
        return;
    }
    var acc: array<f32, MAX_HEAD_DIM>;
    let l = attend(qr, qr.start, qr.pos + 1u, &acc).y;
    for (var d = 0u; d < p.head_dim; d++) {
        out[qr.q_base + d] = acc[d] / l;
    }
}

const SPLIT_KEYS: u32 = 64u;

// Row r = i / splits over keys [s · SPLIT_KEYS, (s + 1) · SPLIT_KEYS) ∩ its causal window,
// s = i % splits; a range it cannot see leaves m = NEG, l = 0.
@compute @workgroup_size(64)
fn attention_split(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    let row = i / p.splits;
    if (row >= p.tokens * p.heads) {
        return;
    }
    let split = i % p.splits;
    let qr = query_row(row);
    let first = max(qr.start, split * SPLIT_KEYS);
    let end = min(qr.pos + 1u, (split + 1u) * SPLIT_KEYS);
    let base = i * (p.head_dim + 2u);
    if ((p.head_dim & 3u) == 0u) {
        var acc4: array<vec4<f32>, 64>;
        let ml = attend4(qr, first, end, &acc4);
        partials[base] = ml.x;
        partials[base + 1u] = ml.y;
        for (var d = 0u; d < p.head_dim; d++) {
            partials[base + 2u + d] = acc4[d >> 2u][d & 3u];
        }
        return;
    }
    var acc: array<f32, MAX_HEAD_DIM>;
    let ml = attend(qr, first, end, &acc);
    partials[base] = ml.x;
    partials[base + 1u] = ml.y;
    for (var d = 0u; d < p.head_dim; d++) {
        partials[base + 2u + d] = acc[d];
    }
}

// out[row, d] from the row's splits: each rescaled to the largest max, then normalised.
@compute @workgroup_size(64)
fn attention_combine(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    let row = i / p.head_dim;
    if (row >= p.tokens * p.heads) {
        return;
    }
    let d = i % p.head_dim;
    let stride = p.head_dim + 2u;
    let first = row * p.splits;
    var m = NEG;
    for (var s = 0u; s < p.splits; s++) {
        m = max(m, partials[(first + s) * stride]);
    }
    var l = 0.0;
    var o = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        let base = (first + s) * stride;
        let w = exp(partials[base] - m);
        l += w * partials[base + 1u];
        o += w * partials[base + 2u + d];
    }
    out[query_row(row).q_base + d] = o / l;
}

// Scaled scores of row row0 + i / key_quads for keys 4c..4c + 4, c = i % key_quads (keys =
// pos0 + tokens, key_quads = ⌈keys / 4⌉), those inside its causal window; head_dim a multiple
// of 4.
// Four keys an invocation share each load of q.
@compute @workgroup_size(64)
fn attention_scores(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    let keys = p.pos0 + p.tokens;
    let key_quads = (keys + 3u) / 4u;
    let row = p.row0 + i / key_quads;
    if (row >= p.row_end) {
        return;
    }
    let qr = query_row(row);
    let k0 = 4u * (i % key_quads);
    if (k0 > qr.pos || k0 + 3u < qr.start) {
        return;
    }
    let quads = p.head_dim >> 2u;
    let q0 = qr.q_base >> 2u;
    let kv_stride = (p.kv_heads * p.head_dim) >> 2u;
    // Keys past the row's last read its last key again and are not stored.
    let kb = min(vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(qr.pos)) * kv_stride
        + vec4<u32>(qr.kv_base >> 2u);
    var d0 = vec4<f32>(0.0);
    var d1 = vec4<f32>(0.0);
    var d2 = vec4<f32>(0.0);
    var d3 = vec4<f32>(0.0);
    for (var d = 0u; d < quads; d++) {
        let qv = q_vec4[q0 + d];
        d0 += qv * k_vec4[kb.x + d];
        d1 += qv * k_vec4[kb.y + d];
        d2 += qv * k_vec4[kb.z + d];
        d3 += qv * k_vec4[kb.w + d];
    }
    let one = vec4<f32>(1.0);
    let dots = vec4<f32>(dot(d0, one), dot(d1, one), dot(d2, one), dot(d3, one));
    store_scores((row - p.row0) * keys, k0, qr, dots);
}

// Where invocation i of a grouped pass works, `inner` invocations to each four heads: its
// token t (past the block: none), its four query heads (one KV head's; a group of fewer
// repeats its last), the first one's place in the group (j0), and its index among the inner.
struct GroupedAt {
    t: u32,
    heads: vec4<u32>,
    j0: u32,
    inner: u32,
}

fn grouped_at(i: u32, inner: u32) -> GroupedAt {
    let group = p.heads / p.kv_heads;
    let head_quads = (group + 3u) / 4u;
    let per_token = p.kv_heads * head_quads * inner;
    let rest = i % per_token;
    let kvh = rest / (head_quads * inner);
    let j0 = 4u * ((rest / inner) % head_quads);
    let heads = min(vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(group - 1u))
        + vec4<u32>(kvh * group);
    return GroupedAt(p.row0 / p.heads + i / per_token, heads, j0, rest % inner);
}

// attention_scores for grouped-query heads: one invocation per (token, KV head, four of its
// query heads, four keys), so each load of K serves four heads and each load of q four keys.
// A group of fewer heads repeats its last, not stored. The block [row0, row_end) holds whole
// tokens.
@compute @workgroup_size(64)
fn attention_scores_grouped(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let keys = p.pos0 + p.tokens;
    let key_quads = (keys + 3u) / 4u;
    let place = grouped_at((wg.x + wg.y * nwg.x) * WG + lid, key_quads);
    if (place.t * p.heads >= p.row_end) {
        return;
    }
    let t = place.t;
    let heads = place.heads;
    let j0 = place.j0;
    let group = p.heads / p.kv_heads;
    let k0 = 4u * place.inner;
    let qr = query_row(t * p.heads + heads.x);
    if (k0 > qr.pos || k0 + 3u < qr.start) {
        return;
    }
    let quads = p.head_dim >> 2u;
    let qb = (vec4<u32>(t * p.heads) + heads) * quads;
    let kv_stride = (p.kv_heads * p.head_dim) >> 2u;
    let kb = min(vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(qr.pos)) * kv_stride
        + vec4<u32>(qr.kv_base >> 2u);
    // s_h: head h's four keys, each a vec4 of partial products.
    var s0k0 = vec4<f32>(0.0);
    var s0k1 = vec4<f32>(0.0);
    var s0k2 = vec4<f32>(0.0);
    var s0k3 = vec4<f32>(0.0);
    var s1k0 = vec4<f32>(0.0);
    var s1k1 = vec4<f32>(0.0);
    var s1k2 = vec4<f32>(0.0);
    var s1k3 = vec4<f32>(0.0);
    var s2k0 = vec4<f32>(0.0);
    var s2k1 = vec4<f32>(0.0);
    var s2k2 = vec4<f32>(0.0);
    var s2k3 = vec4<f32>(0.0);
    var s3k0 = vec4<f32>(0.0);
    var s3k1 = vec4<f32>(0.0);
    var s3k2 = vec4<f32>(0.0);
    var s3k3 = vec4<f32>(0.0);
    for (var d = 0u; d < quads; d++) {
        let k0v = k_vec4[kb.x + d];
        let k1v = k_vec4[kb.y + d];
        let k2v = k_vec4[kb.z + d];
        let k3v = k_vec4[kb.w + d];
        let q0 = q_vec4[qb.x + d];
        s0k0 += q0 * k0v;
        s0k1 += q0 * k1v;
        s0k2 += q0 * k2v;
        s0k3 += q0 * k3v;
        let q1 = q_vec4[qb.y + d];
        s1k0 += q1 * k0v;
        s1k1 += q1 * k1v;
        s1k2 += q1 * k2v;
        s1k3 += q1 * k3v;
        let q2 = q_vec4[qb.z + d];
        s2k0 += q2 * k0v;
        s2k1 += q2 * k1v;
        s2k2 += q2 * k2v;
        s2k3 += q2 * k3v;
        let q3 = q_vec4[qb.w + d];
        s3k0 += q3 * k0v;
        s3k1 += q3 * k1v;
        s3k2 += q3 * k2v;
        s3k3 += q3 * k3v;
    }
    let one = vec4<f32>(1.0);
    let at = (vec4<u32>(t * p.heads - p.row0) + heads) * keys;
    let h0 = vec4<f32>(dot(s0k0, one), dot(s0k1, one), dot(s0k2, one), dot(s0k3, one));
    let h1 = vec4<f32>(dot(s1k0, one), dot(s1k1, one), dot(s1k2, one), dot(s1k3, one));
    let h2 = vec4<f32>(dot(s2k0, one), dot(s2k1, one), dot(s2k2, one), dot(s2k3, one));
    let h3 = vec4<f32>(dot(s3k0, one), dot(s3k1, one), dot(s3k2, one), dot(s3k3, one));
    store_scores(at.x, k0, qr, h0);
    if (j0 + 1u < group) {
        store_scores(at.y, k0, qr, h1);
    }
    if (j0 + 2u < group) {
        store_scores(at.z, k0, qr, h2);
    }
    if (j0 + 3u < group) {
        store_scores(at.w, k0, qr, h3);
    }
}

// Scaled scores of keys k0..k0 + 4 inside the row's causal window, from `at` (its row) on.
fn store_scores(at: u32, k0: u32, qr: QueryRow, dots: vec4<f32>) {
    let scores = dots * p.scale;
    for (var j = 0u; j < 4u; j++) {
        let kp = k0 + j;
        if (kp >= qr.start && kp <= qr.pos) {
            partials[at + kp] = scores[j];
        }
    }
}

// out[row, 8c..8c + 8] = softmax(row's scores) · V[.., 8c..8c + 8], row = row0 + i / ⌈head_dim / 8⌉,
// c = i % ⌈head_dim / 8⌉ (the last four dims alone when head_dim / 4 is odd): one load of
// each score serves eight dims.
@compute @workgroup_size(16)
fn attention_values(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 16u + lid;
    let quads = p.head_dim >> 2u;
    let pairs = (quads + 1u) / 2u;
    let row = p.row0 + i / pairs;
    if (row >= p.row_end) {
        return;
    }
    let c0 = 2u * (i % pairs);
    let c1 = min(c0 + 1u, quads - 1u);
    let qr = query_row(row);
    let scores = (row - p.row0) * (p.pos0 + p.tokens);
    let kv_stride = (p.kv_heads * p.head_dim) >> 2u;
    let vb = qr.kv_base >> 2u;
    // One pass, an online softmax: a second exp a key costs less here than a second load.
    var m = NEG;
    var l = 0.0;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    for (var kp = qr.start; kp <= qr.pos; kp++) {
        let s = partials[scores + kp];
        let m_new = max(m, s);
        let correction = exp(m - m_new);
        let e = exp(s - m_new);
        l = l * correction + e;
        let at = kp * kv_stride + vb;
        acc0 = acc0 * correction + e * v_vec4[at + c0];
        acc1 = acc1 * correction + e * v_vec4[at + c1];
        m = m_new;
    }
    store_quad(qr.q_base + 4u * c0, acc0 / l);
    if (c0 + 1u < quads) {
        store_quad(qr.q_base + 4u * c1, acc1 / l);
    }
}

// attention_values for grouped-query heads: one invocation per (token, KV head, four of its
// query heads, eight dims), so each load of V serves four heads (with a softmax each, the
// four heads' running max and sum in the lanes of m and l). A group of fewer heads repeats its
// last, not stored. The block [row0, row_end) holds whole tokens.
@compute @workgroup_size(16)
fn attention_values_grouped(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let quads = p.head_dim >> 2u;
    let pairs = (quads + 1u) / 2u;
    let place = grouped_at((wg.x + wg.y * nwg.x) * 16u + lid, pairs);
    if (place.t * p.heads >= p.row_end) {
        return;
    }
    let t = place.t;
    let heads = place.heads;
    let j0 = place.j0;
    let group = p.heads / p.kv_heads;
    let c0 = 2u * place.inner;
    let c1 = min(c0 + 1u, quads - 1u);
    let qr = query_row(t * p.heads + heads.x);
    let keys = p.pos0 + p.tokens;
    let rows = vec4<u32>(t * p.heads - p.row0) + heads;
    let scores = rows * keys;
    let kv_stride = (p.kv_heads * p.head_dim) >> 2u;
    let vb = qr.kv_base >> 2u;
    var m = vec4<f32>(NEG);
    var l = vec4<f32>(0.0);
    var a0 = vec4<f32>(0.0);
    var b0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var b1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var b2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var b3 = vec4<f32>(0.0);
    for (var kp = qr.start; kp <= qr.pos; kp++) {
        let s = vec4<f32>(partials[scores.x + kp], partials[scores.y + kp],
                          partials[scores.z + kp], partials[scores.w + kp]);
        let m_new = max(m, s);
        let correction = exp(m - m_new);
        let e = exp(s - m_new);
        l = l * correction + e;
        let at = kp * kv_stride + vb;
        let v0 = v_vec4[at + c0];
        let v1 = v_vec4[at + c1];
        a0 = a0 * correction.x + e.x * v0;
        b0 = b0 * correction.x + e.x * v1;
        a1 = a1 * correction.y + e.y * v0;
        b1 = b1 * correction.y + e.y * v1;
        a2 = a2 * correction.z + e.z * v0;
        b2 = b2 * correction.z + e.z * v1;
        a3 = a3 * correction.w + e.w * v0;
        b3 = b3 * correction.w + e.w * v1;
        m = m_new;
    }
    let q_base = t * p.heads * p.head_dim;
    store_pair(q_base + heads.x * p.head_dim, c0, c1, quads, a0 / l.x, b0 / l.x);
    if (j0 + 1u < group) {
        store_pair(q_base + heads.y * p.head_dim, c0, c1, quads, a1 / l.y, b1 / l.y);
    }
    if (j0 + 2u < group) {
        store_pair(q_base + heads.z * p.head_dim, c0, c1, quads, a2 / l.z, b2 / l.z);
    }
    if (j0 + 3u < group) {
        store_pair(q_base + heads.w * p.head_dim, c0, c1, quads, a3 / l.w, b3 / l.w);
    }
}

// Dims 4·c0.. and 4·c1.. of the row at `at` (c1 only when it is a quad of its own).
fn store_pair(at: u32, c0: u32, c1: u32, quads: u32, o0: vec4<f32>, o1: vec4<f32>) {
    store_quad(at + 4u * c0, o0);
    if (c0 + 1u < quads) {
        store_quad(at + 4u * c1, o1);
    }
}

fn store_quad(at: u32, o: vec4<f32>) {
    out[at] = o.x;
    out[at + 1u] = o.y;
    out[at + 2u] = o.z;
    out[at + 3u] = o.w;
}
