//! The page's files: picked `File`s read by byte range as model inputs, and outputs written
//! into `Blob`s handed back to the page.

use std::cell::Cell;

use js_sys::{Array, Function, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

use super::js_text;
use crate::checkpoint::source::{check_range, ByteSource, ReadFuture};
use crate::checkpoint::writer::OutputFiles;
use crate::checkpoint::ModelFiles;
use crate::error::{Error, Result};

/// A `Blob` (or `File`) read by byte range through `Blob.slice().arrayBuffer()`.
pub struct BlobSource {
    name: String,
    blob: web_sys::Blob,
    size: u64,
    meter: Option<ReadMeter>,
}

/// Tells the page how much of one picked file has been read: `on_read(what, path, bytes,
/// size)` after every read, `what` naming the folder's role (bytes may pass size when a file
/// is read twice, as a graft does).
pub struct ReadMeter {
    what: String,
    path: String,
    on_read: Function,
    read: Cell<u64>,
}

impl ReadMeter {
    fn count(&self, bytes: usize, size: u64) {
        let read = self.read.get() + bytes as u64;
        self.read.set(read);
        let args = Array::of4(
            &JsValue::from_str(&self.what),
            &JsValue::from_str(&self.path),
            &JsValue::from_f64(read as f64),
            &JsValue::from_f64(size as f64),
        );
        let _ = self.on_read.apply(&JsValue::NULL, &args);
    }
}

impl BlobSource {
    pub fn new(name: impl Into<String>, blob: web_sys::Blob) -> Self {
        let size = blob.size() as u64;
        Self {
            name: name.into(),
            blob,
            size,
            meter: None,
        }
    }
}

impl ByteSource for BlobSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_range(&self, offset: u64, len: usize) -> ReadFuture<'_> {
        Box::pin(async move {
            check_range(self, offset, len)?;
            if len == 0 {
                return Ok(Vec::new());
            }
            let end = offset + len as u64;
            let slice = self
                .blob
                .slice_with_f64_and_f64(offset as f64, end as f64)
                .map_err(|e| Error::io(&self.name, js_text(&e)))?;
            let buffer = JsFuture::from(slice.array_buffer())
                .await
                .map_err(|e| Error::io(&self.name, format!("cannot read: {}", js_text(&e))))?;
            let bytes = Uint8Array::new(&buffer).to_vec();
            if let Some(meter) = &self.meter {
                meter.count(bytes.len(), self.size);
            }
            if bytes.len() != len {
                return Err(Error::io(
                    &self.name,
                    format!(
                        "read {} bytes at {offset} but asked for {len} (file changed?)",
                        bytes.len()
                    ),
                ));
            }
            Ok(bytes)
        })
    }
}

/// The path a picked file was given: its folder-relative path when a directory was picked.
fn file_path(file: &web_sys::File) -> String {
    // `webkitRelativePath` is not in web-sys' bindings; read the property directly.
    js_sys::Reflect::get(file, &"webkitRelativePath".into())
        .ok()
        .and_then(|p| p.as_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| file.name())
}

