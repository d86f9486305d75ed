// The recipe panel: base, instruct and target slots (pickers or drag-and-drop), the method the
// target calls for (ParamΔ for a dense target, DeltaMoE for an MoE upcycled from the base), α
// and α per expert, and the merge itself in the worker with per-file and total progress.
// The merged files are offered as downloads, saved to a folder, or kept in the browser.

import { request } from './worker-client.js';
import { $, asEntries, dropZone, FileProgress, followProgress, pickedFiles, showDownloads, showError } from './ui.js';
import * as cache from './cache.js';
import { state } from './state.js';
import { asModelFiles, holdsGguf } from './gguf.js';

const ROLES = ['base', 'instruct', 'target'];

const ui = {
  inputs: { base: $('graft-base'), instruct: $('graft-instruct'), target: $('graft-target') },
  slots: { base: $('slot-base'), instruct: $('slot-instruct'), target: $('slot-target') },
  picked: $('graft-picked'),
  method: $('graft-method'),
  alpha: $('graft-alpha'),
  expertAlpha: $('graft-expert-alpha'),
  dtype: $('graft-dtype'),
  keep: $('graft-keep'),
  graft: $('graft'),
  progress: $('graft-progress'),
  files: new FileProgress($('graft-read')),
  status: $('graft-status'),
  error: $('graft-error'),
  result: $('graft-result'),
  list: $('graft-files'),
  load: $('graft-load'),
  downloadAll: $('graft-download-all'),
  saveFolder: $('graft-save-folder'),
  exportStatus: $('graft-export-status'),
};

/** The picked folders: role → {entries: [{file, path}], label, summary}. */
export const picks = { base: null, instruct: null, target: null };
/** The last merge's files: [{name, blob}]. */
export let blobs = [];
let resultLabel = 'grafted';

function describeSlot(role) {
  const p = picks[role];
  if (!p) return `${role}: none`;
  const s = p.summary;
  const kind = s ? `, ${s.moe ? `MoE, ${s.moe.experts} experts` : `dense ${s.architecture}`}` : '';
  return `${role}: ${p.label} (${p.entries.length} files${kind})`;
}

export function updateGraftControls() {
  ui.picked.textContent = ROLES.map(describeSlot).join(' · ');
  for (const role of ROLES) ui.slots[role].dataset.filled = String(Boolean(picks[role]));
  const target = picks.target?.summary;
  ui.method.textContent = !target
    ? 'Method: chosen by the target (ParamΔ for a dense model, DeltaMoE for an MoE upcycled from the base).'
    : target.moe
      ? `Method: DeltaMoE — Δ once on attention, norms and embeddings, α·Δ of the FFN on each of the ${target.moe.experts} experts, routers unchanged.`
      : 'Method: ParamΔ — θ_target + α·Δ on every tensor.';
  ui.graft.disabled = state.hook.graftState === 'grafting' || !ROLES.every((r) => picks[r]);
}

/**
 * Sets a slot (a GGUF file is converted first); its headers are read to show what it is
 * (errors in them show at merge time).
 */
export async function setSlot(role, entries, label) {
  showError(ui.error, '');
  if (holdsGguf(entries)) {
    try {
      ui.status.textContent = `Converting the ${role} GGUF file…`;
      ({ entries, label } = await asModelFiles(entries, label));
      ui.status.textContent = '';
    } catch (e) {
      ui.status.textContent = '';
      showError(ui.error, `Could not use the ${role} file: ${e.message}`);
      return;
    }
  }
  picks[role] = entries.length ? { entries, label: label ?? role, summary: null } : null;
  updateGraftControls();
  if (!entries.length) return;
  const p = picks[role];
  try {
    const inspected = await request('inspect', { files: entries, options: { label: p.label } });
    if (picks[role] === p) p.summary = inspected.summary;
  } catch {
    // The merge names the bad file; the slot stays as picked.
  }
  updateGraftControls();
}

for (const role of ROLES) {
  const input = ui.inputs[role];
  input.addEventListener('change', () => {
    const p = pickedFiles(input.files || []);
    input.value = '';
    setSlot(role, p.entries, p.label ?? role);
  });
  dropZone(ui.slots[role], (entries, label) => setSlot(role, entries, label ?? role));
}

function readGraftOptions() {
  const alpha = Number(ui.alpha.value);
  if (!Number.isFinite(alpha)) throw new Error('α must be a number');
  const options = { alpha };
  const experts = ui.expertAlpha.value.trim();
  if (experts) {
    options.expert_alpha = experts.split(',').map((v) => {
      const a = Number(v.trim());
      if (v.trim() === '' || !Number.isFinite(a)) throw new Error(`α per expert: '${v.trim()}' is not a number`);
      return a;
    });
  }
  if (ui.dtype.value) options.dtype = ui.dtype.value;
  return options;
}

function showFiles(files) {
  showDownloads(ui.list, files);
  ui.result.hidden = files.length === 0;
  ui.saveFolder.hidden = !window.showDirectoryPicker;
  ui.exportStatus.textContent = '';
}

