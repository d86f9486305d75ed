//! `moegraft graft`: ParamΔ and DeltaMoE on tiny triples built from the fixtures, checked
//! against an independent CPU computation of t + α·(inst − base), plus the mismatch report,
//! the carried tokenizer settings, moegraft.json and the CLI.

mod common;
mod graft_models;

use std::path::{Path, PathBuf};
use std::process::Command;

use graft_models::{base, noise, tiny, upcycled, upcycled_with, Model, EXPERTS};
use moegraft::checkpoint::config::{ExpertProj, MoeLayout};
use moegraft::checkpoint::{dtype, Checkpoint, DType, ModelFiles, Tensor};
use moegraft::gpu::kernels::{self, GraftPipelines, Packed};
use moegraft::gpu::{Batch, GpuContext, GpuOptions};
use moegraft::graft::export::GraftSummary;
use moegraft::graft::gpu::{graft_tensor, DeltaSources, GraftStream, OutputTensor, Source};
use moegraft::graft::plan::{GraftOptions, PlannedDelta};
use moegraft::graft::run::{graft_dirs, GraftInputs};
use moegraft::Result;
use sha2::{Digest, Sha256};

fn gpu(max_binding: Option<u64>) -> GpuContext {
    pollster::block_on(GpuContext::new(GpuOptions {
        max_binding_override: max_binding,
        ..Default::default()
    }))
    .expect("GPU")
}

/// The CPU oracle: t + α·(inst − base) in f32, Δ on the first `delta_len` elements only.
fn oracle(t: &[f32], inst: &[f32], base: &[f32], alpha: f32) -> Vec<f32> {
    t.iter()
        .enumerate()
        .map(|(k, &x)| match (inst.get(k), base.get(k)) {
            (Some(i), Some(b)) => x + alpha * (i - b),
            _ => x,
        })
        .collect()
}

/// |a − b| within `ulps` units of `dtype`'s precision at the larger magnitude (the GPU may
/// fuse the multiply-add, and a different f32 can round to a neighbouring 16-bit value).
fn assert_close(what: &str, got: &[f32], want: &[f32], dtype: DType, ulps: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let eps = match dtype {
        DType::F32 => f32::EPSILON,
        DType::F16 => 1.0 / 1024.0,
        DType::BF16 => 1.0 / 128.0,
    };
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = ulps * eps * g.abs().max(w.abs()).max(1e-3);
        assert!((g - w).abs() <= tol, "{what}[{k}]: got {g}, want {w}");
    }
}

struct Dirs {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        Dirs { _tmp: tmp, root }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    fn write(&self, name: &str, model: &Model, dtype: DType) -> PathBuf {
        let dir = self.path(name);
        model.write(&dir, dtype, &tiny("tiny-llama"));
        dir
    }
}

fn run_graft(
    b: &Path,
    i: &Path,
    t: &Path,
    out: &Path,
    options: &GraftOptions,
) -> Result<GraftSummary> {
    let inputs = GraftInputs {
        base: b,
        instruct: i,
        target: t,
    };
    pollster::block_on(graft_dirs(&gpu(None), &inputs, out, options, u64::MAX))
}

fn alpha(a: f32) -> GraftOptions {
    GraftOptions {
        alpha: a,
        ..Default::default()
    }
}

fn read_raw(dir: &Path) -> Vec<Tensor> {
    pollster::block_on(async {
        let cp = Checkpoint::open(ModelFiles::from_dir(dir)?).await?;
        let mut out = Vec::new();
        for name in cp.tensor_names() {
            out.push(cp.read(name).await?);
        }
        Ok::<_, moegraft::Error>(out)
    })
    .expect("read output")
}

fn raw_tensor(dtype: DType, values: &[f32], name: &str) -> Tensor {
    Tensor {
        name: name.into(),
        dtype,
        shape: vec![values.len()],
        bytes: dtype::from_f32(dtype, values),
    }
}

#[test]
fn kernel_matches_cpu_for_every_dtype_combination_in_pieces() {
    // 256-byte bindings: 64 elements a piece, so 301 elements take five pieces, and the Δ
    // boundary (250) falls inside one.
    let ctx = gpu(Some(256));
    let dtypes = [DType::F32, DType::F16, DType::BF16];
    let (count, delta_len, a) = (301, 250, 0.75);
    for (n, &(td, id, bd)) in dtypes
        .iter()
        .flat_map(|&x| dtypes.iter().flat_map(move |&y| dtypes.map(|z| (x, y, z))))
        .collect::<Vec<_>>()
        .iter()
        .enumerate()
    {
        let seed = n as u64 * 3;
        let gen = |s: u64, len: usize| (0..len).map(|k| noise(s, k) * 2.0).collect::<Vec<_>>();
        let t = raw_tensor(td, &gen(seed, count), "t");
        let i = raw_tensor(id, &gen(seed + 1, delta_len), "i");
        let b = raw_tensor(bd, &gen(seed + 2, delta_len), "b");
        let delta = PlannedDelta {
            source: "x".into(),
            alpha: a,
            elements: delta_len,
            appended: 0,
        };
        let want = oracle(&t.to_f32(), &i.to_f32(), &b.to_f32(), a);
        for od in dtypes {
            let what = format!("{td:?}/{id:?}/{bd:?} → {od:?}");
            let bytes =
                pollster::block_on(graft_tensor(&ctx, &t, &i, &b, &delta, od)).expect("graft");
            assert_eq!(bytes.len(), count * od.size(), "{what}");
            let got = dtype::to_f32(od, &bytes);
            // One rounding to the output dtype on top of f32 arithmetic.
            assert_close(
                &what,
                &got,
                &want,
                od,
                if od == DType::F32 { 4.0 } else { 1.0 },
            );
            // The rows beyond Δ are the target's, converted as the host converts them.
            let copied = dtype::from_f32(od, &t.to_f32()[delta_len..]);
            assert_eq!(
                &bytes[delta_len * od.size()..],
                &copied[..],
                "{what}: rows beyond Δ"
            );
        }
    }
}

