// The hostile-file corpus (tests/fixtures/hostile/, the same cases and expected messages as
// tests/hostile.rs) picked in the page: each is refused in place with a message naming the file
// and saying what is wrong, the worker survives, and the model loaded before still answers.
// Then small devices (storage bindings lowered through the address: matrices split, or refused
// with the numbers), a panic in the worker (reported; a fresh worker takes over) and a GPU lost
// under a loaded model (reported, released, loaded again).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { artifacts, checkPrerequisites, demo, fixtures, openPage } from './harness.mjs';

const reference = JSON.parse(fs.readFileSync(path.join(fixtures, 'tiny/reference.json'), 'utf8'));

const hostile = path.join(fixtures, 'hostile');
const expected = JSON.parse(fs.readFileSync(path.join(hostile, 'expected.json'), 'utf8'));
const PROMPT = 'Repeat this sentence: the dog sleeps.';

describe('hostile files in the page (WebGPU on SwiftShader)', { timeout: 500_000 }, () => {
  let session;
  let page;
  let answer;

  before(async () => {
    checkPrerequisites(assert);
    session = await openPage({ kit: true });
    page = session.page;
    await page.waitForFunction(() => ['loaded', 'error'].includes(window.__moegraft.kitState), null, { timeout: 300_000 });
    answer = await page.evaluate((p) => window.__moegraft.generate(p, { chat: true, max_tokens: 12 }), PROMPT);
  });

  after(async () => {
    if (page) await page.screenshot({ path: path.join(artifacts, 'hostile.png'), fullPage: true }).catch(() => {});
    await session?.close();
  });

  const hook = (fn, arg) => page.evaluate(fn, arg);
  const labels = () => hook(() => window.__moegraft.models.map((m) => m.label));

  /** Picks `files` with `selector` and returns the load's outcome. */
  async function pick(selector, files) {
    const n = await hook(() => window.__moegraft.loads);
    await page.setInputFiles(selector, files);
    await page.waitForFunction((k) => window.__moegraft.loads > k, n, { timeout: 60_000 });
    return hook(() => ({ state: window.__moegraft.loadState, error: window.__moegraft.lastError }));
  }

  function assertNames(c, shown, file) {
    assert.ok(shown.includes(file), `${c.case}: the message does not name ${file}: ${shown}`);
    for (const needle of c.needles) assert.ok(shown.includes(needle), `${c.case}: no '${needle}' in: ${shown}`);
  }

  test('every hostile checkpoint is refused with its file named; the loaded models stay', async () => {
    const before = await labels();
    for (const c of expected.checkpoints) {
      const r = await pick('#folder', path.join(hostile, c.case));
      assert.equal(r.state, 'error', `${c.case} loaded`);
      assertNames(c, await page.textContent('#load-error'), `${c.case}/${c.file}`);
      assert.deepEqual(await labels(), before, `${c.case}: a loaded model was lost`);
    }
  });

  test('every hostile GGUF file is refused with its file named', async () => {
    for (const c of expected.ggufs) {
      const r = await pick('#files', path.join(hostile, c.case, 'model.gguf'));
      assert.equal(r.state, 'error', `${c.case} loaded`);
      assertNames(c, await page.textContent('#load-error'), 'model.gguf');
    }
  });

  test('hostile tokenizers and chat templates are refused when loaded or when they render', async () => {
    // The kit's base weights with the hostile tokenizer files in place of its own.
    const weights = ['config.json', 'model.safetensors'].map((f) => path.join(demo, 'base', f));
    for (const c of expected.tokenizers) {
      const dir = path.join(hostile, c.case);
      const r = await pick('#files', [...weights, ...fs.readdirSync(dir).map((f) => path.join(dir, f))]);
      let shown;
      if (r.state === 'error') {
        shown = await page.textContent('#load-error');
      } else {
        // The template is only run to build a chat prompt.
        const err = await hook((p) => window.__moegraft.generate(p, { chat: true, max_tokens: 2 }).then(() => null, (e) => e.message), PROMPT);
        assert.ok(err, `${c.case}: a chat prompt was built`);
        shown = await page.textContent('#generate-error');
        await hook(() => window.__moegraft.unload('model'));
      }
      assertNames(c, shown, c.file);
    }
  });

  test('the page goes on: the model loaded first answers as before; no page errors', async () => {
    await hook(() => window.__moegraft.load('DeltaMoE'));
    const again = await hook((p) => window.__moegraft.generate(p, { chat: true, max_tokens: 12 }), PROMPT);
    assert.deepEqual(again.output_ids, answer.output_ids);
    assert.deepEqual(session.pageErrors, [], 'uncaught page errors');
  });
});

