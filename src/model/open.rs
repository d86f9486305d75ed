//! Opening a model from its files: checkpoint headers, a GPU device sized for the largest
//! tensor, the weights, and the tokenizer when there is one. Used by the CLI, the browser
//! worker and the tests alike.

use std::rc::Rc;

use super::routing::RouterMode;
use super::{weights::Progress, LoadOptions, Model};
use crate::checkpoint::moegraft_section::{MoegraftSection, RouterChoice};
use crate::checkpoint::{Checkpoint, ModelFiles};
use crate::error::Result;
use crate::gpu::{GpuContext, GpuOptions};
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

/// The tokenizer (if the directory has one) and the checkpoint's headers.
async fn read_parts(files: ModelFiles) -> Result<(Option<Tokenizer>, Checkpoint)> {
    let tokenizer = match files.get("tokenizer.json") {
        Some(_) => Some(Tokenizer::from_files(&files).await?),
        None => None,
    };
    Ok((tokenizer, Checkpoint::open(files).await?))
}

/// Loads the weights onto `ctx` and applies the router mode.
async fn load_parts(
    ctx: Rc<GpuContext>,
    tokenizer: Option<Tokenizer>,
    ckpt: Checkpoint,
    options: LoadOptions,
    progress: Progress<'_>,
) -> Result<OpenedModel> {
    let router = options.router;
    let mut model = Model::load_with_progress(ctx, &ckpt, options, progress).await?;
    apply_router(&mut model, &ckpt, router, tokenizer.as_ref())?;
    Ok(OpenedModel { model, tokenizer })
}

/// Opens a model on a new GPU context suited to it (storage bindings as large as its
/// largest tensor, where the adapter allows).
pub async fn open_files(
    files: ModelFiles,
    options: LoadOptions,
    mut gpu: GpuOptions,
    progress: Progress<'_>,
) -> Result<OpenedModel> {
    let (tokenizer, ckpt) = read_parts(files).await?;
    gpu.wanted_binding_bytes = gpu.wanted_binding_bytes.max(largest_tensor_bytes(&ckpt));
    let ctx = Rc::new(GpuContext::new(gpu).await?);
    load_parts(ctx, tokenizer, ckpt, options, progress).await
}

/// Opens a model on an existing GPU context (several models sharing one device).
pub async fn open_files_on(
    ctx: Rc<GpuContext>,
    files: ModelFiles,
    options: LoadOptions,
    progress: Progress<'_>,
) -> Result<OpenedModel> {
    let (tokenizer, ckpt) = read_parts(files).await?;
    load_parts(ctx, tokenizer, ckpt, options, progress).await
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