/// Many tensors of odd lengths and mixed dtypes through one stream whose 1 KiB regions hold
/// several pieces a batch and split the larger tensors across batches: every tensor comes
/// back whole, in order, Δ below its delta length, the instruct model's appended elements
/// after it.
#[test]
fn stream_packs_tensors_into_batches_and_keeps_their_order() {
    let ctx = gpu(Some(1024));
    let dtypes = [DType::F32, DType::F16, DType::BF16];
    // (elements, Δ elements, appended)
    let shapes = [
        (1, 1, 0),
        (7, 7, 0),
        (8, 5, 3),
        (9, 9, 0),
        (33, 20, 0),
        (100, 100, 0),
        (257, 250, 9),
        (3, 0, 0),
        (64, 64, 0),
        (130, 129, 1),
        (5, 5, 0),
        (511, 511, 0),
    ];
    for (round, od) in dtypes.into_iter().enumerate() {
        let gen = |s: u64, len: usize| (0..len).map(|k| noise(s, k) * 3.0).collect::<Vec<_>>();
        let mut inputs = Vec::new();
        for (n, &(count, elements, appended)) in shapes.iter().enumerate() {
            let seed = (round * 100 + n * 3) as u64;
            let pick = |k: usize| dtypes[(n + k + round) % 3];
            let t = raw_tensor(pick(0), &gen(seed, count), "t");
            let i = raw_tensor(pick(1), &gen(seed + 1, elements + appended), "i");
            let b = raw_tensor(pick(2), &gen(seed + 2, elements), "b");
            let delta = PlannedDelta {
                source: "x".into(),
                alpha: 0.5 + n as f32 / 8.0,
                elements,
                appended,
            };
            inputs.push((t, i, b, delta));
        }
        let mut got: Vec<Vec<u8>> = vec![Vec::new(); shapes.len()];
        let mut order = Vec::new();
        let mut sink = |index: usize, bytes: &[u8]| -> Result<()> {
            order.push(index);
            got[index].extend_from_slice(bytes);
            Ok(())
        };
        let mut stream = GraftStream::new(&ctx, od, 1 << 20, &mut sink).expect("stream");
        for (n, (t, i, b, delta)) in inputs.iter().enumerate() {
            let tensor = OutputTensor {
                target: Source::Memory(t),
                delta: Some(DeltaSources {
                    instruct: Source::Memory(i),
                    base: Source::Memory(b),
                    delta,
                }),
            };
            pollster::block_on(stream.push(n, &tensor)).expect("push");
        }
        pollster::block_on(stream.finish()).expect("finish");
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{od:?}: {order:?}");
        assert!(
            order.len() > shapes.len(),
            "{od:?}: large tensors come in pieces"
        );
        for (n, (t, i, b, delta)) in inputs.iter().enumerate() {
            let what = format!("{od:?}: tensor {n}");
            let inst = i.to_f32();
            let mut want = oracle(
                &t.to_f32(),
                &inst[..delta.elements],
                &b.to_f32(),
                delta.alpha,
            );
            want.extend_from_slice(&inst[delta.elements..]);
            let ulps = if od == DType::F32 { 4.0 } else { 1.0 };
            assert_close(&what, &dtype::to_f32(od, &got[n]), &want, od, ulps);
        }
    }
}

/// The kernel rounds to f16 and bf16 exactly as the host (the `half` crate) does: ties to
/// even, subnormals, overflow to infinity, infinities, NaN.
#[test]
fn kernel_rounds_to_16_bits_like_the_host() {
    let ctx = gpu(None);
    let f16_unit = 2f32.powi(-24);
    let mut values = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        65504.0,
        65520.0,
        65519.99,
        1e9,
        -1e9,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        1e-8,
        -1e-8,
        f16_unit,
        f16_unit * 0.5,
        f16_unit * 1.5,
        f16_unit * 2.5,
        6.1e-5,
        6.2e-5,
        3.0e-38,
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
    ];
    // And a sweep of odd bit patterns across every exponent.
    values.extend((0..600u32).map(|k| f32::from_bits(k.wrapping_mul(0x9e37_79b1))));
    let count = values.len();
    let t = raw_tensor(DType::F32, &values, "t");
    let none = raw_tensor(DType::F32, &[], "none");
    let delta = PlannedDelta {
        source: "x".into(),
        alpha: 1.0,
        elements: 0,
        appended: 0,
    };
    for od in [DType::F16, DType::BF16] {
        let got =
            pollster::block_on(graft_tensor(&ctx, &t, &none, &none, &delta, od)).expect("graft");
        let want = dtype::from_f32(od, &values);
        for k in 0..count {
            let (g, w) = (&got[2 * k..2 * k + 2], &want[2 * k..2 * k + 2]);
            assert_eq!(
                g,
                w,
                "{od:?}: {:e} ({:#010x})",
                values[k],
                values[k].to_bits()
            );
        }
    }
}

