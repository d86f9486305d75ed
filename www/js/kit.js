// The demo kit: demo/manifest.json (written by tools/build_demo_kit.py) lists the kit's models
// with their files; a grafted entry names its base, instruct and target instead, and is
// grafted here through the recipe panel. The manifest's default model loads when the page
// opens, unless the address says ?kit=none. Without a served kit the section stays hidden.

import { $, el, showError } from './ui.js';
import { loadModel } from './models.js';
import { graftEntries, runGraft, setSlot } from './graft.js';
import { chatBox, promptBox, runGeneration } from './generate.js';
import { showKitSamples } from './perplexity.js';
import { setUpcycleSlots } from './upcycle.js';
import { state } from './state.js';
import { fetchFolder, fetchKitManifest, kitEntry as manifestEntry, KIT_ROOT } from './kit-files.js';

const ui = {
  section: $('kit-section'),
  models: $('kit-models'),
  status: $('kit-status'),
  error: $('kit-error'),
  examples: $('kit-examples'),
};

function kitEntry(name) {
  return manifestEntry(state.hook.kit, name);
}

function markButton(name) {
  for (const b of ui.models.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.name === name));
}

export async function loadKitModel(name) {
  const hook = state.hook;
  if (hook.kitState === 'loading') throw new Error('a demo-kit model is already loading');
  if (hook.loadState === 'loading' || hook.generating || hook.graftState === 'grafting') {
    throw new Error('wait for the running load, generation or graft to finish');
  }
  const entry = kitEntry(name);
  hook.kitState = 'loading';
  showError(ui.error, '');
  markButton(name);
  ui.status.dataset.state = 'busy';
  try {
    let entries;
    if (entry.graft) {
      for (const role of ['base', 'instruct', 'target']) {
        const source = kitEntry(entry.graft[role]);
        ui.status.textContent = `Fetching ${source.name} …`;
        await setSlot(role, await fetchFolder(source), source.name);
      }
      ui.status.textContent = `Grafting ${name} (${entry.graft.instruct} − ${entry.graft.base} onto ${entry.graft.target}) …`;
      await runGraft({ alpha: entry.alpha ?? 1, keep: false, label: name });
      entries = graftEntries();
    } else {
      ui.status.textContent = `Fetching ${name} …`;
      entries = await fetchFolder(entry);
    }
    ui.status.textContent = `Loading ${name} …`;
    const model = await loadModel(entries, name);
    if (!model) throw new Error(hook.lastError ?? 'the load failed');
    hook.kitState = 'loaded';
    hook.kitModel = name;
    chatBox.checked = true;
    ui.status.textContent = `${name}: ${entry.about}`;
    ui.status.dataset.state = 'ok';
  } catch (e) {
    hook.kitState = 'error';
    hook.lastError = e.message;
    markButton(null);
    ui.status.textContent = '';
    ui.status.dataset.state = 'idle';
    showError(ui.error, `Could not load ${name} from the demo kit: ${e.message}`);
    throw e;
  }
}

/** The first ~2 000 characters of the kit's held-out text in `lang` (a centroid sample). */
async function kitSample(lang) {
  const r = await fetch(`${KIT_ROOT}eval/${lang}.txt`);
  if (!r.ok) throw new Error(`${KIT_ROOT}eval/${lang}.txt: HTTP ${r.status}`);
  return (await r.text()).slice(0, 2000);
}

/**
 * Fills the upcycle slots from the kit: base for its original languages, cpt-dense for the
 * new ones, each with the kit's sample text of its languages.
 */
export async function fillUpcycleFromKit() {
  const manifest = state.hook.kit;
  if (!manifest) throw new Error('no demo kit is served with this page');
  const langs = (kind) => Object.entries(manifest.languages).filter(([, k]) => k === kind).map(([l]) => l);
  const slot = async (name, languages) => ({
    entries: await fetchFolder(kitEntry(name)),
    label: name,
    languages,
    sample: (await Promise.all(languages.map(kitSample))).join('\n'),
  });
  setUpcycleSlots([await slot('base', langs('original')), await slot('cpt-dense', langs('new'))]);
}

function showKit(manifest) {
  state.hook.kit = manifest;
  ui.models.replaceChildren(
    ...manifest.models.map((m) =>
      el('button', {
        type: 'button',
        dataset: { name: m.name },
        title: m.about,
        onclick: () => loadKitModel(m.name).catch(() => {}), // shown in place
      }, m.name),
    ),
  );
  ui.examples.replaceChildren(
    ...manifest.examples.map((ex) =>
      el('button', {
        type: 'button',
        title: `${manifest.languages[ex.lang]} language · ${ex.task} · expected: ${ex.answer}`,
        onclick: () => {
          promptBox.value = ex.prompt;
          chatBox.checked = true;
          if (state.hook.model && !state.hook.generating) runGeneration({ prompt: ex.prompt }, { chat: true }).catch(() => {});
        },
      }, `${ex.lang}: ${ex.prompt}`),
    ),
  );
  const first = manifest.examples.find((ex) => manifest.languages[ex.lang] === 'new');
  if (first && promptBox.value === promptBox.defaultValue) promptBox.value = first.prompt;
  ui.section.hidden = false;
  showKitSamples(KIT_ROOT, manifest.languages);
  const fillButton = $('upcycle-kit');
  fillButton.hidden = false;
  fillButton.onclick = () => fillUpcycleFromKit().catch((e) => showError($('upcycle-error'), e.message));
}

export async function openKit() {
  if (new URLSearchParams(location.search).get('kit') === 'none') return;
  const manifest = await fetchKitManifest();
  if (!manifest) return; // no kit served with this page
  showKit(manifest);
  if (manifest.default) await loadKitModel(manifest.default).catch(() => {});
}
