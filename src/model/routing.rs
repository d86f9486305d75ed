//! How an upcycled MoE chooses experts at run time. A checkpoint's learned (or centroid)
//! router is one way; for a training-free upcycle the paper's safest default is a language
//! prior: bias each token toward the experts of its language, detected from the Unicode
//! script of its letters, and fall back to expert 0 (the base model's FFN).

use std::rc::Rc;

use super::script::{language_scripts, text_script, token_scripts, Script};
use crate::checkpoint::moegraft_section::{MoegraftSection, RouterChoice};
use crate::checkpoint::ModelConfig;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// A logit bias of 10 outweighs any plausible router logit gap (e^10 ≈ 22 000 : 1), so the
/// prior effectively forces its experts while the router still decides between several experts
/// that share a script.
pub const DEFAULT_PRIOR_STRENGTH: f32 = 10.0;

/// The routing a model applies.
#[derive(Debug, Clone, Default)]
pub enum RouterMode {
    /// The checkpoint's router, as trained (or computed by `upcycle`).
    #[default]
    Learned,
    /// Every token to expert n with weight 1 (for top-k > 1 the other slots weigh 0).
    Expert(usize),
    /// The checkpoint's router plus a per-token logit bias toward its language's experts.
    LanguagePrior(LanguagePrior),
}

/// The names `RouterChoice::parse` reads.
impl std::fmt::Display for RouterMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Learned => f.write_str("learned"),
            Self::Expert(n) => write!(f, "expert={n}"),
            Self::LanguagePrior(_) => f.write_str("language-prior"),
        }
    }
}

/// Language prior bound to one tokenizer: every vocabulary entry's script, and which experts
/// claim which script.
#[derive(Debug, Clone)]
pub struct LanguagePrior {
    /// Script of each token id's text (`None`: no letters).
    token_scripts: Rc<Vec<Option<Script>>>,
    /// Per expert, the scripts its languages are written in.
    expert_scripts: Vec<Vec<Script>>,
    pub strength: f32,
}

impl LanguagePrior {
    /// `expert_languages[e]` lists expert e's language codes; unknown codes are an error so a
    /// typo does not silently send a language to expert 0.
    pub fn new(
        tokenizer: &Tokenizer,
        vocab_size: usize,
        expert_languages: &[Vec<String>],
        strength: f32,
    ) -> Result<Self> {
        let mut expert_scripts = Vec::with_capacity(expert_languages.len());
        for (e, langs) in expert_languages.iter().enumerate() {
            let mut scripts: Vec<Script> = Vec::new();
            for lang in langs {
                let s = language_scripts(lang).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "expert {e}: unknown language code '{lang}' (use ISO 639-1, e.g. en, ja)"
                    ))
                })?;
                scripts.extend(
                    s.iter()
                        .filter(|x| !scripts.contains(x))
                        .collect::<Vec<_>>(),
                );
            }
            expert_scripts.push(scripts);
        }
        // Byte-level pieces of a multi-byte character decode to U+FFFD: no letters, so they
        // inherit their neighbour's script, which is what we want.
        let token_scripts = (0..vocab_size as u32)
            .map(|id| {
                tokenizer
                    .decode(&[id], false)
                    .ok()
                    .and_then(|t| text_script(&t))
            })
            .collect();
        Ok(Self {
            token_scripts: Rc::new(token_scripts),
            expert_scripts,
            strength,
        })
    }

    /// The experts that claim `script`, or expert 0 when none does (or the script is unknown).
    pub fn experts_for(&self, script: Option<Script>) -> Vec<usize> {
        let claimed: Vec<usize> = script
            .map(|s| {
                (0..self.expert_scripts.len())
                    .filter(|&e| self.expert_scripts[e].contains(&s))
                    .collect()
            })
            .unwrap_or_default();
        if claimed.is_empty() {
            vec![0]
        } else {
            claimed
        }
    }

    /// The [ids.len(), experts] logit bias for a chunk of tokens; `previous` carries the last
    /// script across chunks so a letterless token at a chunk start still inherits one.
    pub fn bias(&self, ids: &[u32], experts: usize, previous: &mut Option<Script>) -> Vec<f32> {
        let script_of = |id: u32| self.token_scripts.get(id as usize).copied().flatten();
        let scripts = token_scripts(ids, script_of, previous);
        let mut bias = vec![0.0; ids.len() * experts];
        for (row, script) in bias.chunks_mut(experts).zip(scripts) {
            for e in self.experts_for(script) {
                if let Some(b) = row.get_mut(e) {
                    *b = self.strength;
                }
            }
        }
        bias
    }

    /// The script the prior sees for one token id.
    pub fn token_script(&self, id: u32) -> Option<Script> {
        self.token_scripts.get(id as usize).copied().flatten()
    }
}

