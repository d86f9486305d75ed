// The page: UI only. Every model operation goes to worker.js (through js/worker-client.js);
// no file here touches wasm.
//
// window.__moegraft is a small window into the page's state for tests and the console:
//   adapter, model (info of the active model), models ([{id, label, info}]), loadState, loads,
//   lastResult ({input_ids, output_ids, text, stop_reason, timing, routes?}), lastError,
//   generations, generate(prompt, options) / generateIds(ids, options) (what Generate runs),
//   conversation ([{role, content}] while "continue the conversation" is on),
//   load(label) (make a loaded model active), unload(label);
//   routing ({model, tokens, which, heat: [layer][expert] shares}) after an MoE generation;
//   compare(prompt, options, labels?) and compareResults; perplexity(text, labels?) and
//   perplexityResults;
//   graftState, graftResult ({method, tensors, grafted, bytes, label, files: [{name, size}]}),
//   grafts, graft(options) (what the Graft button runs), graftFileBase64(name),
//   loadGrafted() (what "Load the grafted model" runs), saveGraftToOpfs(name) ("Save to a
//   folder…" into an OPFS folder, as no test can pick a folder);
//   upcycleState, upcycleResult ({experts, layers, top_k, warnings, label, files}), upcycles,
//   upcycle(options) (what the Upcycle button runs), fillUpcycleFromKit(), loadUpcycled();
//   teachState ('idle' | 'running' | 'stopped' | 'done' | 'error'), teachSteps ([{stage, step,
//   loss}]), teachResult ({report, memory, label, files}), teaches, teach(options) (what Teach
//   runs), stopTeach(), resumeTeach(), fillTeachFromKit(), loadTaught(), taughtToGraft();
//   cached ([{label, files}] kept in OPFS), keep(label) (keep a loaded model), loadCached(label),
//   clearCache(); loseDevice() (destroys the active model's GPU device, for tests);
//   crashWorker(message) (a panic in the worker, for tests);
//   kit (its manifest, or null), kitState ('none' | 'loading' | 'loaded' | 'error'), kitModel,
//   loadKitModel(name) (what its buttons run); showcaseState ('running' | 'done' | 'error') and
//   showcase ({lang, task, prompt, answer, models, results: [{label, text, stop_reason,
//   correct}]}): the first view's side-by-side answers; runShowcase() asks them again.

import { request, startWorker, whenModelLost, whenWorkerCrashes } from './js/worker-client.js';
import { $, dropZone, mib, pickedFiles } from './js/ui.js';
import { state } from './js/state.js';
import * as models from './js/models.js';
import { runGeneration, updateGenerateControls } from './js/generate.js';
import { runCompare } from './js/compare.js';
import { runPerplexity } from './js/perplexity.js';
import { graftEntries, graftFileBase64, graftLabel, runGraft, saveGraftTo, setSlot, updateGraftControls } from './js/graft.js';
import * as cache from './js/cache.js';
import { fillUpcycleFromKit, loadKitModel, openKit, runShowcase } from './js/kit.js';
import { runUpcycle, upcycleEntries } from './js/upcycle.js';
import { fillTeachFromKit, resumeTeach, runTeach, stopTeach, taughtEntries } from './js/teach.js';

const hook = state.hook;
window.__moegraft = hook;

// ?max_binding=BYTES lowers the storage-binding limit of every load and graft: what this page
// does on a small device, tried on a big one.
const lowered = Number(new URLSearchParams(location.search).get('max_binding'));
if (Number.isSafeInteger(lowered) && lowered > 0) state.limits.max_binding = lowered;

const byLabel = (label) => {
  const m = models.loaded.find((x) => x.label === label);
  if (!m) throw new Error(`no loaded model '${label}'`);
  return m;
};

