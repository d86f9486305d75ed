//! Validating the three checkpoints against each other and planning every output tensor,
//! before anything is read or written. Target-independent (no file system), so the browser
//! can plan a graft from the files a user picked.

use std::collections::BTreeSet;

use super::delta::{delta_source, DeltaSource, Scale};
use crate::checkpoint::is_vocab_tensor;
use crate::checkpoint::moegraft_section::{MoegraftSection, RouterChoice};
use crate::checkpoint::writer::TensorSpec;
use crate::checkpoint::{Checkpoint, DType, ModelConfig};
use crate::error::{Error, Result};

/// How many mismatches the error message lists before "and N more".
const SHOWN_MISMATCHES: usize = 5;

#[derive(Debug, Clone, Default)]
pub struct GraftOptions {
    /// α of attention, norms and embeddings (and every tensor under ParamΔ).
    pub alpha: f32,
    /// α_e per expert (DeltaMoE only); `None`: α for every expert.
    pub expert_alpha: Option<Vec<f32>>,
    /// Output element type; `None`: the target's.
    pub dtype: Option<DType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A dense target: θ = θ_cpt + αΔ.
    ParamDelta,
    /// A Mixtral-layout MoE target upcycled from the base's architecture.
    DeltaMoe,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::ParamDelta => "paramdelta",
            Method::DeltaMoe => "deltamoe",
        }
    }
}

/// Δ's contribution to one output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedDelta {
    /// The base/instruct tensor Δ is taken from.
    pub source: String,
    pub alpha: f32,
    /// Leading elements of the (flattened) target tensor that get Δ: all of them, or the rows
    /// of the base's vocabulary when the target's is larger.
    pub elements: usize,
    /// Elements of the instruct tensor past the base's (the rows of tokens the instruct
    /// model added, such as chat markers) appended after the target's: the output has the
    /// instruct model's vocabulary.
    pub appended: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    pub name: String,
    /// The target tensor read: `name`, or the embedding when a tied target gets an lm_head.
    pub source: String,
    pub shape: Vec<usize>,
    /// `None`: copied from the target unchanged (a router).
    pub delta: Option<PlannedDelta>,
}

#[derive(Debug, Clone)]
pub struct GraftPlan {
    pub method: Method,
    pub alpha: f32,
    /// α_e per expert (empty for ParamΔ).
    pub expert_alpha: Vec<f32>,
    pub dtype: DType,
    pub tensors: Vec<PlannedTensor>,
    /// The output's `vocab_size` (the instruct model's when it added tokens).
    pub vocab_size: usize,
    /// How the output routes by default (DeltaMoE): the target's routers are kept, and so is
    /// its config's routing mode; `None` for a dense output.
    pub router_mode: Option<&'static str>,
    /// The target ties lm_head to the embedding but the base does not: the output gets an
    /// lm_head of its own (the target's embedding + Δ of the base's lm_head).
    pub unties_embeddings: bool,
}

impl GraftPlan {
    /// The output tensors in write order.
    pub fn specs(&self) -> Vec<TensorSpec> {
        self.tensors
            .iter()
            .map(|t| TensorSpec::new(&t.name, self.dtype, t.shape.clone()))
            .collect()
    }
}

