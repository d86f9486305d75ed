//! Which slice of Δ = θ_inst − θ_base feeds which output tensor: the DeltaMoE expansion.
//!
//! θ_DeltaMoE = θ_cpt-MoE + expand(α·Δ):
//! - attention, norms, embeddings, lm_head: W += α·Δ[W], once;
//! - every expert e of every MoE layer: gate_e += α_e·Δ[gate_proj], up_e += α_e·Δ[up_proj],
//!   down_e += α_e·Δ[down_proj] (Mixtral names them w1, w3, w2);
//! - a shared expert (qwen2_moe) as wide as the dense FFN takes Δ's FFN too, at the shared α;
//!   a narrower one (the zero expert `upcycle` writes) has no counterpart and is kept;
//! - routers and the shared expert's gate: unchanged, since the dense model has no router
//!   for Δ to come from.
//!
//! ParamΔ (a target of the base's own architecture, MoE or not) is the degenerate case:
//! every tensor takes its own Δ, once.

use crate::checkpoint::config::{ExpertProj, MoeLayout};

/// Which α scales a tensor's Δ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The one α of attention, norms and embeddings (and of every tensor under ParamΔ).
    Shared,
    /// α_e of expert e.
    Expert(usize),
}

/// Where an output tensor's Δ comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaSource {
    /// W += scale · (θ_inst[tensor] − θ_base[tensor]).
    Add { tensor: String, scale: Scale },
    /// As `Add` where the target tensor has Δ's shape, else kept (a shared expert).
    AddIfSameShape { tensor: String, scale: Scale },
    /// No counterpart in Δ (a router, a shared expert's gate): copied from the target.
    Keep,
}

/// The Δ that feeds target tensor `name`. `expansion`: the target's MoE layout when a dense Δ
/// is expanded onto it (DeltaMoE), `None` under ParamΔ. `base_ties_embeddings`: the base has
/// no lm_head of its own, so an untied target's lm_head takes the embedding's Δ (the matrix
/// the base used as its output projection).
pub fn delta_source(
    name: &str,
    expansion: Option<MoeLayout>,
    base_ties_embeddings: bool,
) -> DeltaSource {
    if let Some(layout) = expansion {
        if let Some(source) = moe_delta(layout, name) {
            return source;
        }
    }
    if name == "lm_head.weight" && base_ties_embeddings {
        return add("model.embed_tokens.weight", Scale::Shared);
    }
    add(name, Scale::Shared)
}

/// The Δ of an MoE block's tensor in `layout`; None for tensors outside MoE blocks (and
/// names the layout does not know, which then take their own name's Δ and are reported
/// missing from it).
fn moe_delta(layout: MoeLayout, name: &str) -> Option<DeltaSource> {
    if layout.is_gate(name) {
        return Some(DeltaSource::Keep);
    }
    if let Some((layer, expert, proj)) = layout.parse_expert(name) {
        return Some(add(&dense_ffn(layer, proj), Scale::Expert(expert)));
    }
    let (layer, rest) = name
        .strip_prefix("model.layers.")?
        .split_once(".mlp.shared_expert.")?;
    let layer: usize = layer.parse().ok()?;
    let proj = ExpertProj::ALL
        .into_iter()
        .find(|p| rest == format!("{}.weight", p.dense_name()))?;
    (layout == MoeLayout::Qwen).then(|| DeltaSource::AddIfSameShape {
        tensor: dense_ffn(layer, proj),
        scale: Scale::Shared,
    })
}

fn dense_ffn(layer: usize, proj: ExpertProj) -> String {
    format!("model.layers.{layer}.mlp.{}.weight", proj.dense_name())
}

fn add(tensor: &str, scale: Scale) -> DeltaSource {
    DeltaSource::Add {
        tensor: tensor.to_string(),
        scale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experts_take_the_dense_ffn_delta() {
        for layout in [MoeLayout::Mixtral, MoeLayout::Qwen] {
            for proj in ExpertProj::ALL {
                assert_eq!(
                    delta_source(&layout.expert(3, 2, proj), Some(layout), false),
                    add(&dense_ffn(3, proj), Scale::Expert(2))
                );
            }
            assert_eq!(
                delta_source(&layout.router(3), Some(layout), false),
                DeltaSource::Keep
            );
        }
        let q = MoeLayout::Qwen;
        assert_eq!(
            delta_source(&q.shared_gate(1), Some(q), false),
            DeltaSource::Keep
        );
        assert_eq!(
            delta_source(&q.shared_expert(1, ExpertProj::Down), Some(q), false),
            DeltaSource::AddIfSameShape {
                tensor: "model.layers.1.mlp.down_proj.weight".into(),
                scale: Scale::Shared
            }
        );
    }

    #[test]
    fn paramdelta_gives_every_tensor_its_own_delta() {
        for layout in [MoeLayout::Mixtral, MoeLayout::Qwen] {
            for name in [layout.router(0), layout.expert(0, 1, ExpertProj::Up)] {
                assert_eq!(delta_source(&name, None, false), add(&name, Scale::Shared));
            }
        }
    }

    #[test]
    fn other_tensors_take_their_own_delta_once() {
        let q = "model.layers.0.self_attn.q_proj.weight";
        let mixtral = Some(MoeLayout::Mixtral);
        assert_eq!(delta_source(q, mixtral, true), add(q, Scale::Shared));
        assert_eq!(
            delta_source("lm_head.weight", mixtral, true),
            add("model.embed_tokens.weight", Scale::Shared)
        );
        assert_eq!(
            delta_source("lm_head.weight", None, false),
            add("lm_head.weight", Scale::Shared)
        );
    }
}
