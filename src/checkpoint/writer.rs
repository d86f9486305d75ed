//! Writing safetensors: the header and layout are computed up front from the tensor list, then
//! tensor bytes are streamed one at a time, so a converted model never has to sit in memory.
//!
//! The layout logic (`layout`, `plan_shards`, `index_json`) is target-independent so a browser
//! writer can reuse it; the file and directory helpers below it are native only.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{json, Map, Value};

use super::dtype::DType;
use crate::error::{Error, Result};

/// Shards are cut above this many bytes of tensor data unless told otherwise.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// One tensor to write: its name, element type and row-major shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<usize>) -> Self {
        Self {
            name: name.into(),
            dtype,
            shape,
        }
    }

    /// Size of the tensor's data in bytes; `None` on overflow.
    pub fn byte_len(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.dtype.size() as u64, |acc, &d| {
                acc.checked_mul(d as u64)
            })
    }
}

/// A safetensors file's layout: the complete header (8-byte length + JSON padded with spaces
/// to a multiple of 8) and each tensor's byte range relative to the data section.
#[derive(Debug, Clone)]
pub struct Layout {
    pub header: Vec<u8>,
    /// `(start, end)` per tensor, in the order given.
    pub offsets: Vec<(u64, u64)>,
    /// Total file size: header plus data.
    pub file_len: u64,
}

/// Lays tensors out contiguously in the given order and builds the header Python's
/// safetensors accepts (`"__metadata__": {"format": "pt"}`, no gaps, no duplicate names).
pub fn layout(file: &str, specs: &[TensorSpec]) -> Result<Layout> {
    let mut entries = Map::new();
    entries.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offsets = Vec::with_capacity(specs.len());
    let mut pos: u64 = 0;
    for spec in specs {
        if spec.name == "__metadata__" || entries.contains_key(&spec.name) {
            return Err(Error::tensor_format(
                file,
                &spec.name,
                "tensor name is duplicated or reserved",
            ));
        }
        let len = spec
            .byte_len()
            .ok_or_else(|| Error::tensor_format(file, &spec.name, "shape overflows"))?;
        let end = pos
            .checked_add(len)
            .ok_or_else(|| Error::tensor_format(file, &spec.name, "file size overflows"))?;
        entries.insert(
            spec.name.clone(),
            json!({
                "dtype": spec.dtype.safetensors_name(),
                "shape": spec.shape,
                "data_offsets": [pos, end],
            }),
        );
        offsets.push((pos, end));
        pos = end;
    }
    let mut json = serde_json::to_vec(&Value::Object(entries))
        .map_err(|e| Error::format(file, format!("cannot serialise header: {e}")))?;
    // Python's safetensors pads with spaces so the data section starts 8-byte aligned.
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut header = (json.len() as u64).to_le_bytes().to_vec();
    header.extend_from_slice(&json);
    let file_len = (header.len() as u64)
        .checked_add(pos)
        .ok_or_else(|| Error::format(file, "file size overflows"))?;
    Ok(Layout {
        header,
        offsets,
        file_len,
    })
}

/// Writes one safetensors file: the header at creation, then each tensor in layout order,
/// checking names and byte counts so a caller bug cannot produce a corrupt file.
pub struct SafetensorsWriter<W: Write> {
    out: W,
    file: String,
    specs: Vec<TensorSpec>,
    layout: Layout,
    next: usize,
    /// Bytes of the next tensor already written by `write_part`.
    partial: u64,
}