Object.assign(hook, {
  generate: (prompt, options) => runGeneration({ prompt }, options),
  generateIds: (ids, options) => runGeneration({ ids: Array.from(ids) }, options),
  load: (label) => models.setActive(byLabel(label).id),
  unload: (label) => models.unload(byLabel(label).id),
  compare: (prompt, options, labels) => runCompare(prompt, options, labels),
  perplexity: (text, labels) => runPerplexity(text, labels),
  graft: (options) => runGraft(options),
  graftFileBase64,
  loadGrafted: () => models.loadModel(graftEntries(), graftLabel()),
  // "Save to a folder…" with an OPFS folder standing in for the one the user would pick.
  saveGraftToOpfs: async (name) => {
    const root = await navigator.storage.getDirectory();
    const folder = await saveGraftTo(await root.getDirectoryHandle(name, { create: true }));
    const files = [];
    for await (const [n, h] of folder.entries()) files.push({ name: n, size: (await h.getFile()).size });
    return { folder: folder.name, files };
  },
  keep: (label) => {
    const m = byLabel(label);
    return cache.keep(m.label, m.entries);
  },
  loadCached: (label) => cache.loadKept(label),
  clearCache: () => cache.clear(),
  // As if the GPU were lost under the active model (a driver reset, the browser reclaiming it).
  loseDevice: () => request('destroyDevice', { id: state.activeModel }),
  // A panic in the worker's module (a bug), to show the page surviving it.
  crashWorker: (message) => request('crash', { message }),
  upcycle: (options) => runUpcycle(options),
  fillUpcycleFromKit,
  teach: (options) => runTeach(options),
  stopTeach,
  resumeTeach,
  fillTeachFromKit,
  loadTaught: () => {
    const { entries, label } = taughtEntries();
    return models.loadModel(entries, label);
  },
  taughtToGraft: () => {
    const { entries, label } = taughtEntries();
    return setSlot('target', entries, label);
  },
  loadUpcycled: () => {
    const { entries, label } = upcycleEntries();
    return models.loadModel(entries, label);
  },
  loadKitModel,
  runShowcase,
});

// ---- adapter ------------------------------------------------------------------------------

const adapterLine = $('adapter');

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
    adapterLine.textContent = webgpuHelp('navigator.gpu is missing');
    adapterLine.dataset.state = 'missing';
    return;
  }
  try {
    const a = await request('adapter');
    hook.adapter = a;
    if (!a.available) {
      adapterLine.textContent = webgpuHelp(a.reason);
      adapterLine.dataset.state = 'missing';
      return;
    }
    const b = a.browser || {};
    const r = a.runtime;
    const name =
      [b.vendor, b.architecture, b.description].filter(Boolean).join(' ') || r.name || 'unnamed adapter';
    const kind = b.isFallbackAdapter ? 'software fallback' : r.device_type;
    adapterLine.textContent =
      `WebGPU adapter: ${name} (${kind}) · max storage binding ${mib(r.max_storage_binding)}` +
      ` · max buffer ${mib(r.max_buffer_size)} · workgroup memory ${Math.round(r.max_workgroup_storage / 1024)} KiB` +
      ` · shader-f16 ${b.shaderF16 || r.shader_f16 ? 'yes' : 'no'} · subgroups ${b.subgroups || r.subgroups ? 'yes' : 'no'}` +
      ` · kernels: ${r.kernel_layout === 'rows' ? 'one row per invocation (CPU adapter)' : 'rows split over lanes'}` +
      (state.limits.max_binding ? ` · storage bindings lowered to ${state.limits.max_binding} bytes by the address` : '');
    adapterLine.dataset.state = 'ok';
  } catch (e) {
    adapterLine.textContent = webgpuHelp(e.message);
    adapterLine.dataset.state = 'missing';
  }
}

// ---- loading from the user's disk ---------------------------------------------------------

function loadPicked(entries, label) {
  models.clearLoadError();
  return models.loadModel(entries, label ?? 'model');
}

for (const input of [$('folder'), $('files')]) {
  input.addEventListener('change', () => {
    const p = pickedFiles(input.files || []);
    input.value = ''; // picking the same folder again loads it again
    loadPicked(p.entries, p.label);
  });
}
dropZone($('model-drop'), loadPicked);
// A file dropped anywhere else must not navigate away from the page (and its models).
for (const type of ['dragover', 'drop']) window.addEventListener(type, (e) => e.preventDefault());

cache.onLoadCached((entries, label) => models.loadModel(entries, label));
state.cacheButton = cache.keepButton;

models.onModelsChange(() => {
  hook.models = models.loaded.map((m) => ({ id: m.id, label: m.label, info: m.info }));
  updateGenerateControls();
});

whenWorkerCrashes((message) => models.forgetAll(models.loaded.length ? message : null));
whenModelLost((id, message) => models.forget(id, message));

// ---- start --------------------------------------------------------------------------------

$('graft-load').addEventListener('click', () => hook.loadGrafted());

startWorker();
showAdapter();
updateGraftControls();
updateGenerateControls();
cache.refresh().catch(() => {});
openKit();
