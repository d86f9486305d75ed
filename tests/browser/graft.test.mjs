// Grafting in the browser: the committed tiny triple (tests/fixtures/graft/triple: base,
// instruct, and a Mixtral MoE upcycled from the base, all f16) picked through the page's
// folder inputs and grafted on WebGPU (SwiftShader) in the worker must give the tensors of the
// native graft of the same triple — the committed export tests/fixtures/graft/deltamoe-tiny,
// which tests/graft_export.rs regrafts natively and checks against transformers.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { artifacts, checkPrerequisites, fixtures, openPage } from './harness.mjs';

const triple = path.join(fixtures, 'graft/triple');
const nativeExport = path.join(fixtures, 'graft/deltamoe-tiny');
const reference = JSON.parse(fs.readFileSync(path.join(fixtures, 'graft/reference.json'), 'utf8'));

/** A safetensors file's header (tensor name → {dtype, shape, data_offsets}) and data section. */
function parseSafetensors(bytes) {
  const len = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + len).toString('utf8'));
  delete header.__metadata__;
  return { header, data: bytes.subarray(8 + len) };
}

/** How far apart two f16 values are in units in the last place (same sign: adjacent codes). */
function f16Ulps(a, b) {
  const key = (h) => (h & 0x8000 ? -(h & 0x7fff) : h & 0x7fff);
  return Math.abs(key(a) - key(b));
}

