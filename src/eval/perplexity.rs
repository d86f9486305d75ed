//! Perplexity of held-out text: the text tokenized once, cut into windows that each start a
//! fresh context, every next token scored from the logits of all positions.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::LogitsWanted;
use crate::model::Model;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, Serialize)]
pub struct Perplexity {
    /// Tokens scored.
    pub tokens: usize,
    /// Mean negative log-likelihood per token (nats).
    pub nll: f64,
    pub perplexity: f64,
}

pub async fn perplexity(
    model: &Model,
    tokenizer: &Tokenizer,
    text: &str,
    window: usize,
) -> Result<Perplexity> {
    let ids = tokenizer.encode(text, false)?;
    if ids.len() < 2 || window < 2 {
        return Err(Error::InvalidArgument(
            "perplexity needs a text of at least two tokens".into(),
        ));
    }
    let vocab = model.config.vocab_size;
    let (mut nll, mut tokens) = (0f64, 0usize);
    for piece in ids.chunks(window).filter(|p| p.len() >= 2) {
        let mut session = model.session_with(LogitsWanted::All)?;
        let logits = model.logits_all(&mut session, piece).await?;
        for (pos, &next) in piece.iter().enumerate().skip(1) {
            let row = &logits[(pos - 1) * vocab..pos * vocab];
            nll += negative_log_likelihood(row, next as usize);
            tokens += 1;
        }
    }
    let mean = nll / tokens as f64;
    Ok(Perplexity {
        tokens,
        nll: mean,
        perplexity: mean.exp(),
    })
}

/// −log softmax(row)[target], computed stably in f64.
fn negative_log_likelihood(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln() - row[target] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_is_the_log_softmax() {
        let row = [1.0f32, 2.0, 3.0];
        let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
        for t in 0..3 {
            let want = -((row[t] as f64).exp() / z).ln();
            assert!((negative_log_likelihood(&row, t) - want).abs() < 1e-12);
        }
        // Large logits do not overflow.
        assert!(negative_log_likelihood(&[1000.0, 0.0], 0).abs() < 1e-9);
    }
}
