// The model worker: loads the wasm module, holds the loaded models and does all model work,
// so the page stays responsive (shader compilation included). The page talks to it only
// through messages:
//
//   page → worker  {rid, type: 'adapter'}
//                  {rid, type: 'inspect', files: [{file, path}], options}
//                  {rid, type: 'load', files, options}        → {id, info}
//                  {rid, type: 'unload', id}
//                  {rid, type: 'generate', id, prompt | ids | messages, options}
//                  {rid, type: 'tokenTexts', id, ids}
//                  {rid, type: 'perplexity', id, text, window}
//                  {rid, type: 'destroyDevice', id}   (tests: as if the GPU were lost)
//                  {rid, type: 'crash', message}      (tests: a panic in the module)
//                  {rid, type: 'importGguf', file: {file, path}, options}
//                  {rid, type: 'upcycle', base, baseLanguages, experts: [{files, languages, label}],
//                                         samples: [{lang, text}], options}
//                  {rid, type: 'graft', base, instruct, target, options}
//                                                      (each a [{file, path}] folder)
//                  {rid, type: 'teach', base, languages: [{lang, text}], replay: [{lang, text}],
//                                       options, resume}  → {files, report} | {stopped, checkpoint}
//                  {rid, type: 'teachMemory', config, languages, batch, seq} → bytes it will hold
//                  {rid, type: 'bench', files, label, graft: {base, instruct, target} | null,
//                                       options}       → the report (bench.html)
//                  {type: 'stop'}                      (ends a running generation or lesson)
//   worker → page  {type: 'reply', rid, ok, value | error, fatal, lost}
//                  {type: 'progress', rid, done, total}        (loading or grafting)
//                  {type: 'read', rid, what, path, done, size} (each input file's reads)
//                  {type: 'token', rid, id, piece}             (generating)
//                  {type: 'bench', rid, step | figure, value}  (benchmarking)
//                  {type: 'step', rid, stage, step, steps, loss, tokens_per_second, memory} (teaching)
//
// A reply with fatal: true means the wasm instance trapped (a Rust panic): every model is
// gone, and the page starts a fresh worker. `lost: id` means that model's GPU device was lost:
// the model is released, and can be loaded again.

import init, {
  adapter_info,
  bench as benchModel,
  graft as graftModels,
  crash_for_test as crashForTest,
  import_gguf as importGgufFile,
  inspect as inspectFiles,
  set_panic_reporter as setPanicReporter,
  teach as teachModel,
  teach_memory as teachMemoryOf,
  upcycle as upcycleModels,
  WebModel,
} from './pkg/moegraft.js';

let wasm = null;
const models = new Map();
let nextModel = 1;
let busy = null;
let stopRequested = false;

// What the module said when it last panicked (a bug), for the page: the trap that follows
// carries no message.
let lastPanic = null;

