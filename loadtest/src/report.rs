//! Markdown and HTML reports, rendered from a [`RunResult`] alone. The HTML has inline SVG plots:
//! the latency percentile curve, and latency and throughput over time.

use std::fmt::Write;

use crate::grade::in_units;
use crate::result::RunResult;

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// The Markdown report.
pub fn markdown(r: &RunResult) -> String {
    let mut s = String::new();
    let v = &r.verdict;
    let _ = writeln!(
        s,
        "# loadtest {}: grade {} ({})\n",
        r.scenario,
        v.grade.as_str(),
        if v.passed { "pass" } else { "FAIL" }
    );
    if r.interrupted {
        let _ = writeln!(
            s,
            "**Interrupted** (Ctrl-C) after {:.1} s: the figures cover the part that ran; the run \
             is not graded as a whole one (`loadtest run` exits 130).\n",
            r.duration_s
        );
    }
    if let Some(why) = r.inconclusive() {
        let _ = writeln!(
            s,
            "**Inconclusive**: {why}. The grade below does not measure the server alone; \
             `loadtest run` exits 3 unless given `--allow-noisy`.\n"
        );
    }
    let _ = writeln!(
        s,
        "Grade set by {} = {} (required {}). Started {} UTC, {:.1} s, duration scale {}, target {}{}.\n",
        v.criterion.trim_end_matches("_us"),
        in_units(&v.criterion, v.value),
        v.required.as_str(),
        r.started_utc,
        r.duration_s,
        r.duration_scale,
        r.target,
        if r.spawned_server { " (spawned)" } else { "" }
    );
    if !r.overrides.is_empty() {
        let _ = writeln!(s, "Overrides: `--set {}`.\n", r.overrides.join("` `--set "));
    }
    explain_grade(&mut s, r);
    let _ = writeln!(
        s,
        "Machine: {} cores ({}), {} MiB, kernel {}; commit {}.\n",
        r.machine.cores,
        r.machine.cpu,
        r.machine.memory_kib / 1024,
        r.machine.kernel,
        r.git_commit
    );
    let _ = writeln!(
        s,
        "## Workloads (latency in ms, from the intended send time)\n"
    );
    let _ = writeln!(s, "| workload | samples | p50 | p90 | p95 | p99 | p99.9 | max | per s | sent | received | late | lost | dup | reordered | errors |");
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (name, w) in &r.workloads {
        let l = &w.latency_us;
        let errors: u64 = w.errors.values().sum();
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {errors} |",
            w.samples, ms(l.p50), ms(l.p90), ms(l.p95), ms(l.p99), ms(l.p999), ms(l.max), w.throughput_per_s,
            w.sent, w.received, w.late_sends, w.lost, w.duplicated, w.out_of_order
        );
    }
    let errors: Vec<String> = r
        .workloads
        .iter()
        .flat_map(|(n, w)| w.errors.iter().map(move |(k, c)| format!("{n}: {k} × {c}")))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(s, "\nErrors by kind: {}", errors.join("; "));
    }
    if let Some(g) = &r.group {
        let _ = writeln!(
            s,
            "\nQueue group: {} tasks over {} members; per member min {}, max {} (even share {:.1}).",
            g.tasks, g.members, g.min, g.max, g.even
        );
    }
    let sent: Vec<_> = r
        .workloads
        .iter()
        .filter_map(|(name, w)| Some((name, w.latency_from_send_us?)))
        .collect();
    if !sent.is_empty() {
        let _ = writeln!(
            s,
            "\nFrom the *actual* send time (ms): the same deliveries without the client's own \
             timer lag (the difference is the time loadtest's sender woke up late).\n"
        );
        let _ = writeln!(
            s,
            "| workload | p50 | p95 | p99 | p99.9 | max |\n|---|---|---|---|---|---|"
        );
        for (name, l) in sent {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} |",
                ms(l.p50),
                ms(l.p95),
                ms(l.p99),
                ms(l.p999),
                ms(l.max)
            );
        }
    }
    let _ = writeln!(s, "\n## Phases\n\n| phase | connections | echo p99 | fanout p99 | echo/s | deliveries/s | errors | grade |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for p in &r.phases {
        let get = |w: &str| p.workloads.get(w);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {} ({}) |",
            p.phase.name,
            p.connections,
            get("echo").map_or("-".into(), |x| ms(x.p99_us)),
            get("fanout").map_or("-".into(), |x| ms(x.p99_us)),
            get("echo").map_or(0.0, |x| x.per_s),
            get("fanout").map_or(0.0, |x| x.per_s),
            p.errors,
            p.verdict.grade.as_str(),
            p.verdict.criterion
        );
    }
    if let Some(st) = &r.stress {
        let _ = writeln!(
            s,
            "\n## Stress\n\nHighest step graded ≥ B: {} ({} connections); max fan-out deliveries/s {:.0}; max echo round trips/s {:.0}. {}",
            st.max_sustained_step.as_deref().unwrap_or("none"),
            st.max_sustained_connections,
            st.max_fanout_deliveries_per_s,
            st.max_echo_round_trips_per_s,
            st.broken_step.as_ref().map_or_else(
                || "Every step held.".to_string(),
                |b| format!("Stopped after {b}, the first step below B.")
            )
        );
    }
    if let Some(sp) = &r.spike {
        let _ = writeln!(
            s,
            "\n## Spike\n\nPre-spike p99 {} ms; during the spike p95 {} ms, p99 {} ms; recovered to the pre-spike p99 {}.",
            ms(sp.pre_spike_p99_us),
            ms(sp.spike_p95_us),
            ms(sp.spike_p99_us),
            sp.recovery_s.map_or("never (within the run)".into(), |t| format!("{t} s after the spike"))
        );
    }
    if let Some(side) = &r.server_metrics {
        let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
        let _ = writeln!(
            s,
            "\n## The server's own figures (its /metrics)\n\n{} deliveries; server-side delivery (publish read → frame written) p50 {} ms, p99 {} ms; {} error replies.",
            side.deliveries,
            ms(side.delivery_p50_ms),
            ms(side.delivery_p99_ms),
            side.errors
        );
        let listed = |m: &std::collections::BTreeMap<String, u64>| match m.is_empty() {
            true => "none".to_string(),
            false => m
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let _ = writeln!(
            s,
            "Dropped: {}. Closed: {}.",
            listed(&side.drops),
            listed(&side.closes)
        );
    }
    let _ = writeln!(s, "\n## Resources\n");
    if let Some(sv) = &r.server {
        let _ = writeln!(
            s,
            "Server (pid {}): {:.1} µs CPU per completed message; RSS {} → {} KiB (max {}); open files {} → {}.",
            sv.pid, sv.cpu_us_per_message, sv.rss_kib_start, sv.rss_kib_end, sv.rss_kib_max, sv.open_files_start, sv.open_files_end
        );
    } else {
        let _ = writeln!(
            s,
            "Server usage unknown (no process found listening on the target's port: pass --server-pid)."
        );
    }
    let _ = writeln!(
        s,
        "\nClient: {:.1} µs CPU per completed message, {:.2} cores used{}.",
        r.client.cpu_us_per_message,
        r.client.cores_used,
        if r.client.client_bound {
            "; **client_bound**: the machine was saturated and the client took a large share"
        } else {
            ""
        }
    );
    if let Some(i) = &r.interference {
        let _ = writeln!(
            s,
            "\nInterference (other processes and steal, while the phases ran): mean {:.2} cores, \
             max {:.2} (steal max {:.2}); {} of {} seconds above {} cores (bound: {:.0} % of them).",
            i.others_cores_mean + i.steal_cores_mean,
            i.others_cores_max,
            i.steal_cores_max,
            i.noisy_seconds,
            i.seconds,
            i.bound_cores,
            i.bound_share * 100.0
        );
    }
    s
}

