// Dense projections: y[t, n] = Σ_k x[t, k] · W[n, k] (+ bias[n]) (+ y[t, n] when accumulating,
// which fuses the residual add).

//!include matmul_io
//!include weights
//!include row_dot

// Decode path (few tokens): 4 rows per workgroup, 16 lanes per row, tree reduction (of a
// gate/up pair when SWIGLU; see matmul_io).
const MV_ROWS: u32 = 4u;
const MV_LANES: u32 = 16u;
var<workgroup> partial: array<vec2<f32>, 64>;

@compute @workgroup_size(64)
fn matvec(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let blocks = (p.chunk_rows + MV_ROWS - 1u) / MV_ROWS;
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= blocks * p.tokens) {
        return;
    }
    let t = wid / blocks;
    let r = (wid % blocks) * MV_ROWS + lid / MV_LANES;
    let lane = lid % MV_LANES;
    var acc = vec2<f32>(0.0);
    if (r < p.chunk_rows) {
        acc = row_dots(r, t * p.x_stride, lane, MV_LANES);
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = MV_LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u && r < p.chunk_rows) {
        store_row(t, r, partial[lid]);
    }
}

// The CPU-adapter kernels' grid: workgroups of 64 consecutive rows, row blocks fastest.
// Returns (row, index of the workgroup's group of tokens).
fn row_and_token_group(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> vec2<u32> {
    let blocks = (p.chunk_rows + 63u) / 64u;
    let wid = wg.x + wg.y * nwg.x;
    return vec2<u32>((wid % blocks) * 64u + lid, wid / blocks);
}

// Decode path for CPU adapters (lavapipe, SwiftShader), which run a workgroup's invocations
// as SIMD lanes of one thread: there a workgroup and a barrier cost far more than the
// arithmetic, so each invocation owns a whole row and none waits for another.
@compute @workgroup_size(64)
fn matvec_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let at = row_and_token_group(wg, nwg, lid);
    let r = at.x;
    let t = at.y;
    if (t >= p.tokens || r >= p.chunk_rows) {
        return;
    }
    store_row(t, r, row_dots(r, t * p.x_stride, 0u, 1u));
}

// matvec_rows for 16-bit or Q8_0 rows that all take the wide path (the host checks): each invocation
// owns four consecutive stored rows (two gate/up pairs when SWIGLU), so each load of x feeds
// four rows. llvmpipe loads through a loop over the SIMD lanes, so fewer loads is what pays;
// workgroups of 16 (64 rows) keep a small matrix spread over the CPU's threads.
@compute @workgroup_size(16)
fn matvec_rows4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let at = rows_grid(wg, nwg, lid, 4u);
    let stored_rows = at.x;
    let r0 = at.y;
    let t = at.z;
    if (t >= p.tokens || r0 >= stored_rows) {
        return;
    }
    // Rows past the chunk's last read its last row again and are not stored.
    let rows = four_up_to(r0, stored_rows - 1u);
    store_four(t, r0, stored_rows, row_dot4_wide(rows * p.row_words, t * p.x_stride, p.cols));
}

// The grid of the CPU adapters' matvecs with `per` stored rows an invocation, 16 invocations
// a workgroup: (stored rows, the invocation's first, its token).
fn rows_grid(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, per: u32) -> vec3<u32> {
    let stored_rows = select(p.chunk_rows, 2u * p.chunk_rows, SWIGLU);
    let blocks = (stored_rows + 16u * per - 1u) / (16u * per);
    let wid = wg.x + wg.y * nwg.x;
    return vec3<u32>(stored_rows, ((wid % blocks) * 16u + lid) * per, wid / blocks);
}

// Stores the sums of stored rows r..r + 3 for token t, none past stored_rows: the two gate/up
// pairs' silu(gate) · up when SWIGLU.
fn store_four(t: u32, r: u32, stored_rows: u32, sums: vec4<f32>) {
    if (SWIGLU) {
        store_swiglu(t, r / 2u, sums.xy);
        if (r + 2u < stored_rows) {
            store_swiglu(t, r / 2u + 1u, sums.zw);
        }
        return;
    }
    for (var i = 0u; i < 4u; i++) {
        if (r + i < stored_rows) {
            store(t, r + i, sums[i]);
        }
    }
}

