// The hostile-file corpus (tests/fixtures/hostile/, the same cases and expected messages as
// tests/hostile.rs) picked in the page: each is refused in place with a message naming the file
// and saying what is wrong, the worker survives, and the model loaded before still answers.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { artifacts, checkPrerequisites, demo, fixtures, openPage } from './harness.mjs';

const hostile = path.join(fixtures, 'hostile');
const expected = JSON.parse(fs.readFileSync(path.join(hostile, 'expected.json'), 'utf8'));
const PROMPT = 'Repeat this sentence: the dog sleeps.';

describe('hostile files in the page (WebGPU on SwiftShader)', { timeout: 300_000 }, () => {
  let session;
  let page;
  let answer;

  before(async () => {
    checkPrerequisites(assert);
    session = await openPage({ kit: true });
    page = session.page;
    await page.waitForFunction(() => ['loaded', 'error'].includes(window.__moegraft.kitState), null, { timeout: 120_000 });
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