describe('small devices, crashes and lost GPUs (WebGPU on SwiftShader)', { timeout: 300_000 }, () => {
  const tinyLlama = path.join(fixtures, 'tiny/tiny-llama');
  const ids = reference.models['tiny-llama'].cases.find((c) => c.name === 'ids');

  async function load(page, selector, files) {
    const n = await page.evaluate(() => window.__moegraft.loads);
    await page.setInputFiles(selector, files);
    await page.waitForFunction((k) => window.__moegraft.loads > k, n, { timeout: 60_000 });
    return page.evaluate(() => ({ state: window.__moegraft.loadState, error: window.__moegraft.lastError, model: window.__moegraft.model }));
  }

  const greedy = (page) =>
    page.evaluate(([i]) => window.__moegraft.generateIds(i, { max_tokens: 20, temperature: 0, ignore_eos: true }), [ids.input_ids]);

  test('8 KiB bindings: the matrices are split and the tokens are the reference ones', async () => {
    const s = await openPage({ query: 'max_binding=8192' });
    try {
      await s.page.waitForSelector('#adapter[data-state="ok"]', { timeout: 60_000 });
      assert.match(await s.page.textContent('#adapter'), /storage bindings lowered to 8192 bytes/);
      // The model's whole context (256 tokens) needs a 32 KiB KV-cache buffer per layer: refused
      // with the numbers, before any weight is uploaded.
      const refused = await load(s.page, '#folder', tinyLlama);
      assert.equal(refused.state, 'error');
      assert.match(refused.error, /KV cache: tensor 'k_cache\.0' needs 32768 bytes per buffer but the GPU allows 8192/);
      assert.match(refused.error, /a context of 256 tokens: choose a shorter context length/);
      // A shorter context fits.
      await s.page.fill('#max-context', '64');
      const r = await load(s.page, '#folder', tinyLlama);
      assert.equal(r.state, 'loaded', r.error);
      assert.equal(r.model.max_context, 64);
      assert.deepEqual((await greedy(s.page)).output_ids.map(Number), ids.greedy_ids.map(Number));
    } finally {
      await s.close();
    }
  });

  test('64-byte bindings: refused with the file, the tensor and the numbers; the page goes on', async () => {
    const s = await openPage({ query: 'max_binding=64' });
    try {
      await s.page.fill('#max-context', '16');
      const r = await load(s.page, '#folder', tinyLlama);
      assert.equal(r.state, 'error');
      const shown = await s.page.textContent('#load-error');
      assert.match(shown, /tiny-llama\/model\.safetensors: tensor '[\w.]+' needs 256 bytes per buffer but the GPU allows 64/, shown);
      assert.deepEqual(s.pageErrors, []);
    } finally {
      await s.close();
    }
  });

  test('a panic in the worker is reported with its message; a fresh worker loads models again', async () => {
    const s = await openPage();
    try {
      const r = await load(s.page, '#folder', tinyLlama);
      assert.equal(r.state, 'loaded', r.error);
      const err = await s.page.evaluate(() => window.__moegraft.crashWorker('deliberate test panic').then(() => null, (e) => e.message));
      assert.match(err, /panicked: .*deliberate test panic/);
      const shown = await s.page.textContent('#load-error');
      assert.match(shown, /the model worker crashed \(a bug, panicked: deliberate test panic \(at src\/web\/mod\.rs:\d+\)\); load the models again/, shown);
      assert.deepEqual(await s.page.evaluate(() => window.__moegraft.models), [], 'the worker took its models with it');
      const again = await load(s.page, '#folder', tinyLlama);
      assert.equal(again.state, 'loaded', again.error);
      assert.deepEqual((await greedy(s.page)).output_ids.map(Number), ids.greedy_ids.map(Number));
    } finally {
      await s.close();
    }
  });

  test('a GPU lost under a loaded model is reported, the model released, and it loads again', async () => {
    const s = await openPage();
    try {
      const r = await load(s.page, '#folder', tinyLlama);
      assert.equal(r.state, 'loaded', r.error);
      await s.page.evaluate(() => window.__moegraft.loseDevice());
      const err = await s.page.evaluate(() => window.__moegraft.generateIds([1, 2, 3], { max_tokens: 2 }).then(() => null, (e) => e.message));
      assert.match(err, /GPU device was lost/);
      assert.match(await s.page.textContent('#generate-error'), /lost/);
      assert.match(await s.page.textContent('#load-error'), /tiny-llama was unloaded: .*load the model again/);
      assert.deepEqual(await s.page.evaluate(() => window.__moegraft.models), [], 'the lost model is released');
      // The user retries without reloading the page.
      const again = await load(s.page, '#folder', tinyLlama);
      assert.equal(again.state, 'loaded', again.error);
      assert.deepEqual((await greedy(s.page)).output_ids.map(Number), ids.greedy_ids.map(Number));
      await s.page.screenshot({ path: path.join(artifacts, 'device-lost.png'), fullPage: true });
      assert.deepEqual(s.pageErrors, []);
    } finally {
      await s.close();
    }
  });
});