// matvec_rows4 for Q8_0 with eight rows an invocation (the host picks it for Q8_0 only): each
// load of x serves eight rows, where x's loads were half of row_dot4_q8's. On lavapipe that
// decodes about 10 % faster; f16 with eight rows was slower (BENCHMARKS.md).
@compute @workgroup_size(16)
fn matvec_rows8(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let at = rows_grid(wg, nwg, lid, 8u);
    let stored_rows = at.x;
    let r0 = at.y;
    let t = at.z;
    if (t >= p.tokens || r0 >= stored_rows) {
        return;
    }
    let last = stored_rows - 1u;
    let sums = row_dot8_q8(four_up_to(r0, last) * p.row_words, four_up_to(r0 + 4u, last) * p.row_words,
                           t * p.x_stride, p.cols);
    store_four(t, r0, stored_rows, sums[0]);
    if (r0 + 4u < stored_rows) {
        store_four(t, r0 + 4u, stored_rows, sums[1]);
    }
}

// Prefill path for CPU adapters: each invocation owns one row for 4 tokens, reading the row
// once and the tokens' inputs at addresses shared by all its lanes; no workgroup memory (on a
// CPU it is the same cache), no barriers, and no private arrays (lanes index those through
// memory), so the four accumulators are spelt out.
@compute @workgroup_size(64)
fn matmul_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let at = row_and_token_group(wg, nwg, lid);
    let r = at.x;
    let t0 = at.y * 4u;
    if (t0 >= p.tokens || r >= p.chunk_rows) {
        return;
    }
    let row = r * p.row_words;
    // Tokens past the end read token t0's input and are not stored.
    let x0 = t0 * p.x_stride;
    let x1 = select(t0, t0 + 1u, t0 + 1u < p.tokens) * p.x_stride;
    let x2 = select(t0, t0 + 2u, t0 + 2u < p.tokens) * p.x_stride;
    let x3 = select(t0, t0 + 3u, t0 + 3u < p.tokens) * p.x_stride;
    if (W_DTYPE == 3u || wide(row, x0 | x1 | x2 | x3, p.cols)) {
        var sums: vec4<f32>;
        if (W_DTYPE == 3u) {
            sums = matmul_rows_q8(row, vec4<u32>(x0, x1, x2, x3));
        } else {
            sums = matmul_rows_wide(row >> 2u, vec4<u32>(x0, x1, x2, x3) >> vec4<u32>(2u));
        }
        for (var i = 0u; i < 4u; i++) {
            if (t0 + i < p.tokens) {
                store(t0 + i, r, sums[i]);
            }
        }
        return;
    }
    var a0 = vec2<f32>(0.0);
    var a1 = vec2<f32>(0.0);
    var a2 = vec2<f32>(0.0);
    var a3 = vec2<f32>(0.0);
    let pairs = p.cols / 2u;
    for (var j = 0u; j < pairs; j++) {
        let k = 2u * j;
        let wv = load_w2(row, k);
        a0 += wv * vec2<f32>(x[x0 + k], x[x0 + k + 1u]);
        a1 += wv * vec2<f32>(x[x1 + k], x[x1 + k + 1u]);
        a2 += wv * vec2<f32>(x[x2 + k], x[x2 + k + 1u]);
        a3 += wv * vec2<f32>(x[x3 + k], x[x3 + k + 1u]);
    }
    var sums = vec4<f32>(a0.x + a0.y, a1.x + a1.y, a2.x + a2.y, a3.x + a3.y);
    if ((p.cols & 1u) == 1u) {
        let last = p.cols - 1u;
        sums += load_w(row, last) * vec4<f32>(x[x0 + last], x[x1 + last], x[x2 + last], x[x3 + last]);
    }
    for (var i = 0u; i < 4u; i++) {
        if (t0 + i < p.tokens) {
            store(t0 + i, r, sums[i]);
        }
    }
}

// matmul_rows for 16-bit or Q8_0 rows that all take the wide path (the host checks): each invocation
// owns four rows for four tokens, so each load of x serves four rows and each load of W four
// tokens (matmul_rows' loads for four rows, a third as many).
@compute @workgroup_size(16)
fn matmul_rows4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let blocks = (p.chunk_rows + 63u) / 64u;
    let wid = wg.x + wg.y * nwg.x;
    let r0 = ((wid % blocks) * 16u + lid) * 4u;
    let t0 = (wid / blocks) * 4u;
    if (t0 >= p.tokens || r0 >= p.chunk_rows) {
        return;
    }
    // Rows and tokens past the end read the last ones again and are not stored.
    let w0 = four_up_to(r0, p.chunk_rows - 1u) * (p.row_words >> 2u);
    let ts = four_up_to(t0, p.tokens - 1u);
    let xs = ts * (p.x_stride >> 2u);
    var sums: mat4x4<f32>;
    if (W_DTYPE == 3u) {
        sums = matmul4_q8(w0, xs, p.cols);
    } else {
        sums = matmul4_wide(w0, xs, p.cols);
    }
    for (var r = 0u; r < 4u; r++) {
        for (var t = 0u; t < 4u; t++) {
            if (r0 + r < p.chunk_rows && t0 + t < p.tokens) {
                store(t0 + t, r0 + r, sums[r][t]);
            }
        }
    }
}

