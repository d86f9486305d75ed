// The benchmark page (bench.html): picks the model — the demo kit's default, or a folder —,
// asks the worker to run `moegraft bench`'s measurements on it, and shows each figure as soon
// as it is measured. Stop ends the worker (the wasm run cannot be interrupted otherwise).
//
// window.__moegraftBench, for tests and the console:
//   state ('idle' | 'preparing' | 'running' | 'done' | 'error' | 'stopped'), step (the
//   measurement running), steps ([{step, at_ms}]), report (the figures so far, then the whole
//   report as `moegraft bench --json` prints it), rows (the results table: [{id, label, unit,
//   value, spread, bound, boundLabel, fraction, note}]), error, runs (runs ended, any outcome),
//   options (the last run's), run(options?) (what Run does; options override the form),
//   stop() (what Stop does), json() (what "Copy as JSON" copies).

import { endWorker, request } from './worker-client.js';
import { $, asEntries, el, pickedFiles, showError } from './ui.js';
import { fetchFolder, fetchKitManifest, kitEntry } from './kit-files.js';
import { formatNumber, formatValue, reportRows } from './bench-rows.js';

const hook = {
  state: 'idle',
  step: null,
  steps: [],
  report: null,
  rows: [],
  error: null,
  runs: 0,
  options: null,
};
window.__moegraftBench = hook;

const ui = {
  form: $('bench-form'),
  run: $('bench-run'),
  stop: $('bench-stop'),
  status: $('bench-status'),
  error: $('bench-error'),
  useKit: $('bench-use-kit'),
  useFolder: $('bench-use-folder'),
  folder: $('bench-folder'),
};

let manifest = null;
let folder = null; // {entries, label} of the picked folder

// ---- settings -----------------------------------------------------------------------------

const NUMBERS = ['prompt_tokens', 'decode_tokens', 'warmup', 'repeats', 'copy_mib', 'merge_repeats'];

function formOptions() {
  const f = ui.form.elements;
  const whole = (name, text) => {
    const v = String(text).trim();
    if (!/^\d+$/.test(v)) throw new Error(`${name.replace('_', ' ')}: '${v}' is not a whole number`);
    return Number(v);
  };
  const options = { profile: f.profile.checked, kernels: f.kernels.value, weights: f.weights.value };
  for (const name of NUMBERS) options[name] = whole(name, f[name].value);
  options.contexts = f.contexts.value.split(',').map((c) => whole('contexts', c));
  return options;
}

/** Fields given in the address (?contexts=128,1024&repeats=5) fill the form. */
function optionsFromAddress(params) {
  const f = ui.form.elements;
  for (const [name, value] of params) {
    const field = f[name];
    if (!field || !(field instanceof Element)) continue;
    if (field.type === 'checkbox') field.checked = !['0', 'false', 'no'].includes(value);
    else field.value = value;
  }
}

// ---- the model ----------------------------------------------------------------------------

function say(text, state = 'busy') {
  ui.status.textContent = text;
  ui.status.dataset.state = state;
}

/** The kit's default model; a grafted one is grafted first (untimed) and its graft timed. */
async function kitInputs() {
  const entry = kitEntry(manifest, manifest.default);
  if (!entry.graft) return { files: await fetchFolder(entry), label: entry.name, graft: null };
  const graft = {};
  for (const role of ['base', 'instruct', 'target']) {
    say(`Fetching ${entry.graft[role]} from the demo kit …`);
    graft[role] = await fetchFolder(kitEntry(manifest, entry.graft[role]));
  }
  say(`Grafting ${entry.name}, the model to benchmark (not timed) …`);
  const result = await request('graft', { ...graft, options: { alpha: entry.alpha ?? 1 } });
  return { files: asEntries(result.files, entry.name), label: entry.name, graft };
}

