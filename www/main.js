// The page: UI only. Every model operation goes to worker.js; this file never touches wasm.
//
// window.__moegraft is a small read-only window into the page's state for tests and the
// console: adapter, model (info of the loaded model), lastResult ({input_ids, output_ids,
// text, stop_reason, timing}), lastError, loadState, the counters loads/generations (finished
// either way), and generate(prompt, options)/generateIds(ids, options), which run exactly what
// the Generate button runs (options override the form's). Grafting: graftState, graftResult
// ({method, tensors, grafted, bytes, files: [{name, size}]}), the counter grafts,
// graft(options) (what the Graft button runs) and graftFileBase64(name). Demo kit: kit (its
// manifest, or null), kitState ('none' | 'loading' | 'loaded' | 'error'), kitModel (the name
// last loaded from it) and loadKitModel(name) (what its buttons run).

const $ = (id) => document.getElementById(id);

const ui = {
  adapter: $('adapter'),
  folder: $('folder'),
  files: $('files'),
  progress: $('load-progress'),
  loadStatus: $('load-status'),
  loadError: $('load-error'),
  form: $('generate-form'),
  prompt: $('prompt'),
  chat: $('chat'),
  maxTokens: $('max-tokens'),
  temperature: $('temperature'),
  seed: $('seed'),
  generate: $('generate'),
  stop: $('stop'),
  output: $('output'),
  stats: $('stats'),
  generateError: $('generate-error'),
  graftInputs: { base: $('graft-base'), instruct: $('graft-instruct'), target: $('graft-target') },
  graftPicked: $('graft-picked'),
  graftAlpha: $('graft-alpha'),
  graftExpertAlpha: $('graft-expert-alpha'),
  graftDtype: $('graft-dtype'),
  graft: $('graft'),
  graftProgress: $('graft-progress'),
  graftStatus: $('graft-status'),
  graftError: $('graft-error'),
  graftResult: $('graft-result'),
  graftFiles: $('graft-files'),
  graftLoad: $('graft-load'),
  kitSection: $('kit-section'),
  kitModels: $('kit-models'),
  kitStatus: $('kit-status'),
  kitError: $('kit-error'),
  kitExamples: $('kit-examples'),
};

const hook = {
  adapter: null,
  model: null,
  lastResult: null,
  lastError: null,
  loadState: 'idle',
  generating: false,
  // Counters of finished loads and generations (either outcome), to wait on.
  loads: 0,
  generations: 0,
  generate: (prompt, options) => runGeneration({ prompt }, options),
  generateIds: (ids, options) => runGeneration({ ids: Array.from(ids) }, options),
  graftState: 'idle',
  graftResult: null,
  grafts: 0,
  graft: (options) => runGraft(options),
  graftFileBase64: (name) => graftFileBase64(name),
  kit: null,
  kitState: 'none',
  kitModel: null,
  loadKitModel: (name) => loadKitModel(name),
};
window.__moegraft = hook;

// ---- worker plumbing ----------------------------------------------------------------------

let worker = null;
let nextRid = 1;
const pending = new Map();
let onProgress = () => {};
let onToken = () => {};

function startWorker() {
  const w = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  w.onmessage = ({ data }) => {
    if (data.type === 'progress') onProgress(data.done, data.total);
    else if (data.type === 'token') onToken(data.id, data.piece);
    else if (data.type === 'reply') {
      const p = pending.get(data.rid);
      if (!p) return;
      pending.delete(data.rid);
      if (data.fatal) dropWorker('the model worker crashed (a bug: see the console); load the model again');
      if (data.ok) p.resolve(data.value);
      else p.reject(new Error(data.error));
    }
  };
  w.onerror = (e) => {
    e.preventDefault();
    const why = e.message || 'its script failed to load (was www/pkg built with scripts/build-wasm.sh?)';
    dropWorker(`the model worker failed: ${why}`);
  };
  return w;
}

// After a wasm trap or a failed start the worker is unusable: end it (the model goes with it);
// the next request starts a fresh one.
function dropWorker(message) {
  worker?.terminate();
  worker = null;
  for (const p of pending.values()) p.reject(new Error(message));
  pending.clear();
  if (hook.model) {
    setModelLoaded(null);
    showError(ui.loadError, message);
  }
}

function request(type, payload = {}) {
  const rid = nextRid++;
  return new Promise((resolve, reject) => {
    worker ??= startWorker();
    pending.set(rid, { resolve, reject });
    worker.postMessage({ ...payload, rid, type });
  });
}

