// What the browser tests share: paths, the static server, and Debian's Chromium launched
// headless with WebGPU on SwiftShader (no GPU, no network beyond 127.0.0.1).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { serveStatic } from '../../scripts/serve.mjs';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const www = path.join(root, 'www');
export const fixtures = path.join(root, 'tests/fixtures');
export const artifacts = path.resolve(root, process.env.ARTIFACTS_DIR || 'target/browser-artifacts');
export const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

export const demo = path.join(root, 'demo');

/** www/ at / (and the demo kit at /demo/ when asked), on 127.0.0.1 (a secure context). */
export const serve = ({ kit = false } = {}) => serveStatic(kit ? { '/': www, '/demo/': demo } : { '/': www });

export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--enable-unsafe-swiftshader',
  '--use-webgpu-adapter=swiftshader',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** Fails early, with the fix, when the package or the browser is missing. */
export function checkPrerequisites(assert) {
  assert.ok(
    fs.existsSync(path.join(www, 'pkg/moegraft.js')) && fs.existsSync(path.join(www, 'pkg/moegraft_bg.wasm')),
    'www/pkg is missing: run scripts/build-wasm.sh first',
  );
  assert.ok(fs.existsSync(executablePath), `${executablePath} not found (apt-get install chromium)`);
  fs.mkdirSync(artifacts, { recursive: true });
}

/**
 * The page, served and open in a fresh Chromium profile, with every request, page error and
 * console error recorded. `close()` ends it all. Without `kit` the page opens with ?kit=none
 * (no demo kit served, none loaded); `query` adds to the address (e.g. 'max_binding=4096');
 * `at` opens another page of www/ (e.g. 'bench.html').
 */
export async function openPage({ args = CHROMIUM_ARGS, kit = false, query = '', at = '' } = {}) {
  const server = await serve({ kit });
  const origin = `http://127.0.0.1:${server.address().port}`;
  // launch() gives every run a fresh temporary profile (its own --user-data-dir).
  const browser = await chromium.launch({ executablePath, args, headless: true });
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  const requests = [];
  const pageErrors = [];
  const consoleErrors = [];
  // Context-wide, so the worker's fetches (module, wasm) are seen too.
  context.on('request', (r) => requests.push(r.url()));
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  const params = new URLSearchParams(query);
  if (!kit) params.set('kit', 'none');
  await page.goto(`${origin}/${at}${params.size ? `?${params}` : ''}`);
  const close = async () => {
    await browser.close();
    await new Promise((r) => server.close(r));
    if (consoleErrors.length) console.log('console errors:\n  ' + consoleErrors.join('\n  '));
  };
  return { page, origin, requests, pageErrors, consoleErrors, close };
}

/** Files of a directory, as absolute paths (for setInputFiles with several files). */
export function filesOf(dir) {
  return fs.readdirSync(dir).map((f) => path.join(dir, f));
}
