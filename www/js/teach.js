// Teach a language: MoE-LPR on this GPU. A model (the kit's base by default: dense, upcycled
// in the worker; or an MoE such as the kit's cpt-moe, which gains one expert per language,
// its own all frozen) and text per new language go to the worker, which trains the new experts and the
// routers (stage 1), reviews the routers on text of the languages the model knows (stage 2)
// and returns the taught MoE's files. The loss is drawn step by step; Stop ends the run after
// the step under way and keeps its checkpoint, which Resume continues from.

import { request, stopGeneration } from './worker-client.js';
import { $, asEntries, bytes, el, pickedFiles, showDownloads, showError } from './ui.js';
import * as cache from './cache.js';
import { loadModel } from './models.js';
import { setSlot } from './graft.js';
import { state } from './state.js';
import { shareTable } from './routing.js';
import { fetchFolder, kitEntry, KIT_ROOT } from './kit-files.js';

const ui = {
  modelLabel: $('teach-model-label'),
  model: $('teach-model'),
  kitBase: $('teach-kit-base'),
  kitMoe: $('teach-kit-moe'),
  texts: $('teach-texts'),
  add: $('teach-add'),
  steps: $('teach-steps'),
  reviewSteps: $('teach-review-steps'),
  batch: $('teach-batch'),
  seq: $('teach-seq'),
  keep: $('teach-keep'),
  memory: $('teach-memory'),
  start: $('teach-start'),
  stop: $('teach-stop'),
  resume: $('teach-resume'),
  status: $('teach-status'),
  curve: $('teach-curve'),
  error: $('teach-error'),
  result: $('teach-result'),
  files: $('teach-files'),
  shares: $('teach-shares'),
  load: $('teach-load'),
  toGraft: $('teach-to-graft'),
};

const hook = state.hook;
Object.assign(hook, { teachState: 'idle', teachSteps: [], teachResult: null, teaches: 0 });

const picked = { entries: null, label: null };
/** Rows of text: {role: 'new' | 'replay', lang, text, source}. */
const rows = [
  { role: 'new', lang: 'ru', text: '', source: 'pasted' },
  { role: 'replay', lang: 'en', text: '', source: 'pasted' },
];
let checkpoint = null; // a stopped run's {state, tensors}
let lastRequest = null; // what the stopped run was asked, for Resume
let blobs = [];
let resultLabel = 'taught';
let plannedSteps = 0; // both stages of the run under way, for the curve's x axis

async function kitSample(lang) {
  const r = await fetch(`${KIT_ROOT}teach/${lang}.txt`);
  if (!r.ok) throw new Error(`the kit has no ${lang} sample (${KIT_ROOT}teach/${lang}.txt: HTTP ${r.status})`);
  return r.text();
}

const describe = (row) => (row.text ? `${row.text.length} characters (${row.source})` : 'no text');

function textRow(row, i) {
  const lang = el('input', {
    type: 'text', size: 4, value: row.lang, className: 'languages', 'aria-label': 'language code',
    onchange: (e) => { row.lang = e.target.value.trim(); render(); },
  });
  const area = el('textarea', {
    value: row.text, 'aria-label': `${row.role === 'new' ? 'new-language' : 'replay'} text`,
    placeholder: 'paste text here (paragraphs separated by blank lines), or drop a .txt file',
    oninput: (e) => {
      Object.assign(row, { text: e.target.value, source: 'pasted' });
      hint.textContent = describe(row);
      render(false);
    },
  });
  const hint = el('span', { className: 'hint' }, describe(row));
  const file = el('input', { type: 'file', accept: '.txt,text/plain' });
  file.addEventListener('change', async () => {
    const f = file.files?.[0];
    file.value = '';
    if (f) Object.assign(row, { text: await f.text(), source: f.name });
    render();
  });
  const sample = state.hook.kit ? el('button', { type: 'button', onclick: async () => {
    try {
      Object.assign(row, { text: await kitSample(row.lang), source: `kit sample ${row.lang}` });
    } catch (e) {
      showError(ui.error, e.message);
    }
    render();
  } }, "Kit sample") : null;
  const remove = rows.filter((r) => r.role === row.role).length > 1
    ? el('button', { type: 'button', onclick: () => { rows.splice(i, 1); render(); } }, 'Remove')
    : null;
  const title = row.role === 'new' ? 'new language' : 'replay (a language it knows)';
  return el('div', { className: 'drop slot teach-text', dataset: { role: row.role, filled: String(Boolean(row.text)) } },
    el('strong', {}, title), el('label', {}, 'code ', lang),
    el('label', { className: 'picker' }, 'text file', file), sample, remove,
    hint, area);
}

function ready() {
  return picked.entries && rows.every((r) => r.lang && r.text) && rows.some((r) => r.role === 'new');
}