/// Checks that `base`, `instruct` and `target` fit together and plans each output tensor.
/// Every mismatch found is listed (the first few) in one error.
pub fn plan(
    base: &Checkpoint,
    instruct: &Checkpoint,
    target: &Checkpoint,
    options: &GraftOptions,
) -> Result<GraftPlan> {
    let alphas =
        std::iter::once(options.alpha).chain(options.expert_alpha.iter().flatten().copied());
    if let Some(bad) = alphas.into_iter().find(|a| !a.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "alpha must be a finite number, got {bad}"
        )));
    }
    let mut report = Mismatches::default();
    let method = check_configs(base, instruct, target, &mut report);
    report.fail_if_any()?;
    let method = method.ok_or_else(|| Error::InvalidArgument("no graft method fits".into()))?;

    let expert_alpha = match (method, &options.expert_alpha) {
        (Method::DeltaMoe, Some(a)) if a.len() != target.config.num_experts => {
            return Err(Error::InvalidArgument(format!(
                "--expert-alpha has {} values but {} has {} experts per layer",
                a.len(),
                target.files.display_name("config.json"),
                target.config.num_experts
            )));
        }
        (Method::DeltaMoe, Some(a)) => a.clone(),
        (Method::DeltaMoe, None) => vec![options.alpha; target.config.num_experts],
        (Method::ParamDelta, Some(_)) => {
            return Err(Error::InvalidArgument(format!(
                "--expert-alpha needs an MoE target, but {} is dense",
                target.files.label()
            )))
        }
        (Method::ParamDelta, None) => Vec::new(),
    };

    let base_ties = !base.has("lm_head.weight");
    let expansion = match method {
        Method::DeltaMoe => target.config.architecture.moe_layout(),
        Method::ParamDelta => None,
    };
    let mut tensors = Vec::new();
    let mut used = BTreeSet::new();
    let mut planner = Planner {
        base,
        instruct,
        options,
        expert_alpha: &expert_alpha,
        report: &mut report,
    };
    for name in target.tensor_names() {
        let Some(t) = planner.report.info(target, name) else {
            continue;
        };
        let delta = match delta_source(name, expansion, base_ties) {
            DeltaSource::Keep => None,
            DeltaSource::AddIfSameShape { tensor, .. }
                if base.info(&tensor).map(|(_, i)| i.shape.clone()).ok()
                    != Some(t.shape.clone()) =>
            {
                None
            }
            DeltaSource::Add { tensor, scale } | DeltaSource::AddIfSameShape { tensor, scale } => {
                used.insert(tensor.clone());
                match planner.delta(name, &t, tensor, scale) {
                    Some(d) => Some(d),
                    None => continue,
                }
            }
        };
        tensors.push(planned(name, name, &t, delta));
    }
    // A tied target of an untied base: the output unties, and its lm_head is the target's
    // embedding plus Δ of the base's lm_head (what θ_target + Δ means for a tied matrix).
    let embed = "model.embed_tokens.weight";
    let head = "lm_head.weight";
    let unties_embeddings = !base_ties && !target.has(head) && target.has(embed);
    if unties_embeddings {
        if let Some(t) = planner.report.info(target, embed) {
            used.insert(head.to_string());
            if let Some(d) = planner.delta(head, &t, head.to_string(), Scale::Shared) {
                tensors.push(planned(head, embed, &t, Some(d)));
            }
        }
    }
    for name in base.tensor_names().filter(|n| !used.contains(*n)) {
        report.push(format!(
            "{}: tensor '{name}' has no counterpart in {}",
            base.files.label(),
            target.files.label()
        ));
    }
    for name in instruct.tensor_names().filter(|n| !base.has(n)) {
        report.push(format!(
            "{}: tensor '{name}' is not in {}",
            instruct.files.label(),
            base.files.label()
        ));
    }
    report.fail_if_any()?;

    let dtype = options.dtype.unwrap_or_else(|| target_dtype(target));
    let router_mode = match method {
        Method::ParamDelta => None,
        Method::DeltaMoe => {
            let file = target.files.display_name("config.json");
            let section = MoegraftSection::from_config(&target.config, &file)?;
            Some(match section.map(|s| s.default_choice()) {
                Some(RouterChoice::LanguagePrior) => "language-prior",
                _ => "learned",
            })
        }
    };
    Ok(GraftPlan {
        method,
        alpha: options.alpha,
        expert_alpha,
        dtype,
        tensors,
        vocab_size: target.config.vocab_size.max(instruct.config.vocab_size),
        router_mode,
        unties_embeddings,
    })
}

/// An output tensor: shape from its target source, grown by the instruct rows appended.
fn planned(name: &str, source: &str, t: &Info, delta: Option<PlannedDelta>) -> PlannedTensor {
    let mut shape = t.shape.clone();
    if let Some(d) = delta.as_ref().filter(|d| d.appended > 0) {
        let cols: usize = shape[1..].iter().product();
        shape[0] += d.appended / cols.max(1);
    }
    PlannedTensor {
        name: name.to_string(),
        source: source.to_string(),
        shape,
        delta,
    }
}

/// What planning one tensor's Δ needs.
struct Planner<'a> {
    base: &'a Checkpoint,
    instruct: &'a Checkpoint,
    options: &'a GraftOptions,
    expert_alpha: &'a [f32],
    report: &'a mut Mismatches,
}

