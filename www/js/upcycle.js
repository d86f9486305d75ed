// Upcycle: dense models of one base become one Mixtral-layout MoE without training (BTX
// style) — expert 0 is the base's FFN (its languages), expert i the FFN of dense model i (the
// languages it was continued-pretrained on). The router is a centroid router from sample text
// per expert, or the language prior. The result can be loaded, kept, downloaded, or made the
// graft's target (then DeltaMoE grafts Δ onto it).

import { request } from './worker-client.js';
import { $, asEntries, dropZone, el, FileProgress, pickedFiles, showDownloads, showError } from './ui.js';
import { asModelFiles, holdsGguf } from './gguf.js';
import * as cache from './cache.js';
import { loadModel } from './models.js';
import { setSlot } from './graft.js';
import { state } from './state.js';

const ui = {
  slots: $('upcycle-slots'),
  addExpert: $('upcycle-add'),
  router: $('upcycle-router'),
  topK: $('upcycle-top-k'),
  average: $('upcycle-average'),
  keep: $('upcycle-keep'),
  run: $('upcycle'),
  files: new FileProgress($('upcycle-read')),
  status: $('upcycle-status'),
  error: $('upcycle-error'),
  result: $('upcycle-result'),
  list: $('upcycle-files'),
  load: $('upcycle-load'),
  toGraft: $('upcycle-to-graft'),
};

/** Slot 0 is the base; the others are experts. Each: {entries, label, languages, sample}. */
const slots = [];
let blobs = [];
let resultLabel = 'upcycled';

function slotRow(i) {
  const slot = slots[i];
  const role = i === 0 ? 'base (expert 0)' : `expert ${i}`;
  const picker = el('input', { type: 'file', multiple: true, webkitdirectory: true });
  picker.addEventListener('change', () => {
    const p = pickedFiles(picker.files || []);
    picker.value = '';
    fill(i, p.entries, p.label);
  });
  const sample = el('input', { type: 'file', accept: '.txt,text/plain' });
  sample.addEventListener('change', async () => {
    const f = sample.files?.[0];
    sample.value = '';
    if (f) {
      slot.sample = await f.text();
      render();
    }
  });
  const languages = el('input', {
    type: 'text',
    size: 10,
    value: slot.languages.join(', '),
    placeholder: 'e.g. it, ru',
    className: 'languages',
    onchange: (e) => {
      slot.languages = e.target.value.split(',').map((l) => l.trim()).filter(Boolean);
    },
  });
  const remove = i === 0 ? null : el('button', { type: 'button', onclick: () => {
    slots.splice(i, 1);
    render();
  } }, 'Remove');
  const row = el(
    'div',
    { className: 'drop slot', dataset: { slot: String(i), filled: String(Boolean(slot.entries)) } },
    el('strong', {}, role),
    el('label', { className: 'picker' }, 'folder', picker),
    el('span', { className: 'hint' }, slot.entries ? `${slot.label} (${slot.entries.length} files)` : 'none — or drop it here'),
    el('label', {}, 'languages ', languages),
    el('label', { className: 'picker' }, 'sample text', sample),
    el('span', { className: 'hint' }, slot.sample ? `${slot.sample.length} characters of sample` : 'no sample'),
    remove,
  );
  dropZone(row, (entries, label) => fill(i, entries, label));
  return row;
}

async function fill(i, entries, label) {
  showError(ui.error, '');
  try {
    if (holdsGguf(entries)) ({ entries, label } = await asModelFiles(entries, label));
    slots[i].entries = entries.length ? entries : null;
    slots[i].label = label ?? (i === 0 ? 'base' : `expert ${i}`);
  } catch (e) {
    showError(ui.error, e.message);
  }
  render();
}

function render() {
  ui.slots.replaceChildren(...slots.map((_, i) => slotRow(i)));
  ui.run.disabled = state.hook.upcycleState === 'running' || slots.length < 2 || !slots.every((s) => s.entries);
}