// ---- adapter ------------------------------------------------------------------------------

function mib(bytes) {
  return `${Math.round(bytes / (1 << 20))} MiB`;
}

function webgpuHelp(reason) {
  const secure = window.isSecureContext
    ? ''
    : ' This page is not a secure context: serve it over https:// or from localhost/127.0.0.1.';
  return (
    `WebGPU is not available here (${reason}).` +
    secure +
    ' Use a recent Chrome or Edge (113 or later) with hardware acceleration on. On Linux, start Chrome with' +
    ' --enable-unsafe-webgpu (or enable chrome://flags/#enable-unsafe-webgpu) and --enable-features=Vulkan;' +
    ' in Firefox set dom.webgpu.enabled in about:config; in Safari enable the WebGPU feature flag.'
  );
}

async function showAdapter() {
  if (!('gpu' in navigator) || !navigator.gpu) {
    ui.adapter.textContent = webgpuHelp('navigator.gpu is missing');
    ui.adapter.dataset.state = 'missing';
    return;
  }
  try {
    const a = await request('adapter');
    hook.adapter = a;
    if (!a.available) {
      ui.adapter.textContent = webgpuHelp(a.reason);
      ui.adapter.dataset.state = 'missing';
      return;
    }
    const b = a.browser || {};
    const r = a.runtime;
    const name =
      [b.vendor, b.architecture, b.description].filter(Boolean).join(' ') || r.name || 'unnamed adapter';
    const kind = b.isFallbackAdapter ? 'software fallback' : r.device_type;
    ui.adapter.textContent =
      `WebGPU adapter: ${name} (${kind}) · max storage binding ${mib(r.max_storage_binding)}` +
      ` · max buffer ${mib(r.max_buffer_size)} · shader-f16 ${b.shaderF16 || r.shader_f16 ? 'yes' : 'no'}` +
      ` · kernels: ${r.kernel_layout === 'rows' ? 'one row per invocation (CPU adapter)' : 'rows split over lanes'}`;
    ui.adapter.dataset.state = 'ok';
  } catch (e) {
    ui.adapter.textContent = webgpuHelp(e.message);
    ui.adapter.dataset.state = 'missing';
  }
}

/** Shows a progress bar from empty and returns the worker-progress handler that fills it. */
function followProgress(bar) {
  bar.hidden = false;
  bar.value = 0;
  bar.max = 1;
  return (done, total) => {
    bar.max = Math.max(total, 1);
    bar.value = done;
  };
}

// ---- loading ------------------------------------------------------------------------------

function showError(el, message) {
  el.textContent = message;
  el.hidden = !message;
}

function setModelLoaded(info) {
  hook.model = info;
  ui.generate.disabled = !info || hook.generating;
  if (!info) {
    ui.loadStatus.textContent = 'No model loaded.';
    ui.loadStatus.dataset.state = 'idle';
  }
}

function describe(info) {
  const moe = info.is_moe ? ` · MoE ${info.num_experts} experts, top-${info.experts_per_token}` : '';
  const tok = info.tokenizer ? (info.chat_template ? '' : ' · no chat template') : ' · no tokenizer (ids only)';
  return (
    `Loaded ${info.label}: ${info.architecture}, ${info.num_layers} layers, hidden ${info.hidden_size},` +
    ` ${info.num_heads}/${info.num_kv_heads} heads, vocab ${info.vocab_size}${moe}${tok} · context ${info.max_context}`
  );
}

// The files of a picked folder (top level only: nested folders could shadow names) or a
// multi-file pick, with the folder name as the label for messages.
function pickedFiles(list) {
  const all = Array.from(list).map((file) => ({ file, path: file.webkitRelativePath || file.name }));
  const top = all.filter((f) => f.path.split('/').length <= 2);
  const first = top[0]?.path ?? '';
  const label = first.includes('/') ? first.split('/')[0] : 'model';
  return { entries: top, label };
}

