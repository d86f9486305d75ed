//! Byte sources: where checkpoint bytes come from. Natively a file on disk; in the browser a
//! `Blob`/`File` slice; in tests a buffer in memory. Reads are by byte range so a model is
//! never held twice, and async so the browser's `Blob.arrayBuffer()` fits the same code path.

use std::future::Future;
use std::pin::Pin;

use crate::error::{Error, Result};

pub type ReadFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>>> + 'a>>;
pub type ReadIntoFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

/// Natively a source may be read from several threads (a graft hashes its inputs while it
/// merges them); the browser's sources (`Blob`s) stay on their one thread.
#[cfg(not(target_arch = "wasm32"))]
pub trait Shareable: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync> Shareable for T {}
#[cfg(target_arch = "wasm32")]
pub trait Shareable {}
#[cfg(target_arch = "wasm32")]
impl<T> Shareable for T {}

pub trait ByteSource: Shareable {
    /// File name shown in errors.
    fn name(&self) -> &str;
    /// Total length in bytes.
    fn size(&self) -> u64;
    /// Reads exactly `len` bytes at `offset`; a range past the end is a format error.
    fn read_range(&self, offset: u64, len: usize) -> ReadFuture<'_>;
    /// Reads exactly `buf.len()` bytes at `offset` into `buf`: a caller that reuses one buffer
    /// allocates (and faults in) nothing per read where the source can fill it directly.
    fn read_into<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> ReadIntoFuture<'a> {
        Box::pin(async move {
            let bytes = self.read_range(offset, buf.len()).await?;
            buf.copy_from_slice(&bytes);
            Ok(())
        })
    }
}

/// Checks a range against a source's size, so every implementation reports truncation alike.
pub fn check_range(source: &dyn ByteSource, offset: u64, len: usize) -> Result<()> {
    let end = offset.checked_add(len as u64);
    match end {
        Some(end) if end <= source.size() => Ok(()),
        _ => Err(Error::format(
            source.name(),
            format!(
                "file is truncated: needs bytes {offset}..{} but has {}",
                offset.saturating_add(len as u64),
                source.size()
            ),
        )),
    }
}

/// Bytes held in memory (tests, and files the browser already read whole).
pub struct MemorySource {
    name: String,
    bytes: Vec<u8>,
}

impl MemorySource {
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            bytes,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl ByteSource for MemorySource {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_range(&self, offset: u64, len: usize) -> ReadFuture<'_> {
        Box::pin(async move {
            check_range(self, offset, len)?;
            let start = offset as usize;
            Ok(self.bytes[start..start + len].to_vec())
        })
    }
    fn read_into<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> ReadIntoFuture<'a> {
        Box::pin(async move {
            check_range(self, offset, buf.len())?;
            let start = offset as usize;
            buf.copy_from_slice(&self.bytes[start..start + buf.len()]);
            Ok(())
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::FileSource;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::*;
    use std::fs::File;
    use std::path::Path;

    /// A file on disk, read with positioned reads (no shared cursor, no mapping).
    pub struct FileSource {
        name: String,
        file: File,
        size: u64,
    }

    impl FileSource {
        pub fn open(path: &Path) -> Result<Self> {
            let name = path.display().to_string();
            let file = File::open(path).map_err(|e| Error::io(&name, e))?;
            let size = file.metadata().map_err(|e| Error::io(&name, e))?.len();
            Ok(Self { name, file, size })
        }
    }

    impl ByteSource for FileSource {
        fn name(&self) -> &str {
            &self.name
        }
        fn size(&self) -> u64 {
            self.size
        }
        fn read_range(&self, offset: u64, len: usize) -> ReadFuture<'_> {
            Box::pin(async move {
                check_range(self, offset, len)?;
                let mut buf = vec![0u8; len];
                read_exact_at(&self.file, &mut buf, offset)
                    .map_err(|e| Error::io(&self.name, e))?;
                Ok(buf)
            })
        }
        fn read_into<'a>(&'a self, offset: u64, buf: &'a mut [u8]) -> ReadIntoFuture<'a> {
            Box::pin(async move {
                check_range(self, offset, buf.len())?;
                read_exact_at(&self.file, buf, offset).map_err(|e| Error::io(&self.name, e))
            })
        }
    }

    #[cfg(unix)]
    fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }

    #[cfg(windows)]
    fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            let n = file.seek_read(buf, offset)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}
