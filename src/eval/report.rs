//! Scores per model, summed up per language and per task, and the comparison table: one row
//! per model, perplexity and instruction accuracy for the original and the new languages.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::instructions::Outcome;
use super::perplexity::Perplexity;
use super::suite::Suite;

/// Right answers out of asked, and how many ended with the end token.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Tally {
    pub correct: usize,
    pub stopped: usize,
    pub total: usize,
}

impl Tally {
    fn add(&mut self, o: &Outcome) {
        self.correct += o.correct as usize;
        self.stopped += o.stopped as usize;
        self.total += 1;
    }

    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.correct as f64 / self.total as f64
    }
}

/// Tallies by instruction set, then language.
pub type SetTallies = BTreeMap<String, BTreeMap<String, Tally>>;

#[derive(Debug, Clone, Serialize)]
pub struct ModelScore {
    pub model: String,
    pub perplexity: BTreeMap<String, Perplexity>,
    /// Per instruction set, then language.
    pub instructions: SetTallies,
    /// Per instruction set, then language, then task.
    pub tasks: BTreeMap<String, BTreeMap<String, BTreeMap<String, Tally>>>,
    pub outcomes: Vec<Outcome>,
}

impl ModelScore {
    pub fn new(model: &str, perplexity: Vec<(String, Perplexity)>, outcomes: Vec<Outcome>) -> Self {
        let mut instructions = SetTallies::new();
        let mut tasks: BTreeMap<String, BTreeMap<String, BTreeMap<String, Tally>>> =
            BTreeMap::new();
        for o in &outcomes {
            instructions
                .entry(o.set.clone())
                .or_default()
                .entry(o.lang.clone())
                .or_default()
                .add(o);
            tasks
                .entry(o.set.clone())
                .or_default()
                .entry(o.lang.clone())
                .or_default()
                .entry(o.task.clone())
                .or_default()
                .add(o);
        }
        Self {
            model: model.to_string(),
            perplexity: perplexity.into_iter().collect(),
            instructions,
            tasks,
            outcomes,
        }
    }

    /// One set's instructions of the languages of one kind ("original" or "new") together.
    pub fn instructions_of(&self, suite: &Suite, set: &str, kind: &str) -> Tally {
        let mut t = Tally::default();
        for (lang, tally) in self.instructions.get(set).into_iter().flatten() {
            if suite.languages.get(lang).map(String::as_str) == Some(kind) {
                t.correct += tally.correct;
                t.stopped += tally.stopped;
                t.total += tally.total;
            }
        }
        t
    }
}

/// Every model's scores on one suite.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub languages: BTreeMap<String, String>,
    pub models: Vec<ModelScore>,
}

impl Report {
    pub fn new(suite: &Suite, models: Vec<ModelScore>) -> Self {
        Self {
            languages: suite.languages.clone(),
            models,
        }
    }

    /// Languages of one kind, in code order.
    fn langs(&self, kind: &str) -> Vec<&str> {
        self.languages
            .iter()
            .filter(|(_, k)| k.as_str() == kind)
            .map(|(l, _)| l.as_str())
            .collect()
    }

    /// The instruction sets scored, in name order.
    fn sets(&self) -> Vec<&str> {
        let mut sets: Vec<&str> = self
            .models
            .iter()
            .flat_map(|m| m.instructions.keys().map(String::as_str))
            .collect();
        sets.sort_unstable();
        sets.dedup();
        sets
    }

    /// A Markdown table: perplexity per language, then instruction accuracy (right/asked)
    /// per instruction set and language, original languages first. A suite of one set heads
    /// its columns "instr."; several sets are headed by their names.
    pub fn markdown(&self) -> String {
        let langs: Vec<&str> = self
            .langs("original")
            .into_iter()
            .chain(self.langs("new"))
            .collect();
        let kind = |l: &str| {
            if self.languages[l] == "original" {
                ""
            } else {
                "*"
            }
        };
        let sets = self.sets();
        let heading = |set: &str| {
            if sets.len() == 1 {
                "instr.".to_string()
            } else {
                set.to_string()
            }
        };
        let mut out = String::from("| model |");
        for l in &langs {
            let _ = write!(out, " ppl {l}{} |", kind(l));
        }
        for set in &sets {
            for l in &langs {
                let _ = write!(out, " {} {l}{} |", heading(set), kind(l));
            }
        }
        out.push_str(" stops with end token |\n|---|");
        out.push_str(&"---:|".repeat((1 + sets.len()) * langs.len() + 1));
        out.push('\n');
        for m in &self.models {
            let _ = write!(out, "| {} |", m.model);
            for l in &langs {
                match m.perplexity.get(*l) {
                    Some(p) => {
                        let _ = write!(out, " {:.1} |", p.perplexity);
                    }
                    None => out.push_str(" – |"),
                }
            }
            let mut all = Tally::default();
            for set in &sets {
                for l in &langs {
                    match m.instructions.get(*set).and_then(|t| t.get(*l)) {
                        Some(t) => {
                            let _ = write!(
                                out,
                                " {:.0}% ({}/{}) |",
                                100.0 * t.accuracy(),
                                t.correct,
                                t.total
                            );
                            all.correct += t.correct;
                            all.stopped += t.stopped;
                            all.total += t.total;
                        }
                        None => out.push_str(" – |"),
                    }
                }
            }
            let stops = if all.total == 0 {
                0.0
            } else {
                100.0 * all.stopped as f64 / all.total as f64
            };
            let _ = writeln!(out, " {stops:.0}% |");
        }
        if !self.langs("new").is_empty() {
            out.push_str(
                "\n\\* a new language (the suite's `new`: what the continued pretraining teaches)\n",
            );
        }
        out
    }
}
