// The row dot product of the dense and the expert matvecs (included after weights; the
// including shader declares `x: array<f32>` and `w: array<u32>`, and `x_vec4: array<vec4<f32>>`
// and `w_vec4: array<vec4<u32>>` bound to the same two buffers).
//
// 16-bit rows whose words and x start 16-byte aligned, with K whole groups of eight, take
// whole-vec4 loads (eight weights and two x quads a load): on a CPU adapter that is about 1.8×
// the per-word loop's speed, and a GPU reads wider too.

// Whether row (a word offset) and xb (an element offset) can take the vec4 path.
fn wide(row: u32, xb: u32, cols: u32) -> bool {
    return (W_DTYPE == 1u || W_DTYPE == 2u) && ((row | xb) & 3u) == 0u && (cols & 7u) == 0u;
}

// Weights 0..3 and 4..7 of the eight 16-bit weights in four words.
fn low4(q: vec4<u32>) -> vec4<f32> {
    if (W_DTYPE == 1u) {
        return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
    }
    return bitcast<vec4<f32>>(vec4<u32>(q.x << 16u, q.x & 0xffff0000u, q.y << 16u, q.y & 0xffff0000u));
}

fn high4(q: vec4<u32>) -> vec4<f32> {
    if (W_DTYPE == 1u) {
        return vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
    }
    return bitcast<vec4<f32>>(vec4<u32>(q.z << 16u, q.z & 0xffff0000u, q.w << 16u, q.w & 0xffff0000u));
}

// row_dot2 over whole vec4s: this lane's groups of eight j ≡ lane (mod lanes); .y only when
// `two` (the row `step` words on).
fn row_dot2_wide(row: u32, step: u32, two: bool, xb: u32, cols: u32, lane: u32, lanes: u32) -> vec2<f32> {
    let groups = cols >> 3u;
    let a = row >> 2u;
    let b = (row + step) >> 2u;
    let x0 = xb >> 2u;
    var acc_a = vec4<f32>(0.0);
    var acc_b = vec4<f32>(0.0);
    for (var j = lane; j < groups; j += lanes) {
        let lo = x_vec4[x0 + 2u * j];
        let hi = x_vec4[x0 + 2u * j + 1u];
        let qa = w_vec4[a + j];
        acc_a += low4(qa) * lo + high4(qa) * hi;
        if (two) {
            let qb = w_vec4[b + j];
            acc_b += low4(qb) * lo + high4(qb) * hi;
        }
    }
    return vec2<f32>(dot(acc_a, vec4<f32>(1.0)), dot(acc_b, vec4<f32>(1.0)));
}

// Σ W[row, k] · x[xb + k] over this lane's pairs k = 2j, j ≡ lane (mod lanes): one share of
// a row split across `lanes` invocations (lanes = 1: the whole row by one invocation).
fn row_dot(row: u32, xb: u32, cols: u32, lane: u32, lanes: u32) -> f32 {
    if (W_DTYPE == 3u) {
        return row_dot2_q8(row, 0u, false, xb, cols, lane, lanes).x;
    }
    if (wide(row, xb, cols)) {
        return row_dot2_wide(row, 0u, false, xb, cols, lane, lanes).x;
    }
    var acc = vec2<f32>(0.0);
    let pairs = cols / 2u;
    for (var j = lane; j < pairs; j += lanes) {
        let k = 2u * j;
        acc += load_w2(row, k) * vec2<f32>(x[xb + k], x[xb + k + 1u]);
    }
    var sum = acc.x + acc.y;
    if ((cols & 1u) == 1u && lane == 0u) {
        sum += load_w(row, cols - 1u) * x[xb + cols - 1u];
    }
    return sum;
}

// row_dot for two rows at once (`row` and `row + step` words), reading x once: the fused
// gate/up projection's pair.
fn row_dot2(row: u32, step: u32, xb: u32, cols: u32, lane: u32, lanes: u32) -> vec2<f32> {
    if (W_DTYPE == 3u) {
        return row_dot2_q8(row, step, true, xb, cols, lane, lanes);
    }
    if (wide(row, xb, cols) && (step & 3u) == 0u) {
        return row_dot2_wide(row, step, true, xb, cols, lane, lanes);
    }
    var acc_a = vec2<f32>(0.0);
    var acc_b = vec2<f32>(0.0);
    let pairs = cols / 2u;
    for (var j = lane; j < pairs; j += lanes) {
        let k = 2u * j;
        let xv = vec2<f32>(x[xb + k], x[xb + k + 1u]);
        acc_a += load_w2(row, k) * xv;
        acc_b += load_w2(row + step, k) * xv;
    }
    var sum = vec2<f32>(acc_a.x + acc_a.y, acc_b.x + acc_b.y);
    if ((cols & 1u) == 1u && lane == 0u) {
        let xl = x[xb + cols - 1u];
        sum += vec2<f32>(load_w(row, cols - 1u), load_w(row + step, cols - 1u)) * xl;
    }
    return sum;
}

