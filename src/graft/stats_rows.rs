//! `delta-stats --text LANG=FILE`: Δ on the embedding (and untied LM-head) rows of each
//! language's own tokens. An instruct tuning on some languages pushes down the tied rows of
//! tokens it never targets; Δ carries that damage into every graft, and no new expert can
//! undo it (DeltaMoE keeps the embeddings shared). Small here means Δ is the chat skill.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::stats::{DeltaNorms, DeltaSums, SLICE_ELEMENTS};
use crate::checkpoint::is_vocab_tensor;
use crate::checkpoint::Checkpoint;
use crate::error::Result;

/// A token is a language's own when its text uses it at least this often...
pub const MIN_COUNT: u64 = 5;

/// ...and at least half of all its uses across the given texts are in that language.
fn is_own(count: u64, all: u64) -> bool {
    count >= MIN_COUNT && 2 * count >= all
}

/// Δ over one language's own token rows.
#[derive(Debug, Clone, Serialize)]
pub struct LanguageRows {
    pub lang: String,
    /// Tokens in its text.
    pub tokens: usize,
    /// Its own token rows (see `is_own`).
    pub rows: usize,
    /// Per vocabulary tensor (embed_tokens, lm_head when untied).
    pub tensors: BTreeMap<String, DeltaNorms>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenRowDeltas {
    pub languages: Vec<LanguageRows>,
}

/// Each language's own rows, from its token ids (`texts`: language → ids).
pub fn own_rows(texts: &[(String, Vec<u32>)], vocab: usize) -> Vec<Vec<usize>> {
    let counts: Vec<Vec<u64>> = texts
        .iter()
        .map(|(_, ids)| {
            let mut c = vec![0u64; vocab];
            for &id in ids.iter().filter(|&&id| (id as usize) < vocab) {
                c[id as usize] += 1;
            }
            c
        })
        .collect();
    let all: Vec<u64> = (0..vocab)
        .map(|row| counts.iter().map(|c| c[row]).sum())
        .collect();
    counts
        .iter()
        .map(|c| (0..vocab).filter(|&r| is_own(c[r], all[r])).collect())
        .collect()
}

/// Measures Δ = instruct − base on each language's own rows of every vocabulary tensor both
/// checkpoints hold, reading a slice of rows at a time. Rows past the smaller vocabulary are
/// not compared.
pub async fn token_row_deltas(
    base: &Checkpoint,
    instruct: &Checkpoint,
    texts: &[(String, Vec<u32>)],
) -> Result<TokenRowDeltas> {
    let names: Vec<&str> = base
        .tensor_names()
        .filter(|n| is_vocab_tensor(n) && instruct.has(n))
        .collect();
    let mut sums: Vec<BTreeMap<String, DeltaSums>> = vec![BTreeMap::new(); texts.len()];
    let mut own: Vec<Vec<usize>> = vec![Vec::new(); texts.len()];
    for name in names {
        let (_, b) = base.info(name)?;
        let (_, i) = instruct.info(name)?;
        let (Some(&width), true) = (b.shape.get(1), b.shape.len() == 2) else {
            continue;
        };
        let rows = b.shape[0].min(i.shape.first().copied().unwrap_or(0));
        own = own_rows(texts, rows);
        let per_slice = (SLICE_ELEMENTS / width.max(1)).max(1);
        let mut start = 0;
        while start < rows {
            let n = per_slice.min(rows - start);
            let bs = base.read_f32_range(name, start * width, n * width).await?;
            let is = instruct
                .read_f32_range(name, start * width, n * width)
                .await?;
            for (lang_rows, lang_sums) in own.iter().zip(sums.iter_mut()) {
                let entry = lang_sums.entry(name.to_string()).or_default();
                for &row in lang_rows.iter().filter(|&&r| r >= start && r < start + n) {
                    let at = (row - start) * width;
                    entry.add_slice(&bs[at..at + width], &is[at..at + width]);
                }
            }
            start += n;
        }
    }
    let languages = texts
        .iter()
        .zip(own.iter().zip(sums))
        .map(|((lang, ids), (rows, tensor_sums))| LanguageRows {
            lang: lang.clone(),
            tokens: ids.len(),
            rows: rows.len(),
            tensors: tensor_sums
                .into_iter()
                .map(|(n, s)| (n, s.norms()))
                .collect(),
        })
        .collect();
    Ok(TokenRowDeltas { languages })
}

impl fmt::Display for TokenRowDeltas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\nΔ on each language's own token rows (used ≥ {MIN_COUNT} times, at least half of them in that language), ‖Δ‖/‖θ_base‖:"
        )?;
        for l in &self.languages {
            write!(
                f,
                "  {:<6} {:>6} rows of {:>8} tokens",
                l.lang, l.rows, l.tokens
            )?;
            for (name, n) in &l.tensors {
                let short = name
                    .trim_end_matches(".weight")
                    .trim_start_matches("model.");
                match n.relative_norm {
                    Some(r) => write!(f, "  {short} {r:.3e}")?,
                    None => write!(f, "  {short} -")?,
                }
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rows_are_frequent_and_mostly_that_languages() {
        // Token 1: en 6 times, de 1 → en's. Token 2: en 5, de 5 → both (half each).
        // Token 3: de 4 times → too rare. Token 4: de 9 → de's.
        let en = [vec![1u32; 6], vec![2; 5]].concat();
        let de = [
            vec![1u32; 1],
            vec![2; 5],
            vec![3; 4],
            vec![4; 9],
            vec![99; 7],
        ]
        .concat();
        let texts = vec![("en".to_string(), en), ("de".to_string(), de)];
        let rows = own_rows(&texts, 8);
        assert_eq!(rows, vec![vec![1, 2], vec![2, 4]]);
    }
}
