//! Text generation: prefill the prompt, then decode one token per step with the KV cache,
//! choosing each token on the GPU; stop at an end-of-sequence id, a length, or the caller.

pub mod rng;

use serde::Serialize;

use crate::error::Result;
pub use crate::gpu::kernels::SampleSettings;
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use rng::Rng;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SampleSettings,
    pub seed: u64,
    /// Ids that end generation (the tokenizer's and the model's eos ids).
    pub stop_ids: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            sampling: SampleSettings {
                temperature: 0.0,
                top_k: 0,
                top_p: 1.0,
            },
            seed: 0,
            stop_ids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndOfSequence,
    MaxTokens,
    ContextFull,
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub input_ids: Vec<u32>,
    pub output_ids: Vec<u32>,
    pub text: String,
    pub stop_reason: StopReason,
}

/// Every id that should end generation for this model and tokenizer.
pub fn stop_ids(model: &Model, tokenizer: Option<&Tokenizer>) -> Vec<u32> {
    let mut ids = model.config.eos_token_ids.clone();
    if let Some(id) = tokenizer.and_then(Tokenizer::eos_id) {
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Turns a growing list of ids into text pieces, holding back bytes of an incomplete
/// UTF-8 character until the token that completes it arrives.
pub struct TextStream<'t> {
    tokenizer: &'t Tokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl<'t> TextStream<'t> {
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            emitted: 0,
        }
    }

    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids, true)?;
        if text.ends_with('\u{FFFD}')
            || text.len() < self.emitted
            || !text.is_char_boundary(self.emitted)
        {
            return Ok(String::new());
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(piece)
    }

    pub fn text(&self) -> Result<String> {
        self.tokenizer.decode(&self.ids, true)
    }
}

/// Generates from `prompt_ids`; `on_token(id, text_piece)` sees each token as it comes and
/// returns false to stop.
pub async fn generate(
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    prompt_ids: &[u32],
    options: &GenerateOptions,
    on_token: &mut dyn FnMut(u32, &str) -> bool,
) -> Result<Generation> {
    let mut session = model.session()?;
    let mut rng = Rng::new(options.seed);
    let mut stream = tokenizer.map(TextStream::new);
    let mut output = Vec::new();
    let mut feed: Vec<u32> = prompt_ids.to_vec();
    let mut reason = StopReason::MaxTokens;
    while output.len() < options.max_tokens {
        if session.pos + feed.len() > session.max_context {
            reason = StopReason::ContextFull;
            break;
        }
        let id = model
            .next_token(&mut session, &feed, options.sampling, rng.next_f32())
            .await?;
        if options.stop_ids.contains(&id) {
            reason = StopReason::EndOfSequence;
            break;
        }
        output.push(id);
        let piece = match stream.as_mut() {
            Some(s) => s.push(id)?,
            None => String::new(),
        };
        if !on_token(id, &piece) {
            reason = StopReason::Stopped;
            break;
        }
        feed = vec![id];
    }
    let text = match &stream {
        Some(s) => s.text()?,
        None => String::new(),
    };
    Ok(Generation {
        input_ids: prompt_ids.to_vec(),
        output_ids: output,
        text,
        stop_reason: reason,
    })
}
