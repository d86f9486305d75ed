// GGUF files: converted in the worker into Hugging Face files (f16), which then load, graft
// or are kept like a picked folder. A pick or drop that holds a .gguf is converted first.

import { request } from './worker-client.js';
import { asEntries } from './ui.js';

const isGguf = (entry) => entry.path.toLowerCase().endsWith('.gguf');

export function holdsGguf(entries) {
  return entries.some(isGguf);
}

/**
 * `entries` as Hugging Face files: converted when they hold one GGUF file (anything else picked
 * with it is ignored), as they are otherwise. Resolves to `{entries, label}`.
 */
export async function asModelFiles(entries, label, { onRead, onStatus } = {}) {
  const ggufs = entries.filter(isGguf);
  if (ggufs.length === 0) return { entries, label };
  if (ggufs.length > 1) {
    throw new Error(`${ggufs.map((g) => g.path).join(', ')}: pick one GGUF file at a time`);
  }
  const gguf = ggufs[0];
  const name = gguf.path.split('/').pop();
  const modelLabel = name.replace(/\.gguf$/i, '');
  onStatus?.(`Converting ${name} to Hugging Face files (f16)…`);
  const r = await request('importGguf', { file: gguf, options: {} }, { onRead });
  return {
    entries: asEntries(r.files, modelLabel),
    label: modelLabel,
    imported: r,
  };
}