/// "How the grade was set": per criterion, the measured value, each grade's limit, the grade it
/// met; the criterion that set the run's grade in bold.
fn explain_grade(s: &mut String, r: &RunResult) {
    let Some(grading) = &r.grading else {
        return;
    };
    let _ = writeln!(s, "## How the grade was set\n");
    if r.stress.is_some() {
        let _ = writeln!(
            s,
            "Stress is judged by its highest step graded at least B (see Phases); the whole run's \
             figures against the limits:\n"
        );
    }
    let grades = crate::grade::Grade::LIMITED;
    let head: Vec<&str> = grades.iter().map(|g| g.as_str()).collect();
    let _ = writeln!(s, "| criterion | measured | {} | met |", head.join(" | "));
    let _ = writeln!(s, "|---|---|{}---|", "---|".repeat(grades.len()));
    for ((name, value, limit), met) in grading.criteria(&r.measured) {
        let limits: Vec<String> = grades
            .iter()
            .map(|g| format!("≤ {}", in_units(name, limit(&grading.limits[g]))))
            .collect();
        let setter = name == r.verdict.criterion;
        let (b, e) = if setter { ("**", "**") } else { ("", "") };
        let _ = writeln!(
            s,
            "| {b}{}{e} | {} | {} | {b}{}{e} |",
            name.trim_end_matches("_us"),
            in_units(name, value),
            limits.join(" | "),
            met.as_str()
        );
    }
    let _ = writeln!(
        s,
        "\nRequired: {}. Latencies are the worst workload's, from the intended send time.\n",
        grading.required.as_str()
    );
}

