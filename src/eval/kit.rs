//! The demo kit's comparison (native): its four models and the two grafts the paper sets
//! against each other — ParamΔ (cpt-dense + Δ) and DeltaMoE (cpt-moe + expanded Δ) — made
//! into a scratch directory.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::graft::plan::GraftOptions;
use crate::graft::run::{graft_dirs, GraftInputs};

/// The kit's models, in the table's order: (label, directory).
pub async fn kit_models(
    ctx: &GpuContext,
    kit: &Path,
    scratch: &Path,
) -> Result<Vec<(String, PathBuf)>> {
    let dir = |name: &str| kit.join(name);
    for name in ["base", "instruct", "cpt-dense", "cpt-moe"] {
        if !dir(name).join("config.json").is_file() {
            return Err(Error::io(
                dir(name).display().to_string(),
                "missing: not a demo kit (expected base, instruct, cpt-dense and cpt-moe)",
            ));
        }
    }
    let options = GraftOptions {
        alpha: 1.0,
        ..Default::default()
    };
    let mut grafted = Vec::new();
    for (label, target) in [("ParamΔ", "cpt-dense"), ("DeltaMoE", "cpt-moe")] {
        let out = scratch.join(target.replace("cpt", "grafted"));
        let (b, i, t) = (dir("base"), dir("instruct"), dir(target));
        let inputs = GraftInputs {
            base: &b,
            instruct: &i,
            target: &t,
        };
        graft_dirs(ctx, &inputs, &out, &options, u64::MAX).await?;
        grafted.push((label.to_string(), out));
    }
    let mut models: Vec<(String, PathBuf)> = ["base", "instruct", "cpt-dense"]
        .iter()
        .map(|n| (n.to_string(), dir(n)))
        .collect();
    models.push(grafted.remove(0));
    models.push(("cpt-moe".to_string(), dir("cpt-moe")));
    models.push(grafted.remove(0));
    Ok(models)
}
