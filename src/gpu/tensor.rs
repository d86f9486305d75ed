//! GPU buffers for weights and activations. Weight matrices keep their stored dtype (f16 and
//! bf16 packed two per u32 word) or are quantized to Q8_0 (see `q8_0`), and are split into
//! row chunks when they exceed the adapter's storage-binding limit (128 MiB on many devices) —
//! the vocabulary projection, typically.

use wgpu::util::DeviceExt;

use super::{q8_0, GpuContext};
use crate::checkpoint::{dtype, DType};
use crate::error::{Error, Result};

/// Storage buffers that kernels read, write and copy.
pub const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

#[derive(Clone, Debug)]
pub struct MatrixChunk {
    pub buffer: wgpu::Buffer,
    pub row_start: usize,
    pub rows: usize,
}

/// How a matrix's elements are held on the GPU: the `W_DTYPE` of `shaders/weights.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// As the checkpoint stores it: f32 one per word, f16/bf16 two per word.
    Plain(DType),
    /// llama.cpp's Q8_0 in superblocks of four 32-element blocks (see `q8_0`); rows of whole
    /// blocks.
    Q8_0,
}

impl WeightFormat {
    /// The name users see: `f32`, `f16`, `bf16` or `q8_0`.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Plain(DType::F32) => "f32",
            WeightFormat::Plain(DType::F16) => "f16",
            WeightFormat::Plain(DType::BF16) => "bf16",
            WeightFormat::Q8_0 => "q8_0",
        }
    }
}

impl From<DType> for WeightFormat {
    fn from(dtype: DType) -> Self {
        WeightFormat::Plain(dtype)
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A [rows, cols] weight matrix on the GPU.
#[derive(Clone, Debug)]
pub struct GpuMatrix {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// The element type its rows are written in (`write_rows`' bytes).
    pub dtype: DType,
    /// How it is held: `Plain(dtype)`, or quantized.
    pub format: WeightFormat,
    /// u32 words per stored row (16-bit rows are padded to a whole word).
    pub row_words: usize,
    pub chunks: Vec<MatrixChunk>,
}

/// u32 words of one stored row of `cols` elements (Q8_0: `cols` a multiple of 32).
pub fn row_words(format: impl Into<WeightFormat>, cols: usize) -> usize {
    match format.into() {
        WeightFormat::Plain(DType::F32) => cols,
        WeightFormat::Plain(DType::F16 | DType::BF16) => cols.div_ceil(2),
        WeightFormat::Q8_0 => q8_0::row_words(cols),
    }
}

impl GpuMatrix {
    pub fn bytes(&self) -> u64 {
        (self.rows * self.row_words * 4) as u64
    }

    /// Writes `rows` rows starting at global row `first_row` from tightly packed `bytes` of
    /// `self.dtype`, padding 16-bit rows of odd length, quantizing Q8_0 matrices and
    /// splitting across chunks.
    pub fn write_rows(&self, ctx: &GpuContext, first_row: usize, bytes: &[u8]) -> Result<()> {
        self.write_rows_from(ctx, first_row, self.dtype, bytes)
    }

    /// `write_rows` from bytes of any dtype: converted to a plain matrix's dtype, or
    /// quantized straight from their own values.
    pub fn write_rows_from(
        &self,
        ctx: &GpuContext,
        first_row: usize,
        from: DType,
        bytes: &[u8],
    ) -> Result<()> {
        let row_bytes = self.cols * from.size();
        if row_bytes == 0
            || !bytes.len().is_multiple_of(row_bytes)
            || first_row + bytes.len() / row_bytes > self.rows
        {
            return Err(Error::tensor_format(
                &self.name,
                &self.name,
                format!(
                    "{} bytes do not make whole rows of {} at row {first_row}",
                    bytes.len(),
                    row_bytes
                ),
            ));
        }
        let rows = bytes.len() / row_bytes;
        let stored: Vec<u8>;
        let (bytes, row_bytes) = match self.format {
            WeightFormat::Q8_0 => {
                stored = q8_0::quantize_rows(from, bytes, self.cols);
                (stored.as_slice(), self.row_words * 4)
            }
            WeightFormat::Plain(to) if to != from => {
                stored = dtype::from_f32(to, &dtype::to_f32(from, bytes));
                (stored.as_slice(), self.cols * to.size())
            }
            WeightFormat::Plain(_) => (bytes, row_bytes),
        };
        let stored_row = self.row_words * 4;
        for chunk in &self.chunks {
            let start = first_row.max(chunk.row_start);
            let end = (first_row + rows).min(chunk.row_start + chunk.rows);
            if start >= end {
                continue;
            }
            let src = &bytes[(start - first_row) * row_bytes..(end - first_row) * row_bytes];
            let dst_offset = ((start - chunk.row_start) * stored_row) as u64;
            if stored_row == row_bytes {
                ctx.queue.write_buffer(&chunk.buffer, dst_offset, src);
            } else {
                let mut padded = vec![0u8; (end - start) * stored_row];
                for (i, row) in src.chunks_exact(row_bytes).enumerate() {
                    padded[i * stored_row..i * stored_row + row_bytes].copy_from_slice(row);
                }
                ctx.queue.write_buffer(&chunk.buffer, dst_offset, &padded);
            }
        }
        Ok(())
    }
}

impl GpuContext {
    /// Allocates a matrix, split into as few row chunks as the binding limit allows.
    pub fn create_matrix(
        &self,
        name: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
    ) -> Result<GpuMatrix> {
        self.create_matrix_as(name, dtype, dtype.into(), rows, cols, 1)
    }

    /// A matrix whose rows go in pairs that one kernel invocation reads together (the fused
    /// gate/up projection): no chunk boundary falls inside a pair.
    pub fn create_matrix_in_pairs(
        &self,
        name: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
    ) -> Result<GpuMatrix> {
        self.create_matrix_as(name, dtype, dtype.into(), rows, cols, 2)
    }

    /// A matrix written in `dtype` and held as `format`, its rows in groups of `group` that
    /// no chunk boundary splits (1, or 2 for `create_matrix_in_pairs`' pairs).
    pub fn create_matrix_as(
        &self,
        name: &str,
        dtype: DType,
        format: WeightFormat,
        rows: usize,
        cols: usize,
        group: usize,
    ) -> Result<GpuMatrix> {
        if format == WeightFormat::Q8_0 && !q8_0::fits(cols) {
            return Err(Error::InvalidArgument(format!(
                "{name}: rows of {cols} elements are not whole Q8_0 blocks of {}",
                q8_0::BLOCK
            )));
        }
        let group = group.max(1);
        let words = row_words(format, cols);
        let row_bytes = (words * 4) as u64;
        let group_bytes = row_bytes * group as u64;
        let limit = self.buffer_limit();
        if group_bytes > limit {
            return Err(Error::TooLarge {
                file: name.to_string(),
                tensor: name.to_string(),
                needed: group_bytes,
                limit,
                what: if group == 1 {
                    "one row exceeds the storage-binding limit".into()
                } else {
                    format!("{group} rows read together exceed the storage-binding limit")
                },
            });
        }
        let rows_per_chunk = ((limit / group_bytes) as usize).max(1) * group;
        let mut chunks = Vec::new();
        let mut row_start = 0;
        while row_start < rows || chunks.is_empty() {
            let n = rows.saturating_sub(row_start).min(rows_per_chunk);
            let size = ((n.max(1) as u64) * row_bytes).max(4);
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(name),
                size,
                usage: STORAGE,
                mapped_at_creation: false,
            });
            chunks.push(MatrixChunk {
                buffer,
                row_start,
                rows: n,
            });
            row_start += n.max(1);
        }
        Ok(GpuMatrix {
            name: name.to_string(),
            rows,
            cols,
            dtype,
            format,
            row_words: words,
            chunks,
        })
    }

