// The loaded models: each lives in the worker under an id; one is active (the one Generate
// uses). Loading inspects the files first, to show what the model will take on the GPU.

import { request } from './worker-client.js';
import { $, bytes, el, FileProgress, followProgress, showError } from './ui.js';
import { state } from './state.js';
import { asModelFiles, holdsGguf } from './gguf.js';

const ui = {
  progress: $('load-progress'),
  files: new FileProgress($('load-files')),
  estimate: $('load-estimate'),
  status: $('load-status'),
  error: $('load-error'),
  list: $('models'),
  maxContext: $('max-context'),
  weights: $('weights'),
};

/** Load options every load gets: the context length and weight format asked for, and test limits. */
function baseOptions() {
  const n = Number(ui.maxContext.value);
  return {
    ...(Number.isInteger(n) && n > 0 ? { max_context: n } : {}),
    ...(ui.weights.value !== 'stored' ? { weights: ui.weights.value } : {}),
    ...(state.limits.max_binding ? { max_binding: state.limits.max_binding } : {}),
  };
}

/** [{id, label, info, entries, memory}] in load order. */
export const loaded = [];
const listeners = [];

/** `listener()` runs whenever a model is loaded, unloaded or made active. */
export function onModelsChange(listener) {
  listeners.push(listener);
}

function changed() {
  render();
  for (const l of listeners) l();
}

export function active() {
  return loaded.find((m) => m.id === state.activeModel) ?? null;
}

export function setActive(id) {
  state.activeModel = id;
  state.hook.model = active()?.info ?? null;
  changed();
}

function describe(info) {
  const moe = info.is_moe ? ` · MoE ${info.num_experts} experts, top-${info.experts_per_token}, router ${info.router}` : '';
  const tok = info.tokenizer ? (info.chat_template ? '' : ' · no chat template') : ' · no tokenizer (ids only)';
  return (
    `${info.architecture}, ${info.num_layers} layers, hidden ${info.hidden_size},` +
    ` ${info.num_heads}/${info.num_kv_heads} heads, vocab ${info.vocab_size}${moe}${tok} · context ${info.max_context}` +
    ` · ${info.weight_format} weights`
  );
}

function describeMemory(summary, memory) {
  const p = summary.parameters;
  const active = p.active !== p.total ? ` (${(p.active / 1e6).toFixed(2)} M active per token)` : '';
  return (
    `${summary.architecture}, ${(p.total / 1e6).toFixed(2)} M parameters${active}, ` +
    `${summary.dtypes.map((d) => d.dtype).join('/')} · needs about ${bytes(memory.total_bytes)} of GPU memory: ` +
    `${bytes(memory.weight_bytes)} of weights + ${bytes(memory.kv_cache_bytes)} of KV cache for ${memory.max_context} tokens` +
    ` (largest tensor ${bytes(memory.largest_tensor_bytes)})`
  );
}

/**
 * Loads a model from `[{file, path}]`; resolves to the model or null (the error is shown in
 * place). A model of the same label is replaced once the new one has loaded.
 */