impl Planner<'_> {
    /// Δ of `source` for output tensor `name` (target tensor `t`), or `None` after reporting
    /// why it does not fit.
    fn delta(
        &mut self,
        name: &str,
        t: &Info,
        source: String,
        scale: Scale,
    ) -> Option<PlannedDelta> {
        let alpha = match scale {
            Scale::Shared => self.options.alpha,
            Scale::Expert(e) => match self.expert_alpha.get(e) {
                Some(&a) => a,
                None => {
                    self.report.push(format!(
                        "{}: tensor '{name}' is expert {e}, beyond the {} experts of config.json",
                        t.file,
                        self.expert_alpha.len()
                    ));
                    return None;
                }
            },
        };
        let (elements, appended) =
            check_delta(self.base, self.instruct, name, t, &source, self.report)?;
        Some(PlannedDelta {
            source,
            alpha,
            elements,
            appended,
        })
    }
}

/// Architectures and sizes: instruct must be the base's twin; the target either the base's
/// architecture (ParamΔ) or a Mixtral MoE whose dense counterpart is the base (DeltaMoE).
fn check_configs(
    base: &Checkpoint,
    instruct: &Checkpoint,
    target: &Checkpoint,
    report: &mut Mismatches,
) -> Option<Method> {
    let (b, i, t) = (&base.config, &instruct.config, &target.config);
    let name = |c: &Checkpoint| c.files.display_name("config.json");
    check_twins(base, instruct, report);
    let method = if t.architecture == b.architecture && t.num_experts == b.num_experts {
        Some(Method::ParamDelta)
    } else if !b.is_moe() && b.architecture.upcycled() == Some(t.architecture) {
        Some(Method::DeltaMoe)
    } else {
        report.push(format!(
            "{} is {}{} but {} is {}: the target must be the base's architecture or the MoE upcycled from it ({})",
            name(target),
            t.architecture.model_type(),
            if t.is_moe() { " (MoE)" } else { "" },
            name(base),
            b.architecture.model_type(),
            b.architecture.upcycled()
                .map_or("none for this architecture", |a| a.model_type())
        ));
        None
    };
    compare_sizes(name(base).as_str(), b, &name(target), t, report);
    if i.vocab_size < b.vocab_size {
        report.push(format!(
            "{}: vocab_size {} is smaller than {}'s {}",
            name(instruct),
            i.vocab_size,
            name(base),
            b.vocab_size
        ));
    }
    if t.vocab_size < b.vocab_size {
        report.push(format!(
            "{}: vocab_size {} is smaller than {}'s {}",
            name(target),
            t.vocab_size,
            name(base),
            b.vocab_size
        ));
    }
    method
}

/// Instruct must be the base's twin: one architecture, the same sizes (vocabularies aside).
pub(crate) fn check_twins(base: &Checkpoint, instruct: &Checkpoint, report: &mut Mismatches) {
    let (b, i) = (&base.config, &instruct.config);
    let name = |c: &Checkpoint| c.files.display_name("config.json");
    if i.architecture != b.architecture || i.is_moe() != b.is_moe() {
        report.push(format!(
            "{} is {} but {} is {} (instruct and base must share an architecture)",
            name(instruct),
            i.architecture.model_type(),
            name(base),
            b.architecture.model_type()
        ));
    }
    compare_sizes(&name(base), b, &name(instruct), i, report);
}

fn compare_sizes(
    base_name: &str,
    b: &ModelConfig,
    other_name: &str,
    o: &ModelConfig,
    report: &mut Mismatches,
) {
    let fields = [
        ("num_hidden_layers", b.num_layers, o.num_layers),
        ("hidden_size", b.hidden_size, o.hidden_size),
        (
            "intermediate_size",
            b.intermediate_size,
            o.intermediate_size,
        ),
        ("num_attention_heads", b.num_heads, o.num_heads),
        ("num_key_value_heads", b.num_kv_heads, o.num_kv_heads),
        ("head_dim", b.head_dim, o.head_dim),
    ];
    for (field, bv, ov) in fields {
        if bv != ov {
            report.push(format!(
                "{other_name}: {field} {ov} but {base_name} has {bv}"
            ));
        }
    }
}

