// Dense projections for decode where the adapter has subgroups: y[t, n] = Σ_k x[t, k] · W[n, k]
// (+ bias, + y), one subgroup per row with its lanes along K. Lanes read consecutive words (one
// vector load per step on a CPU adapter, coalesced reads on a GPU) and subgroupAdd sums them:
// no workgroup memory and no barrier. Only built where the device has the subgroups feature;
// in the browser `enable subgroups;` is put in front (naga takes the functions without it).

//!include matmul_io
//!include weights
//!include row_dot

// Rows per workgroup: each subgroup takes rows sg, sg + subgroups, … of the workgroup's 8.
const SG_ROWS: u32 = 8u;

@compute @workgroup_size(64)
fn matvec_subgroup(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_size) lanes: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let blocks = (p.chunk_rows + SG_ROWS - 1u) / SG_ROWS;
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= blocks * p.tokens) {
        return;
    }
    let t = wid / blocks;
    let subgroups = max(64u / lanes, 1u);
    for (var i = lid / lanes; i < SG_ROWS; i += subgroups) {
        let r = (wid % blocks) * SG_ROWS + i;
        var part = vec2<f32>(0.0);
        if (r < p.chunk_rows) {
            part = row_dots(r, t * p.x_stride, lane, lanes);
        }
        let total = subgroupAdd(part);
        if (lane == 0u && r < p.chunk_rows) {
            store_row(t, r, total);
        }
    }
}
