//! Instructions answered greedily in the chat format: right when the answer is exactly the
//! expected text and the model ended it with its end token.

use serde::Serialize;

use super::suite::Instruction;
use crate::error::Result;
use crate::generate::{self, GenerateOptions, SampleSettings, StopReason};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub set: String,
    pub lang: String,
    pub task: String,
    pub prompt: String,
    pub expected: String,
    pub output: String,
    /// Ended with an end token (rather than running out of tokens).
    pub stopped: bool,
    /// Exactly the expected answer (surrounding whitespace aside), and stopped.
    pub correct: bool,
}

pub async fn answer_all(
    model: &Model,
    tokenizer: &Tokenizer,
    items: &[Instruction],
    slack_tokens: usize,
) -> Result<Vec<Outcome>> {
    let stop_ids = generate::stop_ids(model, Some(tokenizer));
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let prompt = tokenizer.prompt_ids(&item.prompt, true)?;
        let expected_len = tokenizer.encode(&item.answer, false)?.len();
        let options = GenerateOptions {
            max_tokens: expected_len + slack_tokens,
            sampling: SampleSettings {
                temperature: 0.0,
                top_k: 0,
                top_p: 1.0,
            },
            seed: 0,
            stop_ids: stop_ids.clone(),
            record_routes: false,
        };
        let g =
            generate::generate(model, Some(tokenizer), &prompt, &options, &mut |_, _| true).await?;
        let stopped = g.stop_reason == StopReason::EndOfSequence;
        out.push(Outcome {
            set: item.set.clone(),
            lang: item.lang.clone(),
            task: item.task.clone(),
            prompt: item.prompt.clone(),
            expected: item.answer.clone(),
            correct: stopped && g.text.trim() == item.answer.trim(),
            output: g.text,
            stopped,
        });
    }
    Ok(out)
}