/// Checks Δ's source tensor in base and instruct against target tensor `name`; returns how
/// many leading elements of the target get Δ, and how many instruct elements are appended.
fn check_delta(
    base: &Checkpoint,
    instruct: &Checkpoint,
    name: &str,
    t: &Info,
    source: &str,
    report: &mut Mismatches,
) -> Option<(usize, usize)> {
    let b = report.info(base, source);
    let i = report.info(instruct, source);
    let (b, i) = (b?, i?);
    let rows_of = |shape: &[usize]| (shape.len() == 2).then(|| (shape[0], shape[1]));
    // Token-row tensors may differ in rows: an enlarged vocabulary in the target (Δ on the
    // overlapping rows), or tokens the instruct model added (appended after the target's).
    let vocab = match (rows_of(&b.shape), rows_of(&i.shape), rows_of(&t.shape)) {
        (Some(b), Some(i), Some(t)) if is_vocab_tensor(name) && b.1 == i.1 && b.1 == t.1 => {
            Some((b.0, i.0, t.0, b.1))
        }
        _ => None,
    };
    match vocab {
        Some((b_rows, i_rows, t_rows, cols)) if i_rows >= b_rows && t_rows >= b_rows => {
            if i_rows > b_rows && t_rows > b_rows {
                report.push(format!(
                    "{}: tensor '{source}' adds {} token rows to the base's {b_rows} and {}: tensor '{name}' adds {}: the new ids of the two would collide",
                    i.file,
                    i_rows - b_rows,
                    t.file,
                    t_rows - b_rows
                ));
                return None;
            }
            Some((b_rows * cols, (i_rows - b_rows) * cols))
        }
        _ if i.shape != b.shape => {
            report.push(format!(
                "{}: tensor '{source}' has shape {:?} but {} has {:?}",
                i.file, i.shape, b.file, b.shape
            ));
            None
        }
        _ if t.shape != b.shape => {
            report.push(format!(
                "{}: tensor '{name}' has shape {:?} but {}: tensor '{source}' has {:?}",
                t.file, t.shape, b.file, b.shape
            ));
            None
        }
        _ => Some((b.shape.iter().product(), 0)),
    }
}

/// The target's own dtype: config.json's `torch_dtype`/`dtype`, else its embedding's.
fn target_dtype(target: &Checkpoint) -> DType {
    let raw = &target.config.raw;
    ["torch_dtype", "dtype"]
        .iter()
        .find_map(|k| raw.get(*k).and_then(|v| v.as_str()).and_then(DType::parse))
        .or_else(|| {
            target
                .info("model.embed_tokens.weight")
                .ok()
                .and_then(|(_, i)| i.dtype)
        })
        .unwrap_or(DType::F32)
}

/// Where a tensor lives (for messages) and its shape.
pub(crate) struct Info {
    pub file: String,
    pub shape: Vec<usize>,
}

/// The mismatches found so far; reported together in one error.
#[derive(Default)]
pub(crate) struct Mismatches(Vec<String>);

impl Mismatches {
    pub(crate) fn push(&mut self, message: String) {
        self.0.push(message);
    }

    /// A tensor's file and shape; a mismatch if it is missing or not a float weight.
    pub(crate) fn info(&mut self, cp: &Checkpoint, name: &str) -> Option<Info> {
        match cp.info(name) {
            Err(_) => {
                self.push(format!("{}: tensor '{name}' is missing", cp.files.label()));
                None
            }
            Ok((file, info)) if info.dtype.is_none() => {
                self.push(format!(
                    "{}: tensor '{name}' has dtype {}, not F32/F16/BF16",
                    cp.files.display_name(file),
                    info.dtype_name
                ));
                None
            }
            Ok((file, info)) => Some(Info {
                file: cp.files.display_name(file),
                shape: info.shape.clone(),
            }),
        }
    }

    pub(crate) fn fail_if_any(&self) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut shown = self.0[..self.0.len().min(SHOWN_MISMATCHES)].join("; ");
        if self.0.len() > SHOWN_MISMATCHES {
            shown.push_str(&format!("; and {} more", self.0.len() - SHOWN_MISMATCHES));
        }
        Err(Error::InvalidArgument(format!(
            "the models do not fit together ({} mismatches): {shown}",
            self.0.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_lists_the_first_mismatches_and_counts_the_rest() {
        let mut report = Mismatches::default();
        assert!(report.fail_if_any().is_ok());
        for k in 0..7 {
            report.push(format!("m{k}"));
        }
        let message = report.fail_if_any().expect_err("mismatches").to_string();
        assert!(
            message.contains("(7 mismatches): m0; m1; m2; m3; m4; and 2 more"),
            "{message}"
        );
        assert!(!message.contains("m5"), "{message}");
    }
}
