//! Training on the GPU, natively and in the page: the kernels' launchers (the
//! backward twins of the runtime's, the routing losses and AdamW). The trainer itself, MoE-LPR's
//! two stages over these, is built on them.

pub mod kernels;
pub mod state;
pub mod step;

pub use step::{Stage, StepInput, TrainOptions, Trainer};