// matmul_rows4's dot products of 16-bit rows: four rows (vec4 offsets `a`) against four
// tokens' inputs (vec4 offsets `xs`), eight weights a load; column r holds row r's sums for
// the four tokens.
fn matmul4_wide(a: vec4<u32>, xs: vec4<u32>, cols: u32) -> mat4x4<f32> {
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var j = 0u; j < (cols >> 3u); j++) {
        let k = 2u * j;
        let x0 = array<vec4<f32>, 2>(x_vec4[xs.x + k], x_vec4[xs.x + k + 1u]);
        let x1 = array<vec4<f32>, 2>(x_vec4[xs.y + k], x_vec4[xs.y + k + 1u]);
        let x2 = array<vec4<f32>, 2>(x_vec4[xs.z + k], x_vec4[xs.z + k + 1u]);
        let x3 = array<vec4<f32>, 2>(x_vec4[xs.w + k], x_vec4[xs.w + k + 1u]);
        a0 += dots4(w_vec4[a.x + j], x0, x1, x2, x3);
        a1 += dots4(w_vec4[a.y + j], x0, x1, x2, x3);
        a2 += dots4(w_vec4[a.z + j], x0, x1, x2, x3);
        a3 += dots4(w_vec4[a.w + j], x0, x1, x2, x3);
    }
    return mat4x4<f32>(a0, a1, a2, a3);
}

// matmul_rows4's Q8_0 dot products: four rows (vec4 offsets `a`) against four tokens' inputs
// (vec4 offsets `xs`), each load of quants unpacked once for the four tokens and each load of
// x serving the four rows; column r holds row r's sums for the four tokens.
fn matmul4_q8(a: vec4<u32>, xs: vec4<u32>, cols: u32) -> mat4x4<f32> {
    let blocks = cols >> 5u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var b0 = 0u; b0 < blocks; b0 += 4u) {
        let superblock = q8_scales_vec4(b0 >> 2u);
        let scales = q8_scales4(a, superblock);
        for (var i = 0u; i < min(4u, blocks - b0); i++) {
            let q = q8_quants_vec4(b0 + i);
            let xk = 8u * (b0 + i);
            var s0 = vec4<f32>(0.0);
            var s1 = vec4<f32>(0.0);
            var s2 = vec4<f32>(0.0);
            var s3 = vec4<f32>(0.0);
            for (var h = 0u; h < 2u; h++) {
                let k = xk + 4u * h;
                let x0 = x16(xs.x + k);
                let x1 = x16(xs.y + k);
                let x2 = x16(xs.z + k);
                let x3 = x16(xs.w + k);
                let u0 = q8_unpack16(w_vec4[a.x + q + h]);
                s0 += vec4<f32>(dot16(u0, x0), dot16(u0, x1), dot16(u0, x2), dot16(u0, x3));
                let u1 = q8_unpack16(w_vec4[a.y + q + h]);
                s1 += vec4<f32>(dot16(u1, x0), dot16(u1, x1), dot16(u1, x2), dot16(u1, x3));
                let u2 = q8_unpack16(w_vec4[a.z + q + h]);
                s2 += vec4<f32>(dot16(u2, x0), dot16(u2, x1), dot16(u2, x2), dot16(u2, x3));
                let u3 = q8_unpack16(w_vec4[a.w + q + h]);
                s3 += vec4<f32>(dot16(u3, x0), dot16(u3, x1), dot16(u3, x2), dot16(u3, x3));
            }
            let d = q8_pick(i) * scales;
            acc0 += d.x * s0;
            acc1 += d.y * s1;
            acc2 += d.z * s2;
            acc3 += d.w * s3;
        }
    }
    return mat4x4<f32>(acc0, acc1, acc2, acc3);
}

