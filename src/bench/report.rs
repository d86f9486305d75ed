//! The human-readable form of a benchmark report.

use std::fmt::Write;

use super::stats::Stat;
use super::BenchReport;

fn gb(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

fn spread(s: &Stat, digits: usize) -> String {
    format!(
        "{:.d$} (min {:.d$}, max {:.d$}, n={})",
        s.median,
        s.min,
        s.max,
        s.samples,
        d = digits
    )
}

fn pct(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

/// The report as a table of labelled lines.
pub fn table(r: &BenchReport) -> String {
    let mut o = String::new();
    let a = &r.adapter;
    let m = &r.model;
    let _ = writeln!(
        o,
        "machine   {} ({} cores), {}",
        r.machine.cpu.as_deref().unwrap_or("unknown CPU"),
        r.machine.cores,
        r.machine.os
    );
    let _ = writeln!(
        o,
        "adapter   {} ({}, {}), timestamp queries: {}, kernel layout: {:?}",
        a.name,
        a.backend,
        a.device_type,
        if a.timestamp_queries { "yes" } else { "no" },
        a.kernel_layout
    );
    let held = match m.weight_format == m.dtype {
        true => String::new(),
        false => format!(" held as {}", m.weight_format),
    };
    let _ = writeln!(
        o,
        "model     {} — {} {}{held}, {:.1} M parameters, {} {} weights read per decoded token",
        m.source,
        m.architecture,
        m.dtype,
        m.parameters as f64 / 1e6,
        gb(m.decode_weight_bytes),
        m.weight_format
    );
    if let Some(note) = &m.weight_format_note {
        let _ = writeln!(o, "          {note}");
    }
    let c = &r.copy_bandwidth;
    let _ = writeln!(
        o,
        "copy      GPU {} GB/s by fence, {} by timestamps; host {} GB/s ({} copies, read+write counted)",
        spread(&c.gpu_fence_gbps, 1),
        c.gpu_timestamp_gbps
            .as_ref()
            .map_or("not available".into(), |s| format!("{} GB/s", spread(s, 1))),
        spread(&c.host_gbps, 1),
        gb(c.bytes)
    );
    let reads: Vec<String> = c
        .shader_reads
        .iter()
        .map(|r| format!("{} {} GB/s", r.pattern.name(), spread(&r.gbps, 1)))
        .collect();
    let _ = writeln!(
        o,
        "read      a shader streaming {} reads {} (read only counted; the faster is the ceiling of any kernel that reads weights)",
        gb(c.shader_read_bytes),
        reads.join(", ")
    );
    let _ = writeln!(
        o,
        "prefill   {} tokens: {} tok/s",
        r.prefill.tokens,
        spread(&r.prefill.tokens_per_s, 1)
    );
    for d in &r.decode {
        let _ = writeln!(
            o,
            "decode    context {}: {} tok/s — {} of the weight-bandwidth bound ({:.1} tok/s), {} with the KV cache's {}; {} of the shader-read ceiling ({:.1} tok/s)",
            d.context,
            spread(&d.tokens_per_s, 2),
            pct(d.fraction_of_weight_bound),
            d.weight_bound_tokens_per_s,
            pct(d.fraction_of_weight_kv_bound),
            gb(d.kv_bytes),
            pct(d.fraction_of_read_ceiling),
            d.read_ceiling_tokens_per_s
        );
    }
    match (&r.merge, &r.merge_note) {
        (Some(g), _) => {
            let m = &g.result;
            let _ = writeln!(
                o,
                "merge     {} {} of inputs: {} GB/s streamed ({} of host copy, {} of GPU copy), {} GB/s end to end (with the inputs' sha256, {:.2} s alone)",
                m.method,
                gb(m.input_bytes),
                spread(&m.merge_gbps, 2),
                pct(g.fraction_of_host_copy),
                pct(g.fraction_of_gpu_copy),
                spread(&m.end_to_end_gbps, 2),
                m.hash_seconds.median
            );
            let _ = writeln!(
                o,
                "          writing its {} of output alone takes {:.3} s ({} of the streamed {:.3} s)",
                gb(m.output_bytes),
                m.write_floor_seconds.median,
                pct(m.write_floor_seconds.median / m.merge_seconds.median),
                m.merge_seconds.median
            );
        }
        (None, note) => {
            let _ = writeln!(o, "merge     {}", note.as_deref().unwrap_or("not run"));
        }
    }
    let mem = &r.memory;
    let _ = writeln!(
        o,
        "memory    peak host RSS {}{}, GPU weights {}, GPU KV cache {}",
        mem.peak_host_rss_bytes.map_or("unknown".into(), gb),
        mem.wasm_memory_bytes
            .map_or(String::new(), |b| format!(", wasm memory {}", gb(b))),
        gb(mem.gpu_weight_bytes),
        gb(mem.gpu_kv_cache_bytes)
    );
    match (&r.kernels, &r.kernels_note) {
        (Some(k), _) => {
            let _ = writeln!(
                o,
                "kernels   one decode step at context {}: {} dispatches, {:.3} ms GPU ({:.3} ms wall, one pass per dispatch){}",
                k.context,
                k.dispatches,
                k.kernel_ms,
                k.wall_ms,
                if k.untimed > 0 {
                    format!(", {} untimed", k.untimed)
                } else {
                    String::new()
                }
            );
            for g in &k.groups {
                let _ = writeln!(
                    o,
                    "          {:<16} {:>5} × {:>9.3} ms  {:>6}",
                    g.kernel,
                    g.dispatches,
                    g.ms,
                    pct(g.share)
                );
            }
        }
        (None, note) => {
            let _ = writeln!(o, "kernels   {}", note.as_deref().unwrap_or("not run"));
        }
    }
    o
}
