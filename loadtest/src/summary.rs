//! The end-of-run summary on stdout, k6 style: one row per workload (latency percentiles,
//! rate, loss, errors), then the grade, the interference and where the reports are.

use std::fmt::Write;

use crate::result::RunResult;

/// The summary table of `r`, whose reports are in `dir`.
pub fn table(r: &RunResult, dir: &std::path::Path) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n  {:<10} {:>9} {:>9} {:>9} {:>9} {:>11} {:>7} {:>7}",
        "workload", "samples", "p50 ms", "p95 ms", "p99 ms", "per s", "lost", "errors"
    );
    for (name, w) in &r.workloads {
        let l = &w.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let _ = writeln!(
            s,
            "  {name:<10} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>11.0} {:>7} {:>7}",
            w.samples,
            ms(l.p50),
            ms(l.p95),
            ms(l.p99),
            w.throughput_per_s,
            w.lost + w.duplicated + w.out_of_order,
            w.errors.values().sum::<u64>()
        );
    }
    if let Some(side) = &r.server_metrics {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.3}"));
        let _ = writeln!(
            s,
            "  {:<10} {:>9} {:>9} {:>9} {:>9}   (the server's own /metrics: publish read → frame written)",
            "server",
            side.deliveries,
            ms(side.delivery_p50_ms),
            "",
            ms(side.delivery_p99_ms)
        );
    }
    let _ = writeln!(s, "\n  grade      {}", r.verdict);
    if let Some(i) = &r.interference {
        let _ = writeln!(
            s,
            "  machine    others {:.2} cores mean, {:.2} max; steal {:.2} max; client {:.2} cores{}",
            i.others_cores_mean,
            i.others_cores_max,
            i.steal_cores_max,
            r.client.cores_used,
            if i.inconclusive.is_some() { " (INCONCLUSIVE)" } else { "" }
        );
    }
    let _ = writeln!(
        s,
        "  report     {} (and report.md, result.json)\n",
        dir.join("report.html").display()
    );
    s
}
