// The benchmark page (www/bench.html) on the demo kit with tiny settings: every figure of
// `moegraft bench` comes back finite and positive, every fraction is the figure ÷ its bound
// recomputed here from the measured figures, decode is timed at both contexts, the merge is
// the kit's real DeltaMoE graft (its input bytes counted from the safetensors headers), the
// page shows it all, Stop ends a run without breaking the next, and a picked folder is
// grafted onto itself. Nothing leaves 127.0.0.1.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { artifacts, checkPrerequisites, demo, openPage } from './harness.mjs';

const TINY = 'prompt_tokens=8&contexts=16,64&decode_tokens=2&warmup=0&repeats=1&copy_mib=4&merge_repeats=1';

/** Bytes of each tensor of a safetensors file, from its header. */
function tensorBytes(file) {
  const fd = fs.openSync(file, 'r');
  const len = Buffer.alloc(8);
  fs.readSync(fd, len, 0, 8, 0);
  const header = Buffer.alloc(Number(len.readBigUInt64LE()));
  fs.readSync(fd, header, 0, header.length, 8);
  fs.closeSync(fd);
  const { __metadata__: _, ...tensors } = JSON.parse(header.toString('utf8'));
  return Object.entries(tensors).map(([name, t]) => ({ name, bytes: t.data_offsets[1] - t.data_offsets[0] }));
}

/** What DeltaMoE reads: cpt-moe whole; base and instruct once, their FFN once per expert. */
function deltaMoeInputBytes() {
  const sum = (ts) => ts.reduce((n, t) => n + t.bytes, 0);
  const base = tensorBytes(path.join(demo, 'base/model.safetensors'));
  const target = tensorBytes(path.join(demo, 'cpt-moe/model.safetensors'));
  const experts = JSON.parse(fs.readFileSync(path.join(demo, 'cpt-moe/config.json'), 'utf8')).num_local_experts;
  const ffn = sum(base.filter((t) => t.name.includes('.mlp.')));
  const rest = sum(base.filter((t) => !t.name.includes('.mlp.')));
  return sum(target) + 2 * (rest + experts * ffn);
}

function positive(value, what) {
  assert.ok(typeof value === 'number' && Number.isFinite(value) && value > 0, `${what} = ${value}`);
}

function close(actual, expected, what) {
  assert.ok(Math.abs(actual - expected) <= 1e-9 * Math.abs(expected), `${what}: ${actual} ≠ ${expected}`);
}