// x[k..k+4]
fn x4(k: u32) -> vec4<f32> {
    return vec4<f32>(x[k], x[k + 1u], x[k + 2u], x[k + 3u]);
}

// row_dot (and row_dot2 when `two`: the row `step` words on too) of Q8_0 rows, whose K is
// whole blocks of 32: four elements a word and one scale a block, where the generic path
// pays a scale read and a multiply per pair. One invocation with the whole row (lanes = 1,
// the CPU adapters' kernels) scales each block's sum once; lanes take consecutive words, so
// short rows keep every lane busy and the 8 lanes of a block share its scale's read.
fn row_dot2_q8(row: u32, step: u32, two: bool, xb: u32, cols: u32, lane: u32, lanes: u32) -> vec2<f32> {
    let blocks = cols >> 5u;
    var acc = vec2<f32>(0.0);
    if (lanes == 1u) {
        for (var b = 0u; b < blocks; b++) {
            let quants = q8_quants_at(row, 8u * b);
            let scale = q8_scale_at(row, 8u * b);
            let xk = xb + 32u * b;
            var sa = vec4<f32>(0.0);
            var sb = vec4<f32>(0.0);
            for (var i = 0u; i < 8u; i++) {
                let xv = x4(xk + 4u * i);
                sa += q8_word(w[quants + i]) * xv;
                if (two) {
                    sb += q8_word(w[quants + step + i]) * xv;
                }
            }
            acc.x += bitcast<f32>(w[scale]) * (sa.x + sa.y + sa.z + sa.w);
            if (two) {
                acc.y += bitcast<f32>(w[scale + step]) * (sb.x + sb.y + sb.z + sb.w);
            }
        }
        return acc;
    }
    for (var j = lane; j < blocks * 8u; j += lanes) {
        let q = q8_quants_at(row, j);
        let d = q8_scale_at(row, j);
        let xv = x4(xb + 4u * j);
        acc.x += bitcast<f32>(w[d]) * dot(q8_word(w[q]), xv);
        if (two) {
            acc.y += bitcast<f32>(w[d + step]) * dot(q8_word(w[q + step]), xv);
        }
    }
    return acc;
}

// Four rows' dot products with x over whole vec4s (word offsets `rows`, each 16-byte
// aligned; 16-bit rows of whole groups of eight, or Q8_0), reading x once for all four.
fn row_dot4_wide(rows: vec4<u32>, xb: u32, cols: u32) -> vec4<f32> {
    if (W_DTYPE == 3u) {
        return row_dot4_q8(rows, xb, cols);
    }
    let groups = cols >> 3u;
    let a = rows >> vec4<u32>(2u);
    let x0 = xb >> 2u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var j = 0u; j < groups; j++) {
        let lo = x_vec4[x0 + 2u * j];
        let hi = x_vec4[x0 + 2u * j + 1u];
        let q0 = w_vec4[a.x + j];
        acc0 += low4(q0) * lo + high4(q0) * hi;
        let q1 = w_vec4[a.y + j];
        acc1 += low4(q1) * lo + high4(q1) * hi;
        let q2 = w_vec4[a.z + j];
        acc2 += low4(q2) * lo + high4(q2) * hi;
        let q3 = w_vec4[a.w + j];
        acc3 += low4(q3) * lo + high4(q3) * hi;
    }
    let one = vec4<f32>(1.0);
    return vec4<f32>(dot(acc0, one), dot(acc1, one), dot(acc2, one), dot(acc3, one));
}

// row_dot4_wide of Q8_0 rows: a vec4 of four scales a superblock and two vec4s of quants a
// block for each row, and the block's 32 inputs as eight vec4s for all four. On llvmpipe,
// which loads a lane at a time, that is 17 loads per 128 weights where loading a word at a
// time took 36. The block's sums are one vec4 across the rows: four vec4 accumulators a row
// left llvmpipe more live registers and were slower.
fn row_dot4_q8(rows: vec4<u32>, xb: u32, cols: u32) -> vec4<f32> {
    let a = rows >> vec4<u32>(2u);
    let blocks = cols >> 5u;
    var acc = vec4<f32>(0.0);
    for (var b0 = 0u; b0 < blocks; b0 += 4u) {
        let superblock = q8_scales_vec4(b0 >> 2u);
        let d = q8_scales4(a, superblock);
        for (var i = 0u; i < min(4u, blocks - b0); i++) {
            let q = q8_quants_vec4(b0 + i);
            let xk = (xb >> 2u) + 8u * (b0 + i);
            var s = vec4<f32>(0.0);
            for (var h = 0u; h < 2u; h++) {
                let xs = x16(xk + 4u * h);
                s += q8_dots4(a, q + h, xs);
            }
            acc += (q8_pick(i) * d) * s;
        }
    }
    return acc;
}

