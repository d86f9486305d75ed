//! The benchmark's read ceiling (`shaders/bandwidth.wgsl`) against a CPU reference: each
//! invocation's xor-fold is exactly that of the vec4s its pattern gives it, so a sweep that
//! skipped, repeated or overran a word would show. Sizes below, at and far above the number
//! of invocations (where each reads many words), odd ones included. The buffer holds more
//! words than the sweep: they lie outside its binding and must change no fold.

use moegraft::gpu::kernels::{self, ReadPattern};
use moegraft::gpu::{Batch, GpuContext, GpuOptions};

fn context() -> GpuContext {
    pollster::block_on(GpuContext::new(GpuOptions::default()))
        .expect("a GPU adapter (lavapipe is enough)")
}

/// The vec4 indices invocation `id` of `n` reads, as the WGSL does.
fn share(pattern: ReadPattern, id: usize, n: usize, vec4s: usize) -> Vec<usize> {
    match pattern {
        ReadPattern::Strided => (id..vec4s).step_by(n).collect(),
        ReadPattern::Blocks => {
            let per = vec4s.div_ceil(n);
            let first = (id * per).min(vec4s);
            (first..(first + per).min(vec4s)).collect()
        }
    }
}

fn cpu_folds(pattern: ReadPattern, words: &[u32], vec4s: usize) -> Vec<u32> {
    let n = kernels::read_sweep_invocations(vec4s);
    (0..n)
        .map(|id| {
            share(pattern, id, n, vec4s)
                .into_iter()
                .flat_map(|v| &words[4 * v..4 * v + 4])
                .fold(0, |a, w| a ^ w)
        })
        .collect()
}

#[test]
fn read_sweep_folds_every_word_once() {
    let ctx = context();
    let most = kernels::read_sweep_invocations(usize::MAX);
    // vec4s swept: one, a few, one short of the grid, the grid and one more, many per
    // invocation with a ragged tail.
    for vec4s in [1, 7, most - 1, most, most + 1, 3 * most + 37] {
        // Words past the sweep, which its binding leaves out.
        let total = 4 * vec4s + 12;
        let mut seed = 0x5eed_u32.wrapping_add(vec4s as u32);
        let words: Vec<u32> = (0..total)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed
            })
            .collect();
        let src = ctx.upload_u32("words", &words);
        let n = kernels::read_sweep_invocations(vec4s);
        let folds = ctx.create_storage("folds", n).expect("folds buffer");
        for pattern in ReadPattern::ALL {
            let mut batch = Batch::new(&ctx);
            kernels::read_sweep(&mut batch, pattern, &src, 16 * vec4s as u64, &folds);
            let rb = batch.read_back(&folds, 0, 4 * n as u64);
            batch.submit();
            let got = pollster::block_on(rb.u32s(&ctx)).expect("read-back");
            let want = cpu_folds(pattern, &words, vec4s);
            let wrong = (0..n).find(|&i| got[i] != want[i]);
            assert_eq!(wrong, None, "{pattern:?}, {vec4s} vec4s: first wrong fold");
        }
    }
}