function render(full = true) {
  if (full) ui.texts.replaceChildren(...rows.map(textRow));
  const running = hook.teachState === 'running';
  ui.start.disabled = running || !ready();
  ui.stop.disabled = !running;
  ui.resume.disabled = running || !checkpoint;
  ui.modelLabel.textContent = picked.label ?? 'none';
  updateMemory();
}

let memoryAsked = '';
async function updateMemory() {
  const config = picked.entries?.find((e) => e.path.split('/').pop() === 'config.json');
  if (!config) return;
  const news = rows.filter((r) => r.role === 'new').length;
  const key = `${picked.label}|${news}|${ui.batch.value}|${ui.seq.value}`;
  if (key === memoryAsked) return;
  memoryAsked = key;
  try {
    const m = await request('teachMemory', {
      config: await config.file.text(), languages: news, batch: Number(ui.batch.value), seq: Number(ui.seq.value),
    });
    ui.memory.textContent = `Training will hold ${bytes(m.total_bytes)} on the GPU besides the weights ` +
      `(trained tensors with gradients and moments ${bytes(m.trained_bytes)}, activations ${bytes(m.activation_bytes)}; ` +
      `largest buffer: ${m.largest_buffer[0]}, ${bytes(m.largest_buffer[1])}).`;
  } catch (e) {
    ui.memory.textContent = `No memory estimate: ${e.message}`;
  }
}

/** The loss so far as two polylines (stage 1, the review) over the steps. */
function drawCurve() {
  const steps = hook.teachSteps;
  ui.curve.hidden = steps.length === 0;
  if (!steps.length) return;
  const total = Math.max(steps.length, plannedSteps);
  const losses = steps.map((s) => s.loss);
  const lo = Math.min(...losses);
  const hi = Math.max(...losses);
  const x = (i) => 30 + (360 * i) / Math.max(total - 1, 1);
  const y = (v) => 10 + 95 * (hi > lo ? (hi - v) / (hi - lo) : 0.5);
  const line = (stage) => steps.map((s, i) => [s, i]).filter(([s]) => s.stage === stage)
    .map(([s, i]) => `${x(i).toFixed(1)},${y(s.loss).toFixed(1)}`).join(' ');
  const ns = 'http://www.w3.org/2000/svg';
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text) n.textContent = text;
    return n;
  };
  ui.curve.replaceChildren(
    node('polyline', { class: 'stage1', points: line(1) }),
    node('polyline', { class: 'stage2', points: line(2) }),
    node('text', { x: 2, y: 14 }, hi.toFixed(2)),
    node('text', { x: 2, y: 108 }, lo.toFixed(2)),
    node('text', { x: 30, y: 118 }, 'loss per step: stage 1 (blue), review (red)'),
  );
}

/** Per language, how the taught routers send its text: a layer × expert table each. */
function showShares(report) {
  const labels = report.expert_languages.map((langs, e) => `expert ${e} (${langs.join(', ')})`);
  const k = report.settings.top_k;
  ui.shares.replaceChildren(
    ...Object.entries(report.expert_shares).map(([lang, rows]) =>
      el('table', { className: 'heatmap', dataset: { lang } },
        ...shareTable(rows, labels, `${lang} text: share of one batch's tokens sending to each expert (top-${k})`)),
    ),
  );
}

function settings(overrides) {
  return {
    steps: Number(ui.steps.value),
    review_steps: Number(ui.reviewSteps.value),
    batch: Number(ui.batch.value),
    seq: Number(ui.seq.value),
    ...(state.limits.max_binding ? { max_binding: state.limits.max_binding } : {}),
    ...overrides,
  };
}

