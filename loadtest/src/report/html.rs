//! `report.html`: one self-contained page (no script, no CDN). A summary box (grade, verdict,
//! interference, the command that reproduces the run), the plots, then the same tables as
//! `report.md`.

use std::fmt::Write;

use super::chart::{nines, Band, Chart, Series, XAxis};
use super::doc::{self, escape, inline};
use super::text;
use crate::result::{RunResult, SecondPoint};

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1480px;\
color:#222;padding:0 16px}h1{font-size:22px;margin:0 0 12px}h2{font-size:18px;margin:28px 0 8px;\
border-bottom:1px solid #ddd}h3{font-size:15px;margin:22px 0 6px}table{border-collapse:collapse;\
margin:6px 0 12px}th,td{border:1px solid #ccc;padding:3px 8px}th{background:#f3f3f3;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}code{background:#f4f4f4;padding:1px 4px;\
border-radius:3px}.summary{display:flex;gap:20px;align-items:flex-start;border:1px solid #bbb;\
border-radius:6px;padding:14px 18px;background:#fafafa}.grade{font-size:56px;font-weight:700;\
line-height:1;min-width:72px;text-align:center;border-radius:6px;padding:8px 4px;color:#fff}\
.g-A\\+,.g-A{background:#2a8a3e}.g-B{background:#5a9a2e}.g-C{background:#c08a00}.g-D{background:#d0621b}\
.g-F{background:#b3261e}.summary dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;\
margin:0}.summary dt{color:#555}.summary dd{margin:0}.warn{color:#b3261e;font-weight:600}\
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(724px,1fr));gap:6px 16px}\
figure{margin:0}figcaption{font-weight:600;margin:10px 0 2px}svg{background:#fff;\
border:1px solid #ccc;max-width:100%;height:auto}";

/// The HTML report.
pub fn html(r: &RunResult) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width\"><title>loadtest {} {}</title><style>{STYLE}</style></head>\
         <body><h1>loadtest {}: grade {}</h1>",
        escape(&r.scenario),
        escape(&r.started_utc),
        escape(&r.scenario),
        r.verdict.grade.as_str()
    );
    page.push_str(&summary(r));
    page.push_str("<h2>Plots</h2><div class=\"charts\">");
    for chart in charts(r).iter().filter(|c| !c.is_empty()) {
        page.push_str(&chart.svg());
    }
    page.push_str("</div>");
    page.push_str(&doc::html(&text::body(r)));
    page.push_str("</body></html>\n");
    page
}

/// The box at the top: grade, pass or fail, what set the grade, why it may not count, the
/// interference, when and where it ran, and how to run it again.
fn summary(r: &RunResult) -> String {
    let v = &r.verdict;
    let mut rows: Vec<(&str, String)> = vec![(
        "verdict",
        format!(
            "{}: {}",
            if v.passed {
                "pass"
            } else {
                "<span class=\"warn\">FAIL</span>"
            },
            escape(&v.to_string())
        ),
    )];
    for notice in text::notices(r) {
        if let doc::Block::Para(text) = notice {
            rows.push(("<span class=\"warn\">attention</span>", inline(&text)));
        }
    }
    let headline: Vec<String> = r
        .workloads
        .iter()
        .map(|(n, w)| {
            format!(
                "{n} p99 {:.2} ms, {:.0}/s",
                w.latency_us.p99 as f64 / 1000.0,
                w.throughput_per_s
            )
        })
        .collect();
    rows.push(("workloads", escape(&headline.join("; "))));
    rows.push((
        "interference",
        r.interference.as_ref().map_or_else(
            || "not measured (an older result)".into(),
            |i| escape(&text::interference_line(i)),
        ),
    ));
    rows.push((
        "client",
        format!(
            "{:.2} cores, {:.1} µs CPU per message{}",
            r.client.cores_used,
            r.client.cpu_us_per_message,
            if r.client.client_bound {
                " — <span class=\"warn\">client-bound</span>"
            } else {
                ""
            }
        ),
    ));
    rows.push((
        "run",
        escape(&format!(
            "{} UTC, {:.1} s (duration scale {}), target {}{}",
            r.started_utc,
            r.duration_s,
            r.duration_scale,
            r.target,
            if r.spawned_server { " (spawned)" } else { "" }
        )),
    ));
    rows.push((
        "machine",
        escape(&format!(
            "{} cores ({}), {} MiB; commit {}",
            r.machine.cores,
            r.machine.cpu,
            r.machine.memory_kib / 1024,
            r.git_commit
        )),
    ));
    rows.push((
        "reproduce",
        format!("<code>{}</code>", escape(&text::command(r))),
    ));
    let mut s = format!(
        "<section class=\"summary\"><div class=\"grade g-{0}\" title=\"grade\">{0}</div><dl>",
        v.grade.as_str()
    );
    for (k, v) in rows {
        let _ = write!(s, "<dt>{k}</dt><dd>{v}</dd>");
    }
    s.push_str("</dl></section>");
    s
}

