//! Text generation: prefill the prompt, then decode one token per step with the KV cache,
//! choosing each token on the GPU; stop at an end-of-sequence id, a length, or the caller.

pub mod rng;

use serde::Serialize;

use crate::error::Result;
pub use crate::gpu::kernels::SampleSettings;
use crate::model::{Model, Session};
use crate::tokenizer::Tokenizer;
use rng::Rng;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SampleSettings,
    pub seed: u64,
    /// Ids that end generation (the tokenizer's and the model's eos ids).
    pub stop_ids: Vec<u32>,
    /// Record which experts each token went to (MoE models; for the routing view).
    pub record_routes: bool,
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
            record_routes: false,
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
    /// With `record_routes` on an MoE model: the experts chosen for every prompt and output
    /// token, [token][layer][slot], prompt tokens first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<TokenRoutes>>,
}

/// One token's chosen experts: [layer][slot].
pub type TokenRoutes = Vec<Vec<u32>>;

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
    let mut routes = if options.record_routes && model.config.is_moe() {
        session.record_routes(&model.ctx, &model.config)?;
        Some(Vec::new())
    } else {
        None
    };
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
        let last = match routes.as_mut() {
            Some(log) => prefill_routed(model, &mut session, &feed, log).await?,
            None => &feed[..],
        };
        let id = model
            .next_token(&mut session, last, options.sampling, rng.next_f32())
            .await?;
        if let Some(log) = routes.as_mut() {
            log.extend(by_token(model.last_routes(&session).await?));
        }
        if options.stop_ids.contains(&id) {
            reason = StopReason::EndOfSequence;
            feed.clear();
            break;
        }
        output.push(id);
        let piece = match stream.as_mut() {
            Some(s) => s.push(id)?,
            None => String::new(),
        };
        feed = vec![id];
        if !on_token(id, &piece) {
            reason = StopReason::Stopped;
            break;
        }
    }
    // The last output token was chosen but never fed: feed it once more so that every
    // token shown has its routes.
    if let Some(log) = routes.as_mut() {
        if !output.is_empty() && feed.len() == 1 && session.pos < session.max_context {
            model.logits_last(&mut session, &feed).await?;
            log.extend(by_token(model.last_routes(&session).await?));
        }
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
        routes,
    })
}

/// Feeds all but the last chunk of `ids`, logging each chunk's routes (the session keeps
/// only the last chunk's), and returns the last chunk for the caller to feed.
async fn prefill_routed<'a>(
    model: &Model,
    session: &mut Session,
    ids: &'a [u32],
    log: &mut Vec<TokenRoutes>,
) -> Result<&'a [u32]> {
    let chunk = session.scratch.chunk;
    let lead = ids.len().saturating_sub(1) / chunk * chunk;
    for piece in ids[..lead].chunks(chunk) {
        model.logits_last(session, piece).await?;
        log.extend(by_token(model.last_routes(session).await?));
    }
    Ok(&ids[lead..])
}

/// [layer][token][slot] → [token][layer][slot].
fn by_token(per_layer: Vec<Vec<Vec<u32>>>) -> Vec<TokenRoutes> {
    let tokens = per_layer.first().map_or(0, Vec::len);
    (0..tokens)
        .map(|t| per_layer.iter().map(|layer| layer[t].clone()).collect())
        .collect()
}