async function loadModel(list, labelOverride) {
  const picked = pickedFiles(list);
  const entries = picked.entries;
  const label = labelOverride ?? picked.label;
  if (entries.length === 0) return;
  if (hook.loadState === 'loading') {
    showError(ui.loadError, 'A model is already loading; wait for it to finish.');
    return;
  }
  if (hook.generating) {
    showError(ui.loadError, 'Stop the running generation before loading another model.');
    return;
  }
  if (hook.graftState === 'grafting') {
    showError(ui.loadError, 'A graft is running; load the model when it has finished.');
    return;
  }
  const bytes = entries.reduce((n, f) => n + f.file.size, 0);
  hook.loadState = 'loading';
  setModelLoaded(null);
  showError(ui.loadError, '');
  showError(ui.generateError, '');
  ui.output.textContent = '';
  ui.stats.textContent = '';
  ui.loadStatus.textContent = `Loading ${label} (${entries.length} files, ${(bytes / 1e6).toFixed(1)} MB)…`;
  ui.loadStatus.dataset.state = 'busy';
  onProgress = followProgress(ui.progress);
  const started = performance.now();
  try {
    const info = await request('load', { files: entries, options: { label } });
    setModelLoaded(info);
    hook.loadState = 'loaded';
    ui.loadStatus.textContent = `${describe(info)} · ${((performance.now() - started) / 1000).toFixed(1)} s`;
    ui.loadStatus.dataset.state = 'ok';
    ui.progress.value = ui.progress.max;
  } catch (e) {
    hook.loadState = 'error';
    hook.lastError = e.message;
    setModelLoaded(null);
    showError(ui.loadError, `Could not load the model: ${e.message}`);
    ui.progress.hidden = true;
  } finally {
    onProgress = () => {};
    hook.loads += 1;
  }
}

for (const input of [ui.folder, ui.files]) {
  input.addEventListener('change', () => {
    const list = Array.from(input.files || []);
    input.value = ''; // picking the same folder again loads it again
    loadModel(list);
  });
}

// ---- generation ---------------------------------------------------------------------------

function readOptions() {
  const maxTokens = Number(ui.maxTokens.value);
  const temperature = Number(ui.temperature.value);
  const seed = Number(ui.seed.value);
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new Error('max tokens must be a whole number ≥ 1');
  if (!Number.isFinite(temperature) || temperature < 0) throw new Error('temperature must be a number ≥ 0 (0 = greedy)');
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error('seed must be a whole number ≥ 0');
  return { chat: ui.chat.checked, max_tokens: maxTokens, temperature, seed };
}

async function runGeneration(input, overrides) {
  if (hook.generating) throw new Error('a generation is already running');
  showError(ui.generateError, '');
  let options;
  try {
    if (!hook.model) throw new Error('no model is loaded: pick a model folder first');
    options = { ...readOptions(), ...(overrides || {}) };
    if (input.ids) delete options.chat;
  } catch (e) {
    hook.lastError = e.message;
    showError(ui.generateError, e.message);
    throw e;
  }
  hook.generating = true;
  hook.lastResult = null;
  ui.generate.disabled = true;
  ui.stop.disabled = false;
  ui.output.textContent = '';
  ui.stats.textContent = 'Generating…';
  const started = performance.now();
  let count = 0;
  onToken = (_id, piece) => {
    count += 1;
    if (piece) ui.output.append(piece);
    const s = (performance.now() - started) / 1000;
    ui.stats.textContent = `${count} tokens · ${(count / s).toFixed(1)} tokens/s`;
  };
  try {
    const result = await request('generate', { ...input, options });
    hook.lastResult = result;
    ui.output.textContent = result.text || ui.output.textContent;
    const t = result.timing;
    const rate = t.decode_tokens_per_s ?? t.tokens_per_s;
    ui.stats.textContent =
      `${result.output_ids.length} tokens in ${(t.total_ms / 1000).toFixed(2)} s` +
      (rate ? ` · ${rate.toFixed(1)} tokens/s` : '') +
      (t.first_token_ms != null ? ` · first token ${Math.round(t.first_token_ms)} ms` : '') +
      ` · prompt ${result.input_ids.length} tokens · stopped: ${result.stop_reason.replaceAll('_', ' ')}`;
    return result;
  } catch (e) {
    hook.lastError = e.message;
    showError(ui.generateError, `Generation failed: ${e.message}`);
    ui.stats.textContent = '';
    throw e;
  } finally {
    hook.generating = false;
    hook.generations += 1;
    onToken = () => {};
    ui.generate.disabled = !hook.model;
    ui.stop.disabled = true;
  }
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  runGeneration({ prompt: ui.prompt.value }).catch(() => {}); // shown in place
});

ui.stop.addEventListener('click', () => {
  worker?.postMessage({ type: 'stop' });
});

// ---- grafting -----------------------------------------------------------------------------

const graftPicks = { base: null, instruct: null, target: null };
let graftBlobs = [];

function updateGraftControls() {
  const picked = Object.entries(graftPicks).map(([role, p]) => `${role}: ${p ? `${p.label} (${p.entries.length} files)` : 'none'}`);
  ui.graftPicked.textContent = picked.join(' · ');
  ui.graft.disabled = hook.graftState === 'grafting' || !Object.values(graftPicks).every(Boolean);
}

