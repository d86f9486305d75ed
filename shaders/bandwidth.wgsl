// The read ceiling: how fast a shader can stream a buffer on this adapter. It bounds every
// kernel that reads weights, below the copy engine's bandwidth where the adapter's loads cost
// more than its copies (llvmpipe loads a storage buffer one lane and one word at a time).
//
// Each invocation folds (xor) its share of `src`'s vec4s and stores the fold, so no load can
// be dropped. Two ways to share, as the matmul kernels' two layouts read:
// - strided: invocation i reads vec4s i, i + n, i + 2n, … (n = p.invocations), so neighbouring
//   invocations read neighbouring words, which a GPU coalesces;
// - blocks: invocation i reads one contiguous run, as each SIMD lane of a CPU adapter does best.

struct Params {
    vec4s: u32,       // vec4s to read
    invocations: u32, // the grid's invocations that take part
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> folds: array<u32>;

const WG: u32 = 64u;

fn invocation(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG + lid;
}

fn store_fold(id: u32, fold: vec4<u32>) {
    folds[id] = fold.x ^ fold.y ^ fold.z ^ fold.w;
}

@compute @workgroup_size(64)
fn read_strided(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let id = invocation(wg, nwg, lid);
    if (id >= p.invocations) {
        return;
    }
    var fold = vec4<u32>(0u);
    for (var i = id; i < p.vec4s; i += p.invocations) {
        fold ^= src[i];
    }
    store_fold(id, fold);
}

@compute @workgroup_size(64)
fn read_blocks(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let id = invocation(wg, nwg, lid);
    if (id >= p.invocations) {
        return;
    }
    let per = (p.vec4s + p.invocations - 1u) / p.invocations;
    let first = min(id * per, p.vec4s);
    let end = min(first + per, p.vec4s);
    var fold = vec4<u32>(0u);
    for (var i = first; i < end; i++) {
        fold ^= src[i];
    }
    store_fold(id, fold);
}
