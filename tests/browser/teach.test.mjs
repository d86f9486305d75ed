// Teaching in the browser (WebGPU on SwiftShader): the kit's base, picked through the Teach
// section's folder input, learns Russian from the kit's sample with an English review. The run
// is stopped in stage 1 and resumed from its checkpoint; the loss falls; the taught model
// loads, answers, and takes Δ as the graft's target; the kit's cpt-moe gains an expert; a lesson that cannot run leaves the page
// working with its models loaded; a dense qwen3 is taught into a qwen3_moe.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { artifacts, checkPrerequisites, demo, fixtures, openPage } from './harness.mjs';

const SETTINGS = { steps: 10, review_steps: 2, batch: 4, seq: 64 };

describe('teaching a language in the browser (WebGPU on SwiftShader)', { timeout: 900_000 }, () => {
  let session;
  let page;

  before(async () => {
    checkPrerequisites(assert);
    session = await openPage();
    page = session.page;
  });

  after(async () => {
    if (page) await page.screenshot({ path: path.join(artifacts, 'teach.png'), fullPage: true }).catch(() => {});
    await session?.close();
  });

  const hook = (fn, arg) => page.evaluate(fn, arg);

  test('a stopped and resumed lesson teaches the base; the taught model loads, answers and grafts', async () => {
    await page.waitForSelector('#adapter[data-state="ok"]', { timeout: 60_000 });
    assert.equal(await page.isDisabled('#teach-start'), true, 'nothing picked yet');
    await page.setInputFiles('#teach-model', path.join(demo, 'base'));
    await page.fill('#teach-texts [data-role="new"] textarea', fs.readFileSync(path.join(demo, 'teach/ru.txt'), 'utf8'));
    await page.fill('#teach-texts [data-role="replay"] textarea', fs.readFileSync(path.join(demo, 'teach/en.txt'), 'utf8'));
    assert.equal(await page.isDisabled('#teach-start'), false);
    await page.waitForFunction(() => document.getElementById('teach-memory').textContent !== '');
    assert.match(await page.textContent('#teach-memory'), /^Training will hold [\d.]+ MB on the GPU besides the weights/);

    // Stop once three steps are done: the lesson ends after the step under way.
    const stopped = hook((s) => window.__moegraft.teach(s), SETTINGS);
    await page.waitForFunction(() => window.__moegraft.teachSteps.length >= 3, null, { timeout: 600_000 });
    await hook(() => window.__moegraft.stopTeach());
    const first = await stopped;
    assert.match(first.stopped ?? '', /^step \d+ of 10 of stage 1$/, JSON.stringify(first));
    assert.equal(await hook(() => window.__moegraft.teachState), 'stopped');
    assert.equal(await page.isDisabled('#teach-resume'), false);
    const before = await hook(() => window.__moegraft.teachSteps.length);

    const done = await hook(() => window.__moegraft.resumeTeach());
    const steps = await hook(() => window.__moegraft.teachSteps);
    assert.equal(steps.length, SETTINGS.steps + SETTINGS.review_steps, 'the resumed run went on from the stop');
    assert.ok(before < SETTINGS.steps);
    assert.equal(done.report.stage1.loss.length, SETTINGS.steps);
    assert.equal(done.report.stage2.loss.length, SETTINGS.review_steps);
    // A figure for BENCHMARKS.md, not a check.
    console.log(`teach in the page: ${done.report.tokens_per_second.toFixed(1)} tokens/s (batch ${SETTINGS.batch} × ${SETTINGS.seq})`);
    const loss = done.report.stage1.loss;
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    assert.ok(mean(loss.slice(-3)) < mean(loss.slice(0, 3)), `the loss falls: ${loss}`);
    assert.equal(await page.locator('#teach-curve polyline.stage1').count(), 1, 'the loss is drawn');
    assert.deepEqual(done.report.expert_languages, [['en'], ['ru']]);
    // After the review, each language's routing: a layer × expert table of top-2 shares.
    for (const lang of ['ru', 'en']) {
      const rows = done.report.expert_shares[lang];
      assert.equal(rows.length, 4, `${lang}: a row per layer`);
      for (const row of rows) assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 2) < 1e-6, `${lang}: ${row}`);
      assert.equal(await page.locator(`#teach-shares table[data-lang="${lang}"] tbody tr`).count(), 4);
    }
    assert.ok(done.files.some((f) => f.name === 'model.safetensors'));
    assert.ok(done.files.some((f) => f.name === 'moegraft.json'));

    const loads = await hook(() => window.__moegraft.loads);
    await hook(() => window.__moegraft.loadTaught());
    await page.waitForFunction((n) => window.__moegraft.loads > n, loads, { timeout: 120_000 });
    const model = await hook(() => window.__moegraft.model);
    assert.match(model.label, /taught ru/);
    const answer = await hook(() => window.__moegraft.generate('Привет', { max_tokens: 6, temperature: 0 }));
    assert.ok(answer.output_ids.length > 0, 'the taught model answers');

    // Δ = instruct − base onto the taught MoE: DeltaMoE.
    await page.setInputFiles('#graft-base', path.join(demo, 'base'));
    await page.setInputFiles('#graft-instruct', path.join(demo, 'instruct'));
    await hook(() => window.__moegraft.taughtToGraft());
    const graft = await hook(() => window.__moegraft.graft());
    assert.equal(graft.method, 'deltamoe', JSON.stringify(graft));
  });

  test("the kit's cpt-moe gains an expert: its own three stay frozen", async () => {
    await page.setInputFiles('#teach-model', path.join(demo, 'cpt-moe'));
    const done = await hook((s) => window.__moegraft.teach(s), { steps: 2, review_steps: 1, batch: 2, seq: 32 });
    assert.deepEqual(done.report.expert_languages, [['en', 'es'], ['it', 'ru'], ['it', 'ru'], ['ru']]);
    assert.equal(done.report.settings.frozen_experts, 3);
    assert.equal(done.report.stage1.loss.length, 2);
    for (const row of done.report.expert_shares.ru) assert.equal(row.length, 4, 'four experts a layer');
  });

  test('a dense qwen3 is taught into a qwen3_moe in the tab; the taught model loads and answers', async () => {
    await page.setInputFiles('#teach-model', path.join(fixtures, 'tiny/tiny-qwen3'));
    const done = await hook((s) => window.__moegraft.teach(s), { steps: 2, review_steps: 1, batch: 2, seq: 32 });
    assert.equal(done.report.stage1.loss.length, 2);
    assert.deepEqual(done.report.expert_languages, [['en'], ['ru']]);
    const loads = await hook(() => window.__moegraft.loads);
    await hook(() => window.__moegraft.loadTaught());
    await page.waitForFunction((n) => window.__moegraft.loads > n, loads, { timeout: 120_000 });
    const model = await hook(() => window.__moegraft.model);
    assert.equal(model.architecture, 'qwen3_moe');
    assert.equal(model.num_experts, 2);
    const answer = await hook(() => window.__moegraft.generate('Привет', { max_tokens: 3, temperature: 0 }));
    assert.ok(answer.output_ids.length > 0, 'the taught qwen3_moe answers');
  });

  test('a lesson that cannot run leaves the page working and the models loaded', async () => {
    const models = await hook(() => window.__moegraft.models.length);
    assert.ok(models > 0);
    const error = await hook((s) => window.__moegraft.teach(s).then(() => null, (e) => e.message), { ...SETTINGS, seq: 4096 });
    assert.match(error ?? '', /the sequence must be 1…1024/);
    assert.equal(await hook(() => window.__moegraft.teachState), 'error');
    assert.equal(await hook(() => window.__moegraft.models.length), models, 'the loaded models stay');
    const answer = await hook(() => window.__moegraft.generate('Hello', { max_tokens: 3, temperature: 0 }));
    assert.ok(answer.output_ids.length > 0, 'the page still answers');
  });
});
