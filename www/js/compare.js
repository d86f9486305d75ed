// Compare: the prompt of the Generate box answered by two or more loaded models side by side
// (e.g. instruct, ParamΔ and DeltaMoE), one after another with the same settings.

import { $, el, showError } from './ui.js';
import { loaded, onModelsChange } from './models.js';
import { chatBox, generateOn, liveRate, promptBox, readOptions, summarize, updateGenerateControls } from './generate.js';
import { state } from './state.js';

const ui = {
  models: $('compare-models'),
  run: $('compare'),
  results: $('compare-results'),
  error: $('compare-error'),
};

const unchecked = new Set();

function render() {
  ui.models.replaceChildren(
    ...loaded.map((m) =>
      el(
        'label',
        {},
        el('input', {
          type: 'checkbox',
          checked: !unchecked.has(m.label),
          dataset: { label: m.label },
          onchange: (e) => (e.target.checked ? unchecked.delete(m.label) : unchecked.add(m.label)),
        }),
        ` ${m.label}`,
      ),
    ),
  );
  ui.run.disabled = loaded.length < 2 || state.hook.generating;
}

onModelsChange(render);

/**
 * Answers `prompt` with each chosen model (labels, or the ticked ones); resolves to
 * `[{label, result}]`. A model that fails shows its error in its column; the others go on.
 * The columns go into `into` (the Compare section's, unless the kit's first view asks);
 * `decorate(column, label)` may add to each column before it runs.
 */
export async function runCompare(prompt, overrides, labels, { into = ui.results, decorate } = {}) {
  const hook = state.hook;
  if (hook.generating) throw new Error('a generation is already running');
  showError(ui.error, '');
  let options;
  let chosen;
  try {
    chosen = labels ? loaded.filter((m) => labels.includes(m.label)) : loaded.filter((m) => !unchecked.has(m.label));
    if (chosen.length < 2) throw new Error('tick two or more loaded models to compare');
    options = { ...readOptions(), ...(overrides || {}), routes: false };
  } catch (e) {
    hook.lastError = e.message;
    showError(ui.error, e.message);
    throw e;
  }
  hook.generating = true;
  ui.run.disabled = true;
  updateGenerateControls();
  const columns = chosen.map((m) => {
    const output = el('pre', { className: 'output' });
    const stats = el('p', { className: 'status' }, 'waiting…');
    return { m, output, stats, node: el('div', { className: 'column', dataset: { label: m.label } }, el('h3', {}, m.label), output, stats) };
  });
  for (const c of columns) decorate?.(c.node, c.m.label);
  into.replaceChildren(...columns.map((c) => c.node));
  const out = [];
  try {
    for (const c of columns) {
      c.stats.textContent = 'Generating…';
      const tick = liveRate((s) => {
        c.stats.textContent = s;
      });
      try {
        const result = await generateOn(c.m, { prompt }, options, (_id, piece) => {
          if (piece) c.output.append(piece);
          tick();
        });
        c.output.textContent = result.text || c.output.textContent;
        c.stats.textContent = summarize(result);
        out.push({ label: c.m.label, result });
      } catch (e) {
        c.stats.textContent = '';
        c.node.append(el('p', { className: 'error' }, e.message));
        out.push({ label: c.m.label, error: e.message });
      }
    }
    hook.compareResults = out;
    return out;
  } finally {
    hook.generating = false;
    hook.generations += 1;
    render();
    updateGenerateControls();
  }
}

ui.run.addEventListener('click', () => {
  runCompare(promptBox.value, { chat: chatBox.checked }).catch(() => {}); // shown in place
});