function inputs() {
  if (ui.useFolder.checked) {
    if (!folder) throw new Error('pick a model folder first');
    return { files: folder.entries, label: folder.label ?? 'model', graft: null };
  }
  if (!manifest) throw new Error('no demo kit is served with this page: pick a model folder');
  return kitInputs();
}

// ---- running ------------------------------------------------------------------------------

const running = () => hook.state === 'preparing' || hook.state === 'running';

function updateButtons() {
  ui.run.disabled = running() || !(manifest || folder);
  ui.stop.disabled = !running();
  $('bench-copy-json').disabled = !hook.report || running();
}

function onBench(message, started) {
  const at = performance.now() - started;
  if (message.step) {
    hook.step = message.step;
    hook.steps.push({ step: message.step, at_ms: at });
    say(`Measuring: ${message.step} … (${(at / 1000).toFixed(1)} s)`);
    return;
  }
  if (message.figure === 'decode') (hook.report.decode ??= []).push(message.value);
  else hook.report[message.figure] = message.value;
  render();
}

async function run(overrides = {}) {
  if (running()) throw new Error('a benchmark is running');
  showError(ui.error, '');
  Object.assign(hook, { report: {}, rows: [], steps: [], step: null, error: null });
  render();
  let options;
  try {
    options = { ...formOptions(), ...overrides };
  } catch (e) {
    showError(ui.error, e.message);
    throw e;
  }
  hook.options = options;
  hook.state = 'preparing';
  updateButtons();
  const started = performance.now();
  try {
    const source = await inputs();
    if (hook.state === 'stopped') return;
    hook.state = 'running';
    say(`Measuring ${source.label} …`);
    const report = await request('bench', { ...source, options }, { onBench: (m) => onBench(m, started) });
    hook.report = report;
    hook.state = 'done';
    say(`Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`, 'ok');
  } catch (e) {
    if (hook.state !== 'stopped') {
      hook.state = 'error';
      hook.error = e.message;
      say('Failed.', 'idle');
      showError(ui.error, e.message);
    }
  } finally {
    hook.step = null;
    hook.runs += 1;
    render();
    updateButtons();
  }
}

function stop() {
  if (!running()) return;
  hook.state = 'stopped';
  endWorker('stopped');
  say('Stopped: the figures above were measured before the stop.', 'idle');
}

hook.run = run;
hook.stop = stop;
hook.json = () => JSON.stringify(hook.report, null, 2);

// ---- showing ------------------------------------------------------------------------------

function pct(f) {
  return `${(f * 100).toFixed(f < 0.001 ? 3 : 1)} %`;
}

function resultRow(r) {
  const spread = r.spread ? `${formatNumber(r.spread.min)} – ${formatNumber(r.spread.max)} (n=${r.spread.n})` : '';
  const bound = r.bound === null ? '—' : `${formatValue(r.bound, r.unit)}: ${r.boundLabel}`;
  const fraction = r.fraction === null ? '—' : pct(r.fraction);
  const dataset = { id: r.id, value: String(r.value) };
  if (r.bound !== null) Object.assign(dataset, { bound: String(r.bound), fraction: String(r.fraction) });
  return el('tr', { dataset },
    el('th', {}, r.label), el('td', {}, formatValue(r.value, r.unit)), el('td', {}, spread),
    el('td', {}, bound), el('td', {}, fraction), el('td', { className: 'note' }, r.note));
}

function renderKernels(report) {
  const table = $('bench-kernel-table');
  const note = $('bench-kernels-note');
  const k = report?.kernels;
  table.hidden = !k;
  if (k) {
    note.textContent = `One decode step at context ${k.context}: ${k.dispatches} dispatches, ${k.kernel_ms.toFixed(3)} ms of GPU time (${k.wall_ms.toFixed(1)} ms wall, one pass per dispatch)${k.untimed ? `, ${k.untimed} untimed` : ''}; from timestamp queries.`;
    table.tBodies[0].replaceChildren(
      ...k.groups.map((g) => el('tr', { dataset: { kernel: g.kernel } },
        el('th', {}, g.kernel), el('td', {}, String(g.dispatches)), el('td', {}, g.ms.toFixed(3)), el('td', {}, pct(g.share)))),
    );
  } else {
    note.textContent = report?.kernels_note ? `Not measured: ${report.kernels_note}.` : '';
  }
}

