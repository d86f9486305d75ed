// The demo kit's files as the pages fetch them: demo/manifest.json (written by
// tools/build_demo_kit.py) and each model's folder, served beside www/ at demo/.

export const KIT_ROOT = 'demo/';

/** The kit's manifest, or null when no kit is served with this page. */
export async function fetchKitManifest() {
  try {
    const r = await fetch(`${KIT_ROOT}manifest.json`);
    return r.ok ? await r.json() : null;
  } catch {
    return null;
  }
}

/** A manifest entry's files as `[{file, path}]`, the way the worker takes a picked folder. */
export async function fetchFolder(entry) {
  const out = [];
  for (const name of entry.files) {
    const url = `${KIT_ROOT}${entry.dir}/${name}`;
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    out.push({ file: new File([await r.blob()], name), path: `${entry.name}/${name}` });
  }
  return out;
}

/** The manifest's entry called `name`. */
export function kitEntry(manifest, name) {
  const entry = manifest?.models.find((m) => m.name === name);
  if (!entry) throw new Error(`the demo kit has no model '${name}'`);
  return entry;
}
