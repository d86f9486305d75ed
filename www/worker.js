// The model worker: loads the wasm module, holds the model and does all model work, so the
// page stays responsive. The page talks to it only through messages:
//
//   page → worker  {rid, type: 'adapter'}
//                  {rid, type: 'load', files: [{file, path}], options}
//                  {rid, type: 'generate', prompt | ids, options}
//                  {rid, type: 'graft', base, instruct, target, options}
//                                                      (each a [{file, path}] folder)
//                  {type: 'stop'}                      (ends a running generation)
//   worker → page  {type: 'reply', rid, ok, value | error, fatal}
//                  {type: 'progress', done, total}     (while loading or grafting)
//                  {type: 'token', id, piece}          (while generating)
//
// A reply with fatal: true means the wasm instance trapped (a Rust panic); the page then
// starts a fresh worker.

import init, { adapter_info, graft as graftModels, WebModel } from './pkg/moegraft.js';

let wasm = null;
let model = null;
let busy = null;
let stopRequested = false;

function ready() {
  if (!wasm) {
    wasm = init().catch((e) => {
      wasm = null;
      throw new Error(`could not load the wasm module (pkg/moegraft_bg.wasm): ${text(e)}`);
    });
  }
  return wasm;
}

function text(e) {
  if (e instanceof Error) return e.message;
  return String(e);
}

function claim(what) {
  if (busy) throw new Error(`busy: ${busy} is still running`);
  busy = what;
}

async function adapter() {
  if (!('gpu' in navigator) || !navigator.gpu) {
    return { available: false, reason: 'navigator.gpu is missing in the worker' };
  }
  // What the browser says about its adapter (names, fallback) ...
  let a;
  try {
    a = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    return { available: false, reason: `requestAdapter() failed: ${text(e)}` };
  }
  if (!a) {
    return { available: false, reason: 'navigator.gpu.requestAdapter() found no adapter' };
  }
  const i = a.info || {};
  const browser = {
    vendor: i.vendor || '',
    architecture: i.architecture || '',
    device: i.device || '',
    description: i.description || '',
    isFallbackAdapter: Boolean(i.isFallbackAdapter ?? a.isFallbackAdapter),
    shaderF16: a.features.has('shader-f16'),
  };
  // ... and what the runtime gets when it opens its device.
  await ready();
  const runtime = await adapter_info();
  return { available: true, browser, runtime };
}

// Progress messages at most every 50 ms (and the last one).
function progressReporter() {
  let last = 0;
  return (done, total) => {
    const now = performance.now();
    if (done >= total || now - last > 50) {
      last = now;
      self.postMessage({ type: 'progress', done, total });
    }
  };
}

async function load({ files, options }) {
  claim('loading');
  try {
    if (model) {
      model.free();
      model = null;
    }
    await ready();
    model = await WebModel.load(files, options ?? {}, progressReporter());
    return model.info();
  } finally {
    busy = null;
  }
}

async function generate({ prompt, ids, options }) {
  if (!model) throw new Error('no model is loaded: pick a model folder first');
  claim('generation');
  stopRequested = false;
  try {
    const start = performance.now();
    let first = null;
    let lastAt = null;
    let count = 0;
    const onToken = (id, piece) => {
      const now = performance.now();
      if (first === null) first = now;
      lastAt = now;
      count += 1;
      self.postMessage({ type: 'token', id, piece });
      return !stopRequested;
    };
    const result = ids
      ? await model.generate_ids(Uint32Array.from(ids), options ?? {}, onToken)
      : await model.generate(String(prompt ?? ''), options ?? {}, onToken);
    const end = performance.now();
    result.timing = {
      total_ms: end - start,
      first_token_ms: first === null ? null : first - start,
      // Tokens after the first over the time they took: the decode rate.
      decode_tokens_per_s: count > 1 ? ((count - 1) * 1000) / (lastAt - first) : null,
      tokens_per_s: count > 0 ? (count * 1000) / (end - start) : null,
    };
    return result;
  } finally {
    busy = null;
  }
}

// The merged files come back as Blobs (structured-cloned to the page without copying the
// bytes through JS); the loaded model, if any, stays.
async function graft({ base, instruct, target, options }) {
  claim('grafting');
  try {
    await ready();
    return await graftModels(base, instruct, target, options ?? {}, progressReporter());
  } finally {
    busy = null;
  }
}

const handlers = { adapter, load, generate, graft };

self.onmessage = async ({ data }) => {
  if (data?.type === 'stop') {
    stopRequested = true;
    return;
  }
  const { rid, type } = data ?? {};
  try {
    const handler = handlers[type];
    if (!handler) throw new Error(`unknown request '${type}'`);
    const value = await handler(data);
    self.postMessage({ type: 'reply', rid, ok: true, value });
  } catch (e) {
    const fatal = e instanceof WebAssembly.RuntimeError;
    if (fatal) model = null;
    self.postMessage({ type: 'reply', rid, ok: false, error: text(e), fatal });
  }
};
