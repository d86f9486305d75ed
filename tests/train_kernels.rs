//! The training kernels against CPU references written here in f64, over deterministic random
//! shapes (odd sizes included), and each backward reference against central finite
//! differences of its own forward, so a wrong formula fails even where GPU and CPU agree.
//! Elements a kernel must not touch are checked to be unchanged.

use half::{bf16, f16};
use moegraft::checkpoint::DType;
use moegraft::gpu::{Batch, GpuContext, GpuOptions, WeightFormat};
use moegraft::train::kernels::{
    self, AdamwBuffers, AdamwStep, MoeShape, Output, RouterLosses, Routing, Stored, Strided,
};

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

const EPS: f64 = f32::EPSILON as f64;

fn context(max_binding_override: Option<u64>) -> GpuContext {
    pollster::block_on(GpuContext::new(GpuOptions {
        max_binding_override,
        no_subgroups: true,
        ..Default::default()
    }))
    .expect("a GPU adapter (lavapipe is enough)")
}

fn read(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
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

fn run(ctx: &GpuContext, record: impl FnOnce(&mut Batch)) {
    let mut batch = Batch::new(ctx);
    record(&mut batch);
    batch.submit();
    ctx.check_device_error().expect("no device error");
}

/// Every element within its tolerance; returns the worst error / tolerance.
fn assert_close(label: &str, got: &[f32], want: &[f64], tol: impl Fn(usize) -> f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        let t = tol(i);
        assert!(
            err <= t,
            "{label}: [{i}] got {g} want {w} (|err| {err:.3e} > tol {t:.3e})"
        );
        worst = worst.max(err / t);
    }
    worst
}

/// The central difference of `f` at `x` along element `i`.
fn finite_difference(f: &dyn Fn(&[f64]) -> f64, x: &[f64], i: usize, h: f64) -> f64 {
    let mut plus = x.to_vec();
    let mut minus = x.to_vec();
    plus[i] += h;
    minus[i] -= h;
    (f(&plus) - f(&minus)) / (2.0 * h)
}

/// `analytic` against finite differences of `f` on a sample of elements.
fn check_gradient(
    label: &str,
    f: &dyn Fn(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    rng: &mut Rng,
) {
    let scale = analytic.iter().fold(1e-3f64, |m, g| m.max(g.abs()));
    for _ in 0..x.len().min(24) {
        let i = rng.below(x.len());
        let numeric = finite_difference(f, x, i, 1e-5);
        assert!(
            (numeric - analytic[i]).abs() <= 1e-6 * scale + 1e-6 * numeric.abs(),
            "{label}: d/dx[{i}] analytic {} finite difference {numeric}",
            analytic[i]
        );
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

// ---------------------------------------------------------------------------------------------
// gemm

/// `values` as words of `format` (rows of `cols`, 16-bit rows padded to a word), and the
/// values as the GPU will read them.
fn stored(format: WeightFormat, rows: usize, cols: usize, values: &[f32]) -> (Vec<u32>, Vec<f32>) {
    match format {
        WeightFormat::Plain(DType::F32) => (
            values.iter().map(|v| v.to_bits()).collect(),
            values.to_vec(),
        ),
        WeightFormat::Plain(dtype) => {
            let half = |v: f32| -> (u16, f32) {
                if dtype == DType::F16 {
                    let h = f16::from_f32(v);
                    (h.to_bits(), h.to_f32())
                } else {
                    let h = bf16::from_f32(v);
                    (h.to_bits(), h.to_f32())
                }
            };
            let words_per_row = cols.div_ceil(2);
            let mut words = vec![0u32; rows * words_per_row];
            let mut seen = vec![0f32; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    let (bits, v) = half(values[r * cols + c]);
                    words[r * words_per_row + c / 2] |= (bits as u32) << (16 * (c % 2));
                    seen[r * cols + c] = v;
                }
            }
            (words, seen)
        }
        WeightFormat::Q8_0 => unreachable!("the gemm cases use plain formats"),
    }
}

#[derive(Debug, Clone, Copy)]
struct GemmCase {
    m: usize,
    n: usize,
    k: usize,
    a_transposed: bool,
    b_transposed: bool,
    format: WeightFormat,
    accumulate: bool,
}

fn check_gemm(ctx: &GpuContext, rng: &mut Rng, case: GemmCase) {
    let GemmCase { m, n, k, .. } = case;
    // A with a row of padding and an offset, so strides and offsets are exercised.
    let a_offset = rng.below(5);
    let (a_row, a_col, a_len) = if case.a_transposed {
        (1, m + 1, a_offset + k * (m + 1))
    } else {
        (k + 2, 1, a_offset + m * (k + 2))
    };
    let a = rng.vec(a_len, 1.0);
    let (b_rows, b_cols) = if case.b_transposed { (n, k) } else { (k, n) };
    let (words, b_seen) = stored(case.format, b_rows, b_cols, &rng.vec(b_rows * b_cols, 1.0));
    let row_words = match case.format {
        WeightFormat::Plain(DType::F32) => b_cols,
        _ => b_cols.div_ceil(2),
    };
    let b_offset = rng.below(3) * row_words;
    let mut b_words = vec![0u32; b_offset];
    b_words.extend(&words);
    let c_offset = rng.below(7);
    let c_row = n + 3;
    let c_len = c_offset + m * c_row + 5;
    let c0 = rng.vec(c_len, 1.0);

    let ab = ctx.upload_f32("a", &a);
    let bb = ctx.upload_u32("b", &b_words);
    let cb = ctx.upload_f32("c", &c0);
    run(ctx, |batch| {
        let b_op = Stored {
            buffer: &bb,
            format: case.format,
            offset_words: b_offset,
            row_words,
            transposed: case.b_transposed,
        };
        let a_op = Strided {
            buffer: &ab,
            offset: a_offset,
            row: a_row,
            col: a_col,
        };
        let mut out = Output::new(&cb, c_row).at(c_offset);
        out.accumulate = case.accumulate;
        kernels::gemm(batch, m, n, k, a_op, b_op, out);
    });
    let got = read(ctx, &cb, c_len);
    let mut want = f64s(&c0);
    let mut tol = vec![0.0; c_len];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            let mut abs = 0.0f64;
            for kk in 0..k {
                let av = a[a_offset + i * a_row + kk * a_col] as f64;
                let bv = if case.b_transposed {
                    b_seen[j * k + kk]
                } else {
                    b_seen[kk * n + j]
                } as f64;
                s += av * bv;
                abs += (av * bv).abs();
            }
            let at = c_offset + i * c_row + j;
            if case.accumulate {
                abs += want[at].abs();
                s += want[at];
            }
            want[at] = s;
            tol[at] = 4.0 * EPS * ((k as f64).sqrt() + 1.0) * abs + 1e-30;
        }
    }
    // Untouched elements (tolerance 0) must come back bit for bit.
    assert_close(&format!("gemm {case:?}"), &got, &want, |i| tol[i]);
}

