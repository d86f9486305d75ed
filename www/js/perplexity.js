// A quick perplexity check: pasted text scored by every loaded model, so a class can see
// which model knows a language. With the demo kit, sample buttons paste its held-out texts.

import { request } from './worker-client.js';
import { $, el, showError } from './ui.js';
import { loaded } from './models.js';
import { state } from './state.js';

const ui = {
  text: $('ppl-text'),
  run: $('ppl-run'),
  samples: $('ppl-samples'),
  results: $('ppl-results'),
  error: $('ppl-error'),
};

/** Scores `text` with each loaded model (or those labelled); resolves to the table's rows. */
export async function runPerplexity(text, labels) {
  const hook = state.hook;
  showError(ui.error, '');
  const models = labels ? loaded.filter((m) => labels.includes(m.label)) : loaded.slice();
  try {
    if (!text.trim()) throw new Error('paste some text to score first');
    if (models.length === 0) throw new Error('load a model first');
    if (hook.generating || hook.loadState === 'loading') throw new Error('wait for the running generation or load to finish');
  } catch (e) {
    showError(ui.error, e.message);
    throw e;
  }
  ui.run.disabled = true;
  const rows = [];
  const body = el('tbody');
  ui.results.replaceChildren(el('thead', {}, el('tr', {}, el('th', {}, 'model'), el('th', {}, 'tokens'), el('th', {}, 'perplexity'))), body);
  try {
    for (const m of models) {
      const cells = [el('td', {}, m.label), el('td', {}, '…'), el('td', {}, '…')];
      body.append(el('tr', { dataset: { label: m.label } }, ...cells));
      try {
        const p = await request('perplexity', { id: m.id, text });
        cells[1].textContent = String(p.tokens);
        cells[2].textContent = p.perplexity.toFixed(p.perplexity < 100 ? 2 : 0);
        rows.push({ label: m.label, ...p });
      } catch (e) {
        cells[1].textContent = '';
        cells[2].textContent = e.message;
        rows.push({ label: m.label, error: e.message });
      }
    }
    hook.perplexityResults = rows;
    return rows;
  } finally {
    ui.run.disabled = false;
  }
}

/** Sample buttons for the kit's held-out texts (demo/eval/suite.json names them). */
export async function showKitSamples(root, languages) {
  let suite;
  try {
    const r = await fetch(`${root}eval/suite.json`);
    if (!r.ok) return;
    suite = await r.json();
  } catch {
    return;
  }
  ui.samples.replaceChildren(
    ...Object.entries(suite.perplexity ?? {}).map(([lang, file]) =>
      el('button', {
        type: 'button',
        dataset: { lang },
        title: `${languages?.[lang] ?? ''} language · the first lines of ${file}`,
        onclick: async () => {
          const r = await fetch(`${root}eval/${file}`);
          const text = r.ok ? await r.text() : '';
          // A paragraph or so: enough tokens to tell languages apart, quick on any adapter.
          ui.text.value = text.slice(0, 1200).replace(/\s+\S*$/, '');
        },
      }, `${lang} sample`),
    ),
  );
}

ui.run.addEventListener('click', () => {
  runPerplexity(ui.text.value).catch(() => {}); // shown in place
});