impl<W: Write> SafetensorsWriter<W> {
    /// Writes the header for `specs` to `out`. `file` names the output in messages.
    pub fn new(mut out: W, file: impl Into<String>, specs: Vec<TensorSpec>) -> Result<Self> {
        let file = file.into();
        let layout = layout(&file, &specs)?;
        out.write_all(&layout.header)
            .map_err(|e| Error::io(&file, e))?;
        Ok(Self {
            out,
            file,
            specs,
            layout,
            next: 0,
            partial: 0,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The name of the tensor expected next, if any remain.
    pub fn expected_next(&self) -> Option<&str> {
        self.specs.get(self.next).map(|s| s.name.as_str())
    }

    /// Appends the next tensor's bytes; the name and length must match the layout.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let declared = self.declared_len(name)?;
        if self.partial != 0 || bytes.len() as u64 != declared {
            return Err(self.length_error(name, declared, self.partial + bytes.len() as u64));
        }
        self.write_part(name, bytes).map(|_| ())
    }

    /// Appends the next part of the next tensor's bytes (a tensor merged in pieces); the parts
    /// must add up to its length. Returns whether the tensor is now complete.
    pub fn write_part(&mut self, name: &str, bytes: &[u8]) -> Result<bool> {
        let declared = self.declared_len(name)?;
        let written = self.partial + bytes.len() as u64;
        if written > declared {
            return Err(self.length_error(name, declared, written));
        }
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.file, e))?;
        if written < declared {
            self.partial = written;
            return Ok(false);
        }
        self.partial = 0;
        self.next += 1;
        Ok(true)
    }

    /// The byte length of tensor `name`, which must be the one expected next.
    fn declared_len(&self, name: &str) -> Result<u64> {
        let Some(spec) = self.specs.get(self.next) else {
            return Err(Error::tensor_format(
                &self.file,
                name,
                "written after all declared tensors",
            ));
        };
        if spec.name != name {
            return Err(Error::tensor_format(
                &self.file,
                name,
                format!("written out of order: expected '{}' next", spec.name),
            ));
        }
        let (start, end) = self.layout.offsets[self.next];
        Ok(end - start)
    }

    fn length_error(&self, name: &str, declared: u64, given: u64) -> Error {
        let spec = &self.specs[self.next];
        Error::tensor_format(
            &self.file,
            name,
            format!(
                "declared as {} {:?} ({declared} bytes) but {given} bytes were given",
                spec.dtype.safetensors_name(),
                spec.shape,
            ),
        )
    }

    /// Checks every declared tensor was written, flushes, and returns the sink.
    pub fn finish(mut self) -> Result<W> {
        if let Some(missing) = self.expected_next() {
            let why = match self.partial {
                0 => "declared but never written".to_string(),
                n => format!("only {n} of its bytes were written"),
            };
            return Err(Error::tensor_format(&self.file, missing, why));
        }
        self.out.flush().map_err(|e| Error::io(&self.file, e))?;
        Ok(self.out)
    }
}

/// One output file of a sharded checkpoint: its name and the indices of its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardPlan {
    pub file_name: String,
    pub tensors: Vec<usize>,
}

/// Splits tensors (kept in order) into shards of at most `max_shard_bytes` of data each — a
/// single tensor larger than that gets a shard of its own. One shard is `model.safetensors`;
/// several are `model-0000i-of-0000N.safetensors`.
pub fn plan_shards(specs: &[TensorSpec], max_shard_bytes: u64) -> Vec<ShardPlan> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_bytes: u64 = 0;
    for (i, spec) in specs.iter().enumerate() {
        let len = spec.byte_len().unwrap_or(u64::MAX);
        if !current.is_empty() && current_bytes.saturating_add(len) > max_shard_bytes {
            groups.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current.push(i);
        current_bytes = current_bytes.saturating_add(len);
    }
    if !current.is_empty() || groups.is_empty() {
        groups.push(current);
    }
    let n = groups.len();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, tensors)| ShardPlan {
            file_name: if n == 1 {
                super::SINGLE_FILE.to_string()
            } else {
                format!("model-{:05}-of-{n:05}.safetensors", i + 1)
            },
            tensors,
        })
        .collect()
}

/// `model.safetensors.index.json` for a sharded plan (`total_size` counts tensor data only, as
/// Hugging Face writes it).
pub fn index_json(specs: &[TensorSpec], shards: &[ShardPlan]) -> Value {
    let mut weight_map = BTreeMap::new();
    let mut total: u64 = 0;
    for shard in shards {
        for &i in &shard.tensors {
            weight_map.insert(specs[i].name.clone(), shard.file_name.clone());
            total = total.saturating_add(specs[i].byte_len().unwrap_or(0));
        }
    }
    json!({ "metadata": { "total_size": total }, "weight_map": weight_map })
}