    /// Uploads a whole [rows, cols] matrix from little-endian `dtype` bytes.
    pub fn upload_matrix(
        &self,
        name: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<GpuMatrix> {
        let m = self.create_matrix(name, dtype, rows, cols)?;
        m.write_rows(self, 0, bytes)?;
        Ok(m)
    }

    /// An f32 storage buffer holding `data`.
    pub fn upload_f32(&self, label: &str, data: &[f32]) -> wgpu::Buffer {
        self.upload(label, data)
    }

    pub fn upload_u32(&self, label: &str, data: &[u32]) -> wgpu::Buffer {
        self.upload(label, data)
    }

    /// A storage buffer holding `data` (4 zero bytes when empty: bindings cannot be empty).
    fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let contents: &[u8] = if data.is_empty() {
            &[0; 4]
        } else {
            bytemuck::cast_slice(data)
        };
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: STORAGE,
            })
    }

    /// A zeroed storage buffer of `len` 4-byte elements; errors if it exceeds the limits.
    pub fn create_storage(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        let size = (len.max(1) as u64) * 4;
        let limit = self.buffer_limit();
        if size > limit {
            return Err(Error::TooLarge {
                file: "activations".into(),
                tensor: label.to_string(),
                needed: size,
                limit,
                what: "reduce the context length or the prefill chunk".into(),
            });
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: STORAGE,
            mapped_at_creation: false,
        }))
    }

    /// Reads `len` f32 values at element `offset` of `buffer` (waits for queued work).
    pub async fn read_f32(
        &self,
        buffer: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Result<Vec<f32>> {
        let mut batch = super::Batch::new(self);
        let rb = batch.read_back(buffer, (offset * 4) as u64, (len * 4) as u64);
        batch.submit();
        let mut v = rb.f32s(self).await?;
        v.truncate(len);
        Ok(v)
    }
}
