// The demo kit: demo/manifest.json (written by tools/build_demo_kit.py) lists the kit's models
// with their files; a grafted entry names its base, instruct and target instead, and is
// grafted here through the recipe panel. When the page opens (unless the address says
// ?kit=none) it loads the showcase's models — instruct, ParamΔ and the default, DeltaMoE —
// and asks them the showcase's new-language instruction side by side, each column beside
// the kit's table figures. Without a served kit the section stays hidden.

import { $, el, showError } from './ui.js';
import { loadModel } from './models.js';
import { graftEntries, runGraft, setSlot } from './graft.js';
import { chatBox, promptBox, runGeneration } from './generate.js';
import { runCompare } from './compare.js';
import { showKitSamples } from './perplexity.js';
import { setUpcycleSlots } from './upcycle.js';
import { showTeachKit } from './teach.js';
import { state } from './state.js';
import { fetchFolder, fetchKitManifest, kitEntry as manifestEntry, KIT_ROOT } from './kit-files.js';

const ui = {
  section: $('kit-section'),
  models: $('kit-models'),
  status: $('kit-status'),
  error: $('kit-error'),
  examples: $('kit-examples'),
  showcase: $('kit-showcase'),
  showcaseAsk: $('kit-showcase-prompt'),
  showcaseColumns: $('kit-showcase-columns'),
  showcaseTitle: $('kit-showcase-title'),
};

const percent = ([right, asked]) => `${Math.round((100 * right) / asked)} % (${right}/${asked})`;

/** The kit table's figures for one model, in the new languages: a line per instruction set. */
function tableFigures(manifest, label) {
  const row = manifest.table?.[label];
  if (!row) return [];
  const news = Object.keys(manifest.languages).filter((l) => manifest.languages[l] === 'new');
  const lines = Object.entries(row.accuracy).map(([set, byLang]) => {
    const parts = news.map((l) => `${l} ${percent(byLang[l])}`);
    return `${set} instructions: ${parts.join(', ')}`;
  });
  lines.push(`perplexity: ${news.map((l) => `${l} ${row.perplexity[l].toFixed(0)}`).join(', ')}`);
  return lines;
}

/**
 * The first view: the showcase instruction answered by each of its models side by side (the
 * Compare section's columns), each marked right or wrong against the expected answer.
 */
export async function runShowcase() {
  const manifest = state.hook.kit;
  const show = manifest?.showcase;
  if (!show) throw new Error('the demo kit names no showcase');
  const hook = state.hook;
  hook.showcaseState = 'running';
  ui.showcase.hidden = false;
  // The manifest's rule (tools/build_demo_kit.py): a new-language gain where the table shows
  // one, else where DeltaMoE keeps what ParamΔ loses.
  const tally = Object.entries(show.task_accuracy ?? {}).map(([label, [right, asked]]) => `${label} ${right}/${asked}`);
  const where = `${show.lang} ${show.task.replace('_', ' ')}, everyday set: ${tally.join(', ')}`;
  ui.showcaseTitle.textContent = show.gain.startsWith('over instruct')
    ? `One instruction in a new language, three models (the kit's table, ${where})`
    : `One instruction, three models: where the table shows DeltaMoE keeping what ParamΔ loses (${where}); ` +
      'in the new languages it answers no better than instruct at this scale (demo/README.md)';
  ui.showcaseAsk.replaceChildren(
    el('strong', {}, `${show.lang} · ${show.task}: `), show.prompt, el('br'),
    el('span', { className: 'hint' }, `expected: ${show.answer}`),
  );
  try {
    const out = await runCompare(show.prompt, { chat: true, temperature: 0, max_tokens: 32 }, show.models, {
      into: ui.showcaseColumns,
      decorate: (node, label) =>
        node.append(el('ul', { className: 'figures' }, ...tableFigures(manifest, label).map((t) => el('li', {}, t)))),
    });
    const results = out.map(({ label, result, error }) => {
      const correct = Boolean(result) && result.stop_reason === 'end_of_sequence' && result.text.trim() === show.answer.trim();
      const column = ui.showcaseColumns.querySelector(`.column[data-label="${CSS.escape(label)}"]`);
      column?.querySelector('h3')?.append(` ${correct ? '✓' : '✗'}`);
      column?.setAttribute('data-correct', String(correct));
      return { label, text: result?.text ?? null, stop_reason: result?.stop_reason ?? null, correct, error };
    });
    hook.showcase = { ...show, results };
    hook.showcaseState = 'done';
    return hook.showcase;
  } catch (e) {
    hook.showcaseState = 'error';
    throw e;
  }
}

function kitEntry(name) {
  return manifestEntry(state.hook.kit, name);
}

function markButton(name) {
  for (const b of ui.models.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.name === name));
}

/**
 * Loads (or grafts, then loads) the kit's model `name`. `opening`: a step of the page's
 * opening, which leaves kitState 'loading' until the whole opening is done.
 */
let busy = false;

export async function loadKitModel(name, { opening = false } = {}) {
  const hook = state.hook;
  if (busy) throw new Error('a demo-kit model is already loading');
  if (hook.loadState === 'loading' || hook.generating || hook.graftState === 'grafting') {
    throw new Error('wait for the running load, generation or graft to finish');
  }
  const entry = kitEntry(name);
  busy = true;
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
    hook.kitState = opening ? 'loading' : 'loaded';
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
  } finally {
    busy = false;
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
  showTeachKit();
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
  const first = manifest.showcase ?? manifest.examples.find((ex) => manifest.languages[ex.lang] === 'new');
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
  // The showcase's other models first, the default last: it stays the active one. kitState
  // turns 'loaded' once the showcase has been answered (or could not be).
  const others = (manifest.showcase?.models ?? []).filter((name) => name !== manifest.default);
  try {
    for (const name of others) await loadKitModel(name, { opening: true });
    if (!manifest.default) return;
    await loadKitModel(manifest.default, { opening: true });
  } catch {
    return; // shown in place, kitState 'error'
  }
  try {
    if (manifest.showcase) await runShowcase();
  } catch (e) {
    showError(ui.error, `The first view's comparison failed: ${e.message}`);
  } finally {
    state.hook.kitState = 'loaded';
  }
}
