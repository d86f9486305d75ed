// The page's side of the worker protocol (see worker.js): requests as promises, with the
// progress, file-read and token messages of each request routed to that request's handlers.

let worker = null;
let nextRid = 1;
const pending = new Map();
let onCrash = () => {};
let onLost = () => {};

/** `handler(message)` runs when the worker dies; every model it held is gone. */
export function whenWorkerCrashes(handler) {
  onCrash = handler;
}

/** `handler(id, message)` runs when model `id` lost its GPU device (the worker released it). */
export function whenModelLost(handler) {
  onLost = handler;
}

function start() {
  const w = new Worker(new URL('../worker.js', import.meta.url), { type: 'module' });
  w.onmessage = ({ data }) => {
    const p = pending.get(data.rid);
    if (!p) return;
    if (data.type === 'progress') p.onProgress?.(data.done, data.total);
    else if (data.type === 'read') p.onRead?.(data);
    else if (data.type === 'token') p.onToken?.(data.id, data.piece);
    else if (data.type === 'bench') p.onBench?.(data);
    else if (data.type === 'step') p.onStep?.(data);
    else if (data.type === 'reply') {
      pending.delete(data.rid);
      if (data.fatal) drop(`the model worker crashed (a bug, ${data.error}); load the models again`);
      if (data.lost) onLost(data.lost, data.error);
      if (data.ok) p.resolve(data.value);
      else p.reject(new Error(data.error));
    }
  };
  w.onerror = (e) => {
    e.preventDefault();
    const why = e.message || 'its script failed to load (was www/pkg built with scripts/build-wasm.sh?)';
    drop(`the model worker failed: ${why}`);
  };
  return w;
}

// After a wasm trap or a failed start the worker is unusable: end it (its models go with it);
// the next request starts a fresh one.
function drop(message) {
  worker?.terminate();
  worker = null;
  for (const p of pending.values()) p.reject(new Error(message));
  pending.clear();
  onCrash(message);
}

/**
 * Sends a request; `handlers` may hold onProgress(done, total), onRead(msg), onToken(id, piece),
 * onBench(msg), onStep(msg).
 */
export function request(type, payload = {}, handlers = {}) {
  const rid = nextRid++;
  return new Promise((resolve, reject) => {
    worker ??= start();
    pending.set(rid, { resolve, reject, ...handlers });
    worker.postMessage({ ...payload, rid, type });
  });
}

/** Asks the running generation to end after its current token (a lesson: after its step). */
export function stopGeneration() {
  worker?.postMessage({ type: 'stop' });
}

/**
 * Ends the worker now, whatever it is doing (its models go with it): its requests reject with
 * `message`; the next request starts a fresh one. How a benchmark is stopped.
 */
export function endWorker(message) {
  worker?.terminate();
  worker = null;
  for (const p of pending.values()) p.reject(new Error(message));
  pending.clear();
}

export function startWorker() {
  worker ??= start();
}
