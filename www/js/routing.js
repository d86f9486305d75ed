// The routing view, for teaching: every prompt and generated token coloured by the expert its
// router chose (top-1 of one layer, or the most frequent top-1 over all layers), and a
// layer × expert heatmap of how often each expert was among a token's chosen ones.

import { request } from './worker-client.js';
import { $, el } from './ui.js';
import { state } from './state.js';

const ui = {
  section: $('routing-section'),
  layer: $('routing-layer'),
  which: $('routing-which'),
  legend: $('routing-legend'),
  tokens: $('routing-tokens'),
  heatmap: $('routing-heatmap'),
};

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#b07aa1', '#76b7b2', '#edc948', '#9c755f'];
const colour = (e) => PALETTE[e] ?? `hsl(${(e * 137.5) % 360} 55% 55%)`;

let shown = null;

/** Shows the routes of a finished generation of `model` ({id, label, info}). */
export async function showRouting(model, result) {
  const ids = [...result.input_ids, ...result.output_ids].slice(0, result.routes.length);
  const texts = await request('tokenTexts', { id: model.id, ids });
  const info = model.info;
  shown = { model: model.label, info, ids, texts, routes: result.routes, prompt: result.input_ids.length };
  ui.layer.replaceChildren(
    el('option', { value: 'all' }, 'all layers (most frequent top-1)'),
    ...moeLayers(info).map((l) => el('option', { value: String(l) }, `layer ${l}`)),
  );
  ui.section.hidden = false;
  render();
}

/** The layers that route (a Qwen MoE may keep dense layers, whose route lists are empty). */
function moeLayers(info) {
  return info.moe_layers ?? Array.from({ length: info.num_layers }, (_, l) => l);
}

function topOne(routes, layer) {
  if (layer !== 'all') return routes[Number(layer)][0];
  const counts = new Map();
  for (const slots of routes) if (slots.length) counts.set(slots[0], (counts.get(slots[0]) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0][0];
}

function languagesOf(info, e) {
  const langs = info.expert_languages?.[e];
  return langs?.length ? ` (${langs.join(', ')})` : '';
}

function render() {
  if (!shown) return;
  const { info, texts, routes, prompt } = shown;
  const layer = ui.layer.value || 'all';
  ui.legend.replaceChildren(
    el('span', {}, `${shown.model}: `),
    ...Array.from({ length: info.num_experts }, (_, e) =>
      el('span', { className: 'swatch', style: `--c: ${colour(e)}` }, `expert ${e}${languagesOf(info, e)}`),
    ),
  );
  ui.tokens.replaceChildren(
    ...texts.map((text, t) => {
      const e = topOne(routes[t], layer);
      const detail = routes[t].map((slots, l) => `layer ${l}: ${slots.length ? slots.join('+') : 'dense'}`).join('\n');
      return el(
        'span',
        {
          className: `tok ${t < prompt ? 'prompt' : 'output'}`,
          style: `--c: ${colour(e)}`,
          title: `${JSON.stringify(text)} → expert ${e}\n${detail}`,
          dataset: { expert: String(e) },
        },
        text,
      );
    }),
  );
  renderHeatmap();
}

/** Share of the chosen tokens that had expert e among their top-k, per layer. */
function heat(which) {
  const { info, routes, prompt } = shown;
  const picked = routes.filter((_, t) => which === 'all' || (which === 'prompt') === (t < prompt));
  const layers = moeLayers(info);
  const rows = layers.map((l) => {
    const counts = new Array(info.num_experts).fill(0);
    // A forced expert fills every slot with itself (the others weigh 0): count it once.
    for (const r of picked) for (const e of new Set(r[l])) counts[e] += 1;
    return counts.map((c) => (picked.length ? c / picked.length : 0));
  });
  return { tokens: picked.length, rows, layers };
}

function renderHeatmap() {
  const which = ui.which.value || 'all';
  const { info } = shown;
  const h = heat(which);
  state.hook.routing = { model: shown.model, tokens: shown.routes.length, which, heat: h.rows };
  const labels = Array.from({ length: info.num_experts }, (_, e) => `expert ${e}${languagesOf(info, e)}`);
  ui.heatmap.replaceChildren(
    ...shareTable(h.rows, labels, `Share of ${h.tokens} ${which === 'all' ? '' : `${which} `}tokens sending to each expert (top-${info.experts_per_token})`, h.layers),
  );
}

/** A layer × expert table of shares (0…1), each expert in its colour: caption, head, body;
 *  `layers` names the rows (default 0, 1, …). */
export function shareTable(rows, labels, caption, layers = rows.map((_, l) => l)) {
  const head = el('tr', {}, el('th', {}, 'layer'), ...labels.map((label, e) => el('th', { style: `--c: ${colour(e)}` }, label)));
  const body = rows.map((row, l) =>
    el(
      'tr',
      {},
      el('th', {}, String(layers[l])),
      ...row.map((share, e) =>
        el('td', { style: `--c: ${colour(e)}; --share: ${(share * 100).toFixed(1)}%` }, `${Math.round(share * 100)}%`),
      ),
    ),
  );
  return [el('caption', {}, caption), el('thead', {}, head), el('tbody', {}, ...body)];
}

ui.layer.addEventListener('change', render);
ui.which.addEventListener('change', renderHeatmap);