#[test]
fn kernel_adds_delta_only_below_delta_len() {
    // Inputs that do hold values past delta_len, in the same group of eight as the last Δ
    // element: the kernel must leave them out. Every binding starts 256 bytes into its
    // buffer, as the streamed batches place pieces.
    let ctx = gpu(None);
    let count: usize = 100;
    let delta_len = 37;
    let padded = count.div_ceil(8) * 8;
    let at = 64; // words: 256 bytes
    let bits = |s: u64| -> Vec<u32> {
        let mut v = vec![0u32; at];
        v.extend((0..padded).map(|k| noise(s, k).to_bits()));
        v
    };
    let (t, i, b) = (bits(1), bits(2), bits(3));
    let buffers = [&t, &i, &b].map(|v| ctx.upload_u32("x", v));
    let out_buf = ctx.create_storage("out", at + padded).expect("out");
    let mut batch = Batch::new(&ctx);
    let packed = |buffer| Packed {
        buffer,
        offset: 4 * at as u64,
        dtype: DType::F32,
    };
    let mut pipelines = GraftPipelines::default();
    kernels::graft(
        &mut batch,
        &mut pipelines,
        packed(&buffers[0]),
        packed(&buffers[1]),
        packed(&buffers[2]),
        packed(&out_buf),
        count,
        delta_len,
        -1.5,
    )
    .expect("bindings fit");
    batch.submit();
    let got = pollster::block_on(ctx.read_f32(&out_buf, at, count)).expect("read");
    let f = |v: &[u32]| {
        v[at..]
            .iter()
            .map(|x| f32::from_bits(*x))
            .collect::<Vec<_>>()
    };
    let want = oracle(
        &f(&t)[..count],
        &f(&i)[..delta_len],
        &f(&b)[..delta_len],
        -1.5,
    );
    assert_close("graft", &got, &want, DType::F32, 4.0);

    // A buffer one group too short is refused, naming the sizes.
    let short = ctx.upload_u32("short", &t[..at + padded - 8]);
    let e = kernels::graft(
        &mut Batch::new(&ctx),
        &mut pipelines,
        packed(&short),
        packed(&buffers[1]),
        packed(&buffers[2]),
        packed(&out_buf),
        count,
        delta_len,
        1.0,
    )
    .expect_err("too short")
    .to_string();
    assert!(e.contains("cannot bind 416 bytes at 256"), "{e}");
}

#[test]
fn target_equal_to_base_gives_instruct_and_alpha_zero_gives_target() {
    // Llama, qwen3 (its per-head q/k norms are tensors like any other to ParamΔ) and the
    // Qwen MoE layouts, whose routers, shared expert and gate take their own Δ under ParamΔ.
    for b in [
        base(),
        Model::read(&tiny("tiny-qwen3")),
        Model::read(&tiny("tiny-qwen2moe")),
        Model::read(&tiny("tiny-qwen3moe")),
        Model::read(&tiny("tiny-gemma3")),
    ] {
        graft_properties(b);
    }
}

fn graft_properties(b: Model) {
    let d = Dirs::new();
    let bd = d.write("base", &b, DType::F32);
    let id = d.write("inst", &b.perturbed(1, 0.02), DType::F32);
    let out = d.path("out");
    run_graft(&bd, &id, &bd, &out, &alpha(1.0)).expect("graft");
    // b + (i − b) rounds twice in f32, so it may miss i by an ulp or two.
    let inst = read_raw(&id);
    for (got, want) in read_raw(&out).iter().zip(&inst) {
        assert_eq!(got.name, want.name);
        assert_close(&got.name, &got.to_f32(), &want.to_f32(), DType::F32, 2.0);
    }

    let t = d.write("cpt", &b.perturbed(2, 0.02), DType::F16);
    let out0 = d.path("out0");
    run_graft(&bd, &id, &t, &out0, &alpha(0.0)).expect("graft");
    for (got, want) in read_raw(&out0).iter().zip(&read_raw(&t)) {
        assert_eq!(
            (got.dtype, &got.bytes),
            (want.dtype, &want.bytes),
            "{}",
            got.name
        );
    }
}