describe('grafting in the browser (WebGPU on SwiftShader)', { timeout: 170_000 }, () => {
  let session;
  let page;

  before(async () => {
    checkPrerequisites(assert);
    session = await openPage();
    page = session.page;
  });

  after(async () => {
    if (page) {
      await page.screenshot({ path: path.join(artifacts, 'graft.png'), fullPage: true }).catch(() => {});
    }
    await session?.close();
  });

  const hook = (fn, arg) => page.evaluate(fn, arg);

  async function pickTriple(target = path.join(triple, 'target')) {
    await page.setInputFiles('#graft-base', path.join(triple, 'base'));
    await page.setInputFiles('#graft-instruct', path.join(triple, 'instruct'));
    await page.setInputFiles('#graft-target', target);
  }

  /** Clicks Graft and waits for that graft to end; returns the page's state after it. */
  async function clickGraft() {
    const before = await hook(() => window.__moegraft.grafts);
    await page.click('#graft');
    await page.waitForFunction((n) => window.__moegraft.grafts > n, before, { timeout: 120_000 });
    return hook(() => ({
      state: window.__moegraft.graftState,
      result: window.__moegraft.graftResult,
      error: window.__moegraft.lastError,
    }));
  }

  const grafted = async (name) => Buffer.from(await hook((n) => window.__moegraft.graftFileBase64(n), name), 'base64');

  test('the DeltaMoE graft of the tiny triple equals the native one', async () => {
    await page.waitForSelector('#adapter[data-state="ok"]', { timeout: 60_000 });
    assert.equal(await page.isDisabled('#graft'), true, 'nothing picked yet');
    await pickTriple();
    // Each slot's headers are read as it is picked: the recipe shows what the target calls for.
    await page.waitForFunction(() => /target \(6 files, MoE, 4 experts\)/.test(document.getElementById('graft-picked').textContent));
    assert.match(
      await page.textContent('#graft-picked'),
      /^base: base \(6 files, dense llama\) · instruct: instruct \(6 files, dense llama\) · target: target \(6 files, MoE, 4 experts\)$/,
    );
    assert.match(await page.textContent('#graft-method'), /^Method: DeltaMoE/);
    await page.fill('#graft-alpha', '1');
    await page.fill('#graft-expert-alpha', '1, 0.8, 0.5, 1.2');
    await page.selectOption('#graft-dtype', 'f16');
    const r = await clickGraft();
    assert.equal(r.state, 'done', `graft failed: ${r.error}`);
    assert.equal(r.result.method, 'deltamoe');
    const names = r.result.files.map((f) => f.name).sort();
    assert.deepEqual(names, fs.readdirSync(nativeExport).sort(), 'the same files as the native export');
    assert.match(await page.textContent('#graft-status'), /^deltamoe: \d+ tensors \(\d+ grafted, 2 kept\)/);
    assert.equal(await page.locator('#graft-files a[download="model.safetensors"]').count(), 1, 'a download link');

    // Weights: the same names, dtypes, shapes and layout; values equal up to the last bit of
    // f16 (a GPU may or may not fuse t + α·(i − b) into one rounding).
    const web = parseSafetensors(await grafted('model.safetensors'));
    const native = parseSafetensors(fs.readFileSync(path.join(nativeExport, 'model.safetensors')));
    assert.deepEqual(web.header, native.header, 'headers');
    let differing = 0;
    for (const [name, info] of Object.entries(native.header)) {
      assert.equal(info.dtype, 'F16');
      const [start, end] = info.data_offsets;
      for (let o = start; o < end; o += 2) {
        const a = web.data.readUInt16LE(o);
        const b = native.data.readUInt16LE(o);
        if (a === b) continue;
        differing += 1;
        assert.ok(f16Ulps(a, b) <= 1, `${name}: element ${(o - start) / 2} is ${a.toString(16)} here, ${b.toString(16)} natively`);
      }
    }
    const elements = native.data.length / 2;
    console.log(`browser vs native graft: ${differing} of ${elements} f16 values differ (each by 1 ulp)`);
    assert.ok(differing <= elements / 100, `${differing} values differ`);

    // The other files byte for byte; the manifest up to the input paths.
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json']) {
      assert.ok((await grafted(f)).equals(fs.readFileSync(path.join(nativeExport, f))), `${f} differs from the native one`);
    }
    const webManifest = JSON.parse((await grafted('moegraft.json')).toString('utf8'));
    const nativeManifest = JSON.parse(fs.readFileSync(path.join(nativeExport, 'moegraft.json'), 'utf8'));
    for (const role of ['base', 'instruct', 'target']) {
      assert.equal(webManifest.inputs[role].path, role, 'the picked folder names the input');
      delete webManifest.inputs[role].path;
      delete nativeManifest.inputs[role].path;
    }
    assert.deepEqual(webManifest, nativeManifest, 'manifest');
    await page.screenshot({ path: path.join(artifacts, 'grafted.png'), fullPage: true });
  });

  test('the grafted model loads from the result and predicts the transformers top token', async () => {
    const before = await hook(() => window.__moegraft.loads);
    await page.click('#graft-load');
    await page.waitForFunction((n) => window.__moegraft.loads > n, before, { timeout: 60_000 });
    const state = await hook(() => ({ s: window.__moegraft.loadState, m: window.__moegraft.model, e: window.__moegraft.lastError }));
    assert.equal(state.s, 'loaded', state.e);
    assert.equal(state.m.architecture, 'mixtral');
    assert.equal(state.m.num_experts, 4);
    for (const c of reference.cases) {
      const r = await hook(([ids]) => window.__moegraft.generateIds(ids, { max_tokens: 1, temperature: 0, ignore_eos: true }), [c.input_ids]);
      assert.equal(r.output_ids[0], c.top_ids[0], `${c.input_ids}: greedy token`);
    }
  });

  test('a target of another architecture is refused before anything is written; the page goes on', async () => {
    await pickTriple(path.join(fixtures, 'tiny/tiny-qwen2'));
    const r = await clickGraft();
    assert.equal(r.state, 'error');
    assert.equal(r.result, null, 'no result');
    const shown = await page.textContent('#graft-error');
    assert.ok(await page.isVisible('#graft-error'));
    assert.match(shown, /Graft failed: .*mismatch/i, shown);
    assert.match(shown, /tiny-qwen2/, shown);
    assert.equal(await page.isVisible('#graft-result'), false, 'no files offered');
    // The loaded model still generates, and the triple grafts again.
    const ok = await hook(() => window.__moegraft.generateIds([1, 2, 3], { max_tokens: 2 }));
    assert.equal(ok.output_ids.length, 2);
    await pickTriple();
    const again = await clickGraft();
    assert.equal(again.state, 'done', again.error);
    assert.deepEqual(session.pageErrors, [], 'uncaught page errors');
  });
});
