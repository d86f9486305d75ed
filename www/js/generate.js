// Generate: the prompt box, sampling settings, streaming output with a live tokens/s readout,
// and Stop. Runs on the active model; an MoE model's routes go to the routing view.

import { request, stopGeneration } from './worker-client.js';
import { $, el, showError } from './ui.js';
import { active, loadModel } from './models.js';
import { showRouting } from './routing.js';
import { state } from './state.js';

const ui = {
  form: $('generate-form'),
  model: $('generate-model'),
  prompt: $('prompt'),
  chat: $('chat'),
  converse: $('converse'),
  newChat: $('new-chat'),
  maxTokens: $('max-tokens'),
  temperature: $('temperature'),
  topP: $('top-p'),
  topK: $('top-k'),
  seed: $('seed'),
  routerControl: $('router-control'),
  router: $('router-mode'),
  generate: $('generate'),
  stop: $('stop'),
  output: $('output'),
  stats: $('stats'),
  error: $('generate-error'),
};

export const promptBox = ui.prompt;
export const chatBox = ui.chat;

/** The turns so far when the conversation continues: [{role, content}]. */
const conversation = [];

function newChat() {
  conversation.length = 0;
  state.hook.conversation = [];
  ui.output.textContent = '';
  ui.newChat.hidden = true;
}

/** The earlier turns, shown above the streaming answer. */
function showTranscript() {
  ui.output.replaceChildren(
    ...conversation.map((m) => el('div', { className: `turn ${m.role}` }, el('strong', {}, `${m.role}: `), m.content)),
  );
}

/** The form's settings; throws with a readable message on a bad value. */
export function readOptions() {
  const maxTokens = Number(ui.maxTokens.value);
  const temperature = Number(ui.temperature.value);
  const topP = Number(ui.topP.value);
  const topK = Number(ui.topK.value);
  const seed = Number(ui.seed.value);
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new Error('max tokens must be a whole number ≥ 1');
  if (!Number.isFinite(temperature) || temperature < 0) throw new Error('temperature must be a number ≥ 0 (0 = greedy)');
  if (!(topP > 0 && topP <= 1)) throw new Error('top-p must be in (0, 1]');
  if (!Number.isInteger(topK) || topK < 0) throw new Error('top-k must be a whole number ≥ 0 (0 = no cut)');
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error('seed must be a whole number ≥ 0');
  return { chat: ui.chat.checked, max_tokens: maxTokens, temperature, top_p: topP, top_k: topK, seed };
}

/** One-line summary of a finished generation. */
export function summarize(result) {
  const t = result.timing;
  const rate = t.decode_tokens_per_s ?? t.tokens_per_s;
  return (
    `${result.output_ids.length} tokens in ${(t.total_ms / 1000).toFixed(2)} s` +
    (rate ? ` · ${rate.toFixed(1)} tokens/s` : '') +
    (t.first_token_ms != null ? ` · first token ${Math.round(t.first_token_ms)} ms` : '') +
    ` · prompt ${result.input_ids.length} tokens · stopped: ${result.stop_reason.replaceAll('_', ' ')}`
  );
}

/** Live "N tokens · r tokens/s" while tokens stream in. */
export function liveRate(show) {
  const started = performance.now();
  let count = 0;
  return () => {
    count += 1;
    const s = (performance.now() - started) / 1000;
    show(`${count} tokens · ${(count / s).toFixed(1)} tokens/s`);
  };
}

/** Generates on `model` ({id, info}); `onToken(id, piece)` sees the stream. */
export function generateOn(model, input, options, onToken) {
  const o = { ...options };
  if (input.ids || input.messages) delete o.chat;
  if (!model.info.is_moe) delete o.routes;
  return request('generate', { id: model.id, ...input, options: o }, { onToken });
}

export function updateGenerateControls() {
  const hook = state.hook;
  const m = active();
  ui.model.textContent = m ? `with ${m.label}` : 'no model loaded';
  ui.generate.disabled = !m || hook.generating;
  showRouterChoices(m);
}

/** For an MoE model: how it routes (learned, the language prior, or one forced expert). */
function showRouterChoices(m) {
  ui.routerControl.hidden = !m?.info.is_moe;
  if (!m?.info.is_moe) return;
  const choices = ['learned'];
  if (m.info.expert_languages?.length) choices.push('language-prior');
  for (let e = 0; e < m.info.num_experts; e++) choices.push(`expert=${e}`);
  const names = { learned: 'learned router', 'language-prior': 'language prior' };
  ui.router.replaceChildren(
    ...choices.map((c) => {
      const langs = c.startsWith('expert=') ? m.info.expert_languages?.[Number(c.slice(7))] : null;
      const text = names[c] ?? `only expert ${c.slice(7)}${langs?.length ? ` (${langs.join(', ')})` : ''}`;
      return el('option', { value: c, selected: c === m.info.router }, text);
    }),
  );
}

// Routing is fixed when a model loads: load it again with the new choice.
ui.router.addEventListener('change', () => {
  const m = active();
  if (m) loadModel(m.entries, m.label, { options: { ...m.options, router: ui.router.value } });
});

export async function runGeneration(input, overrides) {
  // The form's prompt, ids, or a whole conversation ({messages}).
  const hook = state.hook;
  if (hook.generating) throw new Error('a generation is already running');
  showError(ui.error, '');
  let options;
  const model = active();
  try {
    if (!model) throw new Error('no model is loaded: pick a model folder first');
    options = { routes: true, ...readOptions(), ...(overrides || {}) };
  } catch (e) {
    hook.lastError = e.message;
    showError(ui.error, e.message);
    throw e;
  }
  // With the chat template on and the conversation continuing, the prompt is the next user
  // turn after the ones before.
  const turn = input.prompt !== undefined && options.chat && ui.converse.checked;
  if (turn) input = { messages: [...conversation, { role: 'user', content: input.prompt }] };
  hook.generating = true;
  hook.lastResult = null;
  ui.generate.disabled = true;
  ui.stop.disabled = false;
  if (turn) {
    showTranscript();
    ui.output.append(el('strong', {}, 'assistant: '));
  } else {
    ui.output.textContent = '';
  }
  ui.stats.textContent = 'Generating…';
  const tick = liveRate((s) => {
    ui.stats.textContent = s;
  });
  try {
    const result = await generateOn(model, input, options, (_id, piece) => {
      if (piece) ui.output.append(piece);
      tick();
    });
    hook.lastResult = result;
    if (turn) {
      conversation.push(input.messages.at(-1), { role: 'assistant', content: result.text });
      hook.conversation = conversation.slice();
      ui.newChat.hidden = false;
      showTranscript();
    } else {
      ui.output.textContent = result.text || ui.output.textContent;
    }
    ui.stats.textContent = summarize(result);
    if (result.routes) await showRouting(model, result);
    return result;
  } catch (e) {
    hook.lastError = e.message;
    showError(ui.error, `Generation failed: ${e.message}`);
    ui.stats.textContent = '';
    throw e;
  } finally {
    hook.generating = false;
    hook.generations += 1;
    ui.stop.disabled = true;
    updateGenerateControls();
  }
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  runGeneration({ prompt: ui.prompt.value }).catch(() => {}); // shown in place
});

ui.stop.addEventListener('click', () => stopGeneration());
ui.newChat.addEventListener('click', newChat);
ui.converse.addEventListener('change', newChat);