/** Runs the merge; `overrides` may hold graft options and `keep` (default: the checkbox). */
export async function runGraft(overrides = {}) {
  const hook = state.hook;
  if (hook.graftState === 'grafting') throw new Error('a graft is already running');
  showError(ui.error, '');
  let options;
  const { keep = ui.keep.checked, label, ...graftOverrides } = overrides;
  try {
    if (!ROLES.every((r) => picks[r])) throw new Error('pick the base, instruct and target folders first');
    if (hook.loadState === 'loading' || hook.generating) throw new Error('wait for the running load or generation to finish');
    options = { ...readGraftOptions(), ...state.limits, ...graftOverrides };
  } catch (e) {
    hook.lastError = e.message;
    showError(ui.error, e.message);
    throw e;
  }
  hook.graftState = 'grafting';
  hook.graftResult = null;
  blobs = [];
  showFiles([]);
  updateGraftControls();
  ui.status.textContent = `Grafting ${picks.instruct.label} − ${picks.base.label} onto ${picks.target.label}…`;
  ui.status.dataset.state = 'busy';
  ui.files.start(Object.fromEntries(ROLES.map((r) => [r, picks[r].entries])));
  const started = performance.now();
  try {
    const r = await request(
      'graft',
      { base: picks.base.entries, instruct: picks.instruct.entries, target: picks.target.entries, options },
      { onProgress: followProgress(ui.progress), onRead: ui.files.onRead },
    );
    blobs = r.files;
    resultLabel = label ?? `${picks.target.label} ${r.method}`;
    hook.graftResult = { ...r, label: resultLabel, files: r.files.map(({ name, blob }) => ({ name, size: blob.size })) };
    hook.graftState = 'done';
    const seconds = (performance.now() - started) / 1000;
    ui.status.textContent =
      `${r.method}: ${r.tensors} tensors (${r.grafted} grafted, ${r.tensors - r.grafted} kept), ` +
      `${(r.bytes / 1e6).toFixed(1)} MB of weights in ${seconds.toFixed(1)} s`;
    ui.status.dataset.state = 'ok';
    showFiles(r.files);
    if (keep && cache.available) {
      await cache.keep(resultLabel, r.files).then(
        () => (ui.exportStatus.textContent = `Kept in this browser as “${resultLabel}”.`),
        (e) => showError(ui.error, `The merge worked, but keeping it in the browser failed: ${e.message}`),
      );
    }
    return hook.graftResult;
  } catch (e) {
    hook.graftState = 'error';
    hook.lastError = e.message;
    showError(ui.error, `Graft failed: ${e.message}`);
    ui.status.textContent = '';
    ui.status.dataset.state = 'idle';
    throw e;
  } finally {
    ui.progress.hidden = true;
    ui.files.hide();
    hook.grafts += 1;
    updateGraftControls();
  }
}

/** The merged files as `[{file, path}]`, for loading. */
export function graftEntries() {
  return asEntries(blobs, resultLabel);
}

export function graftLabel() {
  return resultLabel;
}

export async function graftFileBase64(name) {
  const f = blobs.find((x) => x.name === name);
  if (!f) throw new Error(`no grafted file '${name}'`);
  const data = new Uint8Array(await f.blob.arrayBuffer());
  let text = '';
  for (let i = 0; i < data.length; i += 0x8000) text += String.fromCharCode(...data.subarray(i, i + 0x8000));
  return btoa(text);
}

/**
 * Writes the merged files into a new folder (named after the model) of `parent`, a folder the
 * user picks. createWritable writes each file to a swap file and swaps it in on close, so a cut-off
 * export leaves no half-written file.
 */
export async function saveGraftTo(parent) {
  const folder = await parent.getDirectoryHandle(resultLabel.replace(/[^\p{L}\p{N}._ -]+/gu, '_'), { create: true });
  for (const { name, blob } of blobs) {
    const handle = await folder.getFileHandle(name, { create: true });
    await blob.stream().pipeTo(await handle.createWritable());
  }
  return folder;
}

async function saveToFolder() {
  const parent = await window.showDirectoryPicker({ mode: 'readwrite', id: 'moegraft-export' });
  return (await saveGraftTo(parent)).name;
}

ui.graft.addEventListener('click', () => {
  runGraft().catch(() => {}); // shown in place
});

ui.downloadAll.addEventListener('click', async () => {
  for (const a of ui.list.querySelectorAll('a')) {
    a.click();
    // Browsers drop downloads started in one burst.
    await new Promise((r) => setTimeout(r, 250));
  }
});

ui.saveFolder.addEventListener('click', () => {
  saveToFolder().then(
    (name) => (ui.exportStatus.textContent = `Saved ${blobs.length} files to the folder ${name}.`),
    (e) => {
      if (e.name !== 'AbortError') showError(ui.error, `Could not save to the folder: ${e.message}`);
    },
  );
});
