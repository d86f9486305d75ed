// The row dot product of the dense and the expert matvecs (included after weights; the
// including shader declares `x: array<f32>` and `w: array<u32>`).

// Σ W[row, k] · x[xb + k] over this lane's pairs k = 2j, j ≡ lane (mod lanes): one share of
// a row split across `lanes` invocations (lanes = 1: the whole row by one invocation).
fn row_dot(row: u32, xb: u32, cols: u32, lane: u32, lanes: u32) -> f32 {
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