for (const [role, input] of Object.entries(ui.graftInputs)) {
  input.addEventListener('change', () => {
    const p = pickedFiles(Array.from(input.files || []));
    input.value = '';
    graftPicks[role] = p.entries.length ? { ...p, label: p.label === 'model' ? role : p.label } : null;
    updateGraftControls();
  });
}

function readGraftOptions() {
  const alpha = Number(ui.graftAlpha.value);
  if (!Number.isFinite(alpha)) throw new Error('α must be a number');
  const options = { alpha };
  const experts = ui.graftExpertAlpha.value.trim();
  if (experts) {
    options.expert_alpha = experts.split(',').map((v) => {
      const a = Number(v.trim());
      if (v.trim() === '' || !Number.isFinite(a)) throw new Error(`α per expert: '${v.trim()}' is not a number`);
      return a;
    });
  }
  if (ui.graftDtype.value) options.dtype = ui.graftDtype.value;
  return options;
}

function showGraftFiles(files) {
  for (const a of ui.graftFiles.querySelectorAll('a')) URL.revokeObjectURL(a.href);
  ui.graftFiles.replaceChildren(
    ...files.map(({ name, blob }) => {
      const li = document.createElement('li');
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = name;
      a.textContent = name;
      li.append(a, ` (${(blob.size / 1e6).toFixed(2)} MB)`);
      return li;
    }),
  );
  ui.graftResult.hidden = files.length === 0;
}

async function runGraft(overrides) {
  if (hook.graftState === 'grafting') throw new Error('a graft is already running');
  showError(ui.graftError, '');
  let options;
  try {
    if (!Object.values(graftPicks).every(Boolean)) throw new Error('pick the base, instruct and target folders first');
    if (hook.loadState === 'loading' || hook.generating) throw new Error('wait for the running load or generation to finish');
    options = { ...readGraftOptions(), ...(overrides || {}) };
  } catch (e) {
    hook.lastError = e.message;
    showError(ui.graftError, e.message);
    throw e;
  }
  hook.graftState = 'grafting';
  hook.graftResult = null;
  graftBlobs = [];
  showGraftFiles([]);
  updateGraftControls();
  ui.graftStatus.textContent = `Grafting ${graftPicks.instruct.label} − ${graftPicks.base.label} onto ${graftPicks.target.label}…`;
  ui.graftStatus.dataset.state = 'busy';
  onProgress = followProgress(ui.graftProgress);
  const started = performance.now();
  try {
    const r = await request('graft', {
      base: graftPicks.base.entries,
      instruct: graftPicks.instruct.entries,
      target: graftPicks.target.entries,
      options,
    });
    graftBlobs = r.files;
    hook.graftResult = { ...r, files: r.files.map(({ name, blob }) => ({ name, size: blob.size })) };
    hook.graftState = 'done';
    const seconds = (performance.now() - started) / 1000;
    ui.graftStatus.textContent =
      `${r.method}: ${r.tensors} tensors (${r.grafted} grafted, ${r.tensors - r.grafted} kept), ` +
      `${(r.bytes / 1e6).toFixed(1)} MB of weights in ${seconds.toFixed(1)} s`;
    ui.graftStatus.dataset.state = 'ok';
    showGraftFiles(r.files);
    return hook.graftResult;
  } catch (e) {
    hook.graftState = 'error';
    hook.lastError = e.message;
    showError(ui.graftError, `Graft failed: ${e.message}`);
    ui.graftStatus.textContent = '';
    ui.graftStatus.dataset.state = 'idle';
    throw e;
  } finally {
    onProgress = () => {};
    ui.graftProgress.hidden = true;
    hook.grafts += 1;
    updateGraftControls();
  }
}

