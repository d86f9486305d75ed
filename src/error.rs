//! One error type for the whole crate. Every variant renders as one line that names the
//! file and, where there is one, the tensor — the CLI prints it as is and the page shows it.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{file}: {message}")]
    Io { file: String, message: String },

    /// A file is not what its format says it should be (truncated, corrupt, inconsistent).
    #[error("{file}: {}{message}", tensor_prefix(.tensor))]
    Format {
        file: String,
        tensor: Option<String>,
        message: String,
    },

    /// config.json (or GGUF metadata) describes something invalid or unsupported.
    #[error("{file}: {message}")]
    Config { file: String, message: String },

    /// The model needs a tensor that no file of the checkpoint holds.
    #[error("{file}: tensor '{tensor}' is missing")]
    MissingTensor { file: String, tensor: String },

    /// A tensor exists but its shape is not the one the configuration implies.
    #[error("{file}: tensor '{tensor}' has shape {got:?}, expected {expected:?}")]
    Shape {
        file: String,
        tensor: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// The architecture named by config.json is not one moegraft runs.
    #[error(
        "{file}: unsupported architecture '{arch}' (supported: llama, mistral, qwen2, mixtral)"
    )]
    UnsupportedArchitecture { file: String, arch: String },

    /// The tokenizer or chat template could not be loaded or applied.
    #[error("{file}: {message}")]
    Tokenizer { file: String, message: String },

    /// The GPU adapter cannot hold or run what was asked of it.
    #[error("GPU: {0}")]
    Gpu(String),

    /// A tensor does not fit the adapter's limits even after splitting.
    #[error("{file}: tensor '{tensor}' needs {needed} bytes per buffer but the GPU allows {limit} ({what})")]
    TooLarge {
        file: String,
        tensor: String,
        needed: u64,
        limit: u64,
        what: String,
    },

    /// A user-supplied argument is invalid.
    #[error("{0}")]
    InvalidArgument(String),

    /// A training run was stopped on request; its state is saved for `--resume`.
    #[error("stopped after {done}; resume from {checkpoint}")]
    Stopped { done: String, checkpoint: String },
}

fn tensor_prefix(tensor: &Option<String>) -> String {
    match tensor {
        Some(t) => format!("tensor '{t}': "),
        None => String::new(),
    }
}

impl Error {
    pub fn io(file: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Io {
            file: file.into(),
            message: err.to_string(),
        }
    }

    pub fn format(file: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Format {
            file: file.into(),
            tensor: None,
            message: message.into(),
        }
    }

    pub fn tensor_format(
        file: impl Into<String>,
        tensor: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Format {
            file: file.into(),
            tensor: Some(tensor.into()),
            message: message.into(),
        }
    }

    pub fn config(file: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            file: file.into(),
            message: message.into(),
        }
    }

    pub fn gpu(message: impl Into<String>) -> Self {
        Error::Gpu(message.into())
    }
}
