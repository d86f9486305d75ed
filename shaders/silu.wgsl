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

// gelu_tanh(g) = g/2 · (1 + tanh(√(2/π) · (g + 0.044715 g³))) (`gelu_pytorch_tanh`), its tanh
// from exp(-2|u|) ≤ 1 like the sigmoid above.
fn gelu_tanh(g: f32) -> f32 {
    let u = 0.7978845608028654 * (g + 0.044715 * g * g * g);
    let e = exp(-2.0 * abs(u));
    let t = sign(u) * (1.0 - e) / (1.0 + e);
    return 0.5 * g * (1.0 + t);
}
