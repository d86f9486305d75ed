// Small DOM helpers shared by the page's sections.

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(node.dataset, v);
    // Through the CSSOM: the page's CSP refuses style attributes.
    else if (k === 'style') node.style.cssText = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export function showError(node, message) {
  node.textContent = message;
  node.hidden = !message;
}

export function bytes(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

export function mib(n) {
  return `${Math.round(n / (1 << 20))} MiB`;
}

/** Shows a progress bar from empty and returns the handler that fills it. */
export function followProgress(bar) {
  bar.hidden = false;
  bar.value = 0;
  bar.max = 1;
  return (done, total) => {
    bar.max = Math.max(total, 1);
    bar.value = done;
  };
}

/**
 * A list of the files being read, one bar each and a total, inside `container`:
 * `start(groups)` with `{what: [{file, path}]}`, then `onRead` takes the worker's read
 * messages. A graft reads its inputs twice (hash, then merge), so a bar shows the pass it is in.
 */
export class FileProgress {
  constructor(container) {
    this.container = container;
    this.rows = new Map();
    this.total = null;
  }

  start(groups) {
    this.rows.clear();
    const items = [];
    for (const [what, entries] of Object.entries(groups)) {
      for (const { file, path } of entries) {
        const bar = el('progress', { max: Math.max(file.size, 1), value: 0 });
        const label = el('span', { className: 'file-name' }, `${what === 'model' ? '' : `${what}: `}${path}`);
        const size = el('span', { className: 'file-size' }, bytes(file.size));
        items.push(el('li', { dataset: { what, path } }, label, bar, size));
        this.rows.set(`${what}\u0000${path}`, { bar, size, bytes: file.size, done: 0 });
      }
    }
    const all = [...this.rows.values()].reduce((n, r) => n + r.bytes, 0);
    this.total = { bar: el('progress', { max: Math.max(all, 1), value: 0 }), size: el('span', { className: 'file-size' }), bytes: all };
    if (items.length > 1) items.push(el('li', { className: 'total' }, el('span', { className: 'file-name' }, 'all files'), this.total.bar, this.total.size));
    this.container.replaceChildren(...items);
    this.container.hidden = items.length === 0;
  }

  onRead = ({ what, path, done, size }) => {
    const row = this.rows.get(`${what}\u0000${path}`);
    if (!row) return;
    const total = Math.max(size, 1);
    const pass = Math.floor(Math.max(done - 1, 0) / total);
    row.bar.value = done - pass * total;
    row.size.textContent = `${bytes(Math.min(done, size))} of ${bytes(size)}${pass > 0 ? ` (pass ${pass + 1})` : ''}`;
    // The total counts each file's current pass.
    row.done = row.bar.value;
    const sum = [...this.rows.values()].reduce((n, r) => n + r.done, 0);
    this.total.bar.value = sum;
    this.total.size.textContent = `${bytes(sum)} of ${bytes(this.total.bytes)}`;
  };

  hide() {
    this.container.hidden = true;
  }
}

/**
 * Makes `zone` accept dropped files and folders; `onFiles(entries, label)` gets
 * `[{file, path}]` (a dropped folder's top-level files, its name as the label).
 */
export function dropZone(zone, onFiles) {
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    zone.classList.add('dragging');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', async (e) => {
    e.preventDefault();
    zone.classList.remove('dragging');
    const dropped = await droppedFiles(e.dataTransfer);
    if (dropped.entries.length) onFiles(dropped.entries, dropped.label);
  });
}

async function droppedFiles(dt) {
  const items = Array.from(dt.items || []).filter((i) => i.kind === 'file');
  const roots = items.map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  const folder = roots.length === 1 && roots[0].isDirectory ? roots[0] : null;
  if (folder) {
    const entries = await readFolder(folder);
    return { entries: entries.map((file) => ({ file, path: `${folder.name}/${file.name}` })), label: folder.name };
  }
  const files = Array.from(dt.files || []);
  return { entries: files.map((file) => ({ file, path: file.name })), label: null };
}

/** The files directly inside a dropped folder (nested folders could shadow names). */
async function readFolder(dir) {
  const reader = dir.createReader();
  const all = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) break;
    all.push(...batch);
  }
  const files = all.filter((e) => e.isFile);
  return Promise.all(files.map((f) => new Promise((resolve, reject) => f.file(resolve, reject))));
}

/**
 * The files of a picked folder (top level only) or a multi-file pick, with the folder name as
 * the label for messages.
 */
export function pickedFiles(list) {
  const all = Array.from(list).map((file) => ({ file, path: file.webkitRelativePath || file.name }));
  const top = all.filter((f) => f.path.split('/').length <= 2);
  const first = top[0]?.path ?? '';
  const label = first.includes('/') ? first.split('/')[0] : null;
  return { entries: top, label };
}

/** Download links for `[{name, blob}]` in the list `ul` (the old links' URLs are revoked). */
export function showDownloads(ul, files) {
  for (const a of ul.querySelectorAll('a')) URL.revokeObjectURL(a.href);
  ul.replaceChildren(
    ...files.map(({ name, blob }) =>
      el('li', {}, el('a', { href: URL.createObjectURL(blob), download: name }, name), ` (${bytes(blob.size)})`),
    ),
  );
}

/** `[{name, blob}]` as `[{file, path}]` of a folder named `label`, for loading. */
export function asEntries(files, label) {
  return files.map(({ name, blob }) => ({ file: new File([blob], name), path: `${label}/${name}` }));
}