impl RouterMode {
    /// Binds a choice to a model: `section` supplies expert languages for the language prior.
    pub fn build(
        choice: RouterChoice,
        config: &ModelConfig,
        section: Option<&MoegraftSection>,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<Self> {
        match choice {
            RouterChoice::Learned => Ok(Self::Learned),
            RouterChoice::Expert(n) => Ok(Self::Expert(n)),
            RouterChoice::LanguagePrior => {
                let section = section.filter(|s| !s.expert_languages.is_empty()).ok_or_else(|| {
                    Error::InvalidArgument(
                        "the language-prior router needs \"moegraft\": {\"expert_languages\": [...]} in config.json (written by `moegraft upcycle`)".into(),
                    )
                })?;
                let tokenizer = tokenizer.ok_or_else(|| {
                    Error::InvalidArgument(
                        "the language-prior router needs tokenizer.json in the model directory"
                            .into(),
                    )
                })?;
                let strength = section.prior_strength.unwrap_or(DEFAULT_PRIOR_STRENGTH);
                Ok(Self::LanguagePrior(LanguagePrior::new(
                    tokenizer,
                    config.vocab_size,
                    &section.expert_languages,
                    strength,
                )?))
            }
        }
    }

    /// Refuses modes the model cannot apply.
    pub fn check(&self, config: &ModelConfig) -> Result<()> {
        if matches!(self, Self::Learned) {
            return Ok(());
        }
        if !config.is_moe() {
            return Err(Error::InvalidArgument(
                "router modes other than 'learned' need an MoE model; this one is dense".into(),
            ));
        }
        match self {
            Self::Expert(n) if *n >= config.num_experts => Err(Error::InvalidArgument(format!(
                "expert={n} does not exist: the model has {} experts (0..{})",
                config.num_experts,
                config.num_experts - 1
            ))),
            Self::LanguagePrior(p) if p.expert_scripts.len() != config.num_experts => {
                Err(Error::InvalidArgument(format!(
                    "the 'moegraft' section lists languages for {} experts, the model has {}",
                    p.expert_scripts.len(),
                    config.num_experts
                )))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prior(
        expert_scripts: Vec<Vec<Script>>,
        token_scripts: Vec<Option<Script>>,
    ) -> LanguagePrior {
        LanguagePrior {
            token_scripts: Rc::new(token_scripts),
            expert_scripts,
            strength: 10.0,
        }
    }

    #[test]
    fn bias_goes_to_claiming_experts_or_expert_0() {
        use Script::*;
        // Expert 0: en, expert 1: ja, expert 2: zh — Han is shared by 1 and 2.
        let p = prior(
            vec![vec![Latin], vec![Han, Kana], vec![Han]],
            vec![Some(Latin), Some(Kana), Some(Han), Some(Cyrillic), None],
        );
        let mut prev = None;
        let b = p.bias(&[4, 0, 1, 4, 2, 3], 3, &mut prev);
        let rows: Vec<&[f32]> = b.chunks(3).collect();
        assert_eq!(rows[0], [10.0, 0.0, 0.0], "no script yet → expert 0");
        assert_eq!(rows[1], [10.0, 0.0, 0.0], "Latin → expert 0");
        assert_eq!(rows[2], [0.0, 10.0, 0.0], "Kana → ja");
        assert_eq!(rows[3], [0.0, 10.0, 0.0], "letterless inherits Kana");
        assert_eq!(rows[4], [0.0, 10.0, 10.0], "Han → ja and zh");
        assert_eq!(rows[5], [10.0, 0.0, 0.0], "unclaimed Cyrillic → expert 0");
    }
}
