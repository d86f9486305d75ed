//! Training on the GPU, natively and in the page: the kernels' launchers (the backward twins
//! of the runtime's, the routing losses and AdamW), what a run keeps on the GPU, one
//! MoE-LPR step, the model a lesson trains (a dense model upcycled, an MoE given more experts),
//! and `teach`, the whole lesson.

pub mod kernels;
pub mod lesson;
pub mod lesson_model;
pub mod memory;
pub mod resume;
pub mod state;
pub mod step;
#[cfg(not(target_arch = "wasm32"))]
pub mod teach;

pub use step::{Stage, StepInput, TrainOptions, Trainer};