function addExpert() {
  slots.push({ entries: null, label: null, languages: [], sample: '' });
  render();
}

/** Fills the slots: `[{entries, label, languages, sample}]`, the base first. */
export function setUpcycleSlots(list) {
  slots.length = 0;
  for (const s of list) slots.push({ sample: '', ...s });
  render();
}

export async function runUpcycle(overrides = {}) {
  const hook = state.hook;
  if (hook.upcycleState === 'running') throw new Error('an upcycle is already running');
  showError(ui.error, '');
  const { keep = ui.keep.checked, label, ...options } = overrides;
  try {
    if (slots.length < 2 || !slots.every((s) => s.entries)) throw new Error('pick the base and at least one expert folder');
    const bad = slots.findIndex((s) => s.languages.length === 0);
    if (bad >= 0) throw new Error(`${bad === 0 ? 'the base' : `expert ${bad}`}: give its languages (e.g. en or it, ru)`);
  } catch (e) {
    showError(ui.error, e.message);
    hook.lastError = e.message;
    throw e;
  }
  const settings = {
    router: ui.router.value,
    top_k: Number(ui.topK.value),
    average_non_ffn: ui.average.checked,
    ...options,
  };
  const samples = slots.filter((s) => s.sample).map((s) => ({ lang: s.languages[0], text: s.sample }));
  hook.upcycleState = 'running';
  hook.upcycleResult = null;
  blobs = [];
  ui.result.hidden = true;
  render();
  ui.status.textContent = `Upcycling ${slots.map((s) => s.label).join(' + ')}…`;
  ui.status.dataset.state = 'busy';
  ui.files.start(Object.fromEntries(slots.map((s, i) => [i === 0 ? 'base' : `expert ${i}`, s.entries])));
  const started = performance.now();
  try {
    const r = await request(
      'upcycle',
      {
        base: slots[0].entries,
        baseLanguages: slots[0].languages,
        experts: slots.slice(1).map((s) => ({ files: s.entries, languages: s.languages, label: s.label })),
        samples,
        options: settings,
      },
      { onRead: ui.files.onRead },
    );
    blobs = r.files;
    resultLabel = label ?? `${slots.map((s) => s.label).join('+')} MoE`;
    hook.upcycleResult = { ...r, label: resultLabel, files: r.files.map(({ name, blob }) => ({ name, size: blob.size })) };
    hook.upcycleState = 'done';
    ui.status.textContent =
      `${r.experts}-expert top-${r.top_k} MoE of ${r.layers} layers in ${((performance.now() - started) / 1000).toFixed(1)} s` +
      (r.warnings.length ? ` · ${r.warnings.join(' · ')}` : '');
    ui.status.dataset.state = 'ok';
    showDownloads(ui.list, r.files);
    ui.result.hidden = false;
    if (keep && cache.available) {
      await cache.keep(resultLabel, r.files).catch((e) => showError(ui.error, `Keeping it in the browser failed: ${e.message}`));
    }
    return hook.upcycleResult;
  } catch (e) {
    hook.upcycleState = 'error';
    hook.lastError = e.message;
    showError(ui.error, `Upcycle failed: ${e.message}`);
    ui.status.textContent = '';
    ui.status.dataset.state = 'idle';
    throw e;
  } finally {
    ui.files.hide();
    hook.upcycles += 1;
    render();
  }
}

export function upcycleEntries() {
  return { entries: asEntries(blobs, resultLabel), label: resultLabel };
}

ui.addExpert.addEventListener('click', addExpert);
ui.run.addEventListener('click', () => runUpcycle().catch(() => {})); // shown in place
ui.load.addEventListener('click', () => {
  const { entries, label } = upcycleEntries();
  loadModel(entries, label);
});
ui.toGraft.addEventListener('click', () => {
  const { entries, label } = upcycleEntries();
  setSlot('target', entries, label);
  $('graft-section').scrollIntoView({ behavior: 'smooth' });
});

slots.push({ entries: null, label: null, languages: [], sample: '' });
addExpert();
