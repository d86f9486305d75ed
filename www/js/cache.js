// Models kept in the browser (the origin private file system, OPFS), so a merge or a picked
// model survives a reload. Each model is a folder under models/; its files are written
// (createWritable commits each file only when it is closed) and then a marker, so a write cut
// short never lists as a model.

import { $, bytes, el, showError } from './ui.js';
import { state } from './state.js';

const MARKER = '.moegraft-complete';

const ui = {
  section: $('cache-section'),
  list: $('cache-list'),
  usage: $('cache-usage'),
  clear: $('cache-clear'),
  status: $('cache-status'),
  error: $('cache-error'),
};

export const available = Boolean(navigator.storage?.getDirectory);

async function modelsDir() {
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle('models', { create: true });
}

/** Folder names are labels; keep them to characters every file system takes. */
function folderName(label) {
  return label.replace(/[^\p{L}\p{N}._ -]+/gu, '_').slice(0, 100) || 'model';
}

/** Keeps `files` ([{name, blob}] or [{file, path}]) as `label`, replacing a model of that name. */
export async function keep(label, files) {
  if (!available) throw new Error('this browser has no origin private file system (OPFS) to keep models in');
  const dir = await modelsDir();
  const name = folderName(label);
  await dir.removeEntry(name, { recursive: true }).catch(() => {});
  const folder = await dir.getDirectoryHandle(name, { create: true });
  for (const f of files) {
    const blob = f.blob ?? f.file;
    const fileName = f.name ?? f.path.split('/').pop();
    const handle = await folder.getFileHandle(fileName, { create: true });
    const writable = await handle.createWritable();
    await blob.stream().pipeTo(writable);
  }
  const marker = await (await folder.getFileHandle(MARKER, { create: true })).createWritable();
  await marker.write(JSON.stringify({ label, kept: new Date().toISOString() }));
  await marker.close();
  await refresh();
}

/** [{name, label, files: [File]}] of the complete models kept; incomplete ones are removed. */
export async function list() {
  if (!available) return [];
  const dir = await modelsDir();
  const out = [];
  for await (const [name, handle] of dir.entries()) {
    if (handle.kind !== 'directory') continue;
    const files = [];
    let meta = null;
    for await (const [fileName, fh] of handle.entries()) {
      if (fh.kind !== 'file') continue;
      if (fileName === MARKER) meta = JSON.parse(await (await fh.getFile()).text());
      else files.push(await fh.getFile());
    }
    if (!meta) {
      await dir.removeEntry(name, { recursive: true }).catch(() => {});
      continue;
    }
    out.push({ name, label: meta.label ?? name, files });
  }
  return out.sort((a, b) => a.label.localeCompare(b.label));
}

export async function remove(name) {
  const dir = await modelsDir();
  await dir.removeEntry(name, { recursive: true });
  await refresh();
}

export async function clear() {
  const root = await navigator.storage.getDirectory();
  await root.removeEntry('models', { recursive: true }).catch(() => {});
  await refresh();
}

let loadCached = async () => {};

/** `loader(entries, label)` loads a kept model (set by main.js). */
export function onLoadCached(loader) {
  loadCached = loader;
}

function keptEntries(m) {
  return m.files.map((file) => ({ file, path: `${m.label}/${file.name}` }));
}

/** Loads the model kept as `label` (what its Load button runs). */
export async function loadKept(label) {
  const kept = (await list()).find((m) => m.label === label);
  if (!kept) throw new Error(`nothing kept as '${label}'`);
  return loadCached(keptEntries(kept), kept.label);
}

export async function refresh() {
  if (!available) {
    ui.usage.textContent = 'This browser cannot keep models (no OPFS).';
    ui.clear.disabled = true;
    return;
  }
  const models = await list();
  state.hook.cached = models.map((m) => ({ label: m.label, files: m.files.map((f) => f.name) }));
  ui.list.replaceChildren(
    ...models.map((m) => {
      const size = m.files.reduce((n, f) => n + f.size, 0);
      return el(
        'li',
        { dataset: { label: m.label } },
        el('strong', {}, m.label),
        ` ${m.files.length} files, ${bytes(size)} `,
        el('button', {
          type: 'button',
          className: 'load',
          onclick: () => loadCached(keptEntries(m), m.label),
        }, 'Load'),
        el('button', {
          type: 'button',
          className: 'delete',
          onclick: () => remove(m.name).catch((e) => showError(ui.error, e.message)),
        }, 'Delete'),
      );
    }),
  );
  const estimate = await navigator.storage.estimate?.().catch(() => null);
  ui.usage.textContent =
    `${models.length} model${models.length === 1 ? '' : 's'} kept` +
    (estimate ? ` · this site uses ${bytes(estimate.usage ?? 0)} of ${bytes(estimate.quota ?? 0)} allowed` : '');
  ui.clear.disabled = models.length === 0;
}

/** A "Keep in browser" button for a loaded model. */
export function keepButton(model) {
  if (!available) return null;
  return el('button', {
    type: 'button',
    className: 'keep',
    onclick: async (e) => {
      e.target.disabled = true;
      try {
        await keep(model.label, model.entries);
        ui.status.textContent = `Kept ${model.label} in this browser.`;
      } catch (err) {
        showError(ui.error, `Could not keep ${model.label}: ${err.message}`);
      } finally {
        e.target.disabled = false;
      }
    },
  }, 'Keep in browser');
}

ui.clear.addEventListener('click', () => {
  clear()
    .then(() => {
      ui.status.textContent = 'Cache cleared.';
    })
    .catch((e) => showError(ui.error, e.message));
});