/// A chart over the run's seconds, phases shaded, the x axis spanning the whole run.
fn timeline(r: &RunResult, title: impl Into<String>, y_label: impl Into<String>) -> Chart {
    Chart::new(title, y_label, XAxis::Seconds)
        .bands(bands(r))
        .x_span(0.0, r.duration_s.floor())
}

/// The phases as shaded bands.
fn bands(r: &RunResult) -> Vec<Band> {
    r.phases
        .iter()
        .map(|p| Band {
            start: p.phase.start_s,
            end: p.phase.end_s,
            label: p.phase.name.clone(),
        })
        .collect()
}

fn over_time(r: &RunResult, f: impl Fn(&SecondPoint) -> Option<f64>) -> Vec<(f64, f64)> {
    r.series
        .iter()
        .filter_map(|p| Some((p.t as f64, f(p)?)))
        .collect()
}

/// One panel per quantity: the latency distribution, p99 over time, each workload's throughput
/// on its own scale, the server's CPU and memory, and the interference.
fn charts(r: &RunResult) -> Vec<Chart> {
    let mut out = Vec::new();
    let mut curve = Chart::new(
        "Latency by percentile (whole run, from the intended send time)",
        "latency (ms)",
        XAxis::Nines,
    );
    for (name, w) in &r.workloads {
        let points = w
            .curve
            .iter()
            .map(|&(p, us)| (nines(p), us as f64 / 1000.0))
            .collect();
        curve = curve.line(Series::new(name.clone(), points));
    }
    out.push(curve);

    let mut p99 = timeline(r, "p99 latency each second", "p99 (ms)");
    for name in r.workloads.keys() {
        let points = over_time(r, |p| Some(*p.p99_us.get(name)? as f64 / 1000.0));
        p99 = p99.line(Series::new(name.clone(), points));
    }
    let server = over_time(r, |p| p.server.as_ref()?.delivery_p99_ms);
    p99 = p99.line(Series {
        dashed: true,
        ..Series::new("server delivery p99", server)
    });
    if let Some((g, l)) = (r.grading.as_ref()).and_then(|g| Some((g, g.limits.get(&g.required)?))) {
        let limit = l.p99_us / 1000.0;
        p99 = p99.limit(
            limit,
            format!("{} needs p99 ≤ {limit} ms", g.required.as_str()),
        );
    }
    out.push(p99);

    for name in r.workloads.keys() {
        let points = over_time(r, |p| Some(*p.ops.get(name)? as f64));
        out.push(
            timeline(
                r,
                format!("{name}: completed per second"),
                format!("{name} (per s)"),
            )
            .line(Series::new(name.clone(), points)),
        );
    }

    let cores = |f: fn(&crate::noise::Second) -> f64| {
        over_time(r, move |p| Some(f(p.interference.as_ref()?)))
    };
    let mut cpu = timeline(r, "CPU", "cores")
        .line(Series::new(
            "server",
            over_time(r, |p| Some(p.server_cpu_pct? / 100.0)),
        ))
        .line(Series::new("loadtest", cores(|s| s.client_cores)))
        .line(Series::new("other processes", cores(|s| s.others_cores)))
        .line(Series::new("steal", cores(|s| s.steal_cores)));
    if let Some(i) = &r.interference {
        cpu = cpu.limit(
            i.bound_cores,
            format!("noise bound: others + steal ≤ {} cores", i.bound_cores),
        );
    }
    out.push(cpu);
    out.push(timeline(r, "Server memory", "RSS (MiB)").line(Series::new(
        "server RSS",
        over_time(r, |p| Some(p.server_rss_kib? as f64 / 1024.0)),
    )));
    out
}
