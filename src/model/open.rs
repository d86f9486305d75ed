//! Opening a model from its files: checkpoint headers, a GPU device sized for the largest
//! tensor, the weights, and the tokenizer when there is one. Used by the CLI, the browser
//! worker and the tests alike.

use std::rc::Rc;

use super::{weights::Progress, LoadOptions, Model};
use crate::checkpoint::{Checkpoint, ModelFiles};
use crate::error::Result;
use crate::gpu::{GpuContext, GpuOptions};
use crate::graft::router::{MoegraftSection, RouterChoice, RouterMode};
use crate::tokenizer::Tokenizer;

pub struct OpenedModel {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
}

/// The largest tensor in bytes: what one storage binding would ideally hold.
pub fn largest_tensor_bytes(ckpt: &Checkpoint) -> u64 {
    ckpt.tensor_names()
        .filter_map(|n| ckpt.info(n).ok())
        .map(|(_, i)| i.len)
        .max()
        .unwrap_or(0)
}

/// Opens a model on a new GPU context suited to it.
pub async fn open_files(
    files: ModelFiles,
    options: LoadOptions,
    mut gpu: GpuOptions,
    progress: Progress<'_>,
) -> Result<OpenedModel> {
    let tokenizer = match files.get("tokenizer.json") {
        Some(_) => Some(Tokenizer::from_files(&files).await?),
        None => None,
    };
    let ckpt = Checkpoint::open(files).await?;
    gpu.wanted_binding_bytes = gpu.wanted_binding_bytes.max(largest_tensor_bytes(&ckpt));
    let ctx = Rc::new(GpuContext::new(gpu).await?);
    let router = options.router;
    let mut model = Model::load_with_progress(ctx, &ckpt, options, progress).await?;
    apply_router(&mut model, &ckpt, router, tokenizer.as_ref())?;
    Ok(OpenedModel { model, tokenizer })
}

/// Opens a model on an existing GPU context (several models sharing one device).
pub async fn open_files_on(
    ctx: Rc<GpuContext>,
    files: ModelFiles,
    options: LoadOptions,
    progress: Progress<'_>,
) -> Result<OpenedModel> {
    let tokenizer = match files.get("tokenizer.json") {
        Some(_) => Some(Tokenizer::from_files(&files).await?),
        None => None,
    };
    let ckpt = Checkpoint::open(files).await?;
    let router = options.router;
    let mut model = Model::load_with_progress(ctx, &ckpt, options, progress).await?;
    apply_router(&mut model, &ckpt, router, tokenizer.as_ref())?;
    Ok(OpenedModel { model, tokenizer })
}

/// Sets the routing asked for, or else the one config.json's `moegraft` section names.
fn apply_router(
    model: &mut Model,
    ckpt: &Checkpoint,
    asked: Option<RouterChoice>,
    tokenizer: Option<&Tokenizer>,
) -> Result<()> {
    let file = ckpt.files.display_name("config.json");
    let section = MoegraftSection::from_config(&ckpt.config, &file)?;
    let choice = asked.unwrap_or_else(|| {
        section
            .as_ref()
            .map_or(RouterChoice::Learned, MoegraftSection::default_choice)
    });
    let mode = RouterMode::build(choice, &ckpt.config, section.as_ref(), tokenizer)?;
    model.set_router_mode(mode)
}

/// Opens a model directory on disk.
#[cfg(not(target_arch = "wasm32"))]
pub async fn open_dir(
    dir: &std::path::Path,
    options: LoadOptions,
    gpu: GpuOptions,
) -> Result<OpenedModel> {
    open_files(ModelFiles::from_dir(dir)?, options, gpu, &mut |_, _| {}).await
}
