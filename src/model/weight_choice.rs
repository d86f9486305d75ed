//! The weight format a user picks at load time: the checkpoint's own dtype, or Q8_0 for the
//! large matrices (attention, FFN, experts, embedding and LM head), about half f16's bytes, so
//! a decode step reads about half as much. Norms, biases and MoE routers stay as they are.

use serde::Serialize;

use crate::checkpoint::config::MoeLayout;
use crate::checkpoint::DType;
use crate::gpu::{q8_0, WeightFormat};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightChoice {
    /// Every matrix in the dtype the checkpoint stores it in.
    #[default]
    AsStored,
    /// llama.cpp's Q8_0 (see `gpu::q8_0`) for every matrix whose rows are whole 32-element
    /// blocks; the others keep their dtype.
    Q8_0,
}

impl WeightChoice {
    /// The CLI's and the page's spelling: `stored` (or `as-stored`) and `q8_0` (or `q8`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "stored" | "as-stored" | "as_stored" => Ok(Self::AsStored),
            "q8_0" | "q8" => Ok(Self::Q8_0),
            _ => Err(format!("unknown weight format '{s}' (stored or q8_0)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::AsStored => "stored",
            Self::Q8_0 => "q8_0",
        }
    }

    /// How the matrix `name`, stored as `dtype` in rows of `cols`, is held on the GPU.
    pub fn format_for(self, name: &str, dtype: DType, cols: usize) -> WeightFormat {
        if self == Self::Q8_0 && !is_router(name) && q8_0::fits(cols) {
            WeightFormat::Q8_0
        } else {
            WeightFormat::Plain(dtype)
        }
    }

    /// Whether a matrix that would be quantized keeps its dtype: its rows are not whole
    /// blocks (what a user is told about).
    pub fn kept(self, name: &str, cols: usize) -> bool {
        self == Self::Q8_0 && !is_router(name) && !q8_0::fits(cols)
    }
}

impl std::fmt::Display for WeightChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for WeightChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

/// An MoE router or shared-expert gate (`…block_sparse_moe.gate.weight`, `…mlp.gate.weight`):
/// small, and its top-k choice should not move with quantization, so it keeps its dtype.
fn is_router(name: &str) -> bool {
    [MoeLayout::Mixtral, MoeLayout::Qwen]
        .iter()
        .any(|layout| layout.is_gate(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_whole_block_matrices_but_not_routers() {
        let q = WeightChoice::Q8_0;
        let f16 = WeightFormat::Plain(DType::F16);
        assert_eq!(
            q.format_for("model.layers.0.mlp.down_proj.weight", DType::F16, 96),
            WeightFormat::Q8_0
        );
        assert_eq!(
            q.format_for("model.layers.0.mlp.down_proj.weight", DType::F16, 75),
            f16
        );
        assert_eq!(
            q.format_for(
                "model.layers.3.block_sparse_moe.gate.weight",
                DType::F16,
                64
            ),
            f16
        );
        assert_eq!(
            WeightChoice::AsStored.format_for("model.embed_tokens.weight", DType::F16, 64),
            f16
        );
        assert!(q.kept("model.layers.0.mlp.down_proj.weight", 75));
        assert!(!q.kept("model.layers.3.block_sparse_moe.gate.weight", 48));
        assert!(!WeightChoice::AsStored.kept("lm_head.weight", 75));
    }

    #[test]
    fn parses_its_spellings() {
        assert_eq!(WeightChoice::parse("Q8_0"), Ok(WeightChoice::Q8_0));
        assert_eq!(WeightChoice::parse("stored"), Ok(WeightChoice::AsStored));
        assert!(WeightChoice::parse("q4_0")
            .unwrap_err()
            .contains("stored or q8_0"));
    }
}
