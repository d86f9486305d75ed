//! Every GPU kernel against a plain CPU reference written here, over deterministic random
//! shapes (odd sizes included) and, where a kernel reads weights, every weight format (f32,
//! f16, bf16, and Q8_0 on rows of whole 32-element blocks; references use the rounded or
//! dequantized weights). Weight matrices are also split into
//! several row chunks (a tiny `max_binding_override`) so chunk boundaries fall mid-matrix, and
//! one test launches grids of more than 65 535 workgroups so the y dimension is used.
//! Elements a kernel must not touch are checked to be bit-for-bit unchanged.

use half::{bf16, f16};
use moegraft::checkpoint::config::Activation;
use moegraft::checkpoint::DType;
use moegraft::gpu::kernels::{
    self, AttentionShape, HeadNormTarget, Output, QkvSplit, RopeTarget, SampleSettings,
};
use moegraft::gpu::{q8_0, Batch, GpuContext, GpuMatrix, GpuOptions, KernelLayout, WeightFormat};

const DTYPES: [WeightFormat; 3] = [
    WeightFormat::Plain(DType::F32),
    WeightFormat::Plain(DType::F16),
    WeightFormat::Plain(DType::BF16),
];
/// f32 machine epsilon (2⁻²³), the unit of every tolerance below.
const EPS: f64 = f32::EPSILON as f64;

// ---------------------------------------------------------------------------------------------
// Helpers

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

fn context(max_binding_override: Option<u64>) -> GpuContext {
    context_with(max_binding_override, KernelLayout::Auto)
}

/// A context with the baseline kernels of `layout` (no subgroups).
fn context_with(max_binding_override: Option<u64>, layout: KernelLayout) -> GpuContext {
    pollster::block_on(GpuContext::new(GpuOptions {
        max_binding_override,
        layout,
        no_subgroups: true,
        ..Default::default()
    }))
    .expect("a GPU adapter (lavapipe is enough)")
}

/// A context with the subgroup kernels (which serve the lanes layout); lavapipe (the test
/// adapter) has subgroups, so their absence is a failure, not a skip.
fn context_with_subgroups(max_binding_override: Option<u64>) -> GpuContext {
    let ctx = pollster::block_on(GpuContext::new(GpuOptions {
        max_binding_override,
        layout: KernelLayout::Lanes,
        ..Default::default()
    }))
    .expect("a GPU adapter (lavapipe is enough)");
    assert!(
        ctx.subgroups,
        "{} has no subgroups: the subgroup kernels go untested",
        ctx.summary.name
    );
    ctx
}

/// Every decode and prefill kernel (both layouts and the subgroup matvec), each on whole
/// matrices and on matrices split into row chunks by 4004-byte bindings.
fn every_matmul_context() -> Vec<(GpuContext, String)> {
    let mut contexts = Vec::new();
    for binding in [None, Some(4004)] {
        for layout in LAYOUTS {
            contexts.push((
                context_with(binding, layout),
                format!("{layout:?} {binding:?}"),
            ));
        }
        contexts.push((
            context_with_subgroups(binding),
            format!("subgroups {binding:?}"),
        ));
    }
    contexts
}

/// Both kernel layouts, each on its own context.
const LAYOUTS: [KernelLayout; 2] = [KernelLayout::Lanes, KernelLayout::Rows];

fn read_f32(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
    pollster::block_on(ctx.read_f32(buffer, 0, len)).expect("read-back")
}

