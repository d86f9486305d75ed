// The page: UI only. Every model operation goes to worker.js; this file never touches wasm.
//
// window.__moegraft is a small read-only window into the page's state for tests and the
// console: adapter, model (info of the loaded model), lastResult ({input_ids, output_ids,
// text, stop_reason, timing}), lastError, loadState, the counters loads/generations (finished
// either way), and generate(prompt, options)/generateIds(ids, options), which run exactly what
// the Generate button runs (options override the form's).

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
      ` · max buffer ${mib(r.max_buffer_size)} · shader-f16 ${b.shaderF16 || r.shader_f16 ? 'yes' : 'no'}`;
    ui.adapter.dataset.state = 'ok';
  } catch (e) {
    ui.adapter.textContent = webgpuHelp(e.message);
    ui.adapter.dataset.state = 'missing';
  }
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

async function loadModel(list) {
  const { entries, label } = pickedFiles(list);
  if (entries.length === 0) return;
  if (hook.loadState === 'loading') {
    showError(ui.loadError, 'A model is already loading; wait for it to finish.');
    return;
  }
  if (hook.generating) {
    showError(ui.loadError, 'Stop the running generation before loading another model.');
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
  ui.progress.hidden = false;
  ui.progress.value = 0;
  ui.progress.max = 1;
  onProgress = (done, total) => {
    ui.progress.max = Math.max(total, 1);
    ui.progress.value = done;
  };
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

// ---- start --------------------------------------------------------------------------------

worker = startWorker();
showAdapter();