function ready() {
  if (!wasm) {
    wasm = init()
      .then(() => setPanicReporter((message) => (lastPanic = message)))
      .catch((e) => {
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

/** Runs `work` as the one long job of the moment. */
async function exclusive(what, work) {
  if (busy) throw new Error(`busy: ${busy} is still running`);
  busy = what;
  try {
    return await work();
  } finally {
    busy = null;
  }
}

function model(id) {
  const m = models.get(id);
  if (!m) throw new Error(`model ${id} is not loaded (it was unloaded, or the worker restarted)`);
  return m;
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
    subgroups: a.features.has('subgroups'),
  };
  // ... and what the runtime gets when it opens its device.
  await ready();
  const runtime = await adapter_info();
  return { available: true, browser, runtime };
}

/** Progress of request `rid`, at most every 50 ms (and the last one). */
function progressReporter(rid) {
  let last = 0;
  return (done, total) => {
    const now = performance.now();
    if (done >= total || now - last > 50) {
      last = now;
      self.postMessage({ type: 'progress', rid, done, total });
    }
  };
}

/** Each input file's reads for request `rid`, per file at most every 50 ms (and complete). */
function readReporter(rid) {
  const last = new Map();
  return (what, path, done, size) => {
    const key = `${what}\u0000${path}`;
    const now = performance.now();
    if (done >= size || now - (last.get(key) ?? 0) > 50) {
      last.set(key, now);
      self.postMessage({ type: 'read', rid, what, path, done, size });
    }
  };
}

async function inspect({ files, options }) {
  await ready();
  return inspectFiles(files, options ?? {});
}

async function load({ rid, files, options }) {
  return exclusive('loading', async () => {
    await ready();
    const m = await WebModel.load(files, options ?? {}, progressReporter(rid), readReporter(rid));
    const id = nextModel++;
    models.set(id, m);
    return { id, info: m.info() };
  });
}

async function unload({ id }) {
  const m = models.get(id);
  if (!m) return false;
  if (busy) throw new Error(`busy: ${busy} is still running; unload when it ends`);
  models.delete(id);
  m.free();
  return true;
}

async function generate({ rid, id, prompt, ids, messages, options }) {
  const m = model(id);
  return exclusive('a generation', async () => {
    stopRequested = false;
    const start = performance.now();
    let first = null;
    let lastAt = null;
    let count = 0;
    const onToken = (tokenId, piece) => {
      const now = performance.now();
      if (first === null) first = now;
      lastAt = now;
      count += 1;
      self.postMessage({ type: 'token', rid, id: tokenId, piece });
      return !stopRequested;
    };
    let result;
    if (ids) result = await m.generate_ids(Uint32Array.from(ids), options ?? {}, onToken);
    else if (messages) result = await m.generate_chat(messages, options ?? {}, onToken);
    else result = await m.generate(String(prompt ?? ''), options ?? {}, onToken);
    const end = performance.now();
    result.timing = {
      total_ms: end - start,
      first_token_ms: first === null ? null : first - start,
      // Tokens after the first over the time they took: the decode rate.
      decode_tokens_per_s: count > 1 ? ((count - 1) * 1000) / (lastAt - first) : null,
      tokens_per_s: count > 0 ? (count * 1000) / (end - start) : null,
    };
    return result;
  });
}

async function tokenTexts({ id, ids }) {
  return model(id).token_texts(Uint32Array.from(ids));
}

async function perplexity({ id, text: body, window }) {
  const m = model(id);
  return exclusive('a perplexity check', () => m.perplexity(String(body ?? ''), window ?? undefined));
}

// The converted files come back as Blobs, like a graft's.
async function importGguf({ rid, file, options }) {
  return exclusive('a GGUF import', async () => {
    await ready();
    return importGgufFile(file, options ?? {}, readReporter(rid));
  });
}

async function upcycle({ rid, base, baseLanguages, experts, samples, options }) {
  return exclusive('upcycling', async () => {
    await ready();
    return upcycleModels(base, baseLanguages, experts, samples, options ?? {}, readReporter(rid));
  });
}

// The merged files come back as Blobs (structured-cloned to the page without copying the
// bytes through JS); the loaded models stay.
async function graft({ rid, base, instruct, target, options }) {
  return exclusive('grafting', async () => {
    await ready();
    return graftModels(base, instruct, target, options ?? {}, progressReporter(rid), readReporter(rid));
  });
}

// A lesson stops after the step under way on {type: 'stop'}; it then resolves with the
// checkpoint to resume from. The loaded models stay either way.
async function teach({ rid, base, languages, replay, options, resume }) {
  return exclusive('teaching', async () => {
    await ready();
    stopRequested = false;
    const onStep = (step) => {
      self.postMessage({ type: 'step', rid, ...step });
      return stopRequested;
    };
    return teachModel(base, languages, replay, options ?? {}, resume ?? null, onStep);
  });
}

async function teachMemory({ config, languages, batch, seq }) {
  await ready();
  return teachMemoryOf(String(config), languages, batch, seq);
}

// A benchmark is stopped by ending this worker (bench.html); until then it runs through.
async function bench({ rid, files, label, graft, options }) {
  return exclusive('a benchmark', async () => {
    await ready();
    const onProgress = (event) => self.postMessage({ type: 'bench', rid, ...event });
    return benchModel(files, label ?? undefined, graft ?? null, options ?? {}, onProgress);
  });
}

async function crash({ message }) {
  await ready();
  crashForTest(String(message ?? 'test panic'));
}

async function destroyDevice({ id }) {
  model(id).destroy_device();
  return true;
}

const handlers = { adapter, inspect, load, unload, generate, tokenTexts, perplexity, importGguf, upcycle, graft, teach, teachMemory, bench, destroyDevice, crash };

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
    if (fatal) models.clear();
    // A model whose device is gone is of no more use: release it.
    let lost = null;
    const m = models.get(data?.id);
    if (!fatal && m?.is_lost()) {
      models.delete(data.id);
      m.free();
      lost = data.id;
    }
    const error = fatal ? `panicked: ${lastPanic ?? text(e)}` : text(e);
    self.postMessage({ type: 'reply', rid, ok: false, error, fatal, lost });
  }
};