#[test]
fn paramdelta_matches_cpu_across_input_and_output_dtypes() {
    let d = Dirs::new();
    let b = base();
    let bd = d.write("base", &b, DType::F32);
    let i = b.perturbed(1, 0.03);
    let id = d.write("inst", &i, DType::BF16);
    let t = b.perturbed(2, 0.03);
    let td = d.write("cpt", &t, DType::F16);
    let (bq, iq, tq) = (Model::read(&bd), Model::read(&id), Model::read(&td));
    for out_dtype in [None, Some(DType::F32), Some(DType::BF16)] {
        let out = d.path(&format!("out-{out_dtype:?}"));
        let options = GraftOptions {
            alpha: 0.6,
            dtype: out_dtype,
            ..Default::default()
        };
        let s = run_graft(&bd, &id, &td, &out, &options).expect("graft");
        assert_eq!(s.method.name(), "paramdelta");
        let written = read_raw(&out);
        assert_eq!(written.len(), tq.tensors.len());
        let want_dtype = out_dtype.unwrap_or(DType::F16);
        for w in &written {
            assert_eq!(w.dtype, want_dtype, "{}", w.name);
            let want = oracle(tq.get(&w.name), iq.get(&w.name), bq.get(&w.name), 0.6);
            // The oracle rounded to the output dtype, then compared at that precision.
            let want = dtype::to_f32(want_dtype, &dtype::from_f32(want_dtype, &want));
            assert_close(&w.name, &w.to_f32(), &want, want_dtype, 1.0);
        }
    }
}

#[test]
fn deltamoe_adds_each_experts_alpha_and_keeps_routers() {
    // Mixtral from llama; qwen2_moe from qwen2 with a shared expert as wide as the FFN (Δ's
    // FFN reaches it) and with upcycle's one-unit zero shared expert (kept); qwen3_moe.
    for (dense, wide_shared) in [
        ("tiny-llama", false),
        ("tiny-qwen2", true),
        ("tiny-qwen2", false),
        ("tiny-qwen3", false),
    ] {
        deltamoe_alphas(&Model::read(&tiny(dense)), wide_shared);
    }
}

fn deltamoe_alphas(b: &Model, wide_shared: bool) {
    let d = Dirs::new();
    let i = b.perturbed(5, 0.03);
    let t = upcycled_with(b, 9, wide_shared);
    let layout = match t.config["model_type"].as_str() {
        Some("mixtral") => MoeLayout::Mixtral,
        _ => MoeLayout::Qwen,
    };
    let (bd, id) = (
        d.write("base", b, DType::F32),
        d.write("inst", &i, DType::F32),
    );
    let td = d.write("moe", &t, DType::F32);
    let out = d.path("out");
    let alphas = [1.0, 0.5, 0.0, 2.0];
    let options = GraftOptions {
        alpha: 0.8,
        expert_alpha: Some(alphas.to_vec()),
        dtype: None,
    };
    let s = run_graft(&bd, &id, &td, &out, &options).expect("graft");
    assert_eq!(s.method.name(), "deltamoe");
    let written = read_raw(&out);
    let target_raw = read_raw(&td);
    let (mut experts_seen, mut shared_seen) = (0, 0);
    for (w, traw) in written.iter().zip(&target_raw) {
        assert_eq!(w.name, traw.name);
        let name = w.name.as_str();
        let shared = name.split_once(".mlp.shared_expert.");
        if layout.is_gate(name) || (shared.is_some() && !wide_shared) {
            assert_eq!(w.bytes, traw.bytes, "{name}: copied bit for bit");
            continue;
        }
        let (source, a) = match (layout.parse_expert(name), shared) {
            (Some((l, e, proj)), _) => {
                experts_seen += 1;
                let dense = format!("model.layers.{l}.mlp.{}.weight", proj.dense_name());
                (dense, alphas[e])
            }
            (None, Some((layer, rest))) => {
                shared_seen += 1;
                (format!("{layer}.mlp.{rest}"), 0.8)
            }
            (None, None) => (name.to_string(), 0.8),
        };
        let want = oracle(t.get(name), i.get(&source), b.get(&source), a);
        assert_close(name, &w.to_f32(), &want, DType::F32, 4.0);
    }
    let layers = t.config["num_hidden_layers"].as_u64().unwrap() as usize;
    assert_eq!(experts_seen, layers * EXPERTS * 3);
    assert_eq!(shared_seen, if wide_shared { layers * 3 } else { 0 });
    // The paper's property: expert 0 (the frozen base FFN) with α_0 = 1 is the instruct FFN.
    let e0 = layout.expert(1, 0, ExpertProj::Gate);
    let w1 = written.iter().find(|w| w.name == e0).expect("expert 0");
    let inst_gate = i.get("model.layers.1.mlp.gate_proj.weight");
    assert_close("expert 0", &w1.to_f32(), inst_gate, DType::F32, 2.0);
}

