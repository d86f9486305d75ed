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
