// Opens the benchmark page (www/bench.html) in headless Chromium with WebGPU on SwiftShader —
// the browser tests' set-up (tests/browser/harness.mjs: www/ and the demo kit served on
// 127.0.0.1) —, runs it on the demo kit and prints the report as JSON; each step goes to
// stderr as it starts. Arguments are the page's fields, as in its address:
//
//   node scripts/bench-page.mjs [contexts=128,448] [repeats=3] [copy_mib=32] ...
//
// Needs www/pkg (scripts/build-wasm.sh) and the test packages (npm ci in tests/browser).

import { openPage } from '../tests/browser/harness.mjs';

const query = new URLSearchParams(process.argv.slice(2).map((a) => a.split('=', 2)));
query.set('run', '');
const session = await openPage({ kit: true, at: 'bench.html', query: query.toString() });
const { page, pageErrors } = session;
let failed = false;
try {
  page.on('console', (m) => {
    if (m.type() === 'error') process.stderr.write(`console: ${m.text()}\n`);
  });
  let shown = 0;
  // One step per line, as the page hears them.
  for (;;) {
    const s = await page.evaluate(() => ({
      state: window.__moegraftBench?.state,
      steps: window.__moegraftBench?.steps ?? [],
      error: window.__moegraftBench?.error,
    }));
    for (const { step, at_ms: at } of s.steps.slice(shown)) process.stderr.write(`${(at / 1000).toFixed(1)} s  ${step}\n`);
    shown = s.steps.length;
    if (['done', 'error', 'stopped'].includes(s.state)) {
      if (s.state !== 'done') throw new Error(`the benchmark ended '${s.state}': ${s.error}`);
      break;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  process.stdout.write(`${await page.evaluate(() => window.__moegraftBench.json())}\n`);
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
} catch (e) {
  process.stderr.write(`bench-page: ${e.message}\n`);
  failed = true;
} finally {
  await session.close();
}
process.exitCode = failed ? 1 : 0;
