// State the page's sections share. `hook` is window.__moegraft: a read-mostly window into the
// page for tests and the console (see main.js for its fields).

export const state = {
  hook: {
    adapter: null,
    model: null,
    models: [],
    lastResult: null,
    lastError: null,
    loadState: 'idle',
    generating: false,
    // Counters of finished loads and generations (either outcome), to wait on.
    loads: 0,
    generations: 0,
    conversation: [],
    graftState: 'idle',
    graftResult: null,
    grafts: 0,
    upcycleState: 'idle',
    upcycleResult: null,
    upcycles: 0,
    kit: null,
    kitState: 'none',
    kitModel: null,
    showcaseState: 'none',
    showcase: null,
  },
  activeModel: null,
  /** Limits lowered through the address (?max_binding=BYTES), to try a small device. */
  limits: {},
  /** Set by the cache section: a button that keeps a loaded model in the browser. */
  cacheButton: null,
};
