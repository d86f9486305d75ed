// The benchmark report (as moegraft bench --json prints it, or the part measured so far) as
// table rows: each figure with its spread and, where it has one, its bound and the fraction
// figure ÷ bound. The bounds are the native report's: decode against GPU copy bandwidth ÷ bytes
// read per token, merge against the copy bandwidths measured in the same run.

import { bytes as mb } from './ui.js';

/** GPU copy bandwidth in bytes/s as the report's bounds use it: the better of its timers. */
export function gpuBytesPerS(copy) {
  return Math.max(copy.gpu_fence_gbps.median, copy.gpu_timestamp_gbps?.median ?? 0) * 1e9;
}

const stat = (s) => ({ value: s.median, spread: { min: s.min, max: s.max, n: s.samples } });

function row(id, label, unit, measured, bound = null, note = '') {
  const r = { id, label, unit, value: measured.value, spread: measured.spread ?? null, bound: null, fraction: null, note };
  if (bound) {
    r.bound = bound.value;
    r.boundLabel = bound.label;
    r.fraction = r.value / r.bound;
  }
  return r;
}

function copyRows(c) {
  const rows = [row('copy-gpu-fence', `GPU copy bandwidth, ${mb(c.bytes)} × 8, by fence`, 'GB/s', stat(c.gpu_fence_gbps))];
  if (c.gpu_timestamp_gbps) rows.push(row('copy-gpu-timestamps', 'GPU copy bandwidth, by timestamps', 'GB/s', stat(c.gpu_timestamp_gbps)));
  rows.push(row('copy-host', `host copy bandwidth (wasm copy_from_slice, ${mb(c.bytes)})`, 'GB/s', stat(c.host_gbps)));
  for (const r of c.shader_reads ?? []) {
    rows.push(row(`read-${r.pattern}`, `a shader reading ${mb(c.shader_read_bytes)}, ${r.pattern} (bytes read only)`, 'GB/s', stat(r.gbps)));
  }
  return rows;
}


function decodeRows(r, d) {
  const bw = gpuBytesPerS(r.copy_bandwidth);
  const weights = r.model.decode_weight_bytes;
  return [
    row(`decode-${d.context}`, `decode at context ${d.context}`, 'tok/s', stat(d.tokens_per_s), {
      value: bw / weights,
      label: `GPU copy ÷ ${mb(weights)} of ${r.model.weight_format} weights per token`,
    }),
    row(`decode-${d.context}-kv`, `decode at context ${d.context}, with the KV cache read`, 'tok/s', stat(d.tokens_per_s), {
      value: bw / (weights + d.kv_bytes),
      label: `GPU copy ÷ (weights + ${mb(d.kv_bytes)} of KV cache) per token`,
    }),
    row(`decode-${d.context}-read`, `decode at context ${d.context}, against what a shader can read`, 'tok/s', stat(d.tokens_per_s), {
      value: d.read_ceiling_tokens_per_s,
      label: `shader read ceiling ÷ ${mb(weights)} of weights per token`,
    }),
  ];
}

function mergeRows(r, m) {
  const c = r.copy_bandwidth;
  const host = { value: c.host_gbps.median, label: 'host copy bandwidth' };
  const gpu = { value: gpuBytesPerS(c) / 1e9, label: 'GPU copy bandwidth' };
  const what = `merge (${m.method}, ${mb(m.input_bytes)} of inputs)`;
  const hashed = `end to end, with the inputs' sha256 (${m.hash_seconds.median.toFixed(3)} s alone)`;
  const streamed = m.merge_seconds.median;
  return [
    row('merge-host', `${what}, streamed`, 'GB/s', stat(m.merge_gbps), host),
    row('merge-gpu', `${what}, streamed`, 'GB/s', stat(m.merge_gbps), gpu),
    row('merge-end-to-end', `${what}, ${hashed}`, 'GB/s', stat(m.end_to_end_gbps), host),
    row('merge-write-floor', `writing the merge's ${mb(m.output_bytes)} of output alone, no merge`, 's', stat(m.write_floor_seconds), null,
      `${(100 * m.write_floor_seconds.median / streamed).toFixed(1)} % of the streamed merge's ${streamed.toFixed(3)} s`),
  ];
}

function memoryRows(m) {
  const rows = [
    row('memory-gpu', 'peak GPU memory: weight and KV-cache buffers', 'bytes', { value: m.gpu_weight_bytes + m.gpu_kv_cache_bytes }, null,
      `weights ${mb(m.gpu_weight_bytes)}, KV cache ${mb(m.gpu_kv_cache_bytes)}`),
  ];
  if (m.wasm_memory_bytes != null) {
    rows.push(row('memory-wasm', 'peak wasm memory (linear memory; it only grows)', 'bytes', { value: m.wasm_memory_bytes }, null,
      'every Rust allocation of the run; not JS objects (Blobs) nor the browser\'s GPU process'));
  }
  if (m.peak_host_rss_bytes != null) {
    rows.push(row('memory-host', 'peak host RSS (VmHWM)', 'bytes', { value: m.peak_host_rss_bytes }));
  }
  return rows;
}

/** The rows of what `report` holds so far, in the order they are measured. */
export function reportRows(r) {
  const rows = [];
  if (r.copy_bandwidth) rows.push(...copyRows(r.copy_bandwidth));
  if (r.prefill) {
    rows.push(row('prefill', `prefill, ${r.prefill.tokens} tokens`, 'tok/s', stat(r.prefill.tokens_per_s), null,
      'no bandwidth bound: a chunk reads the weights once for all its tokens'));
  }
  if (r.model && r.copy_bandwidth) for (const d of r.decode ?? []) rows.push(...decodeRows(r, d));
  if (r.merge && r.copy_bandwidth) rows.push(...mergeRows(r, r.merge));
  if (r.memory) rows.push(...memoryRows(r.memory));
  return rows;
}

/** A number with a precision that suits its size. */
export function formatNumber(value) {
  return value.toFixed(value >= 100 ? 1 : value >= 1 ? 2 : 3);
}

/** A figure in its unit. */
export function formatValue(value, unit) {
  return unit === 'bytes' ? mb(value) : `${formatNumber(value)} ${unit}`;
}