/// Where a model's files go: a directory natively (written under a temporary name and
/// renamed when complete), `Blob`s handed to the page in the browser.
pub trait OutputFiles {
    type File: Write;
    /// Starts the file `name`.
    fn create(&mut self, name: &str) -> Result<Self::File>;
    /// Takes a completely written file (flushes, syncs or hands it over).
    fn complete(&mut self, name: &str, file: Self::File) -> Result<()>;
    /// How the file `name` appears in messages.
    fn label(&self, name: &str) -> String;

    /// Writes a small file (JSON, tokenizer) whole.
    fn write_file(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut file = self.create(name)?;
        file.write_all(bytes)
            .map_err(|e| Error::io(self.label(name), e))?;
        self.complete(name, file)
    }

    /// Writes `value` as pretty JSON with a trailing newline.
    fn write_json(&mut self, name: &str, value: &Value) -> Result<()> {
        self.write_file(name, &pretty_json(value))
    }
}

impl<T: OutputFiles> OutputFiles for &mut T {
    type File = T::File;
    fn create(&mut self, name: &str) -> Result<Self::File> {
        (**self).create(name)
    }
    fn complete(&mut self, name: &str, file: Self::File) -> Result<()> {
        (**self).complete(name, file)
    }
    fn label(&self, name: &str) -> String {
        (**self).label(name)
    }
}

/// Pretty JSON with a trailing newline, as Hugging Face writes its files.
pub fn pretty_json(value: &Value) -> Vec<u8> {
    let mut text = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"null".to_vec());
    text.push(b'\n');
    text
}

/// Streams a (possibly sharded) checkpoint into an output: tensors are written in the order of
/// the specs given to `new`, each shard's file started when its first tensor comes.
pub struct ShardedWriter<O: OutputFiles> {
    out: O,
    specs: Vec<TensorSpec>,
    shards: Vec<ShardPlan>,
    shard: usize,
    current: Option<SafetensorsWriter<O::File>>,
    written: usize,
}

impl<O: OutputFiles> ShardedWriter<O> {
    pub fn to(out: O, specs: Vec<TensorSpec>, max_shard_bytes: u64) -> Result<Self> {
        let shards = plan_shards(&specs, max_shard_bytes);
        // Catch duplicates before any file is created.
        let mut names = std::collections::HashSet::new();
        for s in &specs {
            if !names.insert(s.name.as_str()) {
                return Err(Error::tensor_format(
                    out.label(""),
                    &s.name,
                    "tensor name is duplicated",
                ));
            }
        }
        Ok(Self {
            out,
            specs,
            shards,
            shard: 0,
            current: None,
            written: 0,
        })
    }

    pub fn shards(&self) -> &[ShardPlan] {
        &self.shards
    }

