// silu(g) = g · sigmoid(g), shared by the SwiGLU kernels (included, not a family of its own).
// The sigmoid comes from exp(-|g|) ≤ 1: no overflow to infinity, which WGSL lets drivers
// assume never happens.
fn sigmoid(g: f32) -> f32 {
    let e = exp(-abs(g));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), g >= 0.0);
}

fn silu(g: f32) -> f32 {
    return g * sigmoid(g);
}