fn read_u32(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Vec<u32> {
    let mut batch = Batch::new(ctx);
    let rb = batch.read_back(buffer, 0, (len * 4) as u64);
    batch.submit();
    let mut v = pollster::block_on(rb.u32s(ctx)).expect("read-back");
    v.truncate(len);
    v
}

/// Little-endian bytes of `values` in `dtype`, and the values as the GPU will see them.
fn quantize(dtype: DType, values: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::with_capacity(values.len() * dtype.size());
    let mut rounded = Vec::with_capacity(values.len());
    for &v in values {
        match dtype {
            DType::F32 => {
                bytes.extend_from_slice(&v.to_le_bytes());
                rounded.push(v);
            }
            DType::F16 => {
                let h = f16::from_f32(v);
                bytes.extend_from_slice(&h.to_le_bytes());
                rounded.push(h.to_f32());
            }
            DType::BF16 => {
                let h = bf16::from_f32(v);
                bytes.extend_from_slice(&h.to_le_bytes());
                rounded.push(h.to_f32());
            }
        }
    }
    (bytes, rounded)
}

/// What to write a matrix of `format` from (its dtype and bytes: f32 for Q8_0, which the
/// upload quantizes) and the values the GPU will hold ([rows, cols] rows of `cols`).
fn weights(format: WeightFormat, cols: usize, values: &[f32]) -> (DType, Vec<u8>, Vec<f32>) {
    match format {
        WeightFormat::Plain(dtype) => {
            let (bytes, rounded) = quantize(dtype, values);
            (dtype, bytes, rounded)
        }
        WeightFormat::Q8_0 => {
            let (bytes, _) = quantize(DType::F32, values);
            let words: Vec<u32> =
                bytemuck::pod_collect_to_vec(&q8_0::quantize_rows(DType::F32, &bytes, cols));
            (DType::F32, bytes, q8_0::dequantize_rows(&words, cols))
        }
    }
}

/// A random [rows, cols] matrix on the GPU (rows in groups of `group` that no chunk splits)
/// and its rounded or dequantized values on the CPU.
fn random_matrix_in(
    ctx: &GpuContext,
    rng: &mut Rng,
    format: WeightFormat,
    (rows, cols): (usize, usize),
    group: usize,
) -> (GpuMatrix, Vec<f32>) {
    let (dtype, bytes, rounded) = weights(format, cols, &rng.vec(rows * cols, 1.0));
    let m = ctx
        .create_matrix_as("w", dtype, format, rows, cols, group)
        .expect("matrix");
    m.write_rows(ctx, 0, &bytes).expect("upload matrix");
    (m, rounded)
}

fn random_matrix(
    ctx: &GpuContext,
    rng: &mut Rng,
    format: WeightFormat,
    rows: usize,
    cols: usize,
) -> (GpuMatrix, Vec<f32>) {
    random_matrix_in(ctx, rng, format, (rows, cols), 1)
}

/// Asserts |got − want| ≤ tol element-wise (tol 0: bit-for-bit equal, for untouched
/// elements) and returns the largest error/tolerance ratio among toleranced elements.
fn assert_close(label: &str, got: &[f32], want: &[f64], tol: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for i in 0..got.len() {
        let g = got[i] as f64;
        let ok = if tol[i] == 0.0 {
            got[i].to_bits() == (want[i] as f32).to_bits()
        } else {
            let err = (g - want[i]).abs();
            worst = worst.max(err / tol[i]);
            err <= tol[i]
        };
        if !ok {
            failures.push(i);
        }
    }
    if let Some(&first) = failures.first() {
        let show: Vec<String> = failures
            .iter()
            .take(6)
            .map(|&i| {
                format!(
                    "[{i}] got {} want {} (|err| {:.3e}, tol {:.3e})",
                    got[i],
                    want[i],
                    (got[i] as f64 - want[i]).abs(),
                    tol[i]
                )
            })
            .collect();
        panic!(
            "{label}: {} of {} elements wrong, first at {first}: {}",
            failures.len(),
            got.len(),
            show.join("; ")
        );
    }
    worst
}

/// Tolerance for an f32 dot product of `k` terms whose absolute values sum to `abs_sum`:
/// a few ulps per √k (the error of a sum of k roundings grows like √k).
fn dot_tol(k: usize, abs_sum: f64) -> f64 {
    4.0 * EPS * ((k as f64).sqrt() + 1.0) * abs_sum
}

// ---------------------------------------------------------------------------------------------
// matmul (matvec for < 8 tokens, matmul_tiled from 8)

#[derive(Debug, Clone, Copy)]
struct MatmulCase {
    tokens: usize,
    rows: usize,
    cols: usize,
    x_stride: usize,
    y_stride: usize,
    y_offset: usize,
    bias: bool,
    accumulate: bool,
}

impl MatmulCase {
    fn plain(tokens: usize, rows: usize, cols: usize) -> Self {
        MatmulCase {
            tokens,
            rows,
            cols,
            x_stride: cols,
            y_stride: rows,
            y_offset: 0,
            bias: false,
            accumulate: false,
        }
    }
    fn random(rng: &mut Rng, tokens: &[usize], rows: &[usize], cols: &[usize]) -> Self {
        let (t, r, c) = (rng.pick(tokens), rng.pick(rows), rng.pick(cols));
        MatmulCase {
            tokens: t,
            rows: r,
            cols: c,
            x_stride: c + rng.pick(&[0, 0, 1, 5]),
            y_stride: r + rng.pick(&[0, 0, 3, 11]),
            y_offset: rng.pick(&[0, 0, 1, 13, 100]),
            bias: rng.bool(),
            accumulate: rng.bool(),
        }
    }
}

/// Runs one matmul and checks every element of y; returns (chunks, worst err/tol).
fn check_matmul(
    ctx: &GpuContext,
    rng: &mut Rng,
    dtype: WeightFormat,
    c: MatmulCase,
) -> (usize, f64) {
    let label = format!("matmul {dtype:?} {c:?}");
    let (w, wv) = random_matrix(ctx, rng, dtype, c.rows, c.cols);
    let x = rng.vec((c.tokens - 1) * c.x_stride + c.cols, 1.0);
    let bias = rng.vec(c.rows, 1.0);
    let y_len = c.y_offset + (c.tokens - 1) * c.y_stride + c.rows + 7;
    let y0 = rng.vec(y_len, 1.0);
    let (xb, bb, yb) = (
        ctx.upload_f32("x", &x),
        ctx.upload_f32("bias", &bias),
        ctx.upload_f32("y", &y0),
    );

    let mut batch = Batch::new(ctx);
    let mut out = Output::new(&yb, c.y_stride).at(c.y_offset);
    if c.accumulate {
        out = out.accumulate();
    }
    kernels::matmul(
        &mut batch,
        &xb,
        c.tokens,
        c.x_stride,
        &w,
        c.bias.then_some(&bb),
        out,
    );
    batch.submit();
    let got = read_f32(ctx, &yb, y_len);

    let mut want: Vec<f64> = y0.iter().map(|&v| v as f64).collect();
    let mut tol = vec![0.0; y_len];
    for t in 0..c.tokens {
        for n in 0..c.rows {
            let (mut dot, mut abs) = (0.0f64, 0.0f64);
            for k in 0..c.cols {
                let term = x[t * c.x_stride + k] as f64 * wv[n * c.cols + k] as f64;
                dot += term;
                abs += term.abs();
            }
            let i = c.y_offset + t * c.y_stride + n;
            let mut extra = 0.0f64;
            if c.bias {
                dot += bias[n] as f64;
                extra += (bias[n] as f64).abs();
            }
            if c.accumulate {
                dot += y0[i] as f64;
                extra += (y0[i] as f64).abs();
            }
            want[i] = dot;
            tol[i] = dot_tol(c.cols, abs) + 2.0 * EPS * (abs + extra) + 1e-30;
        }
    }
    let worst = assert_close(&label, &got, &want, &tol);
    (w.chunks.len(), worst)
}

const TOKENS: [usize; 12] = [1, 2, 3, 5, 7, 8, 9, 17, 31, 33, 64, 70];
const SIZES: [usize; 12] = [1, 2, 3, 7, 16, 17, 32, 33, 64, 95, 130, 257];

#[test]
fn matmul_matches_cpu() {
    for layout in LAYOUTS {
        matmul_matches_cpu_with(context_with(None, layout), &format!("{layout:?}"));
    }
    matmul_matches_cpu_with(context_with_subgroups(None), "subgroups");
}

fn matmul_matches_cpu_with(ctx: GpuContext, kernels: &str) {
    let mut rng = Rng::new(1);
    let mut worst = 0.0f64;
    for dtype in DTYPES {
        let mut cases = vec![
            MatmulCase::plain(1, 1, 1),
            MatmulCase::plain(1, 3, 2),
            MatmulCase::plain(3, 7, 3),
            MatmulCase::plain(7, 17, 33), // largest matvec
            MatmulCase::plain(8, 33, 17), // smallest tiled
            MatmulCase::plain(9, 95, 130),
            MatmulCase::plain(33, 130, 95),
            MatmulCase::plain(64, 64, 64),
            MatmulCase::plain(40, 1, 1),
            MatmulCase::plain(1, 64, 4097), // hidden-size K, odd
            MatmulCase::plain(9, 40, 2049),
            // 16-bit rows whose K is whole groups of eight: four rows an invocation on CPU
            // adapters (`matvec_rows4`), row counts that leave the last invocation short.
            MatmulCase::plain(1, 131, 64),
            MatmulCase::plain(7, 6, 576),
            // ... and four rows for four tokens in prefill (`matmul_rows4`).
            MatmulCase::plain(9, 131, 64),
            MatmulCase {
                bias: true,
                accumulate: true,
                x_stride: 140,
                y_offset: 9,
                y_stride: 70,
                ..MatmulCase::plain(35, 66, 136)
            },
            MatmulCase {
                bias: true,
                accumulate: true,
                x_stride: 140,
                y_offset: 9,
                y_stride: 70,
                ..MatmulCase::plain(5, 65, 136)
            },
            MatmulCase {
                bias: true,
                ..MatmulCase::plain(2, 5, 9)
            },
            MatmulCase {
                accumulate: true,
                y_offset: 3,
                y_stride: 20,
                ..MatmulCase::plain(5, 17, 31)
            },
            MatmulCase {
                bias: true,
                accumulate: true,
                x_stride: 40,
                y_offset: 50,
                y_stride: 71,
                ..MatmulCase::plain(17, 65, 33)
            },
        ];
        for _ in 0..25 {
            cases.push(MatmulCase::random(&mut rng, &TOKENS, &SIZES, &SIZES));
        }
        for c in cases {
            worst = worst.max(check_matmul(&ctx, &mut rng, dtype, c).1);
        }
    }
    eprintln!("matmul ({kernels}): worst error/tolerance {worst:.3}");
}

#[test]
fn matmul_split_matrix_matches_cpu() {
    // 4004-byte bindings: e.g. 10 rows of 95 f32 per chunk, 58 rows of 17 — chunk boundaries
    // fall inside 4-, 8- and 64-row matvec blocks and 32-row tiles.
    for layout in LAYOUTS {
        matmul_split_matrix_matches_cpu_with(
            context_with(Some(4004), layout),
            &format!("{layout:?}"),
        );
    }
    matmul_split_matrix_matches_cpu_with(context_with_subgroups(Some(4004)), "subgroups");
}

fn matmul_split_matrix_matches_cpu_with(ctx: GpuContext, kernels: &str) {
    let mut rng = Rng::new(2);
    let mut worst = 0.0f64;
    let mut split = 0;
    for dtype in DTYPES {
        let mut cases = vec![
            MatmulCase::plain(1, 130, 95),
            MatmulCase::plain(1, 130, 64), // 31 f16 rows a chunk: four-row blocks straddle
            MatmulCase::plain(10, 130, 64),
            MatmulCase::plain(7, 300, 17),
            MatmulCase::plain(8, 130, 95),
            MatmulCase::plain(33, 200, 33),
            MatmulCase {
                bias: true,
                accumulate: true,
                x_stride: 19,
                y_offset: 7,
                y_stride: 133,
                ..MatmulCase::plain(3, 130, 17)
            },
            MatmulCase {
                bias: true,
                accumulate: true,
                x_stride: 260,
                y_offset: 1,
                y_stride: 96,
                ..MatmulCase::plain(20, 95, 257)
            },
        ];
        for _ in 0..12 {
            cases.push(MatmulCase::random(
                &mut rng,
                &TOKENS,
                &[33, 64, 95, 130, 200],
                &[3, 17, 33, 64, 95, 130, 257],
            ));
        }
        for c in cases {
            let (chunks, w) = check_matmul(&ctx, &mut rng, dtype, c);
            worst = worst.max(w);
            split += (chunks > 1) as usize;
        }
    }
    assert!(split >= 30, "only {split} matrices were split");
    eprintln!("matmul split ({kernels}): worst error/tolerance {worst:.3}, {split} split matrices");
}

// ---------------------------------------------------------------------------------------------
// rms_norm

#[test]
fn rms_norm_matches_cpu() {
    let ctx = context(None);
    let mut rng = Rng::new(3);
    let mut worst = 0.0f64;
    let mut cases: Vec<(usize, usize, f32, f32)> = vec![
        (1, 1, 1e-5, 1.0),
        (3, 7, 1e-6, 1.0),
        (2, 64, 1e-5, 1.0),
        (5, 65, 1e-5, 100.0),
        (1, 4096, 1e-6, 1.0),
        (2, 33, 1e-5, 0.0), // all zeros: eps keeps it finite
        (4, 130, 1e-5, 1e-3),
    ];
    for _ in 0..16 {
        cases.push((
            rng.pick(&[1, 2, 3, 7, 17]),
            rng.pick(&[1, 3, 7, 17, 33, 63, 64, 95, 130, 1000]),
            rng.pick(&[1e-5, 1e-6]),
            1.0,
        ));
    }
    for (tokens, dim, eps, amp) in cases {
        let label = format!("rms_norm tokens {tokens} dim {dim} eps {eps} amp {amp}");
        let x = rng.vec(tokens * dim, amp);
        let weight = rng.vec(dim, 2.0);
        let y0 = rng.vec(tokens * dim + 5, 1.0);
        let (xb, wb, yb) = (
            ctx.upload_f32("x", &x),
            ctx.upload_f32("w", &weight),
            ctx.upload_f32("y", &y0),
        );
        let mut batch = Batch::new(&ctx);
        kernels::rms_norm(&mut batch, &xb, &wb, &yb, tokens, dim, eps);
        batch.submit();
        let got = read_f32(&ctx, &yb, y0.len());

        let mut want: Vec<f64> = y0.iter().map(|&v| v as f64).collect();
        let mut tol = vec![0.0; want.len()];
        for t in 0..tokens {
            let row = &x[t * dim..(t + 1) * dim];
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
            let scale = 1.0 / (ms + eps as f64).sqrt();
            for i in 0..dim {
                let v = row[i] as f64 * scale * weight[i] as f64;
                want[t * dim + i] = v;
                tol[t * dim + i] = 8.0 * EPS * v.abs() + 1e-30;
            }
        }
        worst = worst.max(assert_close(&label, &got, &want, &tol));
    }
    eprintln!("rms_norm: worst error/tolerance {worst:.3}");
}

/// qwen3's per-head q/k norm in place: q heads take the first `head_dim` weights, k heads
/// the next; v and anything past the heads stay as they were.
#[test]
fn head_rms_norm_matches_cpu() {
    let ctx = context(None);
    let mut rng = Rng::new(31);
    let mut worst = 0.0f64;
    let mut cases: Vec<(usize, usize, usize, usize)> = vec![
        (1, 1, 1, 1),
        (3, 4, 2, 16),
        (2, 3, 1, 65),
        (5, 2, 2, 130),
        (1, 8, 8, 256),
    ];
    for _ in 0..12 {
        let kv = rng.pick(&[1, 2, 3]);
        cases.push((
            rng.pick(&[1, 2, 7, 17]),
            kv * rng.pick(&[1, 2, 4]),
            kv,
            rng.pick(&[1, 3, 16, 33, 64, 127, 128]),
        ));
    }
    for (tokens, q_heads, kv_heads, head_dim) in cases {
        let label =
            format!("head_rms_norm tokens {tokens} heads {q_heads}/{kv_heads} dim {head_dim}");
        let stride = (q_heads + 2 * kv_heads) * head_dim;
        let x = rng.vec(tokens * stride + 3, 1.5);
        let weight = rng.vec(2 * head_dim, 2.0);
        let (xb, wb) = (ctx.upload_f32("qkv", &x), ctx.upload_f32("w", &weight));
        let mut batch = Batch::new(&ctx);
        let target = HeadNormTarget {
            qkv: &xb,
            tokens,
            q_heads,
            kv_heads,
            head_dim,
            stride,
        };
        kernels::head_rms_norm(&mut batch, target, &wb, 1e-6);
        batch.submit();
        let got = read_f32(&ctx, &xb, x.len());
        let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut tol = vec![0.0; want.len()];
        for t in 0..tokens {
            for head in 0..q_heads + kv_heads {
                let at = t * stride + head * head_dim;
                let row = &x[at..at + head_dim];
                let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / head_dim as f64;
                let scale = 1.0 / (ms + 1e-6).sqrt();
                let w0 = if head < q_heads { 0 } else { head_dim };
                for i in 0..head_dim {
                    let v = row[i] as f64 * scale * weight[w0 + i] as f64;
                    want[at + i] = v;
                    tol[at + i] = 8.0 * EPS * v.abs() + 1e-30;
                }
            }
        }
        worst = worst.max(assert_close(&label, &got, &want, &tol));
    }
    eprintln!("head_rms_norm: worst error/tolerance {worst:.3}");
}

// ---------------------------------------------------------------------------------------------
// rope

/// cos/sin tables, row `pos` holding head_dim/2 values (theta base 10000).
fn rope_tables(positions: usize, head_dim: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for pos in 0..positions {
        for j in 0..half {
            let inv = 10000f64.powf(-2.0 * j as f64 / head_dim as f64);
            let angle = pos as f64 * inv;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

#[test]
fn rope_matches_cpu() {
    let ctx = context(None);
    let mut rng = Rng::new(4);
    let mut worst = 0.0f64;
    // (tokens, pos0, heads, head_dim, extra stride, offset)
    let mut cases: Vec<(usize, usize, usize, usize, usize, usize)> = vec![
        (1, 0, 1, 2, 0, 0),
        (3, 5, 2, 6, 8, 3),
        (7, 100, 4, 10, 0, 40),
        (17, 1000, 3, 20, 5, 1),
        (5, 33, 8, 64, 128, 512),
        (2, 4000, 2, 128, 0, 0),
    ];
    for _ in 0..16 {
        cases.push((
            rng.pick(&[1, 2, 3, 7, 17, 33]),
            rng.pick(&[0, 1, 7, 64, 130, 999]),
            rng.pick(&[1, 2, 3, 4, 7]),
            rng.pick(&[2, 4, 6, 10, 20, 64, 128]),
            rng.pick(&[0, 3, 64]),
            rng.pick(&[0, 1, 17, 256]),
        ));
    }
    for (tokens, pos0, heads, head_dim, extra, offset) in cases {
        let stride = heads * head_dim + extra;
        let label = format!(
            "rope tokens {tokens} pos0 {pos0} heads {heads} head_dim {head_dim} stride {stride} offset {offset}"
        );
        let half = head_dim / 2;
        // Exactly pos0 + tokens rows: a read past them would not match.
        let (cos, sin) = rope_tables(pos0 + tokens, head_dim);
        let len = offset + tokens * stride + 9;
        let v0 = rng.vec(len, 2.0);
        let (vb, cb, sb) = (
            ctx.upload_f32("v", &v0),
            ctx.upload_f32("cos", &cos),
            ctx.upload_f32("sin", &sin),
        );
        let mut batch = Batch::new(&ctx);
        kernels::rope(
            &mut batch,
            RopeTarget {
                buffer: &vb,
                tokens,
                pos0,
                heads,
                head_dim,
                stride,
                offset,
            },
            &cb,
            &sb,
        );
        batch.submit();
        let got = read_f32(&ctx, &vb, len);

        let mut want: Vec<f64> = v0.iter().map(|&v| v as f64).collect();
        let mut tol = vec![0.0; len];
        for t in 0..tokens {
            for h in 0..heads {
                let base = offset + t * stride + h * head_dim;
                for j in 0..half {
                    let c = cos[(pos0 + t) * half + j] as f64;
                    let s = sin[(pos0 + t) * half + j] as f64;
                    let (x1, x2) = (v0[base + j] as f64, v0[base + j + half] as f64);
                    want[base + j] = x1 * c - x2 * s;
                    want[base + j + half] = x2 * c + x1 * s;
                    let t1 = 2.0 * EPS * ((x1 * c).abs() + (x2 * s).abs()) + 1e-30;
                    let t2 = 2.0 * EPS * ((x2 * c).abs() + (x1 * s).abs()) + 1e-30;
                    tol[base + j] = t1;
                    tol[base + j + half] = t2;
                }
            }
        }
        worst = worst.max(assert_close(&label, &got, &want, &tol));
    }
    eprintln!("rope: worst error/tolerance {worst:.3}");
}

#[test]
fn rope_qkv_matches_cpu() {
    let ctx = context(None);
    let mut rng = Rng::new(14);
    let mut worst = 0.0f64;
    // (tokens, pos0, heads, kv_heads, head_dim, slot's position)
    let mut cases: Vec<(usize, usize, usize, usize, usize, usize)> = vec![
        (1, 0, 1, 1, 2, 0),
        (1, 7, 3, 1, 6, 7),
        (3, 5, 4, 2, 10, 5),
        (9, 100, 9, 3, 64, 100),
        (2, 4000, 2, 2, 128, 4000),
    ];
    for _ in 0..16 {
        let pos0 = rng.pick(&[0, 1, 7, 64, 130, 999]);
        cases.push((
            rng.pick(&[1, 2, 3, 7, 17, 33]),
            pos0,
            rng.pick(&[1, 2, 3, 4, 7, 9]),
            rng.pick(&[1, 2, 3]),
            rng.pick(&[2, 4, 6, 10, 20, 64]),
            pos0,
        ));
    }
    for (tokens, pos0, heads, kv_heads, head_dim, slot_pos) in cases {
        let label = format!(
            "rope_qkv tokens {tokens} pos0 {pos0} heads {heads}/{kv_heads} head_dim {head_dim}"
        );
        let (qd, kvd, half) = (heads * head_dim, kv_heads * head_dim, head_dim / 2);
        let width = qd + 2 * kvd;
        let (cos, sin) = rope_tables(pos0 + tokens, head_dim);
        let qkv = rng.vec(tokens * width, 2.0);
        let q0 = rng.vec(tokens * qd + 3, 1.0);
        let slot = slot_pos * kvd;
        let cache_len = slot + tokens * kvd + 5;
        let (k0, v0) = (rng.vec(cache_len, 1.0), rng.vec(cache_len, 1.0));
        let (qkv_b, qb, kb, vb) = (
            ctx.upload_f32("qkv", &qkv),
            ctx.upload_f32("q", &q0),
            ctx.upload_f32("k", &k0),
            ctx.upload_f32("v", &v0),
        );
        let (cb, sb) = (ctx.upload_f32("cos", &cos), ctx.upload_f32("sin", &sin));
        let mut batch = Batch::new(&ctx);
        kernels::rope_qkv(
            &mut batch,
            QkvSplit {
                qkv: &qkv_b,
                q: &qb,
                k_cache: &kb,
                v_cache: &vb,
                tokens,
                pos0,
                heads,
                kv_heads,
                head_dim,
                slot,
            },
            &cb,
            &sb,
        );
        batch.submit();

        let as_f64 = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
        let (mut want_q, mut want_k, mut want_v) = (as_f64(&q0), as_f64(&k0), as_f64(&v0));
        let (mut tol_q, mut tol_k) = (vec![0.0; q0.len()], vec![0.0; cache_len]);
        let tol_v = vec![0.0; cache_len];
        // Rotates heads of `src` (from element `from` of each token's row) into `dst`.
        let rotate = |dst: &mut [f64], tol: &mut [f64], at: usize, from: usize, t: usize| {
            for j in 0..half {
                let c = cos[(pos0 + t) * half + j] as f64;
                let s = sin[(pos0 + t) * half + j] as f64;
                let (x1, x2) = (qkv[from + j] as f64, qkv[from + j + half] as f64);
                dst[at + j] = x1 * c - x2 * s;
                dst[at + j + half] = x2 * c + x1 * s;
                tol[at + j] = 2.0 * EPS * ((x1 * c).abs() + (x2 * s).abs()) + 1e-30;
                tol[at + j + half] = 2.0 * EPS * ((x2 * c).abs() + (x1 * s).abs()) + 1e-30;
            }
        };
        for t in 0..tokens {
            let row = t * width;
            for h in 0..heads {
                let at = h * head_dim;
                rotate(&mut want_q, &mut tol_q, t * qd + at, row + at, t);
            }
            for h in 0..kv_heads {
                let at = h * head_dim;
                rotate(
                    &mut want_k,
                    &mut tol_k,
                    slot + t * kvd + at,
                    row + qd + at,
                    t,
                );
            }
            for e in 0..kvd {
                // A copy: exact (tolerance 0 compares bits).
                want_v[slot + t * kvd + e] = qkv[row + qd + kvd + e] as f64;
            }
        }
        let got_q = read_f32(&ctx, &qb, q0.len());
        worst = worst.max(assert_close(
            &format!("{label}: q"),
            &got_q,
            &want_q,
            &tol_q,
        ));
        let got_k = read_f32(&ctx, &kb, cache_len);
        worst = worst.max(assert_close(
            &format!("{label}: k"),
            &got_k,
            &want_k,
            &tol_k,
        ));
        let got_v = read_f32(&ctx, &vb, cache_len);
        assert_close(&format!("{label}: v"), &got_v, &want_v, &tol_v);
    }
    eprintln!("rope_qkv: worst error/tolerance {worst:.3}");
}

// ---------------------------------------------------------------------------------------------
// attention

/// How much scratch an attention call gets.
#[derive(Debug, Clone, Copy)]
enum Room {
    /// What `attention_partials_len` asks for: room to split the keys (few rows, more than 64
    /// keys) and, on CPU adapters, for a block of up to 256 rows' scores.
    Sized,
    /// This many rows' scores: a call's rows in several blocks, the last one short.
    ScoreRows(usize),
    /// Too little for either: the one-pass kernels.
    None,
}

/// One attention call against the CPU, with `room` for its scratch.
fn check_attention(ctx: &GpuContext, rng: &mut Rng, s: AttentionShape, room: Room) -> f64 {
    let label = format!(
        "attention tokens {} pos0 {} heads {} kv_heads {} head_dim {} window {} room {room:?}",
        s.tokens, s.pos0, s.heads, s.kv_heads, s.head_dim, s.window
    );
    let (hd, kvd) = (s.head_dim, s.kv_heads * s.head_dim);
    let positions = s.pos0 + s.tokens;
    let q = rng.vec(s.tokens * s.heads * hd, 1.5);
    // Three positions past the last query hold huge values: reading them breaks the result.
    let mut k = rng.vec((positions + 3) * kvd, 1.5);
    let mut v = rng.vec((positions + 3) * kvd, 1.0);
    for i in positions * kvd..(positions + 3) * kvd {
        k[i] = 50.0;
        v[i] = 1000.0;
    }
    let out0 = rng.vec(q.len() + 4, 1.0);
    let (qb, kb, vb, ob) = (
        ctx.upload_f32("q", &q),
        ctx.upload_f32("k", &k),
        ctx.upload_f32("v", &v),
        ctx.upload_f32("out", &out0),
    );
    let rows = s.tokens * s.heads;
    let room = match room {
        Room::Sized => kernels::attention_partials_len(rows, positions, hd, ctx.layout),
        Room::ScoreRows(n) => n * positions,
        Room::None => 1,
    };
    // Poisoned: every value the split or the score pass reads must be one it wrote.
    let partials = ctx.upload_f32("partials", &vec![f32::NAN; room]);
    let mut batch = Batch::new(ctx);
    kernels::attention(&mut batch, &qb, &kb, &vb, &ob, &partials, s);
    batch.submit();
    let got = read_f32(ctx, &ob, out0.len());

    let scale = 1.0 / (hd as f64).sqrt();
    let group = s.heads / s.kv_heads;
    let mut want: Vec<f64> = out0.iter().map(|&x| x as f64).collect();
    let mut tol = vec![0.0; want.len()];
    for t in 0..s.tokens {
        let pos = s.pos0 + t;
        let start = if s.window > 0 {
            (pos + 1).saturating_sub(s.window)
        } else {
            0
        };
        for h in 0..s.heads {
            let qo = (t * s.heads + h) * hd;
            let ko = (h / group) * hd;
            let mut scores = Vec::new();
            let mut abs_max = 0.0f64;
            for j in start..=pos {
                let (mut dot, mut abs) = (0.0, 0.0);
                for d in 0..hd {
                    let term = q[qo + d] as f64 * k[j * kvd + ko + d] as f64;
                    dot += term;
                    abs += term.abs();
                }
                scores.push(dot * scale);
                abs_max = f64::max(abs_max, abs * scale);
            }
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let p: Vec<f64> = scores.iter().map(|sc| (sc - m).exp()).collect();
            let z: f64 = p.iter().sum();
            let n = p.len();
            // Score errors (a dot product of hd terms, ~ulp·√hd·Σ|q·k|) shift the weights
            // relatively; exp and the two sums over n keys add a few ulps, ~√n.
            let rel = EPS * ((hd as f64).sqrt() * abs_max + 2.0 * (n as f64).sqrt() + 8.0);
            for d in 0..hd {
                let (mut o, mut vmax) = (0.0, 0.0f64);
                for (i, j) in (start..=pos).enumerate() {
                    let vv = v[j * kvd + ko + d] as f64;
                    o += p[i] * vv;
                    vmax = vmax.max(vv.abs());
                }
                want[qo + d] = o / z;
                tol[qo + d] = rel * vmax + 1e-30;
            }
        }
    }
    assert_close(&label, &got, &want, &tol)
}

#[test]
fn attention_matches_cpu() {
    for layout in LAYOUTS {
        attention_matches_cpu_with(layout);
    }
}

fn attention_matches_cpu_with(layout: KernelLayout) {
    let ctx = context_with(None, layout);
    let mut rng = Rng::new(5);
    let shape = |tokens, pos0, heads, kv_heads, head_dim, window| AttentionShape {
        tokens,
        pos0,
        heads,
        kv_heads,
        head_dim,
        window,
    };
    let mut cases = vec![
        shape(1, 0, 1, 1, 1, 0),
        shape(1, 100, 4, 2, 6, 0),
        shape(3, 70, 6, 3, 10, 0),
        shape(5, 130, 8, 2, 20, 0),
        shape(2, 200, 4, 4, 128, 0),
        shape(4, 61, 2, 1, 7, 0), // the queries straddle the 64-key tile boundary
        shape(70, 0, 2, 1, 16, 0), // prefill: causal inside the chunk, two tiles
        shape(9, 150, 4, 2, 20, 33),
        shape(3, 300, 2, 1, 64, 64),
        shape(6, 90, 2, 2, 16, 1),
        shape(2, 10, 2, 1, 10, 100),   // window longer than the context
        shape(1, 257, 2, 1, 200, 100), // head_dim > 128: all four accumulators
        shape(17, 64, 4, 1, 32, 70),
        shape(2, 129, 3, 3, 256, 0), // the largest head_dim the kernel holds
    ];
    for _ in 0..24 {
        let kv_heads = rng.pick(&[1, 2, 3]);
        cases.push(shape(
            rng.pick(&[1, 2, 3, 7, 17]),
            rng.pick(&[0, 1, 63, 64, 65, 127, 200, 333]),
            kv_heads * rng.pick(&[1, 2, 4]),
            kv_heads,
            rng.pick(&[2, 6, 10, 20, 33, 64, 96, 128]),
            rng.pick(&[0, 0, 1, 17, 64, 65, 150]),
        ));
    }
    // Decoding's few rows over many keys: the keys split in ranges of 64.
    cases.extend([
        shape(1, 65, 1, 1, 8, 0),
        shape(1, 1023, 9, 3, 64, 0),
        shape(1, 700, 4, 2, 256, 0),
        shape(2, 333, 6, 3, 20, 150), // a window: ranges before it are empty
        shape(7, 190, 9, 3, 17, 0),   // 63 rows
        shape(3, 64, 2, 1, 64, 1),
    ]);
    // Prefill chunks of more rows than the CPU adapters' score block (256).
    cases.extend([
        shape(40, 30, 8, 2, 64, 0),   // 320 rows: two blocks
        shape(33, 100, 9, 3, 64, 48), // 297 rows, a window
        shape(29, 0, 9, 3, 36, 0),    // 261 rows from position 0, head_dim / 4 odd
    ]);
    let mut worst = 0.0f64;
    for s in cases {
        // Room for 19 rows: blocks of 16 to 19 rows (whole tokens where heads share a KV
        // head), most calls' last one short.
        for room in [Room::Sized, Room::ScoreRows(19), Room::None] {
            worst = worst.max(check_attention(&ctx, &mut rng, s, room));
        }
    }
    eprintln!("attention ({layout:?}): worst error/tolerance {worst:.3}");
}

// ---------------------------------------------------------------------------------------------
// swiglu and add

/// A few ulps, plus exp's allowed error (Vulkan: 3 + 2·|x| ulp), which dominates for g ≪ 0.
fn swiglu_tol(g: f64, want: f64) -> f64 {
    (8.0 + 2.0 * g.abs()) * EPS * want.abs() + 1e-30
}

#[test]
fn swiglu_and_add_match_cpu() {
    let ctx = context(None);
    let mut rng = Rng::new(6);
    let mut worst = 0.0f64;
    for count in [1, 3, 255, 256, 257, 1000, 65537] {
        let mut gate = rng.vec(count, 8.0);
        if count > 10 {
            // Large magnitudes, where exp(−g) overflows or vanishes.
            gate[..6].copy_from_slice(&[-100.0, -90.0, -30.0, 30.0, 90.0, 100.0]);
        }
        let up = rng.vec(count, 2.0);
        let out0 = rng.vec(count + 3, 1.0);
        let (gb, ub) = (ctx.upload_f32("gate", &gate), ctx.upload_f32("up", &up));
        let (sb, ab) = (
            ctx.upload_f32("swiglu", &out0),
            ctx.upload_f32("add", &out0),
        );
        let mut batch = Batch::new(&ctx);
        kernels::swiglu(&mut batch, &gb, &ub, &sb, count);
        kernels::add(&mut batch, &gb, &ub, &ab, count);
        batch.submit();
        let (got_s, got_a) = (
            read_f32(&ctx, &sb, count + 3),
            read_f32(&ctx, &ab, count + 3),
        );

        let mut want_s: Vec<f64> = out0.iter().map(|&v| v as f64).collect();
        let mut want_a = want_s.clone();
        let mut tol = vec![0.0; count + 3];
        for i in 0..count {
            let g = gate[i] as f64;
            want_s[i] = g / (1.0 + (-g).exp()) * up[i] as f64;
            tol[i] = swiglu_tol(g, want_s[i]);
            want_a[i] = (gate[i] + up[i]) as f64; // f32 addition is exact to the ulp
        }
        let label = format!("swiglu count {count}");
        worst = worst.max(assert_close(&label, &got_s, &want_s, &tol));
        let exact = vec![0.0; count + 3];
        assert_close(&format!("add count {count}"), &got_a, &want_a, &exact);
    }
    eprintln!("swiglu: worst error/tolerance {worst:.3}");
}

#[test]
fn gated_add_matches_cpu() {
    let ctx = context(None);
    let mut rng = Rng::new(61);
    for (tokens, dim) in [(1, 1), (1, 7), (3, 48), (5, 255), (2, 257), (300, 301)] {
        let mut gate = rng.vec(tokens, 6.0);
        if tokens > 100 {
            // Large magnitudes, where exp(−g) overflows or vanishes.
            gate[..4].copy_from_slice(&[-100.0, -30.0, 30.0, 100.0]);
        }
        let y = rng.vec(tokens * dim, 2.0);
        let x0 = rng.vec(tokens * dim + 3, 1.0);
        let (yb, gb, xb) = (
            ctx.upload_f32("y", &y),
            ctx.upload_f32("gate", &gate),
            ctx.upload_f32("x", &x0),
        );
        let mut batch = Batch::new(&ctx);
        kernels::gated_add(&mut batch, &yb, &gb, &xb, tokens, dim);
        batch.submit();
        let got = read_f32(&ctx, &xb, tokens * dim + 3);
        let mut want: Vec<f64> = x0.iter().map(|&v| v as f64).collect();
        let mut tol = vec![0.0; want.len()];
        for (t, g) in gate.iter().enumerate() {
            let s = 1.0 / (1.0 + (-(*g as f64)).exp());
            for n in 0..dim {
                let i = t * dim + n;
                let term = s * y[i] as f64;
                want[i] += term;
                // exp's few ulps in the sigmoid, then one rounding each for · and +.
                tol[i] = 8.0 * EPS * (term.abs() + want[i].abs()) + 1e-30;
            }
        }
        assert_close(&format!("gated_add {tokens}×{dim}"), &got, &want, &tol);
    }
}

#[test]
fn add_bias_matches_cpu() {
    let ctx = context(None);
    let mut rng = Rng::new(62);
    for (tokens, dim) in [(1, 1), (3, 7), (5, 256), (2, 257), (300, 301)] {
        let bias = rng.vec(dim, 2.0);
        let x0 = rng.vec(tokens * dim + 3, 1.0);
        let (bb, xb) = (ctx.upload_f32("bias", &bias), ctx.upload_f32("x", &x0));
        let mut batch = Batch::new(&ctx);
        kernels::add_bias(&mut batch, &bb, &xb, tokens, dim);
        batch.submit();
        let got = read_f32(&ctx, &xb, tokens * dim + 3);
        let mut want: Vec<f64> = x0.iter().map(|&v| v as f64).collect();
        for (i, w) in want.iter_mut().take(tokens * dim).enumerate() {
            *w = (x0[i] + bias[i % dim]) as f64; // one f32 rounding, as the kernel does
        }
        let exact = vec![0.0; want.len()];
        assert_close(&format!("add_bias {tokens}×{dim}"), &got, &want, &exact);
    }
}

/// One fused gate/up projection (interleaved rows, as the loader stores them) against
/// silu(x·gateᵀ + b) · (x·upᵀ + b) on the CPU; returns (chunks, worst err/tol).
fn check_matmul_swiglu(
    ctx: &GpuContext,
    rng: &mut Rng,
    dtype: WeightFormat,
    case: (usize, usize, usize),
    bias: bool,
) -> (usize, f64) {
    check_matmul_gated(ctx, rng, dtype, case, bias, Activation::Silu)
}

/// gelu_tanh (`gelu_pytorch_tanh`) in f64.
fn gelu_tanh(g: f64) -> f64 {
    let u = (2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g * g * g);
    0.5 * g * (1.0 + u.tanh())
}

fn check_matmul_gated(
    ctx: &GpuContext,
    rng: &mut Rng,
    dtype: WeightFormat,
    (tokens, n, cols): (usize, usize, usize),
    bias: bool,
    activation: Activation,
) -> (usize, f64) {
    let label = format!(
        "matmul_gated {activation:?} {dtype:?} tokens {tokens} n {n} cols {cols} bias {bias}"
    );
    let (w, wv) = random_matrix_in(ctx, rng, dtype, (2 * n, cols), 2);
    for c in &w.chunks {
        assert!(
            c.rows % 2 == 0 && c.row_start % 2 == 0,
            "{label}: a chunk splits a pair"
        );
    }
    let x_stride = cols + rng.pick(&[0, 1, 5]);
    let x = rng.vec((tokens - 1) * x_stride + cols, 1.0);
    let b = rng.vec(2 * n, 1.0);
    let y_len = tokens * n + 5;
    let y0 = rng.vec(y_len, 1.0);
    let (xb, bb, yb) = (
        ctx.upload_f32("x", &x),
        ctx.upload_f32("bias", &b),
        ctx.upload_f32("y", &y0),
    );
    // Sized past the test's tiny binding limit, which is for the weights here.
    let scratch = ctx.upload_f32("pairs", &vec![0.0; tokens * 2 * n]);
    let mut batch = Batch::new(ctx);
    let gated = kernels::GatedFfn {
        gate_up: &w,
        bias: bias.then_some(&bb),
        activation,
    };
    kernels::matmul_gated(&mut batch, &xb, tokens, x_stride, gated, &yb, &scratch);
    batch.submit();
    let got = read_f32(ctx, &yb, y_len);

    let mut want: Vec<f64> = y0.iter().map(|&v| v as f64).collect();
    let mut tol = vec![0.0; y_len];
    for t in 0..tokens {
        for j in 0..n {
            // (value, tolerance) of row r's dot product, bias included.
            let dot = |r: usize| {
                let (mut d, mut abs) = (0.0f64, 0.0f64);
                for k in 0..cols {
                    let term = x[t * x_stride + k] as f64 * wv[r * cols + k] as f64;
                    d += term;
                    abs += term.abs();
                }
                let extra = if bias { b[r] as f64 } else { 0.0 };
                (
                    d + extra,
                    dot_tol(cols, abs) + 2.0 * EPS * (abs + extra.abs()),
                )
            };
            let ((g, tg), (u, tu)) = (dot(2 * j), dot(2 * j + 1));
            let i = t * n + j;
            tol[i] = match activation {
                Activation::Silu => {
                    let silu = g / (1.0 + (-g).exp());
                    want[i] = silu * u;
                    // silu' stays within [-0.1, 1.1]: the dot products' errors carry over
                    // scaled by at most 1.1·|u| and |silu(g)|.
                    1.1 * tg * u.abs() + tu * silu.abs() + swiglu_tol(g, want[i])
                }
                Activation::GeluTanh => {
                    let gelu = gelu_tanh(g);
                    want[i] = gelu * u;
                    // gelu_tanh' stays within [-0.17, 1.13]; 1 + tanh cancels for very
                    // negative g, leaving an absolute error of a few ulps of |g|·|u|.
                    1.13 * tg * u.abs()
                        + tu * gelu.abs()
                        + swiglu_tol(g, want[i])
                        + 8.0 * EPS * g.abs() * u.abs()
                }
            };
        }
    }
    (w.chunks.len(), assert_close(&label, &got, &want, &tol))
}

#[test]
fn matmul_swiglu_matches_cpu() {
    // Decode (fused into the matvec, < 8 tokens) and prefill (projection, then pairs), on
    // every decode kernel, with matrices whole and split into chunks of whole pairs.
    for (ctx, kernels) in every_matmul_context() {
        let mut rng = Rng::new(15);
        let (mut worst, mut split) = (0.0f64, 0);
        for dtype in DTYPES {
            let mut cases = vec![(1, 1, 1), (1, 3, 2), (7, 17, 33), (8, 9, 17)];
            // Whole groups of eight: two gate/up pairs an invocation on CPU adapters.
            cases.extend([(1, 33, 64), (3, 8, 128)]);
            if !kernels.contains("4004") {
                cases.push((2, 64, 4097)); // hidden-size K, odd (two rows exceed 4004 bytes)
            }
            for _ in 0..10 {
                cases.push((rng.pick(&TOKENS), rng.pick(&SIZES), rng.pick(&SIZES)));
            }
            for case in cases {
                let bias = rng.bool();
                // GeGLU (gemma) on every other case.
                let activation = if rng.bool() {
                    Activation::GeluTanh
                } else {
                    Activation::Silu
                };
                let (chunks, w) = check_matmul_gated(&ctx, &mut rng, dtype, case, bias, activation);
                worst = worst.max(w);
                split += (chunks > 1) as usize;
            }
        }
        if kernels.contains("4004") {
            assert!(split >= 10, "{kernels}: only {split} matrices were split");
        }
        eprintln!("matmul_swiglu ({kernels}): worst error/tolerance {worst:.3}, {split} split");
    }
}

// ---------------------------------------------------------------------------------------------
// embed

/// One gather of `tokens` random rows (the last and, with more than two tokens, the first
/// and a repeated one included) from a random table, against the table's rounded values
/// exactly; 1 if the table was split into chunks.
fn check_embed(
    ctx: &GpuContext,
    rng: &mut Rng,
    format: WeightFormat,
    (tokens, vocab, cols): (usize, usize, usize),
    label: &str,
) -> usize {
    let (table, tv) = random_matrix(ctx, rng, format, vocab, cols);
    let mut ids: Vec<u32> = (0..tokens).map(|_| rng.below(vocab) as u32).collect();
    ids[0] = (vocab - 1) as u32;
    if tokens > 2 {
        ids[1] = 0;
        ids[2] = ids[0]; // a repeated id
    }
    let out0 = rng.vec(tokens * cols + 3, 1.0);
    let (ib, ob) = (ctx.upload_u32("ids", &ids), ctx.upload_f32("out", &out0));
    // Gemma's √hidden on every other gather: one f32 product, as exact as the lookup.
    let scale = if rng.bool() {
        1.0
    } else {
        (cols as f32).sqrt()
    };
    let mut batch = Batch::new(ctx);
    kernels::embed_scaled(&mut batch, &ib, &table, &ob, tokens, scale);
    batch.submit();
    let got = read_f32(ctx, &ob, out0.len());
    let mut want: Vec<f64> = out0.iter().map(|&v| v as f64).collect();
    for (t, &id) in ids.iter().enumerate() {
        for k in 0..cols {
            want[t * cols + k] = (tv[id as usize * cols + k] * scale) as f64;
        }
    }
    assert_close(label, &got, &want, &vec![0.0; want.len()]);
    (table.chunks.len() > 1) as usize
}

#[test]
fn embed_matches_cpu() {
    // Small bindings: bigger tables are split into row chunks, smaller ones are not.
    let ctx = context(Some(3000));
    let mut rng = Rng::new(7);
    let mut split = 0;
    for dtype in DTYPES {
        let mut cases: Vec<(usize, usize, usize)> = vec![
            (1, 1, 1),
            (5, 3, 7),
            (17, 100, 33),
            (9, 300, 17),
            (64, 50, 95),
        ];
        for _ in 0..10 {
            cases.push((
                rng.pick(&[1, 2, 3, 7, 17, 33, 64]),
                rng.pick(&[1, 7, 64, 130, 257]),
                rng.pick(&[1, 2, 3, 17, 33, 64, 95, 130]),
            ));
        }
        for (tokens, vocab, cols) in cases {
            let label = format!("embed {dtype:?} tokens {tokens} vocab {vocab} cols {cols}");
            split += check_embed(&ctx, &mut rng, dtype, (tokens, vocab, cols), &label);
        }
    }
    assert!(split >= 6, "only {split} tables were split");
}

// ---------------------------------------------------------------------------------------------
// MoE: route_topk, expert_matvec, expert_swiglu, expert_down_combine

/// softmax → top-k (ties to the lower index) → optional renormalisation, per token.
fn route_cpu(logits: &[f32], experts: usize, top_k: usize, renorm: bool) -> (Vec<u32>, Vec<f64>) {
    let (mut ids, mut weights) = (Vec::new(), Vec::new());
    for row in logits.chunks(experts) {
        let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let e: Vec<f64> = row.iter().map(|&l| (l as f64 - m).exp()).collect();
        let z: f64 = e.iter().sum();
        let mut order: Vec<usize> = (0..experts).collect();
        // partial_cmp, not total_cmp: −0.0 and +0.0 tie, as they do on the GPU.
        order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
        let chosen = &order[..top_k];
        let total: f64 = chosen.iter().map(|&i| e[i] / z).sum();
        for &i in chosen {
            ids.push(i as u32);
            weights.push(if renorm { e[i] / z / total } else { e[i] / z });
        }
    }
    (ids, weights)
}

#[test]
fn route_topk_matches_cpu() {
    let ctx = context(None);
    let mut rng = Rng::new(8);
    // (tokens, experts, top_k, renormalize, logit step)
    let mut cases: Vec<(usize, usize, usize, bool, f32)> = vec![
        (1, 1, 1, true, 0.5),
        (3, 2, 2, false, 0.5),
        (5, 4, 2, true, 0.5),
        (17, 8, 2, true, 0.25),
        (65, 60, 4, false, 0.5),
        (7, 64, 8, true, 1.0),
        (3, 128, 6, true, 0.5),
        (130, 256, 8, false, 0.25),
        (4, 17, 17, true, 0.5),
        (2, 8, 1, false, 0.0), // every logit ±0.0: ids 0.., weight 1/experts
    ];
    for _ in 0..20 {
        let experts = rng.pick(&[2, 3, 8, 17, 33, 64, 100, 256]);
        cases.push((
            rng.pick(&[1, 2, 3, 17, 64, 65]),
            experts,
            rng.pick(&[1, 2, 4, 6, 8]).min(experts),
            rng.bool(),
            rng.pick(&[0.25, 0.5, 1.0]),
        ));
    }
    for (tokens, experts, top_k, renorm, step) in cases {
        let label =
            format!("route_topk tokens {tokens} experts {experts} top_k {top_k} renorm {renorm}");
        // Logits on a coarse grid: many exact ties, and distinct values far apart relative to
        // f32 rounding, so the order is unambiguous.
        let logits: Vec<f32> = (0..tokens * experts)
            .map(|_| (rng.below(21) as f32 - 10.0) * step)
            .collect();
        let (lb, ib, wb) = (
            ctx.upload_f32("logits", &logits),
            ctx.upload_u32("ids", &vec![u32::MAX; tokens * top_k + 1]),
            ctx.upload_f32("weights", &vec![-7.0; tokens * top_k + 1]),
        );
        let mut batch = Batch::new(&ctx);
        kernels::route_topk(
            &mut batch,
            &lb,
            &ib,
            &wb,
            tokens,
            experts,
            top_k,
            renorm,
            Default::default(),
        );
        batch.submit();
        let got_ids = read_u32(&ctx, &ib, tokens * top_k + 1);
        let got_w = read_f32(&ctx, &wb, tokens * top_k + 1);
        let (mut want_ids, mut want_w) = route_cpu(&logits, experts, top_k, renorm);
        want_ids.push(u32::MAX);
        want_w.push(-7.0);
        assert_eq!(got_ids, want_ids, "{label}: ids");
        let mut tol = vec![1e-6; want_w.len()];
        *tol.last_mut().unwrap() = 0.0;
        assert_close(&format!("{label}: weights"), &got_w, &want_w, &tol);
    }
}

/// The language prior's bias is added to the logits before the softmax: the kernel with a bias
/// buffer must match the CPU reference run on logits + bias.
#[test]
fn route_topk_adds_the_bias_before_the_softmax() {
    let ctx = context(None);
    let mut rng = Rng::new(81);
    for (tokens, experts, top_k, renorm) in [
        (1, 2, 1, true),
        (5, 4, 2, true),
        (17, 8, 2, false),
        (65, 17, 3, true),
        (3, 64, 8, false),
    ] {
        let label = format!("biased route_topk tokens {tokens} experts {experts} top_k {top_k}");
        let logits: Vec<f32> = (0..tokens * experts)
            .map(|_| (rng.below(21) as f32 - 10.0) * 0.25)
            .collect();
        // Bias on a coarser grid, so biased and unbiased winners often differ.
        let bias: Vec<f32> = (0..tokens * experts)
            .map(|_| rng.pick(&[0.0, 0.0, 3.0, 10.0]))
            .collect();
        let biased: Vec<f32> = logits.iter().zip(&bias).map(|(l, b)| l + b).collect();
        let (lb, bb, ib, wb) = (
            ctx.upload_f32("logits", &logits),
            ctx.upload_f32("bias", &bias),
            ctx.upload_u32("ids", &vec![u32::MAX; tokens * top_k + 1]),
            ctx.upload_f32("weights", &vec![-7.0; tokens * top_k + 1]),
        );
        let mut batch = Batch::new(&ctx);
        let steer = kernels::RouteSteer {
            bias: Some(&bb),
            forced_expert: None,
        };
        kernels::route_topk(
            &mut batch, &lb, &ib, &wb, tokens, experts, top_k, renorm, steer,
        );
        batch.submit();
        let got_ids = read_u32(&ctx, &ib, tokens * top_k + 1);
        let got_w = read_f32(&ctx, &wb, tokens * top_k + 1);
        let (mut want_ids, mut want_w) = route_cpu(&biased, experts, top_k, renorm);
        let (plain_ids, _) = route_cpu(&logits, experts, top_k, renorm);
        assert_ne!(
            want_ids, plain_ids,
            "{label}: the bias must change some routes"
        );
        want_ids.push(u32::MAX);
        want_w.push(-7.0);
        assert_eq!(got_ids, want_ids, "{label}: ids");
        let mut tol = vec![1e-6; want_w.len()];
        *tol.last_mut().unwrap() = 0.0;
        assert_close(&format!("{label}: weights"), &got_w, &want_w, &tol);
    }
}

/// A forced expert ignores the logits (and any bias): slot 0 = the expert with weight 1, the
/// other slots repeat it with weight 0.
#[test]
fn route_topk_forced_expert_ignores_the_router() {
    let ctx = context(None);
    let mut rng = Rng::new(82);
    for (tokens, experts, top_k, forced, with_bias) in [
        (1, 1, 1, 0, false),
        (7, 4, 2, 3, false),
        (65, 8, 2, 0, true),
        (3, 17, 4, 16, false),
    ] {
        let label = format!("forced route_topk tokens {tokens} experts {experts} expert {forced}");
        let logits = rng.vec(tokens * experts, 5.0);
        let bias = rng.vec(tokens * experts, 20.0);
        let (lb, bb, ib, wb) = (
            ctx.upload_f32("logits", &logits),
            ctx.upload_f32("bias", &bias),
            ctx.upload_u32("ids", &vec![u32::MAX; tokens * top_k + 1]),
            ctx.upload_f32("weights", &vec![-7.0; tokens * top_k + 1]),
        );
        let mut batch = Batch::new(&ctx);
        let steer = kernels::RouteSteer {
            bias: with_bias.then_some(&bb),
            forced_expert: Some(forced),
        };
        kernels::route_topk(
            &mut batch, &lb, &ib, &wb, tokens, experts, top_k, true, steer,
        );
        batch.submit();
        let got_ids = read_u32(&ctx, &ib, tokens * top_k + 1);
        let got_w = read_f32(&ctx, &wb, tokens * top_k + 1);
        let mut want_ids = vec![forced as u32; tokens * top_k];
        want_ids.push(u32::MAX);
        let mut want_w: Vec<f32> = (0..tokens * top_k)
            .map(|i| if i % top_k == 0 { 1.0 } else { 0.0 })
            .collect();
        want_w.push(-7.0);
        assert_eq!(got_ids, want_ids, "{label}: ids");
        assert_eq!(got_w, want_w, "{label}: weights");
    }
}

#[derive(Debug, Clone, Copy)]
struct ExpertCase {
    tokens: usize,
    top_k: usize,
    experts: usize,
    rows: usize,
    cols: usize,
    x_per_slot: bool,
}

fn check_expert_matvec(
    ctx: &GpuContext,
    rng: &mut Rng,
    dtype: WeightFormat,
    c: ExpertCase,
) -> (usize, f64) {
    let label = format!("expert_matvec {dtype:?} {c:?}");
    let (w, wv) = random_matrix(ctx, rng, dtype, c.experts * c.rows, c.cols);
    let slots = c.tokens * c.top_k;
    let ids: Vec<u32> = (0..slots).map(|_| rng.below(c.experts) as u32).collect();
    let x_rows = if c.x_per_slot { slots } else { c.tokens };
    let x = rng.vec(x_rows * c.cols, 1.0);
    let y0 = rng.vec(slots * c.rows + 5, 1.0);
    let (xb, ib, yb) = (
        ctx.upload_f32("x", &x),
        ctx.upload_u32("ids", &ids),
        ctx.upload_f32("y", &y0),
    );
    let mut batch = Batch::new(ctx);
    kernels::expert_matvec(
        &mut batch,
        &xb,
        &w,
        c.rows,
        &ib,
        &yb,
        c.tokens,
        c.top_k,
        c.x_per_slot,
    );
    batch.submit();
    let got = read_f32(ctx, &yb, y0.len());

    let mut want: Vec<f64> = y0.iter().map(|&v| v as f64).collect();
    let mut tol = vec![0.0; want.len()];
    for slot in 0..slots {
        let xr = if c.x_per_slot { slot } else { slot / c.top_k };
        let e = ids[slot] as usize;
        for n in 0..c.rows {
            let (mut dot, mut abs) = (0.0f64, 0.0f64);
            for k in 0..c.cols {
                let term = x[xr * c.cols + k] as f64 * wv[(e * c.rows + n) * c.cols + k] as f64;
                dot += term;
                abs += term.abs();
            }
            want[slot * c.rows + n] = dot;
            tol[slot * c.rows + n] = dot_tol(c.cols, abs) + 1e-30;
        }
    }
    let worst = assert_close(&label, &got, &want, &tol);
    (w.chunks.len(), worst)
}

#[test]
fn expert_matvec_matches_cpu() {
    for layout in LAYOUTS {
        expert_matvec_matches_cpu_with(layout);
    }
}

fn expert_matvec_matches_cpu_with(layout: KernelLayout) {
    // 2000-byte bindings: stacks of more than a few experts split, mid-expert.
    let ctx = context_with(Some(2000), layout);
    let mut rng = Rng::new(9);
    let mut worst = 0.0f64;
    let mut split = 0;
    for dtype in DTYPES {
        for x_per_slot in [false, true] {
            let cases = expert_cases(&mut rng, x_per_slot);
            for c in cases {
                let (chunks, w) = check_expert_matvec(&ctx, &mut rng, dtype, c);
                worst = worst.max(w);
                split += (chunks > 1) as usize;
            }
        }
    }
    assert!(split >= 12, "only {split} expert stacks were split");
    eprintln!("expert_matvec ({layout:?}): worst error/tolerance {worst:.3}, {split} split stacks");
}

/// The experts' fused gate/up + SwiGLU (each expert's rows interleaved in pairs, as the
/// loader stacks them) against silu(gate · x) · (up · x) on the CPU; (chunks, worst).
fn check_expert_swiglu(
    ctx: &GpuContext,
    rng: &mut Rng,
    dtype: WeightFormat,
    c: ExpertCase,
) -> (usize, f64) {
    let label = format!("expert_swiglu {dtype:?} {c:?}");
    let total = c.experts * 2 * c.rows;
    let (w, wv) = random_matrix_in(ctx, rng, dtype, (total, c.cols), 2);
    assert!(
        w.chunks
            .iter()
            .all(|k| k.rows % 2 == 0 && k.row_start % 2 == 0),
        "{label}: a chunk splits a pair"
    );
    let slots = c.tokens * c.top_k;
    let ids: Vec<u32> = (0..slots).map(|_| rng.below(c.experts) as u32).collect();
    let x = rng.vec(c.tokens * c.cols, 1.0);
    let y0 = rng.vec(slots * c.rows + 5, 1.0);
    let (xb, ib, yb) = (
        ctx.upload_f32("x", &x),
        ctx.upload_u32("ids", &ids),
        ctx.upload_f32("y", &y0),
    );
    let mut batch = Batch::new(ctx);
    kernels::expert_swiglu(&mut batch, &xb, &w, c.rows, &ib, &yb, c.tokens, c.top_k);
    batch.submit();
    let got = read_f32(ctx, &yb, y0.len());

    let mut want: Vec<f64> = y0.iter().map(|&v| v as f64).collect();
    let mut tol = vec![0.0; want.len()];
    for (slot, &e) in ids.iter().enumerate() {
        let (t, e) = (slot / c.top_k, e as usize);
        for n in 0..c.rows {
            let dot = |r: usize| {
                let (mut d, mut abs) = (0.0f64, 0.0f64);
                for k in 0..c.cols {
                    let term = x[t * c.cols + k] as f64 * wv[r * c.cols + k] as f64;
                    d += term;
                    abs += term.abs();
                }
                (d, dot_tol(c.cols, abs))
            };
            let pair = e * 2 * c.rows + 2 * n;
            let ((g, tg), (u, tu)) = (dot(pair), dot(pair + 1));
            let silu = g / (1.0 + (-g).exp());
            let i = slot * c.rows + n;
            want[i] = silu * u;
            tol[i] = 1.1 * tg * u.abs() + tu * silu.abs() + swiglu_tol(g, want[i]);
        }
    }
    (w.chunks.len(), assert_close(&label, &got, &want, &tol))
}

/// The experts' down projection with the weighted combine folded in, against
/// hidden + Σ_s weight_s · (W_e · x_s) on the CPU; (chunks, worst).
fn check_expert_down_combine(
    ctx: &GpuContext,
    rng: &mut Rng,
    dtype: WeightFormat,
    c: ExpertCase,
) -> (usize, f64) {
    let label = format!("expert_down_combine {dtype:?} {c:?}");
    let (w, wv) = random_matrix(ctx, rng, dtype, c.experts * c.rows, c.cols);
    let slots = c.tokens * c.top_k;
    let ids: Vec<u32> = (0..slots).map(|_| rng.below(c.experts) as u32).collect();
    let x = rng.vec(slots * c.cols, 1.0);
    let weights = rng.vec(slots, 1.0);
    let hidden0 = rng.vec(c.tokens * c.rows + 3, 1.0);
    let (xb, ib, wb, hb) = (
        ctx.upload_f32("x", &x),
        ctx.upload_u32("ids", &ids),
        ctx.upload_f32("weights", &weights),
        ctx.upload_f32("hidden", &hidden0),
    );
    let mut batch = Batch::new(ctx);
    kernels::expert_down_combine(
        &mut batch, &xb, &w, c.rows, &ib, &wb, &hb, c.tokens, c.top_k,
    );
    batch.submit();
    let got = read_f32(ctx, &hb, hidden0.len());

    let mut want: Vec<f64> = hidden0.iter().map(|&v| v as f64).collect();
    let mut tol = vec![0.0; want.len()];
    for t in 0..c.tokens {
        for n in 0..c.rows {
            let i = t * c.rows + n;
            let mut abs = want[i].abs();
            for s in 0..c.top_k {
                let slot = t * c.top_k + s;
                let e = ids[slot] as usize;
                let (mut d, mut dabs) = (0.0f64, 0.0f64);
                for k in 0..c.cols {
                    let term =
                        x[slot * c.cols + k] as f64 * wv[(e * c.rows + n) * c.cols + k] as f64;
                    d += term;
                    dabs += term.abs();
                }
                let wt = weights[slot] as f64;
                want[i] += wt * d;
                abs += (wt * d).abs();
                tol[i] += wt.abs() * dot_tol(c.cols, dabs);
            }
            tol[i] += 2.0 * EPS * (c.top_k as f64 + 1.0) * abs + 1e-30;
        }
    }
    (w.chunks.len(), assert_close(&label, &got, &want, &tol))
}

/// Expert cases: `fixed` (tokens, top_k, experts, rows, cols) and `randoms` more with K from
/// `cols`; x_per_slot as given.
fn expert_cases_with(
    rng: &mut Rng,
    x_per_slot: bool,
    fixed: &[(usize, usize, usize, usize, usize)],
    randoms: usize,
    cols: &[usize],
) -> Vec<ExpertCase> {
    let case = |(tokens, top_k, experts, rows, cols)| ExpertCase {
        tokens,
        top_k,
        experts,
        rows,
        cols,
        x_per_slot,
    };
    let mut cases: Vec<ExpertCase> = fixed.iter().copied().map(case).collect();
    for _ in 0..randoms {
        cases.push(case((
            rng.pick(&[1, 2, 3, 5, 9]),
            rng.pick(&[1, 2, 4]),
            rng.pick(&[1, 2, 4, 8]),
            rng.pick(&[1, 3, 7, 17, 33, 64]),
            rng.pick(cols),
        )));
    }
    cases
}

/// Random expert cases of any K; x_per_slot as given.
fn expert_cases(rng: &mut Rng, x_per_slot: bool) -> Vec<ExpertCase> {
    let fixed = [
        (1, 1, 1, 1, 1),
        (1, 2, 4, 7, 17),
        (3, 2, 8, 17, 33),
        (2, 4, 8, 33, 95),
        (5, 2, 4, 64, 3),
        (1, 8, 16, 9, 130),
        // K whole groups of eight: four 16-bit rows an invocation on CPU adapters, the last
        // group short, chunks ending inside a group.
        (2, 2, 4, 33, 64),
        (3, 2, 8, 17, 128),
    ];
    expert_cases_with(rng, x_per_slot, &fixed, 8, &[1, 2, 3, 17, 33, 64, 95, 130])
}

/// `check` over `expert_cases` in every layout and dtype, with 2000-byte bindings so stacks
/// split mid-expert (between pairs where rows go in pairs).
fn expert_kernel_matches_cpu(
    name: &str,
    seed: u64,
    x_per_slot: bool,
    check: impl Fn(&GpuContext, &mut Rng, WeightFormat, ExpertCase) -> (usize, f64),
) {
    for layout in LAYOUTS {
        let ctx = context_with(Some(2000), layout);
        let mut rng = Rng::new(seed);
        let (mut worst, mut split) = (0.0f64, 0);
        for dtype in DTYPES {
            for c in expert_cases(&mut rng, x_per_slot) {
                let (chunks, w) = check(&ctx, &mut rng, dtype, c);
                worst = worst.max(w);
                split += (chunks > 1) as usize;
            }
        }
        assert!(split >= 6, "{name}: only {split} expert stacks were split");
        eprintln!("{name} ({layout:?}): worst error/tolerance {worst:.3}, {split} split");
    }
}

#[test]
fn expert_swiglu_matches_cpu() {
    expert_kernel_matches_cpu("expert_swiglu", 11, false, check_expert_swiglu);
}

#[test]
fn expert_down_combine_matches_cpu() {
    expert_kernel_matches_cpu("expert_down_combine", 12, true, check_expert_down_combine);
}

// ---------------------------------------------------------------------------------------------
// Q8_0 weights: every kernel that reads weights, against the dequantized values, on rows of
// whole 32-element blocks (odd block counts, K a multiple of 32 but not of 64, included)

const Q8: WeightFormat = WeightFormat::Q8_0;
/// K of the Q8_0 cases: 1, 2, 3, 5, 8, 9, 18 and 33 blocks.
const Q8_COLS: [usize; 8] = [32, 64, 96, 160, 256, 288, 576, 1056];

#[test]
fn q8_0_matmul_matches_cpu() {
    for (ctx, kernels) in every_matmul_context() {
        let split_binding = kernels.contains("4004");
        let mut rng = Rng::new(21);
        let (mut worst, mut split) = (0.0f64, 0);
        let mut cases = vec![
            MatmulCase::plain(1, 1, 32),
            MatmulCase::plain(1, 3, 96),
            MatmulCase::plain(7, 17, 160), // largest matvec
            MatmulCase::plain(8, 33, 32),  // smallest prefill
            MatmulCase::plain(9, 95, 288),
            MatmulCase::plain(33, 130, 96),
            MatmulCase::plain(2, 200, 1056),
            MatmulCase {
                bias: true,
                accumulate: true,
                x_stride: 101,
                y_offset: 7,
                y_stride: 140,
                ..MatmulCase::plain(5, 131, 96)
            },
        ];
        if !split_binding {
            cases.push(MatmulCase::plain(1, 64, 4128)); // 129 blocks: past 4004 bytes a row
        }
        for _ in 0..14 {
            cases.push(MatmulCase::random(
                &mut rng,
                &TOKENS,
                &[1, 2, 3, 7, 17, 33, 64, 95, 130, 257],
                &Q8_COLS,
            ));
        }
        for c in cases {
            let (chunks, w) = check_matmul(&ctx, &mut rng, Q8, c);
            worst = worst.max(w);
            split += (chunks > 1) as usize;
        }
        if split_binding {
            assert!(split >= 8, "{kernels}: only {split} matrices were split");
        }
        eprintln!("q8_0 matmul ({kernels}): worst error/tolerance {worst:.3}, {split} split");
    }
}

#[test]
fn q8_0_matmul_swiglu_matches_cpu() {
    for (ctx, kernels) in every_matmul_context() {
        let mut rng = Rng::new(22);
        let (mut worst, mut split) = (0.0f64, 0);
        let mut cases = vec![
            (1, 1, 32),
            (1, 3, 96),
            (7, 17, 160),
            (8, 9, 288),
            (3, 65, 576),
        ];
        for _ in 0..10 {
            cases.push((
                rng.pick(&TOKENS),
                rng.pick(&[1, 2, 3, 7, 17, 33, 64, 95]),
                rng.pick(&Q8_COLS),
            ));
        }
        for case in cases {
            let bias = rng.bool();
            let (chunks, w) = check_matmul_swiglu(&ctx, &mut rng, Q8, case, bias);
            worst = worst.max(w);
            split += (chunks > 1) as usize;
        }
        if kernels.contains("4004") {
            assert!(split >= 8, "{kernels}: only {split} matrices were split");
        }
        eprintln!(
            "q8_0 matmul_swiglu ({kernels}): worst error/tolerance {worst:.3}, {split} split"
        );
    }
}

#[test]
fn q8_0_embed_is_the_exact_dequantization() {
    // The gather computes d · q as the CPU reference (and llama.cpp) does: equal bit for bit,
    // tables split into chunks by small bindings or not.
    let ctx = context(Some(3000));
    let mut rng = Rng::new(23);
    let mut split = 0;
    let mut cases = vec![
        (1, 1, 32),
        (5, 3, 96),
        (17, 100, 32),
        (9, 300, 64),
        (64, 50, 160),
    ];
    for _ in 0..8 {
        cases.push((
            rng.pick(&[1, 2, 3, 7, 17, 33, 64]),
            rng.pick(&[1, 7, 64, 130, 257]),
            rng.pick(&Q8_COLS[..6]),
        ));
    }
    for (tokens, vocab, cols) in cases {
        let label = format!("q8_0 embed tokens {tokens} vocab {vocab} cols {cols}");
        split += check_embed(&ctx, &mut rng, Q8, (tokens, vocab, cols), &label);
    }
    assert!(split >= 5, "only {split} tables were split");
}

#[test]
fn q8_0_expert_matvec_matches_cpu() {
    for layout in LAYOUTS {
        // 2000-byte bindings: 55 rows of 32, 6 of 288 — stacks split mid-expert.
        let ctx = context_with(Some(2000), layout);
        let mut rng = Rng::new(24);
        let (mut worst, mut split) = (0.0f64, 0);
        for x_per_slot in [false, true] {
            let case = |tokens, top_k, experts, rows, cols| ExpertCase {
                tokens,
                top_k,
                experts,
                rows,
                cols,
                x_per_slot,
            };
            let mut cases = vec![
                case(1, 1, 1, 1, 32),
                case(1, 2, 4, 7, 96),
                case(3, 2, 8, 17, 160),
                case(2, 4, 8, 33, 288),
            ];
            for _ in 0..6 {
                cases.push(case(
                    rng.pick(&[1, 2, 3, 5, 9]),
                    rng.pick(&[1, 2, 4]),
                    rng.pick(&[1, 2, 4, 8]),
                    rng.pick(&[1, 3, 7, 17, 33, 64]),
                    rng.pick(&Q8_COLS[..6]),
                ));
            }
            for c in cases {
                let (chunks, w) = check_expert_matvec(&ctx, &mut rng, Q8, c);
                worst = worst.max(w);
                split += (chunks > 1) as usize;
            }
        }
        assert!(
            split >= 8,
            "{layout:?}: only {split} expert stacks were split"
        );
        eprintln!(
            "q8_0 expert_matvec ({layout:?}): worst error/tolerance {worst:.3}, {split} split"
        );
    }
}

/// Random expert cases of Q8_0 rows (K of whole blocks); x_per_slot as given.
fn q8_expert_cases(rng: &mut Rng, x_per_slot: bool) -> Vec<ExpertCase> {
    let fixed = [
        (1, 1, 1, 1, 32),
        (1, 2, 4, 7, 96),
        (3, 2, 8, 17, 160),
        (2, 4, 8, 33, 288),
    ];
    expert_cases_with(rng, x_per_slot, &fixed, 6, &Q8_COLS[..6])
}

#[test]
fn q8_0_expert_swiglu_and_down_combine_match_cpu() {
    for layout in LAYOUTS {
        // 2000-byte bindings: stacks split between pairs, mid-expert.
        let ctx = context_with(Some(2000), layout);
        let mut rng = Rng::new(25);
        let (mut worst, mut split) = (0.0f64, [0, 0]);
        for c in q8_expert_cases(&mut rng, false) {
            let (chunks, w) = check_expert_swiglu(&ctx, &mut rng, Q8, c);
            worst = worst.max(w);
            split[0] += (chunks > 1) as usize;
        }
        for c in q8_expert_cases(&mut rng, true) {
            let (chunks, w) = check_expert_down_combine(&ctx, &mut rng, Q8, c);
            worst = worst.max(w);
            split[1] += (chunks > 1) as usize;
        }
        assert!(
            split[0] >= 4 && split[1] >= 4,
            "{layout:?}: split stacks {split:?}"
        );
        eprintln!("q8_0 expert_swiglu, expert_down_combine ({layout:?}): worst error/tolerance {worst:.3}, {split:?} split");
    }
}

#[test]
fn q8_0_refuses_rows_of_partial_blocks() {
    let ctx = context(None);
    for cols in [1, 31, 33, 48, 100] {
        let err = ctx
            .create_matrix_as("w", DType::F16, Q8, 4, cols, 1)
            .expect_err("a Q8_0 row must be whole blocks");
        assert!(err.to_string().contains("Q8_0"), "{cols}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// sample

/// Runs `sample` once per draw in one submission (each result copied out) and returns the ids.
fn sample_draws(
    ctx: &GpuContext,
    logits: &wgpu::Buffer,
    offset: usize,
    count: usize,
    s: SampleSettings,
    draws: &[f32],
) -> Vec<u32> {
    let result = ctx.upload_u32("result", &[u32::MAX]);
    let all = ctx.upload_u32("all", &vec![u32::MAX; draws.len()]);
    let mut batch = Batch::new(ctx);
    for (i, &u) in draws.iter().enumerate() {
        kernels::sample(&mut batch, logits, offset, count, s, u, &result);
        batch.copy(&result, 0, &all, (i * 4) as u64, 4);
    }
    batch.submit();
    read_u32(ctx, &all, draws.len())
}

/// Logits embedded at `offset` of a larger buffer whose other elements are far larger than
/// any logit (reading them would win every draw).
fn upload_logits(ctx: &GpuContext, logits: &[f32], offset: usize) -> wgpu::Buffer {
    let mut data = vec![1.0e4f32; offset + logits.len() + 5];
    data[offset..offset + logits.len()].copy_from_slice(logits);
    ctx.upload_f32("logits", &data)
}

fn argmax_first(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn sample_greedy_is_first_argmax() {
    let ctx = context(None);
    let mut rng = Rng::new(11);
    for count in [1, 2, 7, 255, 256, 257, 1000, 32000, 151936] {
        for variant in 0..5 {
            let mut logits = rng.vec(count, 10.0);
            let top = 12.5f32;
            // Ties at the maximum, placed so that different invocations and the same
            // invocation (i and i + 256) both see the tied value.
            let tied: Vec<usize> = match variant {
                0 => vec![],
                1 => vec![count - 1],
                2 => vec![count / 2, 0, count - 1],
                3 => vec![
                    count - 1,
                    count.saturating_sub(257),
                    count / 3,
                    (count / 3) + 256,
                ],
                _ => (0..count).collect(), // every logit equal
            };
            for &i in &tied {
                if i < count {
                    logits[i] = top;
                }
            }
            let offset = rng.pick(&[0, 1, 7, 1000]);
            let lb = upload_logits(&ctx, &logits, offset);
            let want = argmax_first(&logits);
            for temperature in [0.0, -1.0] {
                let s = SampleSettings {
                    temperature,
                    top_k: rng.pick(&[0, 1, 40]),
                    top_p: rng.pick(&[1.0, 0.5]),
                };
                let got = sample_draws(&ctx, &lb, offset, count, s, &[0.3, 0.999]);
                assert_eq!(
                    got,
                    vec![want; 2],
                    "greedy count {count} variant {variant} offset {offset} {s:?}"
                );
            }
        }
    }
}

/// What the CPU allows a sampler to return.
struct Allowed {
    /// Tokens in the top-k ∩ top-p set.
    keep: Vec<bool>,
    /// `keep`, widened by the next logit level when the top-p mass lands within f32 rounding
    /// of the goal (the GPU then may or may not include it).
    loose: Vec<bool>,
    /// The renormalised probabilities over `keep`.
    probs: Vec<f64>,
    /// Relative distance of the top-p goal from the nearest achievable mass (∞ without top-p).
    margin: f64,
}

fn allowed(logits: &[f32], s: SampleSettings) -> Allowed {
    let n = logits.len();
    let m = logits.iter().cloned().fold(f32::MIN, f32::max);
    let temperature = s.temperature.max(1e-6) as f64;
    let w: Vec<f64> = logits
        .iter()
        .map(|&l| ((l - m) as f64 / temperature).exp())
        .collect();
    let mut sorted = logits.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let kth = if s.top_k > 0 && s.top_k < n {
        sorted[s.top_k - 1]
    } else {
        f32::MIN
    };
    let mut threshold = kth;
    let mut loose_threshold = kth;
    let mut margin = f64::INFINITY;
    if s.top_p < 1.0 {
        let total: f64 = (0..n).filter(|&i| logits[i] >= kth).map(|i| w[i]).sum();
        let goal = s.top_p.max(0.0) as f64 * total;
        let mut levels: Vec<f32> = sorted.iter().cloned().filter(|&v| v >= kth).collect();
        levels.dedup();
        let mut cum = 0.0;
        for (li, &level) in levels.iter().enumerate() {
            let before = cum;
            cum += (0..n)
                .filter(|&i| logits[i] == level)
                .map(|i| w[i])
                .sum::<f64>();
            if cum >= goal {
                threshold = level;
                let above = (cum - goal) / total;
                let below = if li == 0 {
                    f64::INFINITY
                } else {
                    (goal - before) / total
                };
                margin = above.min(below);
                loose_threshold = if above < 1e-4 {
                    levels.get(li + 1).copied().unwrap_or(level)
                } else {
                    level
                };
                break;
            }
        }
    }
    let keep: Vec<bool> = logits.iter().map(|&l| l >= threshold).collect();
    let loose: Vec<bool> = logits.iter().map(|&l| l >= loose_threshold).collect();
    let z: f64 = (0..n).filter(|&i| keep[i]).map(|i| w[i]).sum();
    let probs = (0..n)
        .map(|i| if keep[i] { w[i] / z } else { 0.0 })
        .collect();
    Allowed {
        keep,
        loose,
        probs,
        margin,
    }
}

#[test]
fn sample_stays_in_top_k_top_p_set() {
    let ctx = context(None);
    let mut rng = Rng::new(12);
    let draws = [0.0, 1e-7, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999, 0.9999999];
    let mut checked = 0;
    for count in [1, 2, 7, 256, 257, 1000, 32000] {
        for round in 0..6 {
            // Continuous logits, or a coarse grid with many ties (also at the top-k edge).
            let logits: Vec<f32> = if round % 2 == 0 {
                rng.vec(count, 4.0)
            } else {
                (0..count).map(|_| rng.below(9) as f32 * 0.5).collect()
            };
            let offset = rng.pick(&[0, 3, 100]);
            let lb = upload_logits(&ctx, &logits, offset);
            let s = SampleSettings {
                temperature: rng.pick(&[0.3, 0.7, 1.0, 1.5]),
                top_k: rng.pick(&[0, 1, 2, 5, 40, 300]),
                top_p: rng.pick(&[1.0, 0.95, 0.8, 0.5, 0.1, 0.0]),
            };
            let a = allowed(&logits, s);
            let got = sample_draws(&ctx, &lb, offset, count, s, &draws);
            for (&id, &u) in got.iter().zip(&draws) {
                assert!(
                    (id as usize) < count && a.loose[id as usize],
                    "sample count {count} offset {offset} {s:?} u {u}: id {id} is outside the allowed set ({} tokens)",
                    a.keep.iter().filter(|&&k| k).count()
                );
                checked += 1;
            }

            // top_k = 1 is the argmax whatever the temperature, top_p and draw (any of the
            // tied maxima on the grid).
            let s1 = SampleSettings { top_k: 1, ..s };
            let max = logits.iter().cloned().fold(f32::MIN, f32::max);
            for id in sample_draws(&ctx, &lb, offset, count, s1, &draws) {
                assert_eq!(
                    logits[id as usize], max,
                    "top_k 1, count {count} {s1:?}: id {id}"
                );
                if round % 2 == 0 {
                    assert_eq!(id, argmax_first(&logits), "top_k 1, count {count} {s1:?}");
                }
            }
        }
    }
    assert!(checked > 300);
}

#[test]
fn sample_distribution_matches_cpu() {
    let ctx = context(None);
    let mut rng = Rng::new(13);
    const N: usize = 500;
    let draws: Vec<f32> = (0..N).map(|i| (i as f32 + 0.5) / N as f32).collect();
    let continuous = |rng: &mut Rng, n| rng.vec(n, 2.0);
    // (vocab, temperature, top_k, top_p, grid logits)
    let cases = [
        (300, 1.0, 0, 1.0, false),
        (300, 0.7, 10, 1.0, false),
        (1000, 0.25, 0, 1.0, false),
        (300, 1.3, 0, 0.8, false),
        (257, 0.8, 40, 0.9, false),
        (300, 1.0, 30, 1.0, true), // ties at the k-th value: more than 30 tokens kept
        (100, 0.5, 0, 0.6, true),
    ];
    for (vocab, temperature, mut top_k, top_p, grid) in cases {
        let logits: Vec<f32> = if grid {
            (0..vocab).map(|_| rng.below(13) as f32 * 0.25).collect()
        } else {
            continuous(&mut rng, vocab)
        };
        if grid && top_k > 0 {
            // Move k onto a tie: the k-th and (k+1)-th largest logits equal.
            let mut sorted = logits.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            while sorted[top_k - 1] != sorted[top_k] {
                top_k += 1;
            }
        }
        let mut s = SampleSettings {
            temperature,
            top_k,
            top_p,
        };
        // Keep the top-p goal clear of every cumulative mass level, so f32 rounding cannot
        // change the nucleus.
        let mut a = allowed(&logits, s);
        while a.margin <= 1e-4 {
            s.top_p += 1e-3;
            a = allowed(&logits, s);
        }
        let kept = a.keep.iter().filter(|&&k| k).count();
        if grid && top_k > 0 {
            assert!(kept > top_k, "{s:?}: no tie at the k-th value");
        }
        let offset = 11;
        let lb = upload_logits(&ctx, &logits, offset);
        let got = sample_draws(&ctx, &lb, offset, vocab, s, &draws);
        let mut counts = vec![0usize; vocab];
        for &id in &got {
            assert!(
                (id as usize) < vocab && a.keep[id as usize],
                "{s:?}: id {id}"
            );
            counts[id as usize] += 1;
        }
        // The draws are evenly spaced quantiles and the kernel inverts the CDF in index order,
        // so every prefix count is N·P to within half a draw (one, allowing for rounding at a
        // boundary), and every count N·p to within one.
        let (mut cum_count, mut cum_p, mut worst) = (0usize, 0.0f64, 0.0f64);
        for (i, (&count, &p)) in counts.iter().zip(&a.probs).enumerate() {
            let expected = N as f64 * p;
            assert!(
                (count as f64 - expected).abs() <= 1.5,
                "vocab {vocab} {s:?}: token {i} drawn {count} times, expected {expected:.2}"
            );
            cum_count += count;
            cum_p += p;
            let d = (cum_count as f64 - N as f64 * cum_p).abs();
            worst = worst.max(d);
            assert!(
                d <= 1.0,
                "vocab {vocab} {s:?}: {cum_count} draws ≤ token {i}, expected {:.2}",
                N as f64 * cum_p
            );
        }
        eprintln!(
            "sample {s:?}: top-p margin {:.2e}, worst prefix deviation {worst:.3} draws",
            a.margin
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Grids over 65 535 workgroups, spread over x and y

#[test]
fn large_grids_use_both_dimensions() {
    // The four-row shapes need the most workgroups per row; matvec_rows below.
    let ctx = context_with(None, KernelLayout::Lanes);
    let limit = ctx.max_workgroups_per_dim as usize;
    let mut rng = Rng::new(14);

    // matvec: 7 tokens × 10 000 four-row blocks.
    {
        let c = MatmulCase {
            bias: true,
            ..MatmulCase::plain(7, 40000, 3)
        };
        assert!(c.tokens * c.rows.div_ceil(4) > limit);
        for dtype in [DType::F32, DType::F16] {
            check_matmul(&ctx, &mut rng, dtype.into(), c);
        }
    }
    // rms_norm: one workgroup per token.
    {
        let (tokens, dim) = (limit + 100, 3);
        let x = rng.vec(tokens * dim, 1.0);
        let w = vec![1.0f32; dim];
        let (xb, wb, yb) = (
            ctx.upload_f32("x", &x),
            ctx.upload_f32("w", &w),
            ctx.upload_f32("y", &vec![0.0; tokens * dim]),
        );
        let mut batch = Batch::new(&ctx);
        kernels::rms_norm(&mut batch, &xb, &wb, &yb, tokens, dim, 1e-5);
        batch.submit();
        let got = read_f32(&ctx, &yb, tokens * dim);
        let mut want = vec![0.0f64; tokens * dim];
        let mut tol = vec![0.0; tokens * dim];
        for t in 0..tokens {
            let r = &x[t * dim..(t + 1) * dim];
            let ms = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
            for i in 0..dim {
                want[t * dim + i] = r[i] as f64 / (ms + 1e-5).sqrt();
                tol[t * dim + i] = 8.0 * EPS * want[t * dim + i].abs() + 1e-30;
            }
        }
        assert_close("rms_norm large grid", &got, &want, &tol);
    }
    // rope: 3 tokens × 22 000 heads × 64 pairs.
    {
        let (tokens, pos0, heads, head_dim) = (3usize, 5, 22000, 128);
        assert!((tokens * heads * head_dim / 2).div_ceil(64) > limit);
        let (cos, sin) = rope_tables(pos0 + tokens, head_dim);
        let v0 = rng.vec(tokens * heads * head_dim, 1.0);
        let (vb, cb, sb) = (
            ctx.upload_f32("v", &v0),
            ctx.upload_f32("cos", &cos),
            ctx.upload_f32("sin", &sin),
        );
        let mut batch = Batch::new(&ctx);
        let target = RopeTarget {
            buffer: &vb,
            tokens,
            pos0,
            heads,
            head_dim,
            stride: heads * head_dim,
            offset: 0,
        };
        kernels::rope(&mut batch, target, &cb, &sb);
        batch.submit();
        let got = read_f32(&ctx, &vb, v0.len());
        let half = head_dim / 2;
        let mut want = vec![0.0f64; v0.len()];
        let mut tol = vec![0.0; v0.len()];
        for t in 0..tokens {
            for h in 0..heads {
                let base = (t * heads + h) * head_dim;
                for j in 0..half {
                    let c = cos[(pos0 + t) * half + j] as f64;
                    let s = sin[(pos0 + t) * half + j] as f64;
                    let (x1, x2) = (v0[base + j] as f64, v0[base + j + half] as f64);
                    want[base + j] = x1 * c - x2 * s;
                    want[base + j + half] = x2 * c + x1 * s;
                    tol[base + j] = 2.0 * EPS * (x1.abs() + x2.abs()) + 1e-30;
                    tol[base + j + half] = tol[base + j];
                }
            }
        }
        assert_close("rope large grid", &got, &want, &tol);
    }
    // attention: 4 200 tokens × 16 heads, a 2-position window keeps it cheap.
    {
        let s = AttentionShape {
            tokens: 4200,
            pos0: 3,
            heads: 16,
            kv_heads: 4,
            head_dim: 2,
            window: 2,
        };
        assert!(s.tokens * s.heads > limit);
        check_attention(&ctx, &mut rng, s, Room::None);
    }
    // swiglu and add: 256 values per workgroup.
    {
        let count = (limit + 2) * 256 + 17;
        let a = rng.vec(count, 4.0);
        let b = rng.vec(count, 1.0);
        let (ab, bb) = (ctx.upload_f32("a", &a), ctx.upload_f32("b", &b));
        let (sb, sumb) = (
            ctx.upload_f32("s", &vec![0.0; count]),
            ctx.upload_f32("sum", &vec![0.0; count]),
        );
        let mut batch = Batch::new(&ctx);
        kernels::swiglu(&mut batch, &ab, &bb, &sb, count);
        kernels::add(&mut batch, &ab, &bb, &sumb, count);
        batch.submit();
        let got_s = read_f32(&ctx, &sb, count);
        let got_a = read_f32(&ctx, &sumb, count);
        for i in 0..count {
            let g = a[i] as f64;
            let want = g / (1.0 + (-g).exp()) * b[i] as f64;
            assert!(
                (got_s[i] as f64 - want).abs() <= swiglu_tol(g, want),
                "swiglu large grid [{i}]: got {} want {want}",
                got_s[i]
            );
            assert_eq!(got_a[i], a[i] + b[i], "add large grid [{i}]");
        }
    }
    // embed: 4 100 tokens × 1 025 columns, 64 values per workgroup.
    {
        let (tokens, vocab, cols) = (4100usize, 50, 1025);
        assert!((tokens * cols).div_ceil(64) > limit);
        let (table, tv) = random_matrix(&ctx, &mut rng, DType::BF16.into(), vocab, cols);
        let ids: Vec<u32> = (0..tokens).map(|_| rng.below(vocab) as u32).collect();
        let (ib, ob) = (
            ctx.upload_u32("ids", &ids),
            ctx.upload_f32("out", &vec![0.0; tokens * cols]),
        );
        let mut batch = Batch::new(&ctx);
        kernels::embed(&mut batch, &ib, &table, &ob, tokens);
        batch.submit();
        let got = read_f32(&ctx, &ob, tokens * cols);
        for t in 0..tokens {
            let row = &tv[ids[t] as usize * cols..(ids[t] as usize + 1) * cols];
            assert_eq!(
                &got[t * cols..(t + 1) * cols],
                row,
                "embed large grid token {t}"
            );
        }
    }
    // route_topk: 64 tokens per workgroup.
    {
        let (tokens, experts, top_k) = ((limit + 1) * 64 + 5, 3, 2);
        let logits: Vec<f32> = (0..tokens * experts)
            .map(|_| rng.below(7) as f32 * 0.5)
            .collect();
        let (lb, ib, wb) = (
            ctx.upload_f32("logits", &logits),
            ctx.upload_u32("ids", &vec![u32::MAX; tokens * top_k]),
            ctx.upload_f32("weights", &vec![0.0; tokens * top_k]),
        );
        let mut batch = Batch::new(&ctx);
        kernels::route_topk(
            &mut batch,
            &lb,
            &ib,
            &wb,
            tokens,
            experts,
            top_k,
            true,
            Default::default(),
        );
        batch.submit();
        let got_ids = read_u32(&ctx, &ib, tokens * top_k);
        let got_w = read_f32(&ctx, &wb, tokens * top_k);
        let (want_ids, want_w) = route_cpu(&logits, experts, top_k, true);
        assert!(got_ids == want_ids, "route_topk large grid: ids differ");
        assert_close(
            "route_topk large grid",
            &got_w,
            &want_w,
            &vec![1e-6; want_w.len()],
        );
    }
    // expert_matvec: 2 050 four-row blocks × 32 slots.
    {
        let c = ExpertCase {
            tokens: 8,
            top_k: 4,
            experts: 3,
            rows: 8200,
            cols: 3,
            x_per_slot: false,
        };
        assert!(c.rows.div_ceil(4) * c.tokens * c.top_k > limit);
        check_expert_matvec(&ctx, &mut rng, DType::F16.into(), c);
    }
    // expert_swiglu and expert_down_combine: 2 050 four-row blocks × 32 slots / 8 tokens.
    {
        let c = ExpertCase {
            tokens: 8,
            top_k: 4,
            experts: 3,
            rows: 8200,
            cols: 3,
            x_per_slot: false,
        };
        check_expert_swiglu(&ctx, &mut rng, DType::F16.into(), c);
        let c = ExpertCase {
            tokens: 33,
            x_per_slot: true,
            ..c
        };
        assert!(c.rows.div_ceil(4) * c.tokens > limit);
        check_expert_down_combine(&ctx, &mut rng, DType::F16.into(), c);
    }
}

#[test]
fn large_grids_of_row_kernels_use_both_dimensions() {
    let ctx = context_with(None, KernelLayout::Rows);
    let limit = ctx.max_workgroups_per_dim as usize;
    let mut rng = Rng::new(15);
    // matvec_rows: 7 tokens × 9 375 blocks of 64 rows.
    let c = MatmulCase {
        bias: true,
        ..MatmulCase::plain(7, 600_000, 3)
    };
    assert!(c.tokens * c.rows.div_ceil(64) > limit);
    check_matmul(&ctx, &mut rng, DType::F16.into(), c);
    // expert_matvec_rows: 2 050 blocks of 64 rows × 32 slots.
    let c = ExpertCase {
        tokens: 8,
        top_k: 4,
        experts: 3,
        rows: 131_200,
        cols: 3,
        x_per_slot: false,
    };
    assert!(c.rows.div_ceil(64) * c.tokens * c.top_k > limit);
    check_expert_matvec(&ctx, &mut rng, DType::F16.into(), c);
}