/// A model directory from the page's files: `File` objects, or `{file, path}` objects where
/// the path was taken before the files were posted to a worker. `label` names the directory
/// in messages; by default the first file's folder. `on_read`, if given, follows every
/// file's reads (see `ReadMeter`).
pub fn picked_files(
    files: &Array,
    label: Option<String>,
    what: &str,
    on_read: Option<&Function>,
) -> Result<ModelFiles> {
    let mut entries: Vec<(String, web_sys::Blob)> = Vec::new();
    for (i, item) in files.iter().enumerate() {
        let (path, blob) = if let Some(file) = item.dyn_ref::<web_sys::File>() {
            (file_path(file), file.clone().unchecked_into())
        } else if item.is_object() {
            let file = js_sys::Reflect::get(&item, &"file".into())
                .ok()
                .and_then(|f| f.dyn_into::<web_sys::File>().ok())
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "{what}: files[{i}] is neither a File nor {{file, path}}"
                    ))
                })?;
            let path = js_sys::Reflect::get(&item, &"path".into())
                .ok()
                .and_then(|p| p.as_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| file_path(&file));
            (path, file.unchecked_into())
        } else {
            return Err(Error::InvalidArgument(format!(
                "{what}: files[{i}] is not a File"
            )));
        };
        entries.push((path, blob));
    }
    if entries.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{what}: no files were given: pick a model directory (config.json, *.safetensors, tokenizer.json)"
        )));
    }
    let label = label.unwrap_or_else(|| match entries[0].0.rsplit_once('/') {
        Some((dir, _)) => dir.to_string(),
        None => what.to_string(),
    });
    let mut model_files = ModelFiles::new(&label);
    for (path, blob) in entries {
        let base = path.rsplit(['/', '\\']).next().unwrap_or(&path).to_string();
        let name = model_files.display_name(&base);
        let mut source = BlobSource::new(name, blob);
        source.meter = on_read.map(|f| ReadMeter {
            what: what.to_string(),
            path: path.clone(),
            on_read: f.clone(),
            read: Cell::new(0),
        });
        model_files.insert(&base, Box::new(source));
    }
    Ok(model_files)
}

/// Bytes buffered in wasm memory before they move into a `Blob` part: the browser keeps (or
/// spills to disk) the parts, so a merged model never has to fit in wasm's address space.
const PART_BYTES: usize = 16 << 20;

/// One output file being written: a buffer and the `Blob` parts already cut from it.
pub struct BlobFile {
    name: String,
    buffer: Vec<u8>,
    parts: Array,
}

impl BlobFile {
    fn cut_part(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let bytes = Array::of1(&Uint8Array::from(self.buffer.as_slice()));
        let part = web_sys::Blob::new_with_u8_array_sequence(&bytes).map_err(|e| {
            std::io::Error::other(format!(
                "{}: cannot make a Blob: {}",
                self.name,
                js_text(&e)
            ))
        })?;
        self.parts.push(&part);
        self.buffer.clear();
        Ok(())
    }
}

impl std::io::Write for BlobFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= PART_BYTES {
            self.cut_part()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An output model as `Blob`s, handed to the page only once every file is complete.
#[derive(Default)]
pub struct BlobOutput {
    files: Vec<(String, web_sys::Blob)>,
}

impl BlobOutput {
    /// The written files as a model directory labelled `label` (the blobs are shared).
    pub fn model_files(&self, label: &str) -> ModelFiles {
        let mut files = ModelFiles::new(label);
        for (name, blob) in &self.files {
            files.insert(name, Box::new(BlobSource::new(name.clone(), blob.clone())));
        }
        files
    }

    /// `[{name, blob}]` in the order written.
    pub fn into_js(self) -> Array {
        let out = Array::new();
        for (name, blob) in self.files {
            let entry = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&entry, &"name".into(), &name.into());
            let _ = js_sys::Reflect::set(&entry, &"blob".into(), &blob);
            out.push(&entry);
        }
        out
    }
}

impl OutputFiles for BlobOutput {
    type File = BlobFile;

    fn create(&mut self, name: &str) -> Result<BlobFile> {
        Ok(BlobFile {
            name: name.to_string(),
            buffer: Vec::new(),
            parts: Array::new(),
        })
    }

    fn complete(&mut self, name: &str, mut file: BlobFile) -> Result<()> {
        file.cut_part().map_err(|e| Error::io(name, e))?;
        let blob = web_sys::Blob::new_with_blob_sequence(&file.parts)
            .map_err(|e| Error::io(name, format!("cannot make a Blob: {}", js_text(&e))))?;
        self.files.retain(|(n, _)| n != name);
        self.files.push((name.to_string(), blob));
        Ok(())
    }

    fn label(&self, name: &str) -> String {
        name.to_string()
    }
}