async function graftFileBase64(name) {
  const f = graftBlobs.find((x) => x.name === name);
  if (!f) throw new Error(`no grafted file '${name}'`);
  const bytes = new Uint8Array(await f.blob.arrayBuffer());
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

ui.graft.addEventListener('click', () => {
  runGraft().catch(() => {}); // shown in place
});

ui.graftLoad.addEventListener('click', () => {
  const files = graftBlobs.map(({ name, blob }) => new File([blob], name));
  loadModel(files, `grafted ${graftPicks.target?.label ?? 'model'}`);
});

// ---- demo kit -----------------------------------------------------------------------------
// demo/manifest.json (written by tools/build_demo_kit.py) lists the kit's models with their
// files; a grafted entry names its base, instruct and target instead, and is grafted here
// through the Graft section. The manifest's default model loads when the page opens, unless
// the address says ?kit=none. Without a served kit the section stays hidden.

const KIT_ROOT = 'demo/';

async function fetchKitFolder(dir, names) {
  const entries = [];
  for (const name of names) {
    const url = `${KIT_ROOT}${dir}/${name}`;
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    entries.push({ file: new File([await r.blob()], name), path: name });
  }
  return entries;
}

function kitEntry(name) {
  const entry = hook.kit?.models.find((m) => m.name === name);
  if (!entry) throw new Error(`the demo kit has no model '${name}'`);
  return entry;
}

function markKitButton(name) {
  for (const b of ui.kitModels.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.name === name));
}

async function loadKitModel(name) {
  if (hook.kitState === 'loading') throw new Error('a demo-kit model is already loading');
  if (hook.loadState === 'loading' || hook.generating || hook.graftState === 'grafting') {
    throw new Error('wait for the running load, generation or graft to finish');
  }
  const entry = kitEntry(name);
  hook.kitState = 'loading';
  showError(ui.kitError, '');
  markKitButton(name);
  ui.kitStatus.dataset.state = 'busy';
  try {
    let files;
    if (entry.graft) {
      for (const role of ['base', 'instruct', 'target']) {
        const source = kitEntry(entry.graft[role]);
        ui.kitStatus.textContent = `Fetching ${source.name} …`;
        graftPicks[role] = { entries: await fetchKitFolder(source.dir, source.files), label: source.name };
      }
      updateGraftControls();
      ui.kitStatus.textContent = `Grafting ${name} (${entry.graft.instruct} − ${entry.graft.base} onto ${entry.graft.target}) …`;
      await runGraft({ alpha: entry.alpha ?? 1 });
      files = graftBlobs.map(({ name: n, blob }) => new File([blob], n));
    } else {
      ui.kitStatus.textContent = `Fetching ${name} …`;
      files = (await fetchKitFolder(entry.dir, entry.files)).map((e) => e.file);
    }
    ui.kitStatus.textContent = `Loading ${name} …`;
    await loadModel(files, name);
    if (hook.loadState !== 'loaded') throw new Error(hook.lastError ?? 'the load failed');
    hook.kitState = 'loaded';
    hook.kitModel = name;
    ui.chat.checked = true;
    ui.kitStatus.textContent = `${name}: ${entry.about}`;
    ui.kitStatus.dataset.state = 'ok';
  } catch (e) {
    hook.kitState = 'error';
    hook.lastError = e.message;
    markKitButton(null);
    ui.kitStatus.textContent = '';
    ui.kitStatus.dataset.state = 'idle';
    showError(ui.kitError, `Could not load ${name} from the demo kit: ${e.message}`);
    throw e;
  }
}

function showKit(manifest) {
  hook.kit = manifest;
  ui.kitModels.replaceChildren(
    ...manifest.models.map((m) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.dataset.name = m.name;
      b.textContent = m.name;
      b.title = m.about;
      b.addEventListener('click', () => loadKitModel(m.name).catch(() => {})); // shown in place
      return b;
    }),
  );
  ui.kitExamples.replaceChildren(
    ...manifest.examples.map((ex) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = `${ex.lang}: ${ex.prompt}`;
      b.title = `${manifest.languages[ex.lang]} language · ${ex.task} · expected: ${ex.answer}`;
      b.addEventListener('click', () => {
        ui.prompt.value = ex.prompt;
        ui.chat.checked = true;
        if (hook.model && !hook.generating) runGeneration({ prompt: ex.prompt }, { chat: true }).catch(() => {});
      });
      return b;
    }),
  );
  const first = manifest.examples.find((ex) => manifest.languages[ex.lang] === 'new');
  if (first && ui.prompt.value === ui.prompt.defaultValue) ui.prompt.value = first.prompt;
  ui.kitSection.hidden = false;
}

async function openKit() {
  if (new URLSearchParams(location.search).get('kit') === 'none') return;
  let manifest;
  try {
    const r = await fetch(`${KIT_ROOT}manifest.json`);
    if (!r.ok) return; // no kit served with this page
    manifest = await r.json();
  } catch {
    return;
  }
  showKit(manifest);
  if (manifest.default) await loadKitModel(manifest.default).catch(() => {});
}

// ---- start --------------------------------------------------------------------------------

worker = startWorker();
showAdapter();
openKit();