#[test]
fn enlarged_vocabulary_keeps_the_new_rows() {
    let d = Dirs::new();
    let b = base();
    let i = b.perturbed(3, 0.03);
    let extra = 24;
    let t = with_extra_tokens(&b.perturbed(4, 0.03), extra, 77);
    let vocab = t.config["vocab_size"].as_u64().expect("vocab") as usize;
    let cols = t.get("model.embed_tokens.weight").len() / vocab;
    let (bd, id) = (
        d.write("base", &b, DType::F32),
        d.write("inst", &i, DType::F32),
    );
    let td = d.write("cpt", &t, DType::F32);
    let out = d.path("out");
    run_graft(&bd, &id, &td, &out, &alpha(1.0)).expect("graft");
    let got = read_raw(&out)
        .into_iter()
        .find(|x| x.name == "model.embed_tokens.weight")
        .expect("embed");
    assert_eq!(got.shape, vec![vocab, cols]);
    let got = got.to_f32();
    let name = "model.embed_tokens.weight";
    let overlap = (vocab - extra) * cols;
    let want = oracle(t.get(name), i.get(name), b.get(name), 1.0);
    assert_close(
        "overlap",
        &got[..overlap],
        &want[..overlap],
        DType::F32,
        4.0,
    );
    assert_eq!(
        &got[overlap..],
        &t.get(name)[overlap..],
        "new rows kept exactly"
    );
    assert_ne!(&got[..overlap], &t.get(name)[..overlap], "overlap got Δ");
}

#[test]
fn untied_target_of_a_tied_base_gives_lm_head_the_embedding_delta() {
    // The base uses its embedding as output projection; a target that unties it has an
    // lm_head whose Δ can only be the embedding's.
    let d = Dirs::new();
    let b = base();
    let i = b.perturbed(3, 0.03);
    let t = untied(&b.perturbed(4, 0.03), 99);
    let embed = "model.embed_tokens.weight";
    let (bd, id) = (
        d.write("base", &b, DType::F32),
        d.write("inst", &i, DType::F32),
    );
    let td = d.write("cpt", &t, DType::F32);
    let out = d.path("out");
    run_graft(&bd, &id, &td, &out, &alpha(1.0)).expect("graft");
    let got = read_raw(&out);
    for name in ["lm_head.weight", embed] {
        let w = got.iter().find(|x| x.name == name).expect("tensor");
        let want = oracle(t.get(name), i.get(embed), b.get(embed), 1.0);
        assert_close(name, &w.to_f32(), &want, DType::F32, 4.0);
    }
}

/// `model` with `extra` more token rows in its embedding (and lm_head, if untied).
fn with_extra_tokens(model: &Model, extra: usize, seed: u64) -> Model {
    let mut m = model.clone();
    for t in m
        .tensors
        .iter_mut()
        .filter(|t| t.0 == "model.embed_tokens.weight" || t.0 == "lm_head.weight")
    {
        let cols = t.1[1];
        t.1[0] += extra;
        t.2.extend((0..extra * cols).map(|k| noise(seed, k) * 0.3));
    }
    let vocab = m.config["vocab_size"].as_u64().expect("vocab") as usize + extra;
    m.config["vocab_size"] = vocab.into();
    m
}

/// `model` with an lm_head of its own (a perturbed copy of the embedding), untied.
fn untied(model: &Model, seed: u64) -> Model {
    let mut m = model.clone();
    let mut head = m
        .tensors
        .iter()
        .find(|x| x.0 == "model.embed_tokens.weight")
        .expect("embed")
        .clone();
    head.0 = "lm_head.weight".into();
    graft_models::perturb(&mut head.2, seed, 0.1);
    m.tensors.push(head);
    m.config["tie_word_embeddings"] = false.into();
    m
}

#[test]
fn the_manifest_records_the_routing_mode_the_output_keeps() {
    let d = Dirs::new();
    let b = base();
    let (bd, id) = (
        d.write("base", &b, DType::F32),
        d.write("inst", &b.perturbed(3, 0.03), DType::F32),
    );
    for (mode, want) in [
        (None, "learned"),
        (Some("language-prior"), "language-prior"),
    ] {
        let mut t = upcycled(&b, 9);
        if let Some(mode) = mode {
            t.config["moegraft"] = serde_json::json!({
                "expert_languages": [["en"], ["de"], ["ja"], ["ru"]],
                "router": mode,
            });
        }
        let td = d.write(&format!("moe-{want}"), &t, DType::F32);
        let out = d.path(&format!("out-{want}"));
        run_graft(&bd, &id, &td, &out, &alpha(1.0)).expect("graft");
        let m = common::json(&out.join("moegraft.json"));
        assert_eq!(m["router_mode"], want);
        let config = common::json(&out.join("config.json"));
        assert_eq!(config["moegraft"]["router"], t.config["moegraft"]["router"]);
    }
}

