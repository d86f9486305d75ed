// The dense projections' parameters, bindings and output step (included by matmul.wgsl and
// matvec_subgroup.wgsl). W is one row chunk of a matrix split to fit the adapter's
// storage-binding limit: chunk row r is global row row_start + r.

struct Params {
    tokens: u32,
    cols: u32,        // K
    row_words: u32,   // u32 words per stored row
    row_start: u32,   // first global row of this chunk
    chunk_rows: u32,
    x_stride: u32,    // elements between tokens in x
    y_stride: u32,    // elements between tokens in y
    y_offset: u32,    // element offset of token 0 in y (e.g. a KV-cache slot)
    has_bias: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
// x and w again, read a vec4 at a time (row_dot's wide path).
@group(0) @binding(5) var<storage, read> w_vec4: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> x_vec4: array<vec4<f32>>;

// The fused gate/up projection (a pipeline constant): W holds gate and up rows interleaved,
// row 2n gate n and row 2n + 1 up n (bias likewise), row_start and chunk_rows count pairs,
// and y[t, n] = silu(gate) · up (the SwiGLU, so no separate pass reads them back).
override SWIGLU: bool = false;
// With SWIGLU: the gate's activation is gelu_tanh (gemma's GeGLU) instead of silu.
override GELU: bool = false;

//!include silu

fn store_swiglu(t: u32, r: u32, gate_up: vec2<f32>) {
    let n = p.row_start + r;
    var v = gate_up;
    if (p.has_bias != 0u) {
        v += vec2<f32>(bias[2u * n], bias[2u * n + 1u]);
    }
    let gate = select(silu(v.x), gelu_tanh(v.x), GELU);
    y[p.y_offset + t * p.y_stride + n] = gate * v.y;
}

fn store(t: u32, r: u32, value: f32) {
    let n = p.row_start + r;
    let i = p.y_offset + t * p.y_stride + n;
    var v = value;
    if (p.has_bias != 0u) {
        v += bias[n];
    }
    if (p.accumulate != 0u) {
        v += y[i];
    }
    y[i] = v;
}


// The decode kernels' share of output row r (a gate/up pair when SWIGLU; else .x, with .y 0)
// over this lane's part of K.
fn row_dots(r: u32, xb: u32, lane: u32, lanes: u32) -> vec2<f32> {
    if (SWIGLU) {
        return row_dot2(2u * r * p.row_words, p.row_words, xb, p.cols, lane, lanes);
    }
    return vec2<f32>(row_dot(r * p.row_words, xb, p.cols, lane, lanes), 0.0);
}

fn store_row(t: u32, r: u32, sums: vec2<f32>) {
    if (SWIGLU) {
        store_swiglu(t, r, sums);
    } else {
        store(t, r, sums.x);
    }
}
