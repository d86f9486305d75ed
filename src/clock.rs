//! A monotonic clock for both targets: `std::time::Instant` natively; in the browser, where
//! `Instant::now` panics, `performance.now()` (the page's and the worker's clock alike, coarsened
//! by the browser to about 0.1 ms without cross-origin isolation).

#[cfg(not(target_arch = "wasm32"))]
pub use std::time::Instant;

#[cfg(target_arch = "wasm32")]
pub use browser::Instant;

#[cfg(target_arch = "wasm32")]
mod browser {
    use std::time::Duration;

    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = performance, js_name = now)]
        fn performance_now() -> f64;
    }

    /// A point in time, in milliseconds of `performance.now()`.
    #[derive(Debug, Clone, Copy)]
    pub struct Instant(f64);

    impl Instant {
        pub fn now() -> Self {
            Self(performance_now())
        }

        pub fn elapsed(&self) -> Duration {
            Duration::from_secs_f64(((performance_now() - self.0) / 1e3).max(0.0))
        }
    }
}