#[test]
fn tied_target_of_an_untied_base_gets_an_lm_head_of_its_own() {
    // θ_target + Δ for a target whose output projection is its embedding: the embedding
    // takes Δ_embed, the output projection Δ_lm_head, so the output unties.
    let d = Dirs::new();
    let b = untied(&base(), 5);
    let i = b.perturbed(6, 0.03);
    let t = base().perturbed(7, 0.03); // tied, like the tiny-llama it comes from
    let (bd, id, td) = (
        d.write("base", &b, DType::F32),
        d.write("inst", &i, DType::F32),
        d.write("cpt", &t, DType::F32),
    );
    let out = d.path("out");
    run_graft(&bd, &id, &td, &out, &alpha(1.0)).expect("graft");
    let got = read_raw(&out);
    let embed = "model.embed_tokens.weight";
    for (name, source) in [(embed, embed), ("lm_head.weight", "lm_head.weight")] {
        let w = got.iter().find(|x| x.name == name).expect("tensor");
        let want = oracle(t.get(embed), i.get(source), b.get(source), 1.0);
        assert_close(name, &w.to_f32(), &want, DType::F32, 4.0);
    }
    let config = common::json(&out.join("config.json"));
    assert_eq!(config["tie_word_embeddings"], false, "the output unties");
    // The runtime takes the untied output as it is.
    let opened = common::open(&out);
    let mut session = opened.model.session().expect("session");
    let logits =
        pollster::block_on(opened.model.logits_last(&mut session, &[1, 5, 9])).expect("logits");
    assert!(logits.iter().all(|x| x.is_finite()));
}

#[test]
fn tokens_the_instruct_model_added_are_appended_with_its_tokenizer() {
    let d = Dirs::new();
    let b = base();
    let extra = 8;
    let i = with_extra_tokens(&b.perturbed(3, 0.03), extra, 41);
    let t = b.perturbed(4, 0.03);
    let (bd, id, td) = (
        d.write("base", &b, DType::F32),
        d.write("inst", &i, DType::F32),
        d.write("cpt", &t, DType::F32),
    );
    // The instruct tokenizer knows the added tokens.
    let inst_tokenizer = id.join("tokenizer.json");
    let mut tok = common::json(&inst_tokenizer);
    let vocab = b.config["vocab_size"].as_u64().expect("vocab") as usize;
    let added = tok["added_tokens"].as_array_mut().expect("added_tokens");
    for k in 0..extra {
        added.push(serde_json::json!({
            "id": vocab + k, "content": format!("<|chat_{k}|>"), "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true
        }));
    }
    std::fs::write(&inst_tokenizer, serde_json::to_vec(&tok).expect("json")).expect("write");

    let out = d.path("out");
    run_graft(&bd, &id, &td, &out, &alpha(1.0)).expect("graft");
    let name = "model.embed_tokens.weight";
    let got = read_raw(&out)
        .into_iter()
        .find(|x| x.name == name)
        .expect("embed");
    let cols = got.shape[1];
    assert_eq!(got.shape, vec![vocab + extra, cols]);
    let got = got.to_f32();
    let overlap = vocab * cols;
    let want = oracle(t.get(name), &i.get(name)[..overlap], b.get(name), 1.0);
    assert_close("overlap", &got[..overlap], &want, DType::F32, 4.0);
    assert_eq!(
        &got[overlap..],
        &i.get(name)[overlap..],
        "the instruct rows, as they are"
    );
    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).expect("read"),
        std::fs::read(&inst_tokenizer).expect("read"),
        "the instruct tokenizer"
    );
    let config = common::json(&out.join("config.json"));
    assert_eq!(config["vocab_size"], (vocab + extra) as u64);
    // It runs, and the added ids are valid inputs.
    let opened = common::open(&out);
    let mut session = opened.model.session().expect("session");
    let added_id = opened
        .tokenizer
        .as_ref()
        .expect("tokenizer")
        .encode("<|chat_7|>", false)
        .expect("encode");
    assert_eq!(
        added_id,
        vec![(vocab + extra - 1) as u32],
        "the added token's id"
    );
    let last = added_id[0];
    let logits =
        pollster::block_on(opened.model.logits_last(&mut session, &[1, last])).expect("logits");
    assert_eq!(logits.len(), vocab + extra);

    // A target that added tokens of its own would give the same new ids two meanings.
    let t2 = with_extra_tokens(&t, 5, 42);
    let t2d = d.write("cpt2", &t2, DType::F32);
    assert_rejected(&d, &bd, &id, &t2d, &alpha(1.0), &["cpt2", "collide"]);
}

/// Runs a graft that must fail, checks the message names what it should and nothing was
/// written.
fn assert_rejected(
    d: &Dirs,
    b: &Path,
    i: &Path,
    t: &Path,
    options: &GraftOptions,
    needles: &[&str],
) {
    let out = d.path("rejected");
    let err = run_graft(b, i, t, &out, options)
        .expect_err("mismatched inputs must fail")
        .to_string();
    for needle in needles {
        assert!(err.contains(needle), "'{needle}' not in: {err}");
    }
    assert!(!out.exists(), "output written despite: {err}");
    let partial = std::fs::read_dir(&d.root)
        .expect("ls")
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("partial"));
    assert!(!partial, "partial output left behind");
}

