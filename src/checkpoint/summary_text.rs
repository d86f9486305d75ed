//! The text report of `inspect`: one aligned "label  value" line per fact, counts exact and
//! abbreviated (scripts grep the exact number, people read the short one).

use std::fmt;

use super::provenance::Provenance;
use super::summary::{ModelSummary, MoeSummary};

/// `1234567` → `1,234,567 (1.23M)`: exact for scripts that grep, short for people.
pub(crate) fn count_text(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    let short = match n {
        0..1_000 => return grouped,
        1_000..1_000_000 => format!("{:.2}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    };
    format!("{grouped} ({short})")
}

/// Bytes as `1,234,567 bytes (1.18 MiB)`.
pub(crate) fn bytes_text(n: u64) -> String {
    let units = [("GiB", 30), ("MiB", 20), ("KiB", 10)];
    match units.iter().find(|(_, shift)| n >= 1 << shift) {
        Some((unit, shift)) => format!(
            "{} bytes ({:.2} {unit})",
            count_text(n).split(' ').next().unwrap_or_default(),
            n as f64 / (1u64 << shift) as f64
        ),
        None => format!("{n} bytes"),
    }
}

const LABEL: usize = 24;

fn row(f: &mut fmt::Formatter<'_>, label: &str, value: impl fmt::Display) -> fmt::Result {
    writeln!(f, "{label:<LABEL$}{value}")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        row(f, "model", &self.path)?;
        let kind = if self.moe.is_some() { "MoE" } else { "dense" };
        let arch = format!("{} ({}), {kind}", self.architecture, self.class);
        row(f, "architecture", arch)?;
        row(f, "layers", self.layers)?;
        row(f, "hidden size", self.hidden_size)?;
        let heads = format!(
            "{} heads, {} kv heads, head dim {}",
            self.attention_heads, self.kv_heads, self.head_dim
        );
        row(f, "attention", heads)?;
        row(f, "intermediate size", self.intermediate_size)?;
        row(f, "vocab", self.vocab_size)?;
        let window = match self.sliding_window {
            Some(w) => format!(" (sliding window {w})"),
            None => String::new(),
        };
        row(
            f,
            "context length",
            format!("{}{window}", self.context_length),
        )?;
        row(f, "rope theta", self.rope_theta)?;
        row(f, "tied embeddings", yes_no(self.tied_embeddings))?;
        let p = &self.parameters;
        row(f, "parameters", count_text(p.total))?;
        row(f, "  embeddings", count_text(p.embedding))?;
        row(f, "  active per token", count_text(p.active))?;
        row(
            f,
            "  active w/o embeddings",
            count_text(p.active_non_embedding),
        )?;
        row(f, "tensors", self.tensors)?;
        let config_dtype = self.config_dtype.as_deref().unwrap_or("not set");
        row(f, "dtype (config.json)", config_dtype)?;
        for d in &self.dtypes {
            let line = format!(
                "{} tensors, {} parameters, {}",
                d.tensors,
                count_text(d.parameters),
                bytes_text(d.bytes)
            );
            row(f, &format!("  {}", d.dtype), line)?;
        }
        let files = &self.files;
        row(
            f,
            "files",
            format!("{}, {}", files.count, bytes_text(files.bytes)),
        )?;
        let weights = format!("{}, {}", files.weight_files, bytes_text(files.weight_bytes));
        row(f, "  weight files", weights)?;
        if let Some(moe) = &self.moe {
            write_moe(f, moe)?;
        }
        if let Some(p) = &self.provenance {
            write_provenance(f, p)?;
        }
        Ok(())
    }
}

fn write_moe(f: &mut fmt::Formatter<'_>, moe: &MoeSummary) -> fmt::Result {
    let experts = format!(
        "{} per layer, {} per token, {} parameters in experts",
        moe.experts,
        moe.experts_per_token,
        count_text(moe.expert_parameters)
    );
    row(f, "experts", experts)?;
    let strength = match moe.prior_strength {
        Some(s) if moe.routing == "language-prior" => format!(" (prior strength {s})"),
        _ => String::new(),
    };
    let router = format!("{}, default routing {}{strength}", moe.router, moe.routing);
    row(f, "router", router)?;
    if moe.expert_languages.is_empty() && moe.expert_sources.is_empty() {
        return Ok(());
    }
    let langs: Vec<String> = (0..moe.experts)
        .map(|e| match moe.expert_languages.get(e) {
            Some(l) if !l.is_empty() => l.join(","),
            _ => "-".into(),
        })
        .collect();
    let width = langs.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    for (e, langs) in langs.iter().enumerate() {
        let source = match moe.expert_sources.get(e) {
            Some(s) => format!("  from {s}"),
            None => String::new(),
        };
        let value = format!("{langs:<width$}{source}");
        row(f, &format!("  expert {e}"), value.trim_end())?;
    }
    Ok(())
}

fn write_provenance(f: &mut fmt::Formatter<'_>, p: &Provenance) -> fmt::Result {
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let tool = format!("{} {}", or_dash(&p.tool), or_dash(&p.version));
    row(f, "provenance", format!("{} (moegraft.json)", tool.trim()))?;
    row(f, "  method", or_dash(&p.method))?;
    let alpha = p.alpha.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    row(f, "  alpha", alpha)?;
    if !p.expert_alpha.is_empty() {
        let list: Vec<String> = p.expert_alpha.iter().map(f32::to_string).collect();
        row(f, "  alpha per expert", list.join(", "))?;
    }
    row(f, "  router", or_dash(&p.router_mode))?;
    row(f, "  dtype", or_dash(&p.dtype))?;
    for (role, path) in &p.inputs {
        row(f, &format!("  {role}"), path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_exactly_and_shortly() {
        assert_eq!(count_text(999), "999");
        assert_eq!(count_text(1_234_567), "1,234,567 (1.23M)");
        assert_eq!(count_text(46_702_792_704), "46,702,792,704 (46.70B)");
        assert_eq!(bytes_text(1536), "1,536 bytes (1.50 KiB)");
    }
}