    /// Appends the next tensor (in spec order).
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write(name, bytes, true)
    }

    /// Appends the next part of the next tensor (see `SafetensorsWriter::write_part`).
    pub fn write_part(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write(name, bytes, false)
    }

    fn write(&mut self, name: &str, bytes: &[u8], whole: bool) -> Result<()> {
        let mut writer = match self.current.take() {
            Some(w) => w,
            None => self.open_shard(name)?,
        };
        let complete = if whole {
            writer.write_tensor(name, bytes)?;
            true
        } else {
            writer.write_part(name, bytes)?
        };
        if !complete {
            self.current = Some(writer);
            return Ok(());
        }
        self.written += 1;
        if writer.expected_next().is_some() {
            self.current = Some(writer);
            return Ok(());
        }
        let file_name = &self.shards[self.shard].file_name;
        let file = writer.finish()?;
        self.out.complete(file_name, file)?;
        self.shard += 1;
        Ok(())
    }

    fn open_shard(&mut self, name: &str) -> Result<SafetensorsWriter<O::File>> {
        let plan = self.shards.get(self.shard).ok_or_else(|| {
            Error::tensor_format(
                self.out.label(""),
                name,
                "written after all declared tensors",
            )
        })?;
        let file = self.out.create(&plan.file_name)?;
        let specs = plan
            .tensors
            .iter()
            .map(|&i| self.specs[i].clone())
            .collect();
        SafetensorsWriter::new(file, self.out.label(&plan.file_name), specs)
    }

    /// Checks every tensor was written and writes the index when sharded. Returns the names
    /// of the files written.
    pub fn finish(mut self) -> Result<Vec<String>> {
        if self.written < self.specs.len() {
            return Err(Error::tensor_format(
                self.out.label(""),
                &self.specs[self.written].name,
                "declared but never written",
            ));
        }
        // An empty model still gets its (empty) single file.
        if self.specs.is_empty() {
            let name = super::SINGLE_FILE;
            let file = self.out.create(name)?;
            let file = SafetensorsWriter::new(file, self.out.label(name), Vec::new())?.finish()?;
            self.out.complete(name, file)?;
        }
        let mut files: Vec<String> = self.shards.iter().map(|s| s.file_name.clone()).collect();
        if self.shards.len() > 1 {
            let index = index_json(&self.specs, &self.shards);
            self.out.write_json(super::INDEX_FILE, &index)?;
            files.push(super::INDEX_FILE.to_string());
        }
        Ok(files)
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::*;
    use std::fs::File;
    use std::io::BufWriter;
    use std::path::{Path, PathBuf};

    fn label(path: &Path) -> String {
        path.display().to_string()
    }

    /// A directory's files.
    pub struct DirOutput {
        dir: PathBuf,
    }

    impl DirOutput {
        pub fn new(dir: &Path) -> Self {
            Self {
                dir: dir.to_path_buf(),
            }
        }
    }

    impl OutputFiles for DirOutput {
        type File = BufWriter<File>;

        fn create(&mut self, name: &str) -> Result<Self::File> {
            let path = self.dir.join(name);
            let file = File::create(&path).map_err(|e| Error::io(label(&path), e))?;
            Ok(BufWriter::with_capacity(1 << 20, file))
        }

        fn complete(&mut self, name: &str, file: Self::File) -> Result<()> {
            let path = self.label(name);
            let file = file.into_inner().map_err(|e| Error::io(&path, e.error()))?;
            file.sync_all().map_err(|e| Error::io(&path, e))
        }

        fn label(&self, name: &str) -> String {
            label(&self.dir.join(name))
        }
    }

    /// The native sharded writer: into a directory.
    pub type ModelWriter = ShardedWriter<DirOutput>;

    impl ShardedWriter<DirOutput> {
        pub fn new(dir: &Path, specs: Vec<TensorSpec>, max_shard_bytes: u64) -> Result<Self> {
            Self::to(DirOutput::new(dir), specs, max_shard_bytes)
        }
    }

    /// Writes a small file (JSON, tokenizer) into a directory.
    pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io(label(&path), e))
    }

    /// Writes `value` as pretty JSON with a trailing newline.
    pub fn write_json(dir: &Path, name: &str, value: &Value) -> Result<()> {
        write_file(dir, name, &pretty_json(value))
    }

    /// Builds an output directory atomically: `fill` writes into `<out>.partial-<pid>`, which is
    /// renamed to `<out>` only if it succeeds (and removed if it fails), so an interrupted or
    /// failed import never leaves a half-written model that looks complete. Refuses to replace
    /// an existing non-empty `<out>`.
    pub fn write_dir_atomically<T>(out: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        let out_label = label(out);
        if out.exists() {
            let mut entries = std::fs::read_dir(out).map_err(|e| Error::io(&out_label, e))?;
            if entries.next().is_some() {
                return Err(Error::io(
                    &out_label,
                    "output directory exists and is not empty; choose another or remove it",
                ));
            }
        }
        let file_name = out
            .file_name()
            .ok_or_else(|| Error::io(&out_label, "output path has no directory name"))?;
        let mut partial_name = file_name.to_os_string();
        partial_name.push(format!(".partial-{}", std::process::id()));
        let partial = out.with_file_name(partial_name);
        let partial_label = label(&partial);
        if let Some(parent) = partial.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(label(parent), e))?;
        }
        if partial.exists() {
            // Left by an earlier run that had this pid and crashed.
            std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial_label, e))?;
        }
        std::fs::create_dir(&partial).map_err(|e| Error::io(&partial_label, e))?;
        let result = fill(&partial).and_then(|value| {
            if out.exists() {
                // Checked empty above; remove_dir fails (safely) if something appeared since.
                std::fs::remove_dir(out).map_err(|e| Error::io(&out_label, e))?;
            }
            std::fs::rename(&partial, out).map_err(|e| Error::io(&out_label, e))?;
            Ok(value)
        });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::safetensors::parse_header;

    fn specs() -> Vec<TensorSpec> {
        vec![
            TensorSpec::new("b", DType::F32, vec![2, 3]),
            TensorSpec::new("a", DType::BF16, vec![5]),
            TensorSpec::new("empty", DType::F16, vec![0, 4]),
        ]
    }

    #[test]
    fn layout_is_contiguous_padded_and_parses_back() {
        let l = layout("x.safetensors", &specs()).unwrap();
        assert_eq!(l.offsets, vec![(0, 24), (24, 34), (34, 34)]);
        assert_eq!((l.header.len() - 8) % 8, 0);
        let json = &l.header[8..];
        assert_eq!(json.first(), Some(&b'{'));
        assert!(std::str::from_utf8(json)
            .unwrap()
            .contains(r#""format":"pt""#));
        let parsed = parse_header("x", json, l.file_len).unwrap();
        assert_eq!(parsed.tensors["a"].shape, vec![5]);
        assert_eq!(parsed.tensors["a"].offset, l.header.len() as u64 + 24);
        assert_eq!(parsed.metadata["format"], "pt");
    }

    #[test]
    fn writer_checks_order_and_sizes() {
        let mut w = SafetensorsWriter::new(Vec::new(), "x", specs()).unwrap();
        let e = w.write_tensor("a", &[0; 10]).unwrap_err().to_string();
        assert!(e.contains("out of order: expected 'b'"), "{e}");
        let e = w.write_tensor("b", &[0; 20]).unwrap_err().to_string();
        assert!(
            e.contains("24 bytes") && e.contains("20 bytes were given"),
            "{e}"
        );
        w.write_tensor("b", &[1; 24]).unwrap();
        w.write_tensor("a", &[2; 10]).unwrap();
        let w2 = SafetensorsWriter::new(Vec::new(), "x", specs()).unwrap();
        assert!(w2
            .finish()
            .unwrap_err()
            .to_string()
            .contains("never written"));
        w.write_tensor("empty", &[]).unwrap();
        assert!(w.write_tensor("c", &[]).is_err());
        let file = w.finish().unwrap();
        let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let parsed = parse_header("x", &file[8..8 + header_len], file.len() as u64).unwrap();
        let b = &parsed.tensors["b"];
        assert_eq!(&file[b.offset as usize..][..24], &[1; 24]);
    }

    #[test]
    fn parts_add_up_to_whole_tensors() {
        let mut w = SafetensorsWriter::new(Vec::new(), "x", specs()).unwrap();
        assert!(!w.write_part("b", &[1; 10]).unwrap());
        // A whole tensor cannot follow a part of it, nor parts overrun it.
        let e = w.write_tensor("b", &[1; 24]).unwrap_err().to_string();
        assert!(e.contains("34 bytes were given"), "{e}");
        let e = w.write_part("b", &[1; 15]).unwrap_err().to_string();
        assert!(e.contains("25 bytes were given"), "{e}");
        assert!(w.write_part("b", &[2; 14]).unwrap());
        assert_eq!(w.expected_next(), Some("a"));
        assert!(!w.write_part("a", &[3; 4]).unwrap());
        let e = w.write_part("empty", &[]).unwrap_err().to_string();
        assert!(e.contains("expected 'a' next"), "{e}");
        let e = SafetensorsWriter::new(Vec::new(), "x", specs()).map(|mut p| {
            p.write_part("b", &[0; 3]).unwrap();
            p.finish().unwrap_err().to_string()
        });
        assert!(e.unwrap().contains("only 3 of its bytes"));
        assert!(w.write_part("a", &[3; 6]).unwrap());
        w.write_tensor("empty", &[]).unwrap();
        let file = w.finish().unwrap();
        let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let parsed = parse_header("x", &file[8..8 + header_len], file.len() as u64).unwrap();
        let b = parsed.tensors["b"].offset as usize;
        assert_eq!(&file[b..b + 10], &[1; 10]);
        assert_eq!(&file[b + 10..b + 24], &[2; 14]);
        assert_eq!(&file[b + 24..b + 34], &[3; 10]);
    }

    #[test]
    fn rejects_duplicates() {
        let mut s = specs();
        s.push(TensorSpec::new("a", DType::F32, vec![1]));
        assert!(layout("x", &s)
            .unwrap_err()
            .to_string()
            .contains("duplicated"));
    }

    #[test]
    fn shards_split_in_order() {
        let s: Vec<TensorSpec> = (0..5)
            .map(|i| TensorSpec::new(format!("t{i}"), DType::F32, vec![10]))
            .collect();
        let plan = plan_shards(&s, 200);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].file_name, "model.safetensors");
        let plan = plan_shards(&s, 80);
        let groups: Vec<&[usize]> = plan.iter().map(|p| p.tensors.as_slice()).collect();
        assert_eq!(groups, vec![&[0, 1][..], &[2, 3], &[4]]);
        assert_eq!(plan[2].file_name, "model-00003-of-00003.safetensors");
        // A tensor bigger than the cap gets a shard to itself.
        let plan = plan_shards(&s, 10);
        assert_eq!(plan.len(), 5);
        let index = index_json(&s, &plan_shards(&s, 80));
        assert_eq!(index["metadata"]["total_size"], 200);
        assert_eq!(
            index["weight_map"]["t4"],
            "model-00003-of-00003.safetensors"
        );
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("moegraft-writer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn sharded_directory_reads_back() {
        use crate::checkpoint::{safetensors::read_header, source::FileSource};
        let dir = temp_dir("sharded");
        let s: Vec<TensorSpec> = (0..3)
            .map(|i| TensorSpec::new(format!("t{i}"), DType::F32, vec![4]))
            .collect();
        let files = write_dir_atomically(&dir, |tmp| {
            let mut w = ModelWriter::new(tmp, s.clone(), 32)?;
            for (i, spec) in s.iter().enumerate() {
                w.write_tensor(&spec.name, &[i as u8; 16])?;
            }
            w.finish()
        })
        .unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        let index: Value = serde_json::from_slice(
            &std::fs::read(dir.join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            index["weight_map"]["t2"],
            "model-00002-of-00002.safetensors"
        );
        let src = FileSource::open(&dir.join("model-00002-of-00002.safetensors")).unwrap();
        let h = pollster::block_on(read_header(&src)).unwrap();
        assert_eq!(h.tensors["t2"].len, 16);
        // The directory now exists and is non-empty: a second write is refused.
        let e = write_dir_atomically(&dir, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn failed_fill_leaves_nothing() {
        let dir = temp_dir("failed");
        let e = write_dir_atomically(&dir, |tmp| -> Result<()> {
            write_file(tmp, "config.json", b"{}")?;
            Err(Error::InvalidArgument("boom".into()))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "boom");
        assert!(!dir.exists());
        let partial = dir.with_file_name(format!(
            "{}.partial-{}",
            dir.file_name().unwrap().to_string_lossy(),
            std::process::id()
        ));
        assert!(!partial.exists());
    }
}
