//! `moegraft.json`: what an export was made from and how — each input file with its size and
//! sha256, the method, α and α per expert, the router mode and the tool's version — so a
//! grafted model can be traced and reproduced.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::plan::GraftPlan;
use crate::checkpoint::ModelFiles;
use crate::error::Result;

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