describe('the benchmark page on the demo kit (WebGPU on SwiftShader)', { timeout: 120_000 }, () => {
  let session;
  let page;

  before(async () => {
    checkPrerequisites(assert);
    session = await openPage({ kit: true, at: 'bench.html', query: `${TINY}&run` });
    ({ page } = session);
  });

  after(async () => {
    if (page) await page.screenshot({ path: path.join(artifacts, 'bench.png'), fullPage: true }).catch(() => {});
    await session?.close();
  });

  const hook = () => page.evaluate(() => ({ ...window.__moegraftBench }));
  const ended = (runs) =>
    page.waitForFunction((n) => window.__moegraftBench.runs > n, runs, { timeout: 90_000 });

  test('runs every measurement and reports every figure', async () => {
    await ended(0);
    const b = await hook();
    assert.equal(b.state, 'done', `the run ended '${b.state}': ${b.error}`);
    const r = b.report;
    assert.equal(r.model.source, 'DeltaMoE');
    assert.equal(r.model.architecture, 'mixtral');
    positive(r.model.parameters, 'parameters');
    positive(r.model.decode_weight_bytes, 'decode weight bytes');
    positive(r.copy_bandwidth.gpu_fence_gbps.median, 'GPU copy GB/s');
    positive(r.copy_bandwidth.host_gbps.median, 'host copy GB/s');
    assert.deepEqual(r.copy_bandwidth.shader_reads.map((x) => x.pattern), ['strided', 'blocks']);
    for (const x of r.copy_bandwidth.shader_reads) positive(x.gbps.median, `shader read GB/s, ${x.pattern}`);
    assert.equal(r.prefill.tokens, 8);
    positive(r.prefill.tokens_per_s.median, 'prefill tok/s');
    assert.deepEqual(r.decode.map((d) => d.context), [16, 64]);
    for (const d of r.decode) {
      positive(d.tokens_per_s.median, `decode tok/s at ${d.context}`);
      assert.equal(d.tokens_per_s.samples, 2);
    }
    assert.equal(r.merge.method, 'deltamoe');
    assert.equal(r.merge.input_bytes, deltaMoeInputBytes());
    for (const k of ['merge_gbps', 'end_to_end_gbps', 'total_seconds', 'hash_seconds', 'merge_seconds', 'write_floor_seconds']) positive(r.merge[k].median, `merge ${k}`);
    positive(r.merge.output_bytes, 'merge output bytes');
    assert.equal(r.merge_note, null);
    for (const k of ['gpu_weight_bytes', 'gpu_kv_cache_bytes', 'wasm_memory_bytes']) positive(r.memory[k], k);
    assert.equal(r.memory.peak_host_rss_bytes, null, 'a browser reports no RSS');
    // The wasm module's memory holds at least the host copy's two buffers.
    assert.ok(r.memory.wasm_memory_bytes >= 2 * r.copy_bandwidth.bytes);
    assert.equal(r.machine.os.startsWith('browser: '), true);
  });

  test('every fraction is the figure ÷ its bound', async () => {
    const { report: r, rows } = await hook();
    const c = r.copy_bandwidth;
    const bw = Math.max(c.gpu_fence_gbps.median, c.gpu_timestamp_gbps?.median ?? 0) * 1e9;
    const weights = r.model.decode_weight_bytes;
    const row = (id) => rows.find((x) => x.id === id) ?? assert.fail(`no row '${id}' in ${rows.map((x) => x.id)}`);
    for (const d of r.decode) {
      const speed = d.tokens_per_s.median;
      close(d.weight_bound_tokens_per_s, bw / weights, `bound at ${d.context}`);
      close(d.fraction_of_weight_bound, speed / (bw / weights), `fraction at ${d.context}`);
      close(d.fraction_of_weight_kv_bound, speed / (bw / (weights + d.kv_bytes)), `fraction with KV at ${d.context}`);
      // The table shows the same fractions as the report.
      close(row(`decode-${d.context}`).fraction, d.fraction_of_weight_bound, `row decode-${d.context}`);
      close(row(`decode-${d.context}-kv`).fraction, d.fraction_of_weight_kv_bound, `row decode-${d.context}-kv`);
      const ceiling = Math.max(...c.shader_reads.map((x) => x.gbps.median)) * 1e9;
      close(d.read_ceiling_tokens_per_s, ceiling / weights, `read ceiling at ${d.context}`);
      close(d.fraction_of_read_ceiling, speed / (ceiling / weights), `fraction of the read ceiling at ${d.context}`);
      close(row(`decode-${d.context}-read`).fraction, d.fraction_of_read_ceiling, `row decode-${d.context}-read`);
    }
    const m = r.merge;
    close(m.merge_gbps.median, m.input_bytes / m.merge_seconds.median / 1e9, 'merge GB/s');
    close(m.end_to_end_gbps.median, m.input_bytes / m.total_seconds.median / 1e9, 'end-to-end GB/s');
    close(m.fraction_of_host_copy, m.merge_gbps.median / c.host_gbps.median, 'merge ÷ host copy');
    close(m.fraction_of_gpu_copy, (m.merge_gbps.median * 1e9) / bw, 'merge ÷ GPU copy');
    close(row('merge-host').fraction, m.fraction_of_host_copy, 'row merge-host');
    close(row('merge-gpu').fraction, m.fraction_of_gpu_copy, 'row merge-gpu');
    for (const id of ['copy-gpu-fence', 'copy-host', 'read-strided', 'read-blocks', 'prefill', 'memory-gpu', 'memory-wasm']) positive(row(id).value, id);
    close(row('memory-gpu').value, r.memory.gpu_weight_bytes + r.memory.gpu_kv_cache_bytes, 'peak GPU memory');
    // What the page shows is what the rows hold.
    const shown = await page.$$eval('#bench-results tbody tr', (trs) => trs.map((tr) => ({ ...tr.dataset, cells: [...tr.cells].map((td) => td.textContent) })));
    assert.deepEqual(shown.map((s) => s.id), rows.map((x) => x.id));
    for (const s of shown.filter((x) => x.bound)) {
      close(Number(s.fraction), Number(s.value) / Number(s.bound), `shown ${s.id}`);
      assert.match(s.cells[4], /^\d+(\.\d+)? %$/, `${s.id}: fraction cell '${s.cells[4]}'`);
    }
  });

  test('per-kernel GPU time where the adapter has timestamp queries, else says so', async () => {
    const { report: r } = await hook();
    const note = await page.textContent('#bench-kernels-note');
    if (r.adapter.timestamp_queries) {
      assert.ok(r.kernels, `timestamp queries but no profile: ${r.kernels_note}`);
      positive(r.kernels.kernel_ms, 'kernel ms');
      assert.equal(r.kernels.context, 16 + 2, 'profiled after the first context\'s steps');
      const kernels = r.kernels.groups.map((g) => g.kernel);
      assert.ok(kernels.some((k) => k.startsWith('expert_matvec')), kernels.join());
      const shares = r.kernels.groups.reduce((n, g) => n + g.share, 0);
      assert.ok(Math.abs(shares - 1) < 1e-9, `shares sum to ${shares}`);
      assert.equal(await page.isVisible('#bench-kernel-table'), true);
      assert.equal(await page.locator('#bench-kernel-table tbody tr').count(), kernels.length);
    } else {
      assert.equal(r.kernels, null);
      assert.match(note, /Not measured: .*timestamp queries/);
      assert.equal(await page.isVisible('#bench-kernel-table'), false);
    }
  });

  test('the JSON is the report, and no request left 127.0.0.1', async () => {
    const json = await page.evaluate(() => window.__moegraftBench.json());
    assert.deepEqual(JSON.parse(json), (await hook()).report);
    assert.deepEqual(JSON.parse(await page.textContent('#bench-json')), JSON.parse(json));
    assert.match(await page.textContent('#bench-adapter'), /WebGPU adapter: .*timestamp-query: (yes|no)/);
    assert.deepEqual(session.pageErrors, []);
    const outside = session.requests.filter((u) => !u.startsWith(`${session.origin}/`) && !u.startsWith('blob:') && !u.startsWith('data:'));
    assert.deepEqual(outside, []);
  });

  test('Stop ends a run, keeps what was measured, and the next run starts afresh', async () => {
    const runs = (await hook()).runs;
    // Stopped while the second context's 200 steps run (the kit's models hold 512 positions).
    await page.evaluate(() => {
      window.__moegraftBench.run({ contexts: [16, 64], decode_tokens: 200, merge_repeats: 0 }).catch(() => {});
    });
    await page.waitForFunction(() => {
      const b = window.__moegraftBench;
      return b.state !== 'running' && b.state !== 'preparing' || (b.report?.decode ?? []).length > 0;
    }, null, { timeout: 60_000 });
    assert.equal((await hook()).state, 'running', (await hook()).error);
    await page.click('#bench-stop');
    await ended(runs);
    const stopped = await hook();
    assert.equal(stopped.state, 'stopped');
    assert.ok(stopped.report.prefill && stopped.report.decode.length === 1, 'the figures before the stop stay');
    assert.equal(stopped.report.merge, undefined);
    await page.evaluate(() => {
      window.__moegraftBench.run({ merge_repeats: 0 }).catch(() => {});
    });
    await ended(runs + 1);
    const again = await hook();
    assert.equal(again.state, 'done', again.error);
    assert.equal(again.report.merge_note, 'not run (merge repeats: 0)');
    assert.deepEqual(session.pageErrors, []);
  });

  test('a picked dense folder is benchmarked and grafted onto itself', async () => {
    const runs = (await hook()).runs;
    await page.setInputFiles('#bench-folder', path.join(demo, 'cpt-dense'));
    assert.equal(await page.isChecked('#bench-use-folder'), true);
    await page.click('#bench-run');
    await ended(runs);
    const { state, error, report: r } = await hook();
    assert.equal(state, 'done', error);
    assert.equal(r.model.source, 'cpt-dense');
    assert.equal(r.model.architecture, 'llama');
    assert.equal(r.merge.method, 'paramdelta');
    const tensors = tensorBytes(path.join(demo, 'cpt-dense/model.safetensors'));
    assert.equal(r.merge.input_bytes, 3 * tensors.reduce((n, t) => n + t.bytes, 0));
    positive(r.merge.merge_gbps.median, 'merge GB/s');
    assert.deepEqual(session.pageErrors, []);
  });
});