/// A polyline chart: `series` of (label, points), x and y in data units.
fn svg_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let (w, h, pad) = (640.0, 260.0, 48.0);
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return format!("<p>{title}: no data</p>");
    }
    let (xr, yr) = ((x1 - x0).max(1e-9), y1.max(1e-9));
    let sx = |x: f64| pad + (x - x0) / xr * (w - 2.0 * pad);
    let sy = |y: f64| h - pad - y / yr * (h - 2.0 * pad);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let mut out = format!(
        r#"<figure><figcaption>{title}</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" style="background:#fff;border:1px solid #ccc">"#
    );
    let _ = write!(
        out,
        r##"<line x1="{pad}" y1="{0}" x2="{1}" y2="{0}" stroke="#888"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{0}" stroke="#888"/>"##,
        h - pad,
        w - pad
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{x_label}</text>"#,
        w / 2.0,
        h - 10.0
    );
    let _ = write!(
        out,
        r#"<text x="6" y="{}" font-size="11">{y_label} (max {:.2})</text>"#,
        pad - 16.0,
        y1
    );
    for (i, (label, points)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let pts: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"/>"#,
            pts.join(" ")
        );
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" font-size="11" fill="{c}">{label}</text>"#,
            w - pad - 90.0,
            pad + 14.0 * i as f64
        );
    }
    out.push_str("</svg></figure>");
    out
}

/// The HTML report: the Markdown tables as preformatted text plus three SVG plots.
pub fn html(r: &RunResult) -> String {
    // Percentile axis as "nines": 0 → 0, 90 → 1, 99 → 2, 99.9 → 3 ...
    let nines = |p: f64| {
        if p >= 100.0 {
            5.0
        } else {
            (-(1.0 - p / 100.0).log10()).min(5.0)
        }
    };
    let curve: Vec<(String, Vec<(f64, f64)>)> = r
        .workloads
        .iter()
        .filter(|(_, w)| !w.curve.is_empty())
        .map(|(n, w)| {
            (
                n.clone(),
                w.curve
                    .iter()
                    .map(|&(p, us)| (nines(p), us as f64 / 1000.0))
                    .collect(),
            )
        })
        .collect();
    let names: Vec<String> = r.workloads.keys().cloned().collect();
    let over_time = |f: &dyn Fn(&crate::result::SecondPoint, &str) -> Option<f64>| -> Vec<(String, Vec<(f64, f64)>)> {
        names
            .iter()
            .map(|n| (n.clone(), r.series.iter().filter_map(|p| Some((p.t as f64, f(p, n)?))).collect::<Vec<_>>()))
            .filter(|(_, v)| !v.is_empty())
            .collect()
    };
    let mut latency = over_time(&|p, n| p.p99_us.get(n).map(|&us| us as f64 / 1000.0));
    // The server's own delivery p99 (from its /metrics), beside the clients'.
    let server_p99: Vec<(f64, f64)> = r
        .series
        .iter()
        .filter_map(|p| Some((p.t as f64, p.server.as_ref()?.delivery_p99_ms?)))
        .collect();
    if !server_p99.is_empty() {
        latency.push(("server delivery p99".into(), server_p99));
    }
    let throughput = over_time(&|p, n| p.ops.get(n).map(|&c| c as f64));
    let md = markdown(r).replace('&', "&amp;").replace('<', "&lt;");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadtest {} {}</title></head><body style=\"font-family:sans-serif\">\
         <h1>loadtest {}: grade {}</h1>{}{}{}<pre>{}</pre></body></html>",
        r.scenario,
        r.started_utc,
        r.scenario,
        r.verdict.grade.as_str(),
        svg_chart("Latency by percentile", "percentile (nines: 1 = p90, 2 = p99, 3 = p99.9)", "latency ms", &curve),
        svg_chart("p99 latency over time", "seconds", "p99 ms", &latency),
        svg_chart("Throughput over time", "seconds", "completed per second", &throughput),
        md
    )
}
