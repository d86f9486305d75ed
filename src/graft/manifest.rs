//! `moegraft.json`: what an export was made from and how — each input file with its size and
//! sha256, the method, α and α per expert, the router mode and the tool's version — so a
//! grafted model can be traced and reproduced.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::plan::GraftPlan;
use crate::checkpoint::ModelFiles;
use crate::error::{Error, Result};

pub const MANIFEST_FILE: &str = "moegraft.json";

/// Bytes hashed per read, so a multi-gigabyte shard never sits in memory.
const HASH_CHUNK: usize = 8 << 20;

/// One input file as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Every file of a model directory, hashed.
pub async fn describe_inputs(files: &ModelFiles) -> Result<Vec<InputFile>> {
    let mut out = Vec::new();
    // One buffer for every chunk: a fresh one per read would be faulted in each time.
    let mut chunk = vec![0u8; HASH_CHUNK];
    for name in files.names() {
        let Some(source) = files.get(name) else {
            continue;
        };
        let size = source.size();
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        while offset < size {
            let len = (size - offset).min(HASH_CHUNK as u64) as usize;
            source.read_into(offset, &mut chunk[..len]).await?;
            hasher.update(&chunk[..len]);
            offset += len as u64;
        }
        out.push(InputFile {
            name: name.to_string(),
            size,
            sha256: hex(&hasher.finalize()),
        });
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One input model: its directory label and files.
pub struct InputModel<'a> {
    pub label: &'a str,
    pub files: &'a [InputFile],
}

fn model_json(m: &InputModel) -> Value {
    let files: Vec<Value> = m
        .files
        .iter()
        .map(|f| json!({ "name": f.name, "size": f.size, "sha256": f.sha256 }))
        .collect();
    json!({ "path": m.label, "files": files })
}

/// The manifest of a graft of `plan` from base, instruct and target.
pub fn manifest(
    plan: &GraftPlan,
    base: &InputModel,
    instruct: &InputModel,
    target: &InputModel,
) -> Value {
    json!({
        "tool": "moegraft",
        "version": env!("CARGO_PKG_VERSION"),
        "method": plan.method.name(),
        "alpha": plan.alpha,
        "expert_alpha": plan.expert_alpha,
        // The target's own routers, trained during continued pretraining, are kept, and so
        // is the routing mode its config asks for.
        "router_mode": plan.router_mode,
        "dtype": plan.dtype.torch_name(),
        "inputs": {
            "base": model_json(base),
            "instruct": model_json(instruct),
            "target": model_json(target),
        },
    })
}

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
