// The training matmul: C[m, n] (+)= Σ_k A[m, k] · B[k, n], every operand addressed through
// strides, so one kernel makes a layer's forward (Y = X·Wᵀ), its input gradient (dX = dY·W)
// and its weight gradient (dW = dYᵀ·X, A read transposed).
//
// A is f32: A[m, k] = a[a_offset + m·a_row + k·a_col].
// B is a matrix in its stored format (weights.wgsl: a frozen weight keeps its f16, bf16 or
// Q8_0 words; a trained one, or activations, are f32), stored row by row, row r at word
// b_offset + r·row_words. B[k, n] is element n of row k, or with b_transposed element k of
// row n (the weight of y = x·Wᵀ, row n = output feature n).
// C is f32: C[m, n] = c[c_offset + m·c_row + n], added to when `accumulate`.
//
// Each workgroup owns a 64 × 64 tile of C and walks K 16 at a time through workgroup memory;
// each invocation owns 4 × 4 outputs. The reduction over K (the tokens, for dW) stays inside
// the workgroup: WebGPU has no float atomics.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    a_offset: u32,
    a_row: u32,
    a_col: u32,
    b_offset: u32,
    row_words: u32,
    b_transposed: u32,
    c_offset: u32,
    c_row: u32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

//!include weights

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;

// [k][m] and [k][n], four consecutive rows (columns) to a vec4: an invocation reads its four
// rows and its four columns of one k in two loads (a CPU adapter's lanes pay per load).
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

fn load_b(k: u32, n: u32) -> f32 {
    if (p.b_transposed != 0u) {
        return load_w(p.b_offset + n * p.row_words, k);
    }
    return load_w(p.b_offset + k * p.row_words, n);
}

@compute @workgroup_size(256)
fn gemm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tiles_n = (p.n + TILE - 1u) / TILE;
    let tiles = tiles_n * ((p.m + TILE - 1u) / TILE);
    let wid = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup, so the barriers below stay in uniform control flow.
    if (wid >= tiles) {
        return;
    }
    let m0 = (wid / tiles_n) * TILE;
    let n0 = (wid % tiles_n) * TILE;
    let tm = (lid / 16u) * 4u;
    let tn = (lid % 16u) * 4u;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += DEPTH) {
        for (var i = 0u; i < 4u; i++) {
            let e = lid + 256u * i;
            // A: 64 rows × 16 of K, neighbouring invocations on neighbouring words: K fastest
            // for a row-major A, M fastest for a transposed one (dW's dYᵀ).
            var am = e / DEPTH;
            var ak = e % DEPTH;
            if (p.a_col != 1u) {
                am = e % TILE;
                ak = e / TILE;
            }
            var av = 0.0;
            if (m0 + am < p.m && k0 + ak < p.k) {
                av = a[p.a_offset + (m0 + am) * p.a_row + (k0 + ak) * p.a_col];
            }
            a_tile[(ak * TILE + am) / 4u][am % 4u] = av;
            // B: 16 of K × 64 columns; for a transposed B, K fastest.
            var bk = e / TILE;
            var bn = e % TILE;
            if (p.b_transposed != 0u) {
                bk = e % DEPTH;
                bn = e / DEPTH;
            }
            var bv = 0.0;
            if (k0 + bk < p.k && n0 + bn < p.n) {
                bv = load_b(k0 + bk, n0 + bn);
            }
            b_tile[(bk * TILE + bn) / 4u][bn % 4u] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < DEPTH; kk++) {
            let av = a_tile[(kk * TILE + tm) / 4u];
            let bv = b_tile[(kk * TILE + tn) / 4u];
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + tm + i;
        if (m >= p.m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tn + j;
            if (n < p.n) {
                let at = p.c_offset + m * p.c_row + n;
                var v = acc[i][j];
                if (p.accumulate != 0u) {
                    v += c[at];
                }
                c[at] = v;
            }
        }
    }
}