#[test]
fn gemm_matches_cpu() {
    let ctx = context(None);
    let mut rng = Rng::new(0x6e11);
    let sizes = [1, 3, 17, 64, 65, 130];
    let formats = [
        WeightFormat::Plain(DType::F32),
        WeightFormat::Plain(DType::F16),
        WeightFormat::Plain(DType::BF16),
    ];
    for i in 0..40 {
        let case = GemmCase {
            m: rng.pick(&sizes),
            n: rng.pick(&sizes),
            k: rng.pick(&[1, 5, 16, 33, 200]),
            a_transposed: rng.bool(),
            b_transposed: rng.bool(),
            format: formats[i % 3],
            accumulate: rng.bool(),
        };
        check_gemm(&ctx, &mut rng, case);
    }
}

/// linear, linear_dx and linear_dw on a weight split into row chunks (a tiny binding limit),
/// against the same products on the CPU.
#[test]
fn linear_layer_gradients_match_cpu_over_row_chunks() {
    let ctx = context(Some(4004));
    let mut rng = Rng::new(0x11ea);
    for &(tokens, outputs, inputs) in &[(7, 45, 33), (70, 130, 19), (1, 9, 64)] {
        for dtype in [DType::F32, DType::F16] {
            let w_values = rng.vec(outputs * inputs, 0.5);
            let bytes: Vec<u8> = match dtype {
                DType::F32 => bytemuck::cast_slice(&w_values).to_vec(),
                _ => w_values
                    .iter()
                    .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                    .collect(),
            };
            let w_seen: Vec<f64> = match dtype {
                DType::F32 => f64s(&w_values),
                _ => w_values
                    .iter()
                    .map(|&v| f16::from_f32(v).to_f64())
                    .collect(),
            };
            let w = ctx
                .upload_matrix("w", dtype, outputs, inputs, &bytes)
                .expect("upload");
            assert!(
                w.chunks.len() > 1 || outputs * inputs * dtype.size() <= 4004,
                "split"
            );
            let x = rng.vec(tokens * inputs, 1.0);
            let dy = rng.vec(tokens * outputs, 1.0);
            let (xb, dyb) = (ctx.upload_f32("x", &x), ctx.upload_f32("dy", &dy));
            // Uploaded, not created: the tiny binding cap is for the weight's chunks only.
            let y = ctx.upload_f32("y", &vec![0.0; tokens * outputs]);
            let dx = ctx.upload_f32("dx", &vec![0.0; tokens * inputs]);
            let dw = ctx.upload_f32("dw", &vec![0.0; outputs * inputs]);
            run(&ctx, |batch| {
                kernels::linear(
                    batch,
                    tokens,
                    Strided::rows(&xb, inputs),
                    &w,
                    Output::new(&y, outputs),
                );
                kernels::linear_dx(
                    batch,
                    tokens,
                    Strided::rows(&dyb, outputs),
                    &w,
                    Output::new(&dx, inputs),
                );
                kernels::linear_dw(
                    batch,
                    tokens,
                    outputs,
                    inputs,
                    (&dyb, 0, outputs),
                    (&xb, 0, inputs),
                    Output::new(&dw, inputs),
                );
            });
            let label = format!("{tokens}×{outputs}×{inputs} {dtype:?}");
            let tol = |k: usize| move |_: usize| 8.0 * EPS * (k as f64).sqrt().max(1.0) * k as f64;
            let want_y: Vec<f64> = (0..tokens * outputs)
                .map(|e| {
                    (0..inputs)
                        .map(|i| {
                            x[(e / outputs) * inputs + i] as f64
                                * w_seen[(e % outputs) * inputs + i]
                        })
                        .sum()
                })
                .collect();
            assert_close(
                &format!("y {label}"),
                &read(&ctx, &y, tokens * outputs),
                &want_y,
                tol(inputs),
            );
            let want_dx: Vec<f64> = (0..tokens * inputs)
                .map(|e| {
                    (0..outputs)
                        .map(|o| {
                            dy[(e / inputs) * outputs + o] as f64 * w_seen[o * inputs + e % inputs]
                        })
                        .sum()
                })
                .collect();
            assert_close(
                &format!("dx {label}"),
                &read(&ctx, &dx, tokens * inputs),
                &want_dx,
                tol(outputs),
            );
            let want_dw: Vec<f64> = (0..outputs * inputs)
                .map(|e| {
                    (0..tokens)
                        .map(|t| {
                            dy[t * outputs + e / inputs] as f64 * x[t * inputs + e % inputs] as f64
                        })
                        .sum()
                })
                .collect();
            assert_close(
                &format!("dw {label}"),
                &read(&ctx, &dw, outputs * inputs),
                &want_dw,
                tol(tokens),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cross-entropy

fn cross_entropy_cpu(z: &[f64], target: usize) -> f64 {
    let top = z.iter().cloned().fold(f64::MIN, f64::max);
    let sum: f64 = z.iter().map(|v| (v - top).exp()).sum();
    sum.ln() + top - z[target]
}

#[test]
fn cross_entropy_matches_cpu_and_finite_differences() {
    let ctx = context(None);
    let mut rng = Rng::new(0xce);
    for &(tokens, vocab) in &[(1, 7), (5, 300), (33, 1000), (3, 4099)] {
        let logits = rng.vec(tokens * vocab, 8.0);
        let targets: Vec<u32> = (0..tokens)
            .map(|t| {
                if t % 4 == 3 {
                    kernels::IGNORE
                } else {
                    rng.below(vocab) as u32
                }
            })
            .collect();
        let counted = targets
            .iter()
            .filter(|&&t| t != kernels::IGNORE)
            .count()
            .max(1);
        let scale = 1.0 / counted as f32;
        let zb = ctx.upload_f32("logits", &logits);
        let tb = ctx.upload_u32("targets", &targets);
        let lb = ctx.create_storage("losses", tokens).expect("losses");
        run(&ctx, |batch| {
            kernels::cross_entropy(batch, &zb, &tb, &lb, tokens, vocab, scale)
        });
        let losses = read(&ctx, &lb, tokens);
        let dz = read(&ctx, &zb, tokens * vocab);
        for t in 0..tokens {
            let row = f64s(&logits[t * vocab..(t + 1) * vocab]);
            let label = format!("{tokens}×{vocab} token {t}");
            if targets[t] == kernels::IGNORE {
                assert_eq!(losses[t], 0.0, "{label}: ignored loss");
                assert!(
                    dz[t * vocab..(t + 1) * vocab].iter().all(|&g| g == 0.0),
                    "{label}: ignored dz"
                );
                continue;
            }
            let target = targets[t] as usize;
            let want = cross_entropy_cpu(&row, target);
            assert!(
                (losses[t] as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{label}: loss {} want {want}",
                losses[t]
            );
            let top = row.iter().cloned().fold(f64::MIN, f64::max);
            let sum: f64 = row.iter().map(|v| (v - top).exp()).sum();
            let grad: Vec<f64> = (0..vocab)
                .map(|i| {
                    scale as f64
                        * ((row[i] - top).exp() / sum - if i == target { 1.0 } else { 0.0 })
                })
                .collect();
            assert_close(
                &format!("dz {label}"),
                &dz[t * vocab..(t + 1) * vocab],
                &grad,
                |_| 1e-6 * scale as f64,
            );
            let loss = |z: &[f64]| scale as f64 * cross_entropy_cpu(z, target);
            check_gradient(&label, &loss, &row, &grad, &mut rng);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm backward

fn rms_norm_cpu(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * r * g).collect()
}

#[test]
fn rms_norm_backward_matches_cpu_and_finite_differences() {
    let ctx = context(None);
    let mut rng = Rng::new(0x4e);
    let eps = 1e-5;
    for &(tokens, dim) in &[(1, 5), (9, 64), (4, 129), (3, 1000)] {
        for accumulate in [false, true] {
            let x = rng.vec(tokens * dim, 2.0);
            let w = rng.vec(dim, 1.5);
            let dy = rng.vec(tokens * dim, 1.0);
            let dx0 = rng.vec(tokens * dim, 1.0);
            let (xb, wb, dyb, dxb) = (
                ctx.upload_f32("x", &x),
                ctx.upload_f32("w", &w),
                ctx.upload_f32("dy", &dy),
                ctx.upload_f32("dx", &dx0),
            );
            run(&ctx, |batch| {
                kernels::rms_norm_backward(
                    batch, &xb, &wb, &dyb, &dxb, tokens, dim, eps, accumulate,
                )
            });
            let got = read(&ctx, &dxb, tokens * dim);
            let wf = f64s(&w);
            for t in 0..tokens {
                let xt = f64s(&x[t * dim..(t + 1) * dim]);
                let dyt = f64s(&dy[t * dim..(t + 1) * dim]);
                let ms = xt.iter().map(|v| v * v).sum::<f64>() / dim as f64;
                let r = 1.0 / (ms + eps as f64).sqrt();
                let dot: f64 = (0..dim).map(|i| xt[i] * wf[i] * dyt[i]).sum::<f64>() / dim as f64;
                let grad: Vec<f64> = (0..dim)
                    .map(|i| r * wf[i] * dyt[i] - xt[i] * r * r * r * dot)
                    .collect();
                let label = format!("{tokens}×{dim} token {t} accumulate {accumulate}");
                let f = |x: &[f64]| {
                    rms_norm_cpu(x, &wf, eps as f64)
                        .iter()
                        .zip(&dyt)
                        .map(|(y, d)| y * d)
                        .sum::<f64>()
                };
                check_gradient(&label, &f, &xt, &grad, &mut rng);
                let want: Vec<f64> = (0..dim)
                    .map(|i| {
                        grad[i]
                            + if accumulate {
                                dx0[t * dim + i] as f64
                            } else {
                                0.0
                            }
                    })
                    .collect();
                let scale = grad.iter().fold(1.0f64, |m, g| m.max(g.abs()));
                assert_close(&label, &got[t * dim..(t + 1) * dim], &want, |_| {
                    1e-5 * scale
                });
            }
        }
    }
}

/// qwen3's per-head q/k norm: rows of head_dim read from a strided q|k|v buffer at an offset,
/// the weight from its half of the stacked pair.
#[test]
fn head_rms_norm_backward_matches_cpu_and_finite_differences() {
    let ctx = context(None);
    let mut rng = Rng::new(0x4f);
    let eps = 1e-6;
    // (tokens, heads, head_dim, stride, offset, weight offset)
    for &(tokens, heads, hd, stride, offset, w_off) in &[
        (1, 1, 2, 6, 0, 0),
        (3, 4, 16, 96, 0, 0),
        (5, 2, 16, 96, 64, 16),
        (2, 3, 130, 400, 7, 130),
        (9, 1, 64, 128, 64, 64),
    ] {
        let x = rng.vec(tokens * stride, 2.0);
        let w = rng.vec(w_off + hd, 1.5);
        let dy = rng.vec(tokens * heads * hd, 1.0);
        let dx0 = rng.vec(tokens * heads * hd + 5, 1.0);
        let (xb, wb, dyb, dxb) = (
            ctx.upload_f32("x", &x),
            ctx.upload_f32("w", &w),
            ctx.upload_f32("dy", &dy),
            ctx.upload_f32("dx", &dx0),
        );
        let input = kernels::HeadNormInput {
            x: &xb,
            tokens,
            heads,
            head_dim: hd,
            stride,
            offset,
            weight: &wb,
            weight_offset: w_off,
        };
        run(&ctx, |batch| {
            kernels::head_rms_norm_backward(batch, input, &dyb, &dxb, eps)
        });
        let got = read(&ctx, &dxb, tokens * heads * hd + 5);
        let wf = f64s(&w[w_off..]);
        for t in 0..tokens {
            for head in 0..heads {
                let at = t * stride + offset + head * hd;
                let row = (t * heads + head) * hd;
                let xt = f64s(&x[at..at + hd]);
                let dyt = f64s(&dy[row..row + hd]);
                let ms = xt.iter().map(|v| v * v).sum::<f64>() / hd as f64;
                let r = 1.0 / (ms + eps as f64).sqrt();
                let dot: f64 = (0..hd).map(|i| xt[i] * wf[i] * dyt[i]).sum::<f64>() / hd as f64;
                let grad: Vec<f64> = (0..hd)
                    .map(|i| r * wf[i] * dyt[i] - xt[i] * r * r * r * dot)
                    .collect();
                let label = format!("{tokens}×{heads}×{hd} stride {stride} token {t} head {head}");
                let f = |x: &[f64]| {
                    rms_norm_cpu(x, &wf, eps as f64)
                        .iter()
                        .zip(&dyt)
                        .map(|(y, d)| y * d)
                        .sum::<f64>()
                };
                check_gradient(&label, &f, &xt, &grad, &mut rng);
                let scale = grad.iter().fold(1.0f64, |m, g| m.max(g.abs()));
                assert_close(&label, &got[row..row + hd], &grad, |_| 1e-5 * scale);
            }
        }
        // Past the rows: untouched.
        let n = tokens * heads * hd;
        assert_eq!(&got[n..], &dx0[n..], "tail");
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU backward

fn silu(g: f64) -> f64 {
    g / (1.0 + (-g).exp())
}

#[test]
fn swiglu_backward_matches_cpu_and_finite_differences() {
    let ctx = context(None);
    let mut rng = Rng::new(0x5e);
    for &pairs in &[1, 7, 256, 1001] {
        let mut gu = rng.vec(2 * pairs, 6.0);
        // Gates far out, where the sigmoid saturates, too.
        gu[0] = 60.0;
        if pairs > 1 {
            gu[2] = -60.0;
        }
        let dh = rng.vec(pairs, 1.0);
        let (gub, dhb) = (ctx.upload_f32("gu", &gu), ctx.upload_f32("dh", &dh));
        let dgu = ctx.create_storage("dgu", 2 * pairs).expect("dgu");
        run(&ctx, |batch| {
            kernels::swiglu_pairs_backward(batch, &gub, &dhb, &dgu, pairs)
        });
        let got = read(&ctx, &dgu, 2 * pairs);
        let x = f64s(&gu);
        let dhf = f64s(&dh);
        let f = |x: &[f64]| {
            (0..pairs)
                .map(|i| dhf[i] * silu(x[2 * i]) * x[2 * i + 1])
                .sum::<f64>()
        };
        let grad: Vec<f64> = (0..2 * pairs)
            .map(|e| {
                let (g, up, d) = (x[e & !1], x[e | 1], dhf[e / 2]);
                let s = 1.0 / (1.0 + (-g).exp());
                if e % 2 == 0 {
                    d * up * s * (1.0 + g * (1.0 - s))
                } else {
                    d * silu(g)
                }
            })
            .collect();
        check_gradient(&format!("swiglu {pairs}"), &f, &x, &grad, &mut rng);
        assert_close(&format!("swiglu {pairs}"), &got, &grad, |e| {
            1e-5 * grad[e].abs().max(1.0)
        });
    }
}

// ---------------------------------------------------------------------------------------------
// MoE: dense routing, combine, and the router's gradient with both routing losses

/// Softmax over experts, the top k (ties to the lower id) and the gates.
fn route_cpu(z: &[f64], top_k: usize, renormalize: bool) -> (Vec<f64>, Vec<f64>, u32) {
    let top = z.iter().cloned().fold(f64::MIN, f64::max);
    let sum: f64 = z.iter().map(|v| (v - top).exp()).sum();
    let probs: Vec<f64> = z.iter().map(|v| (v - top).exp() / sum).collect();
    let mut order: Vec<usize> = (0..z.len()).collect();
    order.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
    let bits = order[..top_k].iter().fold(0u32, |m, &e| m | (1 << e));
    let kept: f64 = order[..top_k].iter().map(|&e| probs[e]).sum();
    let gates = (0..z.len())
        .map(|e| match ((bits >> e) & 1 == 1, renormalize) {
            (false, _) => 0.0,
            (true, true) => probs[e] / kept,
            (true, false) => probs[e],
        })
        .collect();
    (probs, gates, bits)
}

#[test]
fn route_combine_and_combine_backward_match_cpu() {
    let ctx = context(None);
    let mut rng = Rng::new(0x30e);
    for &(tokens, experts, top_k, dim, renormalize) in &[
        (1, 2, 1, 3, true),
        (37, 3, 2, 64, true),
        (70, 7, 3, 33, false),
        (5, 32, 4, 129, true),
    ] {
        let s = MoeShape {
            tokens,
            experts,
            top_k,
            renormalize,
            dim,
        };
        let logits = rng.vec(tokens * experts, 3.0);
        let ye = rng.vec(experts * tokens * dim, 1.0);
        let dy = rng.vec(tokens * dim, 1.0);
        let hidden0 = rng.vec(tokens * dim, 1.0);
        let zb = ctx.upload_f32("logits", &logits);
        let (probs, gates, chosen) = (
            ctx.create_storage("probs", tokens * experts)
                .expect("probs"),
            ctx.create_storage("gates", tokens * experts)
                .expect("gates"),
            ctx.create_storage("chosen", tokens).expect("chosen"),
        );
        let yeb = ctx.upload_f32("ye", &ye);
        let hidden = ctx.upload_f32("hidden", &hidden0);
        let dyb = ctx.upload_f32("dy", &dy);
        let dye = ctx
            .create_storage("dye", experts * tokens * dim)
            .expect("dye");
        let dgates = ctx
            .create_storage("dgates", tokens * experts)
            .expect("dgates");
        run(&ctx, |batch| {
            let r = Routing {
                probs: &probs,
                gates: &gates,
                chosen: &chosen,
            };
            kernels::route_dense(batch, s, &zb, r);
            kernels::combine(batch, s, &yeb, &gates, &hidden, true);
            kernels::combine_backward(batch, s, &dyb, &yeb, &gates, &dye, &dgates);
        });
        let label = format!("{s:?}");
        let (got_p, got_g, got_c) = (
            read(&ctx, &probs, tokens * experts),
            read(&ctx, &gates, tokens * experts),
            read_u32(&ctx, &chosen, tokens),
        );
        let (got_h, got_dye, got_dg) = (
            read(&ctx, &hidden, tokens * dim),
            read(&ctx, &dye, experts * tokens * dim),
            read(&ctx, &dgates, tokens * experts),
        );
        for t in 0..tokens {
            let (p, g, bits) = route_cpu(
                &f64s(&logits[t * experts..(t + 1) * experts]),
                top_k,
                renormalize,
            );
            assert_eq!(got_c[t], bits, "{label}: token {t}'s experts");
            assert_close(
                &format!("probs {label}"),
                &got_p[t * experts..(t + 1) * experts],
                &p,
                |_| 1e-6,
            );
            assert_close(
                &format!("gates {label}"),
                &got_g[t * experts..(t + 1) * experts],
                &g,
                |_| 1e-6,
            );
            for d in 0..dim {
                let y: f64 = (0..experts)
                    .map(|e| g[e] * ye[(e * tokens + t) * dim + d] as f64)
                    .sum();
                let want = hidden0[t * dim + d] as f64 + y;
                assert!(
                    (got_h[t * dim + d] as f64 - want).abs() < 1e-5,
                    "{label}: hidden[{t}, {d}]"
                );
                for (e, gate) in g.iter().enumerate() {
                    let at = (e * tokens + t) * dim + d;
                    let want = gate * dy[t * dim + d] as f64;
                    assert!(
                        (got_dye[at] as f64 - want).abs() < 1e-6,
                        "{label}: dye[{e}, {t}, {d}]"
                    );
                }
            }
            for e in 0..experts {
                let want: f64 = (0..dim)
                    .map(|d| dy[t * dim + d] as f64 * ye[(e * tokens + t) * dim + d] as f64)
                    .sum();
                let tol = 8.0 * EPS * (dim as f64).sqrt() * dim as f64;
                assert!(
                    (got_dg[t * experts + e] as f64 - want).abs() <= tol,
                    "{label}: dgates[{t}, {e}]"
                );
            }
        }
    }
}

/// One layer's routing loss on the CPU as the trainer defines it, for finite differences:
/// Σ_t ⟨dg_t, gates(z_t)⟩ (the gates' share of the LM loss, linearised) + the load-balancing
/// term c · E · Σ_i f_i · P_i (f fixed) + Σ_t −λ_t · log p_0(z_t).
struct RouterLossCase {
    tokens: usize,
    experts: usize,
    top_k: usize,
    renormalize: bool,
    dgates: Vec<f64>,
    fractions: Vec<f64>,
    lb_coefficient: f64,
    lpr: Option<Vec<f64>>,
}

impl RouterLossCase {
    fn loss(&self, z: &[f64]) -> f64 {
        let (t_n, e_n) = (self.tokens, self.experts);
        let mut total = 0.0;
        let mut mean_p = vec![0.0; e_n];
        for t in 0..t_n {
            let (p, g, _) = route_cpu(&z[t * e_n..(t + 1) * e_n], self.top_k, self.renormalize);
            total += (0..e_n)
                .map(|e| self.dgates[t * e_n + e] * g[e])
                .sum::<f64>();
            for e in 0..e_n {
                mean_p[e] += p[e] / t_n as f64;
            }
            if let Some(lpr) = &self.lpr {
                total -= lpr[t] * p[0].ln();
            }
        }
        total
            + self.lb_coefficient
                * e_n as f64
                * (0..e_n).map(|e| self.fractions[e] * mean_p[e]).sum::<f64>()
    }
}

#[test]
fn router_backward_matches_cpu_and_finite_differences() {
    let ctx = context(None);
    let mut rng = Rng::new(0x7b);
    for &(tokens, experts, top_k, renormalize, lpr) in &[
        (1, 2, 1, true, false),
        (33, 3, 2, true, true),
        (65, 5, 2, false, true),
        (9, 32, 4, true, false),
    ] {
        let s = MoeShape {
            tokens,
            experts,
            top_k,
            renormalize,
            dim: 1,
        };
        // Logits at least 0.05 apart within a token, so a finite difference never changes the choice.
        let mut logits = Vec::new();
        for _ in 0..tokens {
            let mut order: Vec<usize> = (0..experts).collect();
            for i in (1..experts).rev() {
                order.swap(i, rng.below(i + 1));
            }
            logits.extend(
                order
                    .iter()
                    .map(|&r| r as f32 * 0.4 - 1.0 + rng.f32() * 0.15),
            );
        }
        let dgates = rng.vec(tokens * experts, 1.0);
        let lpr_weight: Vec<f32> = (0..tokens)
            .map(|t| if t % 3 == 0 { 0.0 } else { 0.1 / tokens as f32 })
            .collect();
        let zb = ctx.upload_f32("logits", &logits);
        let (probs, gates, chosen, fractions) = (
            ctx.create_storage("probs", tokens * experts)
                .expect("probs"),
            ctx.create_storage("gates", tokens * experts)
                .expect("gates"),
            ctx.create_storage("chosen", tokens).expect("chosen"),
            ctx.create_storage("fractions", experts).expect("fractions"),
        );
        let dgb = ctx.upload_f32("dgates", &dgates);
        let lprb = ctx.upload_f32("lpr", &lpr_weight);
        let dz = ctx
            .create_storage("dlogits", tokens * experts)
            .expect("dlogits");
        let lb_coefficient = 0.01f64;
        let lb_scale = (lb_coefficient * experts as f64 / tokens as f64) as f32;
        run(&ctx, |batch| {
            let r = Routing {
                probs: &probs,
                gates: &gates,
                chosen: &chosen,
            };
            kernels::route_dense(batch, s, &zb, r);
            kernels::route_fractions(batch, s, &chosen, &fractions);
            let losses = RouterLosses {
                fractions: &fractions,
                lb_scale,
                lpr_weight: lpr.then_some(&lprb),
            };
            kernels::router_backward(batch, s, r, &dgb, losses, &dz);
        });
        let label = format!("{s:?} lpr {lpr}");
        let bits: Vec<u32> = (0..tokens)
            .map(|t| {
                route_cpu(
                    &f64s(&logits[t * experts..(t + 1) * experts]),
                    top_k,
                    renormalize,
                )
                .2
            })
            .collect();
        let want_fractions: Vec<f64> = (0..experts)
            .map(|e| bits.iter().filter(|&&b| (b >> e) & 1 == 1).count() as f64 / tokens as f64)
            .collect();
        assert_close(
            &format!("fractions {label}"),
            &read(&ctx, &fractions, experts),
            &want_fractions,
            |_| 1e-7,
        );
        let case = RouterLossCase {
            tokens,
            experts,
            top_k,
            renormalize,
            dgates: f64s(&dgates),
            fractions: want_fractions,
            lb_coefficient,
            lpr: lpr.then(|| f64s(&lpr_weight)),
        };
        // The analytic gradient, from the formulas the kernel implements, checked against
        // finite differences of the loss before the GPU is compared with it.
        let z = f64s(&logits);
        let mut grad = vec![0.0; tokens * experts];
        for t in 0..tokens {
            let row = t * experts;
            let (p, g, b) = route_cpu(&z[row..row + experts], top_k, renormalize);
            let on = |e: usize| (b >> e) & 1 == 1;
            let weight = |e: usize| if renormalize { g[e] } else { p[e] };
            let chosen_sum: f64 = (0..experts)
                .filter(|&e| on(e))
                .map(|e| weight(e) * case.dgates[row + e])
                .sum();
            let balance: f64 = (0..experts).map(|e| case.fractions[e] * p[e]).sum();
            for e in 0..experts {
                let dg = if on(e) { case.dgates[row + e] } else { 0.0 };
                let mut d = if renormalize {
                    if on(e) {
                        g[e] * (dg - chosen_sum)
                    } else {
                        0.0
                    }
                } else {
                    p[e] * (dg - chosen_sum)
                };
                d += lb_scale as f64 * p[e] * (case.fractions[e] - balance);
                if let Some(l) = &case.lpr {
                    d += l[t] * (p[e] - if e == 0 { 1.0 } else { 0.0 });
                }
                grad[row + e] = d;
            }
        }
        check_gradient(&label, &|z| case.loss(z), &z, &grad, &mut rng);
        assert_close(
            &format!("dlogits {label}"),
            &read(&ctx, &dz, tokens * experts),
            &grad,
            |_| 2e-6,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// gradient norm, clipping and AdamW

#[test]
fn adamw_with_clipping_matches_pytorch_semantics() {
    let ctx = context(None);
    let mut rng = Rng::new(0xada);
    let sizes = [1usize, 300, 70_001];
    let params0: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec(n, 1.0)).collect();
    let pb: Vec<wgpu::Buffer> = params0.iter().map(|p| ctx.upload_f32("p", p)).collect();
    let gb: Vec<wgpu::Buffer> = sizes
        .iter()
        .map(|&n| ctx.create_storage("g", n).expect("g"))
        .collect();
    let mb: Vec<wgpu::Buffer> = sizes
        .iter()
        .map(|&n| ctx.create_storage("m", n).expect("m"))
        .collect();
    let vb: Vec<wgpu::Buffer> = sizes
        .iter()
        .map(|&n| ctx.create_storage("v", n).expect("v"))
        .collect();
    let partials = ctx
        .create_storage("partials", sizes.len() * kernels::NORM_PARTIALS)
        .expect("partials");
    let norm = ctx.create_storage("norm", 2).expect("norm");
    let mut cpu_p: Vec<Vec<f64>> = params0.iter().map(|p| f64s(p)).collect();
    let mut cpu_m: Vec<Vec<f64>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
    let mut cpu_v = cpu_m.clone();
    // Large gradients (clipped) in some steps, small ones (not) in others; no clip at all in one.
    for (step, (grad_scale, max_norm)) in [(5.0f32, 1.0f32), (0.001, 1.0), (3.0, 0.0), (0.5, 2.0)]
        .iter()
        .enumerate()
    {
        let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec(n, *grad_scale)).collect();
        for (b, g) in gb.iter().zip(&grads) {
            ctx.queue.write_buffer(b, 0, bytemuck::cast_slice(g));
        }
        let s = AdamwStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            step: step as u32 + 1,
        };
        run(&ctx, |batch| {
            for (i, (g, &n)) in gb.iter().zip(&sizes).enumerate() {
                kernels::sum_squares(batch, g, n, i, &partials);
            }
            kernels::clip_scale(batch, &partials, sizes.len(), &norm, *max_norm);
            for i in 0..sizes.len() {
                let t = AdamwBuffers {
                    params: &pb[i],
                    grads: &gb[i],
                    m: &mb[i],
                    v: &vb[i],
                    count: sizes[i],
                };
                kernels::adamw(batch, s, t, &norm);
            }
        });
        // torch.nn.utils.clip_grad_norm_ then torch.optim.AdamW's step, in f64.
        let total: f64 = grads
            .iter()
            .flatten()
            .map(|&g| (g as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let got_norm = read(&ctx, &norm, 2);
        assert!(
            (got_norm[0] as f64 - total).abs() <= 1e-5 * total,
            "step {step}: norm {} want {total}",
            got_norm[0]
        );
        let clip = if *max_norm > 0.0 {
            (*max_norm as f64 / (total + 1e-6)).min(1.0)
        } else {
            1.0
        };
        let t = step as i32 + 1;
        let (b1, b2) = (s.beta1 as f64, s.beta2 as f64);
        for i in 0..sizes.len() {
            for j in 0..sizes[i] {
                let g = grads[i][j] as f64 * clip;
                let p = &mut cpu_p[i][j];
                *p *= 1.0 - s.lr as f64 * s.weight_decay as f64;
                cpu_m[i][j] = b1 * cpu_m[i][j] + (1.0 - b1) * g;
                cpu_v[i][j] = b2 * cpu_v[i][j] + (1.0 - b2) * g * g;
                let denom = cpu_v[i][j].sqrt() / (1.0 - b2.powi(t)).sqrt() + s.eps as f64;
                *p -= s.lr as f64 / (1.0 - b1.powi(t)) * cpu_m[i][j] / denom;
            }
            let got = read(&ctx, &pb[i], sizes[i]);
            assert_close(
                &format!("params {i} after step {}", step + 1),
                &got,
                &cpu_p[i],
                |_| 2e-5,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// attention

#[derive(Debug, Clone, Copy)]
struct AttnCase {
    seqs: usize,
    seq_len: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// O for packed q [rows, H·D], k and v [rows, KVH·D], causal within each sequence.
fn attention_cpu(c: AttnCase, q: &[f64], k: &[f64], v: &[f64]) -> Vec<f64> {
    let (hd, group) = (c.head_dim, c.heads / c.kv_heads);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut o = vec![0.0; c.seqs * c.seq_len * c.heads * hd];
    for b in 0..c.seqs {
        for h in 0..c.heads {
            let g = h / group;
            for i in 0..c.seq_len {
                let qi = &q[((b * c.seq_len + i) * c.heads + h) * hd..][..hd];
                let s: Vec<f64> = (0..=i)
                    .map(|j| {
                        let kj = &k[((b * c.seq_len + j) * c.kv_heads + g) * hd..][..hd];
                        scale * qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                let top = s.iter().cloned().fold(f64::MIN, f64::max);
                let sum: f64 = s.iter().map(|x| (x - top).exp()).sum();
                for (j, sj) in s.iter().enumerate() {
                    let pj = (sj - top).exp() / sum;
                    for d in 0..hd {
                        o[((b * c.seq_len + i) * c.heads + h) * hd + d] +=
                            pj * v[((b * c.seq_len + j) * c.kv_heads + g) * hd + d];
                    }
                }
            }
        }
    }
    o
}

#[test]
fn attention_forward_and_backward_match_cpu_and_finite_differences() {
    let ctx = context(None);
    let mut rng = Rng::new(0xa77);
    let cases = [
        AttnCase {
            seqs: 1,
            seq_len: 1,
            heads: 1,
            kv_heads: 1,
            head_dim: 4,
        },
        AttnCase {
            seqs: 2,
            seq_len: 7,
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
        },
        AttnCase {
            seqs: 3,
            seq_len: 70,
            heads: 3,
            kv_heads: 1,
            head_dim: 5,
        },
        AttnCase {
            seqs: 1,
            seq_len: 130,
            heads: 2,
            kv_heads: 2,
            head_dim: 65,
        },
    ];
    for c in cases {
        let rows = c.seqs * c.seq_len;
        let (qn, kn) = (rows * c.heads * c.head_dim, rows * c.kv_heads * c.head_dim);
        let (q, k, v, d_o) = (
            rng.vec(qn, 1.5),
            rng.vec(kn, 1.5),
            rng.vec(kn, 1.0),
            rng.vec(qn, 1.0),
        );
        let (qb, kb, vb, dob) = (
            ctx.upload_f32("q", &q),
            ctx.upload_f32("k", &k),
            ctx.upload_f32("v", &v),
            ctx.upload_f32("do", &d_o),
        );
        let o = ctx.create_storage("o", qn).expect("o");
        let lse = ctx.create_storage("lse", rows * c.heads).expect("lse");
        let delta = ctx.create_storage("delta", rows * c.heads).expect("delta");
        let (dq, dk, dv) = (
            ctx.create_storage("dq", qn).expect("dq"),
            ctx.create_storage("dk", kn).expect("dk"),
            ctx.create_storage("dv", kn).expect("dv"),
        );
        let input = kernels::AttentionInput {
            seqs: c.seqs,
            seq_len: c.seq_len,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            q: Strided::rows(&qb, c.heads * c.head_dim),
            k: Strided::rows(&kb, c.kv_heads * c.head_dim),
            v: Strided::rows(&vb, c.kv_heads * c.head_dim),
        };
        run(&ctx, |batch| {
            kernels::attention_forward(batch, input, &o, &lse);
            let grads = kernels::AttentionGrads {
                o: &o,
                lse: &lse,
                d_o: &dob,
                delta: &delta,
                dq: &dq,
                dk: &dk,
                dv: &dv,
            };
            kernels::attention_backward(batch, input, grads);
        });
        let label = format!("{c:?}");
        let (qf, kf, vf, dof) = (f64s(&q), f64s(&k), f64s(&v), f64s(&d_o));
        let want_o = attention_cpu(c, &qf, &kf, &vf);
        assert_close(&format!("o {label}"), &read(&ctx, &o, qn), &want_o, |_| {
            1e-5
        });
        // The gradients against finite differences of L = Σ dO · O, element by element (the
        // CPU forward in f64 is exact enough for central differences).
        let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
            attention_cpu(c, q, k, v)
                .iter()
                .zip(&dof)
                .map(|(a, b)| a * b)
                .sum()
        };
        let got_dq = read(&ctx, &dq, qn);
        let got_dk = read(&ctx, &dk, kn);
        let got_dv = read(&ctx, &dv, kn);
        for (name, got, which) in [("dq", &got_dq, 0), ("dk", &got_dk, 1), ("dv", &got_dv, 2)] {
            // Every element of the small cases, a sample of the large ones.
            let picks: Vec<usize> = if rows <= 14 {
                (0..got.len()).collect()
            } else {
                (0..16).map(|_| rng.below(got.len())).collect()
            };
            for i in picks {
                let f = |x: &[f64]| match which {
                    0 => loss(x, &kf, &vf),
                    1 => loss(&qf, x, &vf),
                    _ => loss(&qf, &kf, x),
                };
                let at = [&qf, &kf, &vf][which];
                let numeric = finite_difference(&f, at, i, 1e-5);
                assert!(
                    (got[i] as f64 - numeric).abs() <= 2e-4 * numeric.abs().max(1.0),
                    "{name} {label}: [{i}] got {} finite difference {numeric}",
                    got[i]
                );
            }
        }
    }
}
