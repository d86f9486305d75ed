//! An evaluation suite on disk: `suite.json` names the languages (original or new), a
//! held-out text file per language, and a JSON-lines file of instructions with their exact
//! answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checkpoint::ModelFiles;
use crate::error::{Error, Result};

pub const SUITE_FILE: &str = "suite.json";

#[derive(Debug, Clone, Deserialize)]
struct SuiteJson {
    /// Language code → "original" or "new".
    languages: BTreeMap<String, String>,
    /// Language code → held-out text file.
    #[serde(default)]
    perplexity: BTreeMap<String, String>,
    /// JSON-lines file of {lang, task, prompt, answer}, or several such files by set name.
    #[serde(default)]
    instructions: Option<InstructionFiles>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum InstructionFiles {
    One(String),
    Sets(BTreeMap<String, String>),
}

/// The set name of a suite whose `instructions` is one file.
pub const SINGLE_SET: &str = "held-out";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instruction {
    /// Which instruction set of the suite it belongs to (filled in from suite.json).
    #[serde(default)]
    pub set: String,
    pub lang: String,
    pub task: String,
    pub prompt: String,
    pub answer: String,
}

/// A loaded suite.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Language code → "original" or "new", in code order.
    pub languages: BTreeMap<String, String>,
    /// Language code → held-out text.
    pub perplexity: BTreeMap<String, String>,
    /// Every set's instructions, sets in name order, each in file order.
    pub instructions: Vec<Instruction>,
}

impl Suite {
    /// Reads `suite.json` and the files it names from `files`.
    pub async fn load(files: &ModelFiles) -> Result<Suite> {
        let name = files.display_name(SUITE_FILE);
        let text = files
            .read_text(SUITE_FILE)
            .await?
            .ok_or_else(|| Error::io(&name, "missing: not an evaluation suite"))?;
        let json: SuiteJson = serde_json::from_str(&text)
            .map_err(|e| Error::format(&name, format!("not a suite description: {e}")))?;
        for (lang, kind) in &json.languages {
            if kind != "original" && kind != "new" {
                return Err(Error::format(
                    &name,
                    format!("language '{lang}' is '{kind}', not 'original' or 'new'"),
                ));
            }
        }
        let mut perplexity = BTreeMap::new();
        for (lang, file) in &json.perplexity {
            let text = files.read_text(file).await?.ok_or_else(|| {
                Error::io(files.display_name(file), "missing (named by suite.json)")
            })?;
            perplexity.insert(lang.clone(), text);
        }
        let sets: Vec<(String, String)> = match json.instructions {
            None => Vec::new(),
            Some(InstructionFiles::One(file)) => vec![(SINGLE_SET.to_string(), file)],
            Some(InstructionFiles::Sets(map)) => map.into_iter().collect(),
        };
        let mut instructions = Vec::new();
        for (set, file) in &sets {
            let shown = files.display_name(file);
            let text = files
                .read_text(file)
                .await?
                .ok_or_else(|| Error::io(&shown, "missing (named by suite.json)"))?;
            for (n, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let mut item: Instruction = serde_json::from_str(line)
                    .map_err(|e| Error::format(&shown, format!("line {}: {e}", n + 1)))?;
                item.set = set.clone();
                instructions.push(item);
            }
        }
        for lang in perplexity
            .keys()
            .chain(instructions.iter().map(|i| &i.lang))
        {
            if !json.languages.contains_key(lang) {
                return Err(Error::format(
                    &name,
                    format!("language '{lang}' is used but not listed under \"languages\""),
                ));
            }
        }
        Ok(Suite {
            languages: json.languages,
            perplexity,
            instructions,
        })
    }

    /// The first `per_task` instructions of every (set, language, task), in file order.
    pub fn instructions_per_task(&self, per_task: Option<usize>) -> Vec<Instruction> {
        let Some(limit) = per_task else {
            return self.instructions.clone();
        };
        let mut seen: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
        self.instructions
            .iter()
            .filter(|i| {
                let n = seen.entry((&i.set, &i.lang, &i.task)).or_default();
                *n += 1;
                *n <= limit
            })
            .cloned()
            .collect()
    }
}
