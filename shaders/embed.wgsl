// Embedding lookup: out[t, :] = E[ids[t], :] · scale as f32 (gemma scales by √hidden; else
// 1), for the ids that fall in this row chunk of the (possibly split) embedding matrix.

struct Params {
    tokens: u32,
    cols: u32,
    row_words: u32,
    row_start: u32,
    chunk_rows: u32,
    scale: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

//!include weights

@compute @workgroup_size(64)
fn embed(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if (i >= p.tokens * p.cols) {
        return;
    }
    let t = i / p.cols;
    let k = i % p.cols;
    let id = ids[t];
    if (id >= p.row_start && id < p.row_start + p.chunk_rows) {
        out[i] = load_w((id - p.row_start) * p.row_words, k) * p.scale;
    }
}
