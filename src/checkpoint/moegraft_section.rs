//! The `"moegraft"` section of an upcycled model's config.json and the router a user or the
//! section asks for (`RouterChoice`), before the model binds it to a tokenizer
//! (`model::routing::RouterMode`).

use serde::Deserialize;

use super::ModelConfig;
use crate::error::{Error, Result};

/// What the CLI or config.json asks for, before it is bound to a tokenizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RouterChoice {
    Learned,
    LanguagePrior,
    Expert(usize),
}

impl RouterChoice {
    /// `learned`, `language-prior` or `expert=N`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "learned" => Ok(Self::Learned),
            "language-prior" => Ok(Self::LanguagePrior),
            _ => s
                .strip_prefix("expert=")
                .and_then(|n| n.parse().ok())
                .map(Self::Expert)
                .ok_or_else(|| {
                    format!("unknown router '{s}' (learned, language-prior or expert=N)")
                }),
        }
    }
}

/// The `"moegraft"` section of an upcycled model's config.json (plain Mixtral loaders ignore
/// it): which languages each expert was trained for and how to route by default.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct MoegraftSection {
    #[serde(default)]
    pub expert_languages: Vec<Vec<String>>,
    /// "learned", "centroid" (a learned-style router computed from samples) or "language-prior".
    #[serde(default)]
    pub router: Option<String>,
    #[serde(default)]
    pub prior_strength: Option<f32>,
    /// The directory each expert's FFN came from (expert 0: the base), as `upcycle` recorded.
    #[serde(default)]
    pub experts: Vec<String>,
    /// "base" or "average": where attention, norms and embeddings came from.
    #[serde(default)]
    pub non_ffn: Option<String>,
}

impl MoegraftSection {
    pub const KEY: &'static str = "moegraft";

    /// The section of `config`, if it has one; `file` names config.json in messages.
    pub fn from_config(config: &ModelConfig, file: &str) -> Result<Option<Self>> {
        let Some(v) = config.raw.get(Self::KEY) else {
            return Ok(None);
        };
        serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| Error::config(file, format!("invalid 'moegraft' section: {e}")))
    }

    /// The router this section asks the runtime to use by default.
    pub fn default_choice(&self) -> RouterChoice {
        match self.router.as_deref() {
            Some("language-prior") => RouterChoice::LanguagePrior,
            _ => RouterChoice::Learned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_router_choices() {
        assert_eq!(RouterChoice::parse("learned"), Ok(RouterChoice::Learned));
        assert_eq!(
            RouterChoice::parse("language-prior"),
            Ok(RouterChoice::LanguagePrior)
        );
        assert_eq!(RouterChoice::parse("expert=3"), Ok(RouterChoice::Expert(3)));
        assert!(RouterChoice::parse("expert=").is_err());
        assert!(RouterChoice::parse("expert=-1").is_err());
        assert!(RouterChoice::parse("centroid").is_err());
    }
}