// row_dot4_q8 for eight rows (vec4 offsets `a` and `b`), which share each load of x.
fn row_dot8_q8(rows_a: vec4<u32>, rows_b: vec4<u32>, xb: u32, cols: u32) -> array<vec4<f32>, 2> {
    let a = rows_a >> vec4<u32>(2u);
    let b = rows_b >> vec4<u32>(2u);
    let blocks = cols >> 5u;
    var acc_a = vec4<f32>(0.0);
    var acc_b = vec4<f32>(0.0);
    for (var b0 = 0u; b0 < blocks; b0 += 4u) {
        let superblock = q8_scales_vec4(b0 >> 2u);
        let da = q8_scales4(a, superblock);
        let db = q8_scales4(b, superblock);
        for (var i = 0u; i < min(4u, blocks - b0); i++) {
            let q = q8_quants_vec4(b0 + i);
            let xk = (xb >> 2u) + 8u * (b0 + i);
            var sa = vec4<f32>(0.0);
            var sb = vec4<f32>(0.0);
            for (var h = 0u; h < 2u; h++) {
                let xs = x16(xk + 4u * h);
                sa += q8_dots4(a, q + h, xs);
                sb += q8_dots4(b, q + h, xs);
            }
            let pick = q8_pick(i);
            acc_a += (pick * da) * sa;
            acc_b += (pick * db) * sb;
        }
    }
    return array<vec4<f32>, 2>(acc_a, acc_b);
}

// The scale vec4s of four rows' superblock (vec4 offset `at` in each row), one column a row.
fn q8_scales4(a: vec4<u32>, at: u32) -> mat4x4<f32> {
    return mat4x4<f32>(bitcast<vec4<f32>>(w_vec4[a.x + at]), bitcast<vec4<f32>>(w_vec4[a.y + at]),
                       bitcast<vec4<f32>>(w_vec4[a.z + at]), bitcast<vec4<f32>>(w_vec4[a.w + at]));
}

// Picks block i's scales: (q8_pick(i) * d)[r] is component i of row r's scales.
fn q8_pick(i: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), vec4<f32>(1.0), vec4<u32>(i) == vec4<u32>(0u, 1u, 2u, 3u));
}

// Sixteen inputs from vec4 offset k, as the columns of a matrix.
fn x16(k: u32) -> mat4x4<f32> {
    return mat4x4<f32>(x_vec4[k], x_vec4[k + 1u], x_vec4[k + 2u], x_vec4[k + 3u]);
}

// Four rows' sixteen int8 at vec4 offset `at` against sixteen inputs.
fn q8_dots4(a: vec4<u32>, at: u32, xs: mat4x4<f32>) -> vec4<f32> {
    return vec4<f32>(q8_dot16(w_vec4[a.x + at], xs), q8_dot16(w_vec4[a.y + at], xs),
                     q8_dot16(w_vec4[a.z + at], xs), q8_dot16(w_vec4[a.w + at], xs));
}

// Sixteen int8 (four words) against sixteen inputs (the columns of xs).
fn q8_dot16(q: vec4<u32>, xs: mat4x4<f32>) -> f32 {
    return dot16(q8_unpack16(q), xs);
}

// Sixteen int8 (four words) as the columns of a matrix, four a column.
fn q8_unpack16(q: vec4<u32>) -> mat4x4<f32> {
    return mat4x4<f32>(q8_word(q.x), q8_word(q.y), q8_word(q.z), q8_word(q.w));
}

// Σ of the sixteen products of two matrices' elements.
fn dot16(a: mat4x4<f32>, b: mat4x4<f32>) -> f32 {
    return dot(a[0], b[0]) + dot(a[1], b[1]) + dot(a[2], b[2]) + dot(a[3], b[3]);
}

// first, first + 1, first + 2, first + 3, none past last: the four rows (or tokens) of a
// four-row kernel's invocation, those past the end repeating the last.
fn four_up_to(first: u32, last: u32) -> vec4<u32> {
    return min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last));
}
