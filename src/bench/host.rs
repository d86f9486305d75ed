//! What the host says about itself: the machine, and its memory high-water mark. Natively from
//! Linux's /proc; in the browser from `navigator` and the wasm module's linear memory, the
//! only host memory a page can read about itself without cross-origin isolation.

use super::Machine;

/// The process's peak resident set (VmHWM of /proc/self/status), where the OS reports it.
#[cfg(not(target_arch = "wasm32"))]
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A browser does not report a page's resident set.
#[cfg(target_arch = "wasm32")]
pub fn peak_rss_bytes() -> Option<u64> {
    None
}

/// Bytes of the wasm module's linear memory. It only grows, so this is also its peak: every
/// Rust allocation of the run (file reads, host copies, staging) went through it. JS objects
/// (Blobs, the graft's output) and the browser's own GPU-process memory are not in it.
#[cfg(target_arch = "wasm32")]
pub fn wasm_memory_bytes() -> Option<u64> {
    Some(core::arch::wasm32::memory_size::<0>() as u64 * 65536)
}

#[cfg(not(target_arch = "wasm32"))]
pub fn wasm_memory_bytes() -> Option<u64> {
    None
}

#[cfg(not(target_arch = "wasm32"))]
pub fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!(" {}", s.trim()))
        .unwrap_or_default();
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        os: format!("{}{kernel}", std::env::consts::OS),
    }
}

/// The browser names no CPU; `navigator` gives the logical cores and the user agent.
#[cfg(target_arch = "wasm32")]
pub fn machine() -> Machine {
    let navigator = js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).ok();
    let field = |name: &str| {
        navigator
            .as_ref()
            .and_then(|n| js_sys::Reflect::get(n, &name.into()).ok())
    };
    let cores = field("hardwareConcurrency")
        .and_then(|v| v.as_f64())
        .map_or(1, |n| n.max(1.0) as usize);
    let agent = field("userAgent")
        .and_then(|v| v.as_string())
        .unwrap_or_else(|| "unknown browser".into());
    Machine {
        cpu: None,
        cores,
        os: format!("browser: {agent}"),
    }
}