async function run(payload, resuming) {
  if (hook.teachState === 'running') throw new Error('a lesson is already running');
  showError(ui.error, '');
  hook.teachState = 'running';
  hook.teachResult = null;
  if (!resuming) hook.teachSteps = [];
  ui.result.hidden = true;
  render(false);
  drawCurve();
  const total = payload.options.steps + payload.options.review_steps;
  plannedSteps = total;
  ui.status.dataset.state = 'busy';
  ui.status.textContent = `Building the MoE from ${picked.label} and starting…`;
  const onStep = (s) => {
    hook.teachSteps.push({ stage: s.stage, step: s.step, loss: s.loss });
    const done = s.stage === 1 ? s.step : payload.options.steps + s.step;
    const eta = ((total - done) * payload.options.batch * payload.options.seq) / Math.max(s.tokens_per_second, 1e-9);
    ui.status.textContent = `${s.stage === 1 ? 'Stage 1' : 'Review'} step ${s.step}/${s.steps}: loss ${s.loss.toFixed(3)}, ` +
      `${s.tokens_per_second.toFixed(0)} tokens/s, about ${Math.ceil(eta)} s left`;
    drawCurve();
  };
  try {
    const r = await request('teach', payload, { onStep });
    if (r.stopped) {
      checkpoint = r.checkpoint;
      lastRequest = payload;
      hook.teachState = 'stopped';
      ui.status.dataset.state = 'idle';
      ui.status.textContent = `Stopped after ${r.stopped}; Resume continues from there.`;
      return { stopped: r.stopped };
    }
    checkpoint = null;
    blobs = r.files;
    const langs = payload.languages.map((t) => t.lang).join(', ');
    resultLabel = `${picked.label} taught ${langs}`;
    hook.teachResult = { report: r.report, memory: r.memory, label: resultLabel, files: r.files.map(({ name, blob }) => ({ name, size: blob.size })) };
    hook.teachState = 'done';
    ui.status.dataset.state = 'ok';
    ui.status.textContent = `Taught ${langs}: ${r.report.stage1.loss.length} + ${r.report.stage2.loss.length} steps at ` +
      `${r.report.tokens_per_second.toFixed(0)} tokens/s.`;
    showDownloads(ui.files, r.files);
    showShares(r.report);
    ui.result.hidden = false;
    if (ui.keep.checked && cache.available) {
      await cache.keep(resultLabel, r.files).catch((e) => showError(ui.error, `Keeping it in the browser failed: ${e.message}`));
    }
    return hook.teachResult;
  } catch (e) {
    hook.teachState = 'error';
    hook.lastError = e.message;
    ui.status.dataset.state = 'idle';
    ui.status.textContent = '';
    showError(ui.error, `Teaching failed: ${e.message}`);
    throw e;
  } finally {
    hook.teaches += 1;
    render(false);
  }
}

/** Starts a lesson with the section's model, text and settings (`overrides`: teach options). */
export function runTeach(overrides = {}) {
  if (!ready()) {
    const e = new Error('pick a model and give text (with its language code) for every row');
    showError(ui.error, e.message);
    return Promise.reject(e);
  }
  const text = (role) => rows.filter((r) => r.role === role).map(({ lang, text, source }) => ({ lang, text, source }));
  checkpoint = null;
  return run({ base: picked.entries, languages: text('new'), replay: text('replay'), options: settings(overrides) }, false);
}

/** Continues the stopped lesson from its checkpoint. */
export function resumeTeach() {
  if (!checkpoint || !lastRequest) return Promise.reject(new Error('no stopped lesson to resume'));
  return run({ ...lastRequest, resume: checkpoint }, true);
}

export function stopTeach() {
  if (hook.teachState === 'running') stopGeneration();
}

export function taughtEntries() {
  return { entries: asEntries(blobs, resultLabel), label: resultLabel };
}

/** A kit model (`base`, or `cpt-moe` to give it one more expert) in the model slot and the
 * kit's samples in the text rows (ru new, en replay). */
export async function fillTeachFromKit(model = 'base') {
  const entries = await fetchFolder(kitEntry(hook.kit, model));
  Object.assign(picked, { entries, label: model });
  for (const row of rows) Object.assign(row, { text: await kitSample(row.lang), source: `kit sample ${row.lang}` });
  render();
}

/** Shows the kit's shortcuts once a kit is served. */
export function showTeachKit() {
  ui.kitBase.hidden = false;
  ui.kitMoe.hidden = false;
  render();
}

ui.model.addEventListener('change', () => {
  const p = pickedFiles(ui.model.files || []);
  ui.model.value = '';
  Object.assign(picked, { entries: p.entries.length ? p.entries : null, label: p.label ?? 'model' });
  render();
});
ui.kitBase.addEventListener('click', () => fillTeachFromKit('base').catch((e) => showError(ui.error, e.message)));
ui.kitMoe.addEventListener('click', () => fillTeachFromKit('cpt-moe').catch((e) => showError(ui.error, e.message)));
ui.add.addEventListener('click', () => {
  rows.splice(rows.findIndex((r) => r.role === 'replay'), 0, { role: 'new', lang: '', text: '', source: 'pasted' });
  render();
});
for (const input of [ui.batch, ui.seq]) input.addEventListener('change', () => render(false));
ui.start.addEventListener('click', () => runTeach().catch(() => {})); // shown in place
ui.stop.addEventListener('click', stopTeach);
ui.resume.addEventListener('click', () => resumeTeach().catch(() => {}));
ui.load.addEventListener('click', () => {
  const { entries, label } = taughtEntries();
  loadModel(entries, label);
});
ui.toGraft.addEventListener('click', () => {
  const { entries, label } = taughtEntries();
  setSlot('target', entries, label);
  $('graft-section').scrollIntoView({ behavior: 'smooth' });
});
render();
