// A static file server for www/ on 127.0.0.1 (a secure context, so WebGPU is allowed), with
// the page's Content-Security-Policy also sent as a header (workers do not inherit a meta
// policy). Used by scripts/demo.sh and the browser tests; any static host serves www/ too.
//
//   node scripts/serve.mjs [--root www] [--port 8080] [--kit demo | --kit none]
//
// The demo kit (demo/, which the page loads by default) is served at /demo/; on another
// static host copy or link it to www/demo.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'";

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
};

/**
 * Serves each mount (URL prefix → directory), longest prefix first; paths cannot escape
 * their directory. Resolves to the listening server.
 */
export function serveStatic(mounts, port = 0) {
  const entries = Object.entries(mounts).sort((a, b) => b[0].length - a[0].length);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const pathname = decodeURIComponent(url.pathname);
    const [prefix, dir] = entries.find(([p]) => pathname.startsWith(p)) || [];
    let file = null;
    if (dir) {
      let rel = pathname.slice(prefix.length);
      if (rel === '' || rel.endsWith('/')) rel += 'index.html';
      const base = path.resolve(dir);
      const candidate = path.resolve(base, rel);
      if (candidate.startsWith(base + path.sep) && fs.existsSync(candidate) && fs.statSync(candidate).isFile()) {
        file = candidate;
      }
    }
    if (!file) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found');
      return;
    }
    res.writeHead(200, {
      'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
      'Content-Security-Policy': CSP,
      'Cache-Control': 'no-store',
    });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : fallback;
  };
  const root = arg('--root', 'www');
  if (!fs.existsSync(path.join(root, 'pkg', 'moegraft.js'))) {
    console.error(`${root}/pkg is missing: run scripts/build-wasm.sh first`);
    process.exit(1);
  }
  const kit = arg('--kit', 'demo');
  const mounts = { '/': root };
  if (kit !== 'none') {
    if (!fs.existsSync(path.join(kit, 'manifest.json'))) {
      console.error(`${kit}/manifest.json is missing: not a demo kit (give --kit none to serve without one)`);
      process.exit(1);
    }
    mounts['/demo/'] = kit;
  }
  const server = await serveStatic(mounts, Number(arg('--port', '8080')));
  console.log(`moegraft page: http://127.0.0.1:${server.address().port}/`);
}
