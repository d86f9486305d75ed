//! Tokenizer (`tokenizer.json` through the `tokenizers` crate, the same code natively and in
//! wasm) and the model's chat template.

pub mod chat;

use serde_json::Value;

pub use chat::ChatMessage;

use crate::checkpoint::ModelFiles;
use crate::error::{Error, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    file: String,
    /// Where the chat template came from (chat_template.jinja or tokenizer_config.json), for
    /// its errors.
    template_file: String,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// A special-token field of tokenizer_config.json: a string or an AddedToken object.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads tokenizer.json, plus tokenizer_config.json and chat_template.jinja if present.
    pub async fn from_files(files: &ModelFiles) -> Result<Self> {
        let file = files.display_name("tokenizer.json");
        let json = files
            .read_bytes("tokenizer.json")
            .await?
            .ok_or_else(|| Error::Tokenizer {
                file: file.clone(),
                message: "tokenizer.json is missing from the model directory".into(),
            })?;
        let config_name = files.display_name("tokenizer_config.json");
        let config: Value = match files.read_text("tokenizer_config.json").await? {
            Some(text) => serde_json::from_str(&text).map_err(|e| Error::Tokenizer {
                file: config_name.clone(),
                message: format!("not valid JSON: {e}"),
            })?,
            None => Value::Null,
        };
        let (template, template_file) = match files.read_text("chat_template.jinja").await? {
            Some(t) => (Some(t), files.display_name("chat_template.jinja")),
            None => (chat::template_from_config(&config), config_name),
        };
        let mut tokenizer = Self::from_parts(&json, &file, &config, template)?;
        tokenizer.template_file = template_file;
        Ok(tokenizer)
    }

    pub fn from_parts(
        json: &[u8],
        file: &str,
        config: &Value,
        chat_template: Option<String>,
    ) -> Result<Self> {
        // tokenizers panics (an `expect`) on some malformed JSON inside a decoder (bad syntax,
        // bad UTF-8 or escapes) instead of erroring: parse it here (depth-limited by serde_json)
        // and hand tokenizers a value that is known to be well-formed.
        let value: Value = serde_json::from_slice(json).map_err(|e| Error::Tokenizer {
            file: file.to_string(),
            message: format!("cannot load tokenizer: not valid JSON: {e}"),
        })?;
        let inner: tokenizers::Tokenizer =
            serde_json::from_value(value).map_err(|e| Error::Tokenizer {
                file: file.to_string(),
                message: format!("cannot load tokenizer: {e}"),
            })?;
        Ok(Self {
            inner,
            file: file.to_string(),
            template_file: file.to_string(),
            chat_template,
            bos_token: token_string(config.get("bos_token")),
            eos_token: token_string(config.get("eos_token")),
        })
    }

    /// Tokenizes text as given: special tokens written in the text are recognised; BOS/EOS are
    /// added only if the tokenizer's own post-processor adds them (`add_special_tokens`).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer {
                file: self.file.clone(),
                message: format!("cannot encode text: {e}"),
            })
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer {
                file: self.file.clone(),
                message: format!("cannot decode ids: {e}"),
            })
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Renders messages with the chat template (generation prompt appended when asked).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| Error::Tokenizer {
            file: self.file.clone(),
            message: "the model has no chat template (tokenizer_config.json 'chat_template' or chat_template.jinja)".into(),
        })?;
        chat::render(
            template,
            messages,
            add_generation_prompt,
            self.bos_token.as_deref(),
            self.eos_token.as_deref(),
        )
        .map_err(|message| Error::Tokenizer {
            file: self.template_file.clone(),
            message,
        })
    }

    /// A prompt as the model should see it: plain text tokenized as given, or one user
    /// message wrapped in the chat template (whose text already holds any special tokens).
    pub fn prompt_ids(&self, prompt: &str, chat: bool) -> Result<Vec<u32>> {
        if chat {
            self.chat_ids(&[ChatMessage::user(prompt)])
        } else {
            self.encode(prompt, true)
        }
    }

    /// A conversation in the chat template, ending with the assistant's generation prompt.
    pub fn chat_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, true)?;
        self.encode(&text, false)
    }

    /// Ids of the tokenizer's end-of-sequence token, if it has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_to_id(t))
    }
}
