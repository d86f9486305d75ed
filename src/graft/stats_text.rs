//! The text report of `delta-stats`: the relative norm ‖Δ‖/‖θ_base‖ as a layer × family
//! table (where in the network post-training moved the weights), then every family's
//! numbers over all layers, and the model total.

use std::fmt;

use super::stats::{family_rank, DeltaStats, DeltaSums};
use crate::checkpoint::summary_text::count_text;

/// Short column heads, so a layer's row fits a terminal.
fn short(family: &str) -> String {
    let base = family.strip_suffix(".bias");
    let name = match base.unwrap_or(family) {
        "q_proj" => "q",
        "k_proj" => "k",
        "v_proj" => "v",
        "o_proj" => "o",
        "input_layernorm" => "in_ln",
        "post_attention_layernorm" => "post_ln",
        "gate_proj" => "gate",
        "up_proj" => "up",
        "down_proj" => "down",
        "experts.w1" => "exp.w1",
        "experts.w3" => "exp.w3",
        "experts.w2" => "exp.w2",
        other => other,
    };
    match base {
        Some(_) => format!("{name}.b"),
        None => name.to_string(),
    }
}

fn relative(s: &DeltaSums) -> String {
    match s.norms().relative_norm {
        Some(r) => format!("{r:.2e}"),
        None => "-".into(),
    }
}

/// Column width; every cell is printed after a space, so wide heads never run together.
const CELL: usize = 8;

impl fmt::Display for DeltaStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total();
        writeln!(f, "Δ = instruct − base")?;
        writeln!(f, "  base      {}", self.base)?;
        writeln!(f, "  instruct  {}", self.instruct)?;
        writeln!(
            f,
            "  {}, {} layers, {} tensors, {} elements compared",
            self.architecture,
            self.layers,
            self.tensors.len(),
            count_text(total.elements)
        )?;
        if let Some(v) = &self.vocab {
            writeln!(
                f,
                "  vocabularies differ: base {} rows, instruct {}; embed_tokens/lm_head compared on the first {}",
                v.base_rows, v.instruct_rows, v.compared_rows
            )?;
        }
        self.layer_table(f)?;
        self.family_table(f)
    }
}

impl DeltaStats {
    fn layer_table(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layers = self.by_layer();
        let mut families: Vec<&String> = layers.values().flat_map(|m| m.keys()).collect();
        families.sort_by_key(|fam| family_rank(fam));
        families.dedup();
        if families.is_empty() {
            return Ok(());
        }
        writeln!(f, "\n‖Δ‖/‖θ_base‖ by layer")?;
        write!(f, "{:<6}", "layer")?;
        for fam in &families {
            write!(f, " {:>CELL$}", short(fam))?;
        }
        writeln!(f, " {:>CELL$}", "layer")?;
        for (layer, by_family) in &layers {
            write!(f, "{layer:<6}")?;
            let mut sum = DeltaSums::default();
            for fam in &families {
                let cell = match by_family.get(*fam) {
                    Some(s) => {
                        sum.merge(s);
                        relative(s)
                    }
                    None => "-".into(),
                };
                write!(f, " {cell:>CELL$}")?;
            }
            writeln!(f, " {:>CELL$}", relative(&sum))?;
        }
        writeln!(
            f,
            "(in_ln: input_layernorm, post_ln: post_attention_layernorm, .b: bias; layer: all of the layer)"
        )
    }

    fn family_table(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\nby family, all layers")?;
        writeln!(
            f,
            "{:<26}{:>12}{:>12}{:>12}{:>14}{:>11}{:>12}",
            "family", "elements", "‖Δ‖", "‖θ_base‖", "‖Δ‖/‖θ_base‖", "max|Δ|", "cos"
        )?;
        let total = ("total".to_string(), self.total());
        for (family, sums) in self.by_family().iter().chain([&total]) {
            let n = sums.norms();
            let cos = n.cosine.map_or("-".into(), |c| format!("{c:.6}"));
            writeln!(
                f,
                "{:<26}{:>12}{:>12.4e}{:>12.4e}{:>14}{:>11.3e}{:>12}",
                family,
                n.elements,
                n.delta_norm,
                n.base_norm,
                relative(sums),
                n.max_abs_delta,
                cos
            )?;
        }
        Ok(())
    }
}
