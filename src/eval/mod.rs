//! Scoring a model on an evaluation suite (the demo kit's `demo/eval`): perplexity of
//! held-out text per language, and instructions answered exactly in the chat format and
//! stopped with the end token. Target-independent: the page can score what it loads.

pub mod instructions;
#[cfg(not(target_arch = "wasm32"))]
pub mod kit;
pub mod perplexity;
pub mod report;
pub mod suite;

pub use report::{ModelScore, Report};
pub use suite::{Instruction, Suite};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// How much of a suite to run.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Tokens per perplexity window (capped by the model's context).
    pub window: usize,
    /// Instructions per language and task (`None`: all).
    pub per_task: Option<usize>,
    /// New tokens allowed per answer beyond the expected answer's length.
    pub slack_tokens: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            window: 256,
            per_task: None,
            slack_tokens: 8,
        }
    }
}

/// Scores `model` on `suite`. `label` names the model in the report.
pub async fn evaluate(
    label: &str,
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    suite: &Suite,
    options: &EvalOptions,
) -> Result<ModelScore> {
    let tokenizer = tokenizer.ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{label}: the model has no tokenizer.json, which the evaluation needs"
        ))
    })?;
    let mut perplexity = Vec::new();
    for (lang, text) in &suite.perplexity {
        let window = options.window.min(model.options.max_context);
        let score = perplexity::perplexity(model, tokenizer, text, window).await?;
        perplexity.push((lang.clone(), score));
    }
    let chosen = suite.instructions_per_task(options.per_task);
    let outcomes =
        instructions::answer_all(model, tokenizer, &chosen, options.slack_tokens).await?;
    Ok(ModelScore::new(label, perplexity, outcomes))
}