export async function loadModel(entries, label, { options = {} } = {}) {
  const hook = state.hook;
  if (entries.length === 0) return null;
  if (hook.loadState === 'loading') {
    showError(ui.error, 'A model is already loading; wait for it to finish.');
    return null;
  }
  if (hook.generating || hook.graftState === 'grafting') {
    showError(ui.error, 'Wait for the running generation or graft to finish before loading a model.');
    return null;
  }
  label ??= 'model';
  hook.loadState = 'loading';
  showError(ui.error, '');
  const total = entries.reduce((n, f) => n + f.file.size, 0);
  ui.status.textContent = `Reading the headers of ${label} (${entries.length} files, ${bytes(total)})…`;
  ui.status.dataset.state = 'busy';
  ui.estimate.textContent = '';
  const started = performance.now();
  try {
    if (holdsGguf(entries)) {
      ui.files.start({ gguf: entries.filter((e) => e.path.toLowerCase().endsWith('.gguf')) });
      ({ entries, label } = await asModelFiles(entries, label, {
        onRead: ui.files.onRead,
        onStatus: (text) => (ui.status.textContent = text),
      }));
    }
    options = { ...baseOptions(), ...options };
    const inspected = await request('inspect', {
      files: entries,
      options: {
        label,
        ...(options.max_context ? { max_context: options.max_context } : {}),
        ...(options.weights ? { weights: options.weights } : {}),
      },
    });
    ui.estimate.textContent = `${label}: ${describeMemory(inspected.summary, inspected.memory)}`;
    ui.status.textContent = `Loading ${label}…`;
    ui.files.start({ model: entries });
    const { id, info } = await request(
      'load',
      { files: entries, options: { label, ...options } },
      { onProgress: followProgress(ui.progress), onRead: ui.files.onRead },
    );
    const old = loaded.filter((m) => m.label === label);
    for (const m of old) await unload(m.id, { quiet: true });
    const model = { id, label, info, entries, memory: inspected.memory, options };
    loaded.push(model);
    hook.loadState = 'loaded';
    const note = info.weight_format_note ? ` · note: ${info.weight_format_note}` : '';
    ui.status.textContent = `Loaded ${label}: ${describe(info)} · ${((performance.now() - started) / 1000).toFixed(1)} s${note}`;
    ui.status.dataset.state = 'ok';
    ui.progress.value = ui.progress.max;
    setActive(id);
    return model;
  } catch (e) {
    hook.loadState = 'error';
    hook.lastError = e.message;
    showError(ui.error, `Could not load the model: ${e.message}`);
    ui.status.textContent = active() ? `Still loaded: ${active().label}.` : 'No model loaded.';
    ui.status.dataset.state = 'idle';
    ui.progress.hidden = true;
    return null;
  } finally {
    ui.files.hide();
    hook.loads += 1;
  }
}

export async function unload(id, { quiet = false } = {}) {
  const at = loaded.findIndex((m) => m.id === id);
  if (at < 0) return;
  await request('unload', { id });
  loaded.splice(at, 1);
  if (state.activeModel === id) {
    state.activeModel = loaded.at(-1)?.id ?? null;
    state.hook.model = active()?.info ?? null;
  }
  if (!quiet) changed();
}

/** The worker died: its models are gone. */
export function forgetAll(message) {
  loaded.length = 0;
  state.activeModel = null;
  state.hook.model = null;
  if (message) showError(ui.error, message);
  changed();
}

/** Model `id` is gone from the worker (its GPU device was lost). */
export function forget(id, message) {
  const at = loaded.findIndex((m) => m.id === id);
  if (at < 0) return;
  const [m] = loaded.splice(at, 1);
  if (state.activeModel === id) {
    state.activeModel = loaded.at(-1)?.id ?? null;
    state.hook.model = active()?.info ?? null;
  }
  showError(ui.error, `${m.label} was unloaded: ${message}`);
  changed();
}

export function clearLoadError() {
  showError(ui.error, '');
}

function render() {
  ui.list.replaceChildren(
    ...loaded.map((m) => {
      const radio = el('input', {
        type: 'radio',
        name: 'active-model',
        checked: m.id === state.activeModel,
        onchange: () => setActive(m.id),
      });
      const unloadButton = el('button', {
        type: 'button',
        className: 'unload',
        onclick: () => unload(m.id).catch((e) => showError(ui.error, e.message)),
      }, 'Unload');
      return el(
        'li',
        { dataset: { id: String(m.id), label: m.label } },
        el('label', {}, radio, el('strong', {}, m.label)),
        ` ${describe(m.info)} · ${bytes(m.memory.total_bytes)} on the GPU `,
        unloadButton,
        state.cacheButton?.(m) ?? null,
      );
    }),
  );
  if (!active()) {
    ui.status.textContent = loaded.length ? 'Pick a model to use.' : 'No model loaded.';
  }
}
