//! `moegraft.json`, the manifest moegraft writes beside every model it makes, read back:
//! where a model came from (for `inspect`). `graft::manifest` writes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ModelFiles;
use crate::error::{Error, Result};

pub const MANIFEST_FILE: &str = "moegraft.json";

/// A `moegraft.json` read back (for `inspect`): the fields a reader needs to trace an export.
/// Unknown or missing fields are tolerated so manifests of other versions still read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Provenance {
    #[serde(default)]
    pub tool: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub alpha: Option<f32>,
    #[serde(default)]
    pub expert_alpha: Vec<f32>,
    #[serde(default)]
    pub router_mode: Option<String>,
    #[serde(default)]
    pub dtype: Option<String>,
    /// Input role (base, instruct, target) → its directory as recorded.
    #[serde(default, deserialize_with = "input_paths")]
    pub inputs: BTreeMap<String, String>,
}

/// `{"base": {"path": P, "files": [...]}, ...}` → `{"base": P, ...}`.
fn input_paths<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let value = Value::deserialize(d)?;
    let mut out = BTreeMap::new();
    if let Value::Object(map) = value {
        for (role, model) in map {
            if let Some(path) = model.get("path").and_then(Value::as_str) {
                out.insert(role, path.to_string());
            }
        }
    }
    Ok(out)
}

/// The manifest of a model directory, if it has one.
pub async fn read_provenance(files: &ModelFiles) -> Result<Option<Provenance>> {
    let Some(text) = files.read_text(MANIFEST_FILE).await? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::format(
            files.display_name(MANIFEST_FILE),
            format!("not a moegraft manifest: {e}"),
        )
    })
}