// Eight weights (one vec4 of 16-bit words) against four tokens' eight inputs each.
fn dots4(q: vec4<u32>, x0: array<vec4<f32>, 2>, x1: array<vec4<f32>, 2>, x2: array<vec4<f32>, 2>, x3: array<vec4<f32>, 2>) -> vec4<f32> {
    let lo = low4(q);
    let hi = high4(q);
    return vec4<f32>(
        dot(lo, x0[0]) + dot(hi, x0[1]),
        dot(lo, x1[0]) + dot(hi, x1[1]),
        dot(lo, x2[0]) + dot(hi, x2[1]),
        dot(lo, x3[0]) + dot(hi, x3[1]),
    );
}

// matmul_rows' dot products of a 16-bit row (from vec4 `row`) with four tokens' inputs (from
// vec4s `xs`), eight weights a load: row_dot's wide path for four tokens.
fn matmul_rows_wide(row: u32, xs: vec4<u32>) -> vec4<f32> {
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var j = 0u; j < (p.cols >> 3u); j++) {
        let q = w_vec4[row + j];
        let lo = low4(q);
        let hi = high4(q);
        let k = 2u * j;
        a0 += lo * x_vec4[xs.x + k] + hi * x_vec4[xs.x + k + 1u];
        a1 += lo * x_vec4[xs.y + k] + hi * x_vec4[xs.y + k + 1u];
        a2 += lo * x_vec4[xs.z + k] + hi * x_vec4[xs.z + k + 1u];
        a3 += lo * x_vec4[xs.w + k] + hi * x_vec4[xs.w + k + 1u];
    }
    let one = vec4<f32>(1.0);
    return vec4<f32>(dot(a0, one), dot(a1, one), dot(a2, one), dot(a3, one));
}

// matmul_rows' dot products of a Q8_0 row with four tokens' inputs (starting at xs): four
// elements a word, its block's scale applied per word. On lavapipe this flat loop is as
// fast as f16 where a loop over blocks with an inner loop over words was 25 % slower.
fn matmul_rows_q8(row: u32, xs: vec4<u32>) -> vec4<f32> {
    var sums = vec4<f32>(0.0);
    for (var j = 0u; j < (p.cols >> 2u); j++) {
        let q = q8_word(w[q8_quants_at(row, j)]) * bitcast<f32>(w[q8_scale_at(row, j)]);
        let k = 4u * j;
        sums += vec4<f32>(dot(q, x4(xs.x + k)), dot(q, x4(xs.y + k)),
                          dot(q, x4(xs.z + k)), dot(q, x4(xs.w + k)));
    }
    return sums;
}

// Prefill path: 32 tokens × 32 rows per workgroup, K in steps of 16 through workgroup
// memory; each invocation owns 4 tokens × 4 rows.
const TILE: u32 = 32u;
const TK: u32 = 16u;
var<workgroup> xs: array<f32, 512>; // [TILE tokens][TK]
var<workgroup> ws: array<f32, 512>; // [TILE rows][TK]

@compute @workgroup_size(64)
fn matmul_tiled(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row_tiles = (p.chunk_rows + TILE - 1u) / TILE;
    let tok_tiles = (p.tokens + TILE - 1u) / TILE;
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= row_tiles * tok_tiles) {
        return;
    }
    let r0 = (wid % row_tiles) * TILE;
    let t0 = (wid / row_tiles) * TILE;
    let tr = (lid % 8u) * 4u; // first of this invocation's rows within the tile
    let tt = (lid / 8u) * 4u; // first of its tokens
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.cols; k0 += TK) {
        for (var e = lid; e < TILE * TK; e += 64u) {
            let a = e / TK;
            let k = k0 + e % TK;
            let t = t0 + a;
            var xv = 0.0;
            if (t < p.tokens && k < p.cols) {
                xv = x[t * p.x_stride + k];
            }
            xs[e] = xv;
            let r = r0 + a;
            var wv = 0.0;
            if (r < p.chunk_rows && k < p.cols) {
                wv = load_w(r * p.row_words, k);
            }
            ws[e] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let b = vec4<f32>(ws[tr * TK + kk], ws[(tr + 1u) * TK + kk],
                              ws[(tr + 2u) * TK + kk], ws[(tr + 3u) * TK + kk]);
            acc0 += xs[tt * TK + kk] * b;
            acc1 += xs[(tt + 1u) * TK + kk] * b;
            acc2 += xs[(tt + 2u) * TK + kk] * b;
            acc3 += xs[(tt + 3u) * TK + kk] * b;
        }
        workgroupBarrier();
    }
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i++) {
        let t = t0 + tt + i;
        for (var j = 0u; j < 4u; j++) {
            let r = r0 + tr + j;
            if (t < p.tokens && r < p.chunk_rows) {
                store(t, r, accs[i][j]);
            }
        }
    }
}
