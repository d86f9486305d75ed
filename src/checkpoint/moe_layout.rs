//! Where an MoE block's tensors are named: Mixtral's `block_sparse_moe` with w1/w3/w2, or
//! Qwen's MoE `mlp` with the dense FFN's projection names (and qwen2_moe's shared expert).

/// An MoE architecture's tensor naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoeLayout {
    /// `model.layers.L.block_sparse_moe.{gate, experts.E.{w1, w3, w2}}.weight`
    Mixtral,
    /// `model.layers.L.mlp.{gate, experts.E.{gate,up,down}_proj, shared_expert.*,
    /// shared_expert_gate}.weight`
    Qwen,
}

/// One of an expert's three projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertProj {
    Gate,
    Up,
    Down,
}

impl ExpertProj {
    pub const ALL: [ExpertProj; 3] = [ExpertProj::Gate, ExpertProj::Up, ExpertProj::Down];

    /// The dense FFN's name for it (`model.layers.L.mlp.<name>.weight`).
    pub fn dense_name(self) -> &'static str {
        match self {
            ExpertProj::Gate => "gate_proj",
            ExpertProj::Up => "up_proj",
            ExpertProj::Down => "down_proj",
        }
    }
}

impl MoeLayout {
    /// Layer `l`'s MoE block, the prefix of all its tensors.
    pub fn block(self, l: usize) -> String {
        match self {
            MoeLayout::Mixtral => format!("model.layers.{l}.block_sparse_moe"),
            MoeLayout::Qwen => format!("model.layers.{l}.mlp"),
        }
    }

    /// The router, [experts, hidden].
    pub fn router(self, l: usize) -> String {
        format!("{}.gate.weight", self.block(l))
    }

    pub fn proj_name(self, proj: ExpertProj) -> &'static str {
        match (self, proj) {
            (MoeLayout::Mixtral, ExpertProj::Gate) => "w1",
            (MoeLayout::Mixtral, ExpertProj::Up) => "w3",
            (MoeLayout::Mixtral, ExpertProj::Down) => "w2",
            (MoeLayout::Qwen, p) => p.dense_name(),
        }
    }

    /// Expert `e`'s projection.
    pub fn expert(self, l: usize, e: usize, proj: ExpertProj) -> String {
        format!(
            "{}.experts.{e}.{}.weight",
            self.block(l),
            self.proj_name(proj)
        )
    }

    /// The shared expert's projection (qwen2_moe).
    pub fn shared_expert(self, l: usize, proj: ExpertProj) -> String {
        format!(
            "{}.shared_expert.{}.weight",
            self.block(l),
            proj.dense_name()
        )
    }

    /// The shared expert's gate, [1, hidden] (qwen2_moe).
    pub fn shared_gate(self, l: usize) -> String {
        format!("{}.shared_expert_gate.weight", self.block(l))
    }

    /// Whether `name` is a router or a shared-expert gate: small matrices whose outputs pick
    /// and weigh experts.
    pub fn is_gate(self, name: &str) -> bool {
        let block = match self {
            MoeLayout::Mixtral => ".block_sparse_moe.",
            MoeLayout::Qwen => ".mlp.",
        };
        name.split_once(block).is_some_and(|(layer, rest)| {
            layer.starts_with("model.layers.")
                && (rest == "gate.weight" || rest == "shared_expert_gate.weight")
        })
    }

    /// (layer, expert, projection) of a routed expert's tensor in this layout.
    pub fn parse_expert(self, name: &str) -> Option<(usize, usize, ExpertProj)> {
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        let block = match self {
            MoeLayout::Mixtral => "block_sparse_moe.experts.",
            MoeLayout::Qwen => "mlp.experts.",
        };
        let (expert, rest) = rest.strip_prefix(block)?.split_once('.')?;
        let proj = ExpertProj::ALL
            .into_iter()
            .find(|p| rest == format!("{}.weight", self.proj_name(*p)))?;
        Some((layer.parse().ok()?, expert.parse().ok()?, proj))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for layout in [MoeLayout::Mixtral, MoeLayout::Qwen] {
            for proj in ExpertProj::ALL {
                let name = layout.expert(12, 3, proj);
                assert_eq!(layout.parse_expert(&name), Some((12, 3, proj)), "{name}");
            }
            assert!(layout.is_gate(&layout.router(4)));
            assert_eq!(layout.parse_expert(&layout.router(4)), None);
        }
        assert_eq!(
            MoeLayout::Qwen.expert(0, 1, ExpertProj::Up),
            "model.layers.0.mlp.experts.1.up_proj.weight"
        );
        assert!(MoeLayout::Qwen.is_gate("model.layers.0.mlp.shared_expert_gate.weight"));
        assert!(!MoeLayout::Qwen.is_gate("model.layers.0.mlp.gate_proj.weight"));
        assert_eq!(
            MoeLayout::Mixtral.parse_expert("model.layers.0.mlp.experts.1.up_proj.weight"),
            None
        );
    }
}
