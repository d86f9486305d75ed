//! Which slice of Δ = θ_inst − θ_base feeds which output tensor: the DeltaMoE expansion.
//!
//! θ_DeltaMoE = θ_cpt-MoE + expand(α·Δ):
//! - attention, norms, embeddings, lm_head: W += α·Δ[W], once;
//! - every expert e of every MoE layer: w1_e += α_e·Δ[gate_proj], w3_e += α_e·Δ[up_proj],
//!   w2_e += α_e·Δ[down_proj] (Mixtral's names for the dense FFN's three matrices);
//! - routers: unchanged, since the dense model has no router for Δ to come from.
//!
//! ParamΔ (a dense target) is the degenerate case: every tensor takes its own Δ, once.

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
    /// No counterpart in Δ (a router): copied from the target unchanged.
    Keep,
}

const MOE_BLOCK: &str = ".block_sparse_moe.";

/// The Δ that feeds target tensor `name`. `base_ties_embeddings`: the base has no lm_head of
/// its own, so an untied target's lm_head takes the embedding's Δ (the matrix the base used
/// as its output projection).
pub fn delta_source(name: &str, base_ties_embeddings: bool) -> DeltaSource {
    if let Some((layer, rest)) = name.split_once(MOE_BLOCK) {
        return moe_delta(layer, rest);
    }
    if name == "lm_head.weight" && base_ties_embeddings {
        return add("model.embed_tokens.weight", Scale::Shared);
    }
    add(name, Scale::Shared)
}

/// `rest` follows `model.layers.L.block_sparse_moe.`: `gate.weight` (the router) or
/// `experts.E.w1|w3|w2.weight`.
fn moe_delta(layer: &str, rest: &str) -> DeltaSource {
    if rest.starts_with("gate.") {
        return DeltaSource::Keep;
    }
    let mut parts = rest.split('.');
    let (Some("experts"), Some(expert), Some(w), Some(suffix), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        // Not a tensor of the Mixtral layout: let validation report it missing from Δ.
        return add(&format!("{layer}{MOE_BLOCK}{rest}"), Scale::Shared);
    };
    let dense = match w {
        "w1" => "gate_proj",
        "w3" => "up_proj",
        "w2" => "down_proj",
        _ => return add(&format!("{layer}{MOE_BLOCK}{rest}"), Scale::Shared),
    };
    match expert.parse::<usize>() {
        Ok(e) => add(&format!("{layer}.mlp.{dense}.{suffix}"), Scale::Expert(e)),
        Err(_) => add(&format!("{layer}{MOE_BLOCK}{rest}"), Scale::Shared),
    }
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
        let p = "model.layers.3.block_sparse_moe";
        for (w, dense) in [("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")] {
            assert_eq!(
                delta_source(&format!("{p}.experts.2.{w}.weight"), false),
                add(
                    &format!("model.layers.3.mlp.{dense}.weight"),
                    Scale::Expert(2)
                )
            );
        }
        assert_eq!(
            delta_source(&format!("{p}.gate.weight"), false),
            DeltaSource::Keep
        );
    }

    #[test]
    fn other_tensors_take_their_own_delta_once() {
        let q = "model.layers.0.self_attn.q_proj.weight";
        assert_eq!(delta_source(q, true), add(q, Scale::Shared));
        assert_eq!(
            delta_source("lm_head.weight", true),
            add("model.embed_tokens.weight", Scale::Shared)
        );
        assert_eq!(
            delta_source("lm_head.weight", false),
            add("lm_head.weight", Scale::Shared)
        );
    }
}