#[test]
fn mismatched_inputs_fail_before_writing() {
    let d = Dirs::new();
    let b = base();
    let bd = d.write("base", &b, DType::F32);
    let i = b.perturbed(1, 0.01);
    let id = d.write("inst", &i, DType::F32);
    let one = alpha(1.0);

    // A non-finite α would write NaN everywhere.
    assert_rejected(&d, &bd, &id, &bd, &alpha(f32::NAN), &["finite"]);

    // Fewer layers in the instruct model.
    let mut short = i.clone();
    short.config["num_hidden_layers"] = 1.into();
    short
        .tensors
        .retain(|t| !t.0.starts_with("model.layers.1."));
    let sd = d.write("short", &short, DType::F32);
    assert_rejected(
        &d,
        &bd,
        &sd,
        &bd,
        &one,
        &["short/config.json", "num_hidden_layers 1"],
    );

    // A different hidden size in the target.
    let mut wide = b.clone();
    wide.config["hidden_size"] = 96.into();
    let wd = d.write("wide", &wide, DType::F32);
    assert_rejected(
        &d,
        &bd,
        &id,
        &wd,
        &one,
        &["wide/config.json", "hidden_size 96"],
    );

    // A tensor missing from the instruct side.
    let q = "model.layers.0.self_attn.q_proj.weight";
    let md = d.write("missing", &i.without(q), DType::F32);
    assert_rejected(&d, &bd, &md, &bd, &one, &["missing", q, "is missing"]);

    // Mixed architectures: a qwen2 target for a llama base.
    assert_rejected(&d, &bd, &id, &tiny("tiny-qwen2"), &one, &["qwen2", "llama"]);

    // A dense target whose FFN has a different shape.
    let mut odd = b.clone();
    let g = odd
        .tensors
        .iter_mut()
        .find(|t| t.0 == "model.layers.0.mlp.gate_proj.weight")
        .expect("gate");
    g.1[0] -= 1;
    g.2.truncate(g.1[0] * g.1[1]);
    let od = d.write("odd", &odd, DType::F32);
    assert_rejected(
        &d,
        &bd,
        &id,
        &od,
        &one,
        &[
            "odd/model.safetensors",
            "mlp.gate_proj.weight",
            "[95, 64]",
            "[96, 64]",
        ],
    );

    // --expert-alpha with the wrong number of values.
    let td = d.write("moe", &upcycled(&b, 3), DType::F32);
    let three = GraftOptions {
        alpha: 1.0,
        expert_alpha: Some(vec![1.0, 1.0, 1.0]),
        dtype: None,
    };
    assert_rejected(
        &d,
        &bd,
        &id,
        &td,
        &three,
        &["--expert-alpha has 3", "4 experts"],
    );
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn output_runs_with_the_instruct_chat_settings_and_records_its_inputs() {
    let d = Dirs::new();
    let b = base();
    let bd = d.write("base", &b, DType::F32);
    let id = d.write("inst", &b.perturbed(1, 0.02), DType::F32);
    // The instruct side's own chat template and generation settings.
    let marker = "<|im_start|>INSTRUCT ";
    let mut tc = common::json(&id.join("tokenizer_config.json"));
    tc["chat_template"] = format!(
        "{{% for m in messages %}}{{{{'{marker}' + m['content'] + '<|im_end|>'}}}}{{% endfor %}}"
    )
    .into();
    std::fs::write(id.join("tokenizer_config.json"), tc.to_string()).expect("write");
    std::fs::write(
        id.join("generation_config.json"),
        r#"{"eos_token_id": 2, "temperature": 0.25}"#,
    )
    .expect("write");
    let td = d.write("cpt", &b.perturbed(2, 0.02), DType::F32);
    let out = d.path("out");
    run_graft(&bd, &id, &td, &out, &alpha(1.0)).expect("graft");

    let opened = common::open(&out);
    let tokenizer = opened.tokenizer.as_ref().expect("tokenizer");
    let text = tokenizer
        .apply_chat_template(&[moegraft::tokenizer::ChatMessage::user("hi")], false)
        .expect("template");
    assert!(
        text.starts_with(marker),
        "chat template not the instruct one: {text}"
    );
    assert_eq!(
        common::json(&out.join("generation_config.json"))["temperature"],
        0.25
    );
    let mut session = opened.model.session().expect("session");
    let logits =
        pollster::block_on(opened.model.logits_last(&mut session, &[5, 17, 42])).expect("logits");
    assert!(logits.iter().all(|x| x.is_finite()));

    let m = common::json(&out.join("moegraft.json"));
    assert_eq!(m["method"], "paramdelta");
    assert_eq!(m["alpha"], 1.0);
    assert!(m["router_mode"].is_null(), "a dense output has no router");
    assert_eq!(m["version"], env!("CARGO_PKG_VERSION"));
    for (role, dir) in [("base", &bd), ("instruct", &id), ("target", &td)] {
        let files = m["inputs"][role]["files"].as_array().expect("files");
        assert_eq!(files.len(), std::fs::read_dir(dir).expect("ls").count());
        for f in files {
            let path = dir.join(f["name"].as_str().expect("name"));
            assert_eq!(f["sha256"], sha256_hex(&path), "{}", path.display());
            assert_eq!(f["size"], std::fs::metadata(&path).expect("stat").len());
        }
    }
}

#[test]
fn deltamoe_output_with_unit_alpha_and_target_base_runs_like_instruct_on_expert_zero() {
    // Derived property: with α = 1 and a target whose attention, norms, embeddings and
    // expert 0 are the base's, a model forced onto expert 0 is θ_inst. Every expert here is
    // expert 0's copy, so any routing sees the instruct model.
    let d = Dirs::new();
    let b = base();
    let i = b.perturbed(8, 0.02);
    let mut t = upcycled(&b, 1);
    for (name, _, v) in t.tensors.iter_mut() {
        if let Some((layer, rest)) = name.split_once(".block_sparse_moe.experts.") {
            let w = &rest[rest.find('.').expect("dot") + 1..];
            let dense = match &w[..2] {
                "w1" => "gate_proj",
                "w3" => "up_proj",
                _ => "down_proj",
            };
            *v = b.get(&format!("{layer}.mlp.{dense}.weight")).to_vec();
        }
    }
    let (bd, id) = (
        d.write("base", &b, DType::F32),
        d.write("inst", &i, DType::F32),
    );
    let td = d.write("moe", &t, DType::F32);
    let out = d.path("out");
    run_graft(&bd, &id, &td, &out, &alpha(1.0)).expect("graft");
    let ids = [3u32, 50, 99, 7];
    let logits = |dir: &Path| {
        let m = common::open(dir);
        let mut s = m.model.session().expect("session");
        pollster::block_on(m.model.logits_last(&mut s, &ids)).expect("logits")
    };
    let (ours, inst) = (logits(&out), logits(&id));
    let diff = common::max_abs_diff(&ours, &inst);
    assert!(
        diff < 1e-3,
        "DeltaMoE on base-copy experts differs from instruct by {diff}"
    );
    let base_diff = common::max_abs_diff(&logits(&bd), &inst);
    assert!(
        base_diff > 10.0 * diff.max(1e-5),
        "the test cannot tell base from instruct"
    );
}

#[test]
fn cli_prints_one_line_and_fails_in_one_line() {
    let d = Dirs::new();
    let b = base();
    let bd = d.write("base", &b, DType::F32);
    let id = d.write("inst", &b.perturbed(1, 0.01), DType::F32);
    let td = d.write("moe", &upcycled(&b, 2), DType::F16);
    let out = d.path("out");
    let run = |extra: &[&str], out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_moegraft"))
            .arg("graft")
            .args([
                "--base",
                bd.to_str().unwrap(),
                "--instruct",
                id.to_str().unwrap(),
            ])
            .args([
                "--target",
                td.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .args(extra)
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .output()
            .expect("run moegraft")
    };
    let ok = run(&["--expert-alpha", "1,0.5,0.5,1", "--dtype", "bf16"], &out);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("deltamoe:"), "{stdout}");
    let m = common::json(&out.join("moegraft.json"));
    assert_eq!(m["expert_alpha"], serde_json::json!([1.0, 0.5, 0.5, 1.0]));
    assert_eq!(
        common::json(&out.join("config.json"))["torch_dtype"],
        "bfloat16"
    );

    let bad_out = d.path("bad");
    let bad = run(&["--expert-alpha", "1,2"], &bad_out);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--expert-alpha has 2"), "{stderr}");
    assert!(!bad_out.exists());
}

#[test]
fn deltamoe_routed_to_expert_zero_is_the_instruct_model() {
    // The paper's preservation property: an MoE-CPT whose attention, norms, embeddings and
    // expert 0 equal the base's (experts 1..3 trained further, routers learned), grafted
    // with α = 1 and forced onto expert 0, computes θ_inst — in the Mixtral, qwen2_moe (its
    // zero shared expert kept) and qwen3_moe layouts.
    for dense in ["tiny-llama", "tiny-qwen2", "tiny-qwen3"] {
        expert_zero_is_instruct(dense);
    }
}

fn expert_zero_is_instruct(dense: &str) {
    use moegraft::model::routing::RouterMode;
    let d = Dirs::new();
    let b = Model::read(&tiny(dense));
    let i = b.perturbed(8, 0.02);
    let t = upcycled(&b, 1);
    let bd = d.write("base", &b, DType::F32);
    let id = d.write("inst", &i, DType::F32);
    let td = d.write("moe", &t, DType::F32);
    let out = d.path("out");
    run_graft(&bd, &id, &td, &out, &alpha(1.0)).expect("graft");
    let ids = [3u32, 50, 99, 7, 12, 250];
    let logits = |dir: &Path, mode: Option<RouterMode>| {
        let mut m = common::open(dir);
        if let Some(mode) = mode {
            m.model.set_router_mode(mode).expect("router mode");
        }
        let mut s = m.model.session().expect("session");
        pollster::block_on(m.model.logits_last(&mut s, &ids)).expect("logits")
    };
    let inst = logits(&id, None);
    let expert0 = logits(&out, Some(RouterMode::Expert(0)));
    let diff = common::max_abs_diff(&expert0, &inst);
    assert!(
        diff < 1e-4,
        "{dense}: DeltaMoE on expert 0 differs from instruct by {diff}"
    );
    // The learned routing mixes in the new-language experts: it must differ, or the test
    // could not fail.
    let learned = common::max_abs_diff(&logits(&out, None), &inst);
    assert!(
        learned > 100.0 * diff.max(1e-6),
        "{dense}: learned routing equals instruct ({learned})"
    );
}