function render() {
  const report = hook.report;
  hook.rows = report ? reportRows(report) : [];
  $('bench-results').tBodies[0].replaceChildren(...hook.rows.map(resultRow));
  renderKernels(report);
  const a = report?.adapter;
  const m = report?.machine;
  $('bench-machine').textContent = a && m
    ? `${report.model?.source ?? ''} (${report.model?.architecture ?? ''} ${report.model?.dtype ?? ''}${report.model?.weight_format && report.model.weight_format !== report.model.dtype ? ` held as ${report.model.weight_format}` : ''}) on ${a.name || 'the WebGPU adapter'} (${a.backend}, ${a.device_type}), timestamp queries ${a.timestamp_queries ? 'yes' : 'no'}, kernel layout ${a.kernel_layout}; ${m.cores} logical cores, ${m.os}`
    : '';
  $('bench-json').textContent = report && Object.keys(report).length ? hook.json() : '';
}

async function copyJson() {
  const note = $('bench-copied');
  try {
    await navigator.clipboard.writeText(hook.json());
    note.textContent = 'Copied.';
  } catch {
    // No clipboard permission (or no focus): leave the text selected instead.
    const pre = $('bench-json');
    pre.closest('details').open = true;
    getSelection().selectAllChildren(pre);
    note.textContent = 'The browser refused the clipboard; the JSON below is selected.';
  }
}

async function showAdapter() {
  const line = $('bench-adapter');
  try {
    const a = await request('adapter');
    if (!a.available) throw new Error(a.reason);
    const b = a.browser;
    const r = a.runtime;
    const name = [b.vendor, b.architecture, b.description].filter(Boolean).join(' ') || r.name;
    line.textContent =
      `WebGPU adapter: ${name} (${b.isFallbackAdapter ? 'software fallback' : r.device_type})` +
      ` · timestamp-query: ${r.timestamp_queries ? 'yes, so per-kernel GPU times are measured' : 'no, so per-kernel GPU times cannot be measured here'}` +
      ` · kernel layout: ${r.kernel_layout}`;
    line.dataset.state = 'ok';
  } catch (e) {
    line.textContent = `WebGPU is not available here (${e.message}); the benchmark needs it.`;
    line.dataset.state = 'missing';
  }
}

// ---- start --------------------------------------------------------------------------------

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  run().catch(() => {}); // shown in place
});
ui.stop.addEventListener('click', stop);
$('bench-copy-json').addEventListener('click', copyJson);
ui.folder.addEventListener('change', () => {
  const picked = pickedFiles(ui.folder.files || []);
  ui.folder.value = '';
  if (!picked.entries.length) return;
  folder = picked;
  ui.useFolder.disabled = false;
  ui.useFolder.checked = true;
  $('bench-folder-label').textContent = `a model folder: ${picked.label ?? 'picked files'} (${picked.entries.length} files)`;
  updateButtons();
});

const params = new URLSearchParams(location.search);
optionsFromAddress(params);
updateButtons();
showAdapter();
manifest = await fetchKitManifest();
if (manifest?.default) {
  ui.useKit.disabled = false;
  const entry = kitEntry(manifest, manifest.default);
  $('bench-kit-label').textContent = `demo kit: ${entry.name}${entry.graft ? ` (${entry.graft.instruct} − ${entry.graft.base} onto ${entry.graft.target})` : ''}`;
} else {
  manifest = null;
  ui.useKit.checked = false;
}
updateButtons();
if (params.has('run')) run().catch(() => {});
