// End-to-end test of the page in www/: Debian's Chromium (headless, WebGPU on SwiftShader)
// driven by playwright-core. The tiny fixture models are picked through the page's real file
// inputs, generated from greedily in the worker, and compared token for token with the
// transformers reference (the same ids the native tests check).
//
//   scripts/build-wasm.sh                      # www/pkg must exist
//   (cd tests/browser && npm ci)
//   node --test tests/browser/
//
// Environment: CHROMIUM (default /usr/bin/chromium), ARTIFACTS_DIR (default
// target/browser-artifacts/) for the screenshot.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

import {
  artifacts,
  checkPrerequisites,
  CHROMIUM_ARGS,
  executablePath,
  fixtures as allFixtures,
  openPage,
  serve,
} from './harness.mjs';

const fixtures = path.join(allFixtures, 'tiny');
const reference = JSON.parse(fs.readFileSync(path.join(fixtures, 'reference.json'), 'utf8'));

const u32s = (v) => v.map(Number);

describe('moegraft page in Chromium (WebGPU on SwiftShader)', { timeout: 170_000 }, () => {
  let session;
  let page;
  let origin;
  let requests;
  let pageErrors;
  let tmp;

  before(async () => {
    checkPrerequisites(assert);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moegraft-browser-'));
    session = await openPage();
    ({ page, origin, requests, pageErrors } = session);
  });

  after(async () => {
    if (page) {
      await page.screenshot({ path: path.join(artifacts, 'page.png'), fullPage: true }).catch(() => {});
    }
    await session?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const hook = (expr) => page.evaluate(expr);

  /** Picks files with `input`, waits for the load that starts to end; returns its outcome. */
  async function pick(selector, files) {
    const before = await hook(() => window.__moegraft.loads);
    await page.setInputFiles(selector, files);
    await page.waitForFunction((n) => window.__moegraft.loads > n, before, { timeout: 60_000 });
    return hook(() => ({ state: window.__moegraft.loadState, model: window.__moegraft.model, error: window.__moegraft.lastError }));
  }

  async function pickLoaded(what, selector, files) {
    const r = await pick(selector, files);
    assert.equal(r.state, 'loaded', `${what} failed to load: ${r.error}`);
    return r.model;
  }

  /** Clicks Generate and waits for that generation to end. */
  async function clickGenerate() {
    const before = await hook(() => window.__moegraft.generations);
    await page.click('#generate');
    await page.waitForFunction((n) => window.__moegraft.generations > n, before, { timeout: 60_000 });
  }

  /** Every reference case through the hook (the same path as the Generate button). */
  async function checkCases(name) {
    for (const c of reference.models[name].cases) {
      const label = `${name}/${c.name}`;
      const options = { max_tokens: 20, temperature: 0, seed: 0, ignore_eos: true };
      const result = c.prompt === null
        ? await page.evaluate(([ids, o]) => window.__moegraft.generateIds(ids, o), [c.input_ids, options])
        : await page.evaluate(
          ([p, o]) => window.__moegraft.generate(p, o),
          [c.chat ? chatUserText(c.prompt) : c.prompt, { ...options, chat: c.chat }],
        );
      assert.deepEqual(u32s(result.input_ids), u32s(c.input_ids), `${label}: input ids`);
      assert.deepEqual(u32s(result.output_ids), u32s(c.greedy_ids), `${label}: greedy ids`);
      assert.equal(result.stop_reason, 'max_tokens', `${label}: stop reason`);
    }
  }

  test('shows the WebGPU adapter', async () => {
    await page.waitForSelector('#adapter[data-state="ok"], #adapter[data-state="missing"]', { timeout: 60_000 });
    const text = await page.textContent('#adapter');
    assert.match(text, /^WebGPU adapter: /, text);
    assert.match(text.toLowerCase(), /swiftshader|fallback/, text);
  });

  test('tiny-llama, picked as a folder, generates the reference tokens', async () => {
    const info = await pickLoaded('tiny-llama', '#folder', path.join(fixtures, 'tiny-llama'));
    assert.equal(info.label, 'tiny-llama');
    assert.equal(info.architecture, 'llama');
    assert.match(await page.textContent('#load-status'), /Loaded tiny-llama: llama/);

    // One case through the real controls: prompt box, options, Generate button.
    const english = reference.models['tiny-llama'].cases.find((c) => c.name === 'english');
    await page.fill('#prompt', english.prompt);
    await page.setChecked('#chat', false);
    await page.fill('#max-tokens', '20');
    await page.fill('#temperature', '0');
    await page.fill('#seed', '0');
    await clickGenerate();
    const viaUi = await hook(() => window.__moegraft.lastResult);
    const stops = new Set(info.stop_ids);
    const cut = english.greedy_ids.findIndex((id) => stops.has(id));
    const expected = cut < 0 ? english.greedy_ids : english.greedy_ids.slice(0, cut);
    assert.deepEqual(u32s(viaUi.input_ids), u32s(english.input_ids), 'english via UI: input ids');
    assert.deepEqual(u32s(viaUi.output_ids), u32s(expected), 'english via UI: greedy ids');
    assert.equal((await page.textContent('#output')).length > 0, true, 'streamed text shown');
    assert.match(await page.textContent('#stats'), /tokens\/s/);
    await page.screenshot({ path: path.join(artifacts, 'generated.png'), fullPage: true });

    await checkCases('tiny-llama');
  });

  test('Stop ends a running generation', async () => {
    await page.fill('#prompt', 'Once upon a time');
    await page.fill('#max-tokens', '200');
    // Click Stop as soon as the first token shows.
    await page.evaluate(() => {
      const out = document.getElementById('output');
      new MutationObserver((_, obs) => {
        if (!out.textContent) return; // the output being cleared
        obs.disconnect();
        document.getElementById('stop').click();
      }).observe(out, { childList: true, characterData: true, subtree: true });
    });
    await clickGenerate();
    const r = await hook(() => window.__moegraft.lastResult);
    assert.equal(r.stop_reason, 'stopped');
    assert.ok(r.output_ids.length >= 1 && r.output_ids.length < 200, `stopped after ${r.output_ids.length} tokens`);
    await page.fill('#max-tokens', '20');
  });

  test('tiny-mixtral (MoE), picked as files, generates the reference tokens', async () => {
    const dir = path.join(fixtures, 'tiny-mixtral');
    const files = fs.readdirSync(dir).map((f) => path.join(dir, f));
    const info = await pickLoaded('tiny-mixtral', '#files', files);
    assert.equal(info.architecture, 'mixtral');
    assert.equal(info.is_moe, true);
    assert.equal(info.num_experts, 4);
    await checkCases('tiny-mixtral');
  });

  test('a truncated model.safetensors shows an error naming the file; a good model loads after', async () => {
    const broken = path.join(tmp, 'broken-llama');
    fs.mkdirSync(broken);
    const src = path.join(fixtures, 'tiny-llama');
    for (const f of fs.readdirSync(src)) fs.copyFileSync(path.join(src, f), path.join(broken, f));
    const weights = path.join(broken, 'model.safetensors');
    fs.truncateSync(weights, Math.floor(fs.statSync(weights).size / 2));

    const r = await pick('#folder', broken);
    assert.equal(r.state, 'error', 'the truncated model must not load');
    const shown = await page.textContent('#load-error');
    assert.ok(await page.isVisible('#load-error'), 'error is shown in place');
    assert.match(shown, /broken-llama\/model\.safetensors/, shown);
    assert.match(shown, /truncated/i, shown);
    // The models loaded before are still there, the active one unchanged.
    const after = await hook(() => ({ model: window.__moegraft.model, labels: window.__moegraft.models.map((m) => m.label) }));
    assert.equal(after.model.architecture, 'mixtral', 'the active model is kept');
    assert.deepEqual(after.labels.sort(), ['model', 'tiny-llama'], 'tiny-llama and tiny-mixtral (picked as files)');
    assert.equal(await page.isDisabled('#generate'), false, 'the active model still generates');
    await page.screenshot({ path: path.join(artifacts, 'load-error.png'), fullPage: true });

    // The page keeps working.
    await pickLoaded('tiny-llama after the failed load', '#folder', path.join(fixtures, 'tiny-llama'));
    assert.equal(await page.isVisible('#load-error'), false, 'the old error is cleared');
    const c = reference.models['tiny-llama'].cases.find((x) => x.name === 'ids');
    const result = await page.evaluate(
      ([ids]) => window.__moegraft.generateIds(ids, { max_tokens: 20, temperature: 0, ignore_eos: true }),
      [c.input_ids],
    );
    assert.deepEqual(u32s(result.output_ids), u32s(c.greedy_ids));
  });

  test('tiny-qwen3 (per-head q/k norms, head_dim 16 ≠ hidden / heads) generates the reference tokens', async () => {
    const info = await pickLoaded('tiny-qwen3', '#folder', path.join(fixtures, 'tiny-qwen3'));
    assert.equal(info.architecture, 'qwen3');
    await checkCases('tiny-qwen3');
  });

  test('tiny-qwen2moe (shared expert, a dense layer) and tiny-qwen3moe generate the reference tokens; dense layers route nothing', async () => {
    const info = await pickLoaded('tiny-qwen2moe', '#folder', path.join(fixtures, 'tiny-qwen2moe'));
    assert.equal(info.architecture, 'qwen2_moe');
    assert.deepEqual(info.moe_layers, [0, 2]);
    await checkCases('tiny-qwen2moe');
    const ids = reference.models['tiny-qwen2moe'].cases[0].input_ids;
    const routed = await page.evaluate(
      ([i]) => window.__moegraft.generateIds(i, { max_tokens: 3, temperature: 0, ignore_eos: true, routes: true }),
      [ids],
    );
    assert.equal(routed.routes.length, ids.length + 3);
    for (const token of routed.routes) {
      assert.deepEqual(token.map((slots) => slots.length), [2, 0, 2], 'top-2 in layers 0 and 2, none in the dense layer 1');
    }
    const heat = await page.evaluate(() => window.__moegraft.routing.heat);
    assert.equal(heat.length, 2, 'a heatmap row per MoE layer');
    assert.equal(await page.textContent('#routing-heatmap tbody tr:nth-child(2) th'), '2');
    const qwen3 = await pickLoaded('tiny-qwen3moe', '#folder', path.join(fixtures, 'tiny-qwen3moe'));
    assert.equal(qwen3.architecture, 'qwen3_moe');
    await checkCases('tiny-qwen3moe');
  });

  test('tiny-gemma3 (√hidden embeddings, sandwich norms, GELU-tanh, sliding and full layers) generates the reference tokens', async () => {
    const info = await pickLoaded('tiny-gemma3', '#folder', path.join(fixtures, 'tiny-gemma3'));
    assert.equal(info.architecture, 'gemma3_text');
    await checkCases('tiny-gemma3');
  });

  test('bad input is an error, not a crash', async () => {
    const err = await page.evaluate(() => window.__moegraft.generateIds([999999], { max_tokens: 2 }).then(() => null, (e) => e.message));
    assert.match(err, /outside the vocabulary/);
    // Still usable afterwards.
    const ok = await page.evaluate(() => window.__moegraft.generateIds([1, 2, 3], { max_tokens: 2 }));
    assert.equal(ok.output_ids.length, 2);
  });

  test('the weights select loads q8_0: tiny-llama keeps its next tokens, tiny-qwen2 says what it kept', async () => {
    await page.selectOption('#weights', 'q8_0');
    try {
      const info = await pickLoaded('tiny-llama as q8_0', '#folder', path.join(fixtures, 'tiny-llama'));
      assert.equal(info.weight_format, 'q8_0');
      assert.equal(info.weight_format_note, null);
      assert.match(await page.textContent('#load-status'), /q8_0 weights/);
      // The native tests find the same top-1 for every case (gaps ≥ 0.7, q8_0 moves ≤ 0.52).
      for (const c of reference.models['tiny-llama'].cases) {
        const r = await page.evaluate(
          ([ids]) => window.__moegraft.generateIds(ids, { max_tokens: 1, temperature: 0, ignore_eos: true }),
          [c.input_ids],
        );
        assert.equal(Number(r.output_ids[0]), Number(c.top_ids[0]), `tiny-llama/${c.name} as q8_0: next token`);
      }
      // K = 48 and 75 are not whole 32-element blocks: bf16 stays, and the page says so.
      const qwen = await pickLoaded('tiny-qwen2 as q8_0', '#folder', path.join(fixtures, 'tiny-qwen2'));
      assert.equal(qwen.weight_format, 'bf16');
      assert.match(qwen.weight_format_note, /keep their dtype instead of q8_0/);
      assert.match(await page.textContent('#load-status'), /note: .*model\.embed_tokens\.weight/);
    } finally {
      await page.selectOption('#weights', 'stored');
    }
  });

  test('every request stayed on the page\'s origin; no page errors', async () => {
    assert.ok(requests.length > 0);
    const foreign = requests.filter((u) => !u.startsWith('data:') && new URL(u).origin !== origin);
    assert.deepEqual(foreign, [], 'requests to other origins');
    assert.ok(requests.some((u) => u.endsWith('/pkg/moegraft_bg.wasm')), 'the worker fetched the wasm');
    assert.deepEqual(pageErrors, [], 'uncaught page errors');
  });
});

describe('moegraft page without WebGPU', { timeout: 60_000 }, () => {
  test('says how to enable WebGPU and keeps its controls', async () => {
    const server = await serve();
    const browser = await chromium.launch({
      executablePath,
      headless: true,
      args: CHROMIUM_ARGS.filter((a) => !/webgpu|swiftshader/.test(a)),
    });
    try {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${server.address().port}/`);
      await page.waitForSelector('#adapter[data-state="ok"], #adapter[data-state="missing"]', { timeout: 30_000 });
      const text = await page.textContent('#adapter');
      assert.equal(await page.getAttribute('#adapter', 'data-state'), 'missing', text);
      assert.match(text, /WebGPU is not available here/);
      assert.match(text, /--enable-unsafe-webgpu/);
      assert.equal(await page.isVisible('#folder'), true);
    } finally {
      await browser.close();
      await new Promise((r) => server.close(r));
    }
  });
});

/** The user message inside a rendered ChatML prompt (as the native tests take it). */
function chatUserText(rendered) {
  const start = rendered.indexOf('user\n') + 5;
  return rendered.slice(start, rendered.indexOf('<|im_end|>', start));
}
