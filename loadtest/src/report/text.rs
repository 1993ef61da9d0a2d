//! The report's text: the blocks both reports share (the grade's explanation, workloads,
//! phases, the scenario's own summary, the server's figures, resources), and `report.md`.

use std::collections::BTreeMap;

use super::doc::{self, Block};
use crate::grade::in_units;
use crate::result::{Percentiles, RunResult};

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// The Markdown report.
pub fn markdown(r: &RunResult) -> String {
    let v = &r.verdict;
    let mut blocks = vec![Block::Heading(
        1,
        format!(
            "loadtest {}: grade {} ({})",
            r.scenario,
            v.grade.as_str(),
            if v.passed { "pass" } else { "FAIL" }
        ),
    )];
    blocks.extend(notices(r));
    blocks.push(Block::Para(format!(
        "Grade set by {} = {} (required {}). Started {} UTC, {:.1} s, duration scale {}, target {}{}.",
        v.criterion.trim_end_matches("_us"),
        in_units(&v.criterion, v.value),
        v.required.as_str(),
        r.started_utc,
        r.duration_s,
        r.duration_scale,
        r.target,
        if r.spawned_server { " (spawned)" } else { "" }
    )));
    blocks.push(Block::Para(format!("Reproduce: `{}`", command(r))));
    blocks.extend(body(r));
    doc::markdown(&blocks)
}

/// The command that runs this scenario again the same way.
pub fn command(r: &RunResult) -> String {
    let mut c = format!("loadtest run --scenario {}", r.scenario);
    if r.spawned_server {
        c.push_str(" --spawn-server");
    } else {
        c.push_str(&format!(" --target {}", r.target));
    }
    if r.duration_scale != 1.0 {
        c.push_str(&format!(" --duration-scale {}", r.duration_scale));
    }
    for set in &r.overrides {
        c.push_str(&format!(" --set {set}"));
    }
    c
}

/// Interrupted and inconclusive runs say so first.
pub(super) fn notices(r: &RunResult) -> Vec<Block> {
    let mut out = Vec::new();
    if r.interrupted {
        out.push(Block::Para(format!(
            "**Interrupted** (Ctrl-C) after {:.1} s: the figures cover the part that ran; the run \
             is not graded as a whole one (`loadtest run` exits 130).",
            r.duration_s
        )));
    }
    if let Some(why) = r.inconclusive() {
        out.push(Block::Para(format!(
            "**Inconclusive**: {why}. The grade below does not measure the server alone; \
             `loadtest run` exits 3 unless given `--allow-noisy`."
        )));
    }
    out
}

/// Everything after the headline: the grade's explanation, workloads, phases, the scenario's
/// own summary, the server's figures and resources.
pub(super) fn body(r: &RunResult) -> Vec<Block> {
    let mut b = Vec::new();
    if !r.overrides.is_empty() {
        b.push(Block::Para(format!(
            "Overrides: `--set {}`.",
            r.overrides.join("` `--set ")
        )));
    }
    explain_grade(&mut b, r);
    b.push(Block::Para(format!(
        "Machine: {} cores ({}), {} MiB, kernel {}; commit {}.",
        r.machine.cores,
        r.machine.cpu,
        r.machine.memory_kib / 1024,
        r.machine.kernel,
        r.git_commit
    )));
    workloads(&mut b, r);
    phases(&mut b, r);
    scenario_summary(&mut b, r);
    server_side(&mut b, r);
    resources(&mut b, r);
    b
}

fn latency_row(name: &str, l: &Percentiles) -> Vec<String> {
    let mut row = vec![name.to_string()];
    row.extend([l.p50, l.p90, l.p95, l.p99, l.p999, l.max].map(ms));
    row
}

fn workloads(b: &mut Vec<Block>, r: &RunResult) {
    b.push(Block::Heading(
        2,
        "Workloads (latency in ms, from the intended send time)".into(),
    ));
    let rows = r
        .workloads
        .iter()
        .map(|(name, w)| {
            let mut row = vec![name.clone(), w.samples.to_string()];
            row.extend(latency_row(name, &w.latency_us).into_iter().skip(1));
            row.extend([
                format!("{:.0}", w.throughput_per_s),
                w.sent.to_string(),
                w.received.to_string(),
                w.late_sends.to_string(),
                w.lost.to_string(),
                w.duplicated.to_string(),
                w.out_of_order.to_string(),
                w.errors.values().sum::<u64>().to_string(),
            ]);
            row
        })
        .collect();
    b.push(Block::table(
        [
            "workload",
            "samples",
            "p50",
            "p90",
            "p95",
            "p99",
            "p99.9",
            "max",
            "per s",
            "sent",
            "received",
            "late",
            "lost",
            "dup",
            "reordered",
            "errors",
        ],
        rows,
    ));
    let errors: Vec<String> = r
        .workloads
        .iter()
        .flat_map(|(n, w)| w.errors.iter().map(move |(k, c)| format!("{n}: {k} × {c}")))
        .collect();
    if !errors.is_empty() {
        b.push(Block::Para(format!(
            "Errors by kind: {}",
            errors.join("; ")
        )));
    }
    if let Some(g) = &r.group {
        b.push(Block::Para(format!(
            "Queue group: {} tasks over {} members; per member min {}, max {} (even share {:.1}).",
            g.tasks, g.members, g.min, g.max, g.even
        )));
    }
    let sent: Vec<Vec<String>> = r
        .workloads
        .iter()
        .filter_map(|(name, w)| Some(latency_row(name, w.latency_from_send_us.as_ref()?)))
        .collect();
    if !sent.is_empty() {
        b.push(Block::Para(
            "From the **actual** send time (ms): the same deliveries without the client's own \
             timer lag (the difference is the time loadtest's sender woke up late)."
                .into(),
        ));
        b.push(Block::table(
            ["workload", "p50", "p90", "p95", "p99", "p99.9", "max"],
            sent,
        ));
    }
}

fn phases(b: &mut Vec<Block>, r: &RunResult) {
    b.push(Block::Heading(2, "Phases".into()));
    let rows = r
        .phases
        .iter()
        .map(|p| {
            let get = |w: &str| p.workloads.get(w);
            vec![
                p.phase.name.clone(),
                p.connections.to_string(),
                get("echo").map_or("-".into(), |x| ms(x.p99_us)),
                get("fanout").map_or("-".into(), |x| ms(x.p99_us)),
                format!("{:.0}", get("echo").map_or(0.0, |x| x.per_s)),
                format!("{:.0}", get("fanout").map_or(0.0, |x| x.per_s)),
                p.errors.to_string(),
                p.cpu
                    .map_or("-".into(), |c| format!("{:.2}", c.server_cores)),
                p.cpu
                    .map_or("-".into(), |c| format!("{:.2}", c.client_cores)),
                format!("{} ({})", p.verdict.grade.as_str(), p.verdict.criterion),
            ]
        })
        .collect();
    b.push(Block::table(
        [
            "phase",
            "connections",
            "echo p99 (ms)",
            "fanout p99 (ms)",
            "echo/s",
            "deliveries/s",
            "errors",
            "server cores",
            "loadtest cores",
            "grade",
        ],
        rows,
    ));
}

fn scenario_summary(b: &mut Vec<Block>, r: &RunResult) {
    if let Some(st) = &r.stress {
        b.push(Block::Heading(2, "Stress".into()));
        b.push(Block::Para(format!(
            "Highest step graded ≥ B: {} ({} connections); max fan-out deliveries/s {:.0}; max echo round trips/s {:.0}. {}",
            st.max_sustained_step.as_deref().unwrap_or("none"),
            st.max_sustained_connections,
            st.max_fanout_deliveries_per_s,
            st.max_echo_round_trips_per_s,
            st.broken_step.as_ref().map_or_else(
                || "Every step held.".to_string(),
                |b| format!("Stopped after {b}, the first step below B.")
            )
        )));
        if let Some(sat) = &st.saturation {
            b.push(Block::Para(saturation_line(sat)));
        }
    }
    if let Some(sp) = &r.spike {
        b.push(Block::Heading(2, "Spike".into()));
        b.push(Block::Para(format!(
            "Pre-spike p99 {} ms; during the spike p95 {} ms, p99 {} ms; recovered to the pre-spike p99 {}.",
            ms(sp.pre_spike_p99_us),
            ms(sp.spike_p95_us),
            ms(sp.spike_p99_us),
            sp.recovery_s.map_or("never (within the run)".into(), |t| format!("{t} s after the spike"))
        )));
        if let Some(sat) = &sp.saturation {
            b.push(Block::Para(saturation_line(sat)));
        }
    }
}

/// "Saturated: the client (in step4x8): ..." for a stress step or the spike.
pub fn saturation_line(sat: &crate::result::Saturation) -> String {
    format!(
        "**Saturated: {}** (in {}): {}.",
        match sat.side.as_str() {
            "machine" => "the shared machine",
            "client" => "the client (loadtest)",
            _ => "the server",
        },
        sat.phase,
        sat.reason
    )
}

fn server_side(b: &mut Vec<Block>, r: &RunResult) {
    let Some(side) = &r.server_metrics else {
        return;
    };
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
    b.push(Block::Heading(
        2,
        "The server's own figures (its /metrics)".into(),
    ));
    let listed = |m: &BTreeMap<String, u64>| match m.is_empty() {
        true => "none".to_string(),
        false => m
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    b.push(Block::Para(format!(
        "{} deliveries; server-side delivery (publish read → frame written) p50 {} ms, p99 {} ms; {} error replies. Dropped: {}. Closed: {}.",
        side.deliveries,
        ms(side.delivery_p50_ms),
        ms(side.delivery_p99_ms),
        side.errors,
        listed(&side.drops),
        listed(&side.closes)
    )));
}

fn resources(b: &mut Vec<Block>, r: &RunResult) {
    b.push(Block::Heading(2, "Resources".into()));
    b.push(Block::Para(match &r.server {
        Some(sv) => format!(
            "Server (pid {}): {:.1} µs CPU per completed message; RSS {} → {} KiB (max {}); open files {} → {}.",
            sv.pid, sv.cpu_us_per_message, sv.rss_kib_start, sv.rss_kib_end, sv.rss_kib_max, sv.open_files_start, sv.open_files_end
        ),
        None => "Server usage unknown (no process found listening on the target's port: pass --server-pid).".into(),
    }));
    b.push(Block::Para(format!(
        "Client: {:.1} µs CPU per completed message, {:.2} cores used over {} process(es){}.",
        r.client.cpu_us_per_message,
        r.client.cores_used,
        r.client.processes,
        if r.client.client_bound {
            "; **client_bound**: the machine was saturated and the client took a large share"
        } else {
            ""
        }
    )));
    if let Some(i) = &r.interference {
        b.push(Block::Para(interference_line(i)));
    }
}

pub(super) fn interference_line(i: &crate::noise::Interference) -> String {
    format!(
        "Interference (other processes and steal, while the phases ran): mean {:.2} cores, \
         max {:.2} (steal max {:.2}); {} of {} seconds above {} cores (bound: {:.0} % of them).",
        i.others_cores_mean + i.steal_cores_mean,
        i.others_cores_max,
        i.steal_cores_max,
        i.noisy_seconds,
        i.seconds,
        i.bound_cores,
        i.bound_share * 100.0
    )
}

/// "How the grade was set": per criterion, the measured value, each grade's limit, the grade it
/// met; the criterion that set the run's grade in bold.
fn explain_grade(b: &mut Vec<Block>, r: &RunResult) {
    let Some(grading) = &r.grading else {
        return;
    };
    b.push(Block::Heading(2, "How the grade was set".into()));
    if r.stress.is_some() {
        b.push(Block::Para(
            "Stress is judged by its highest step graded at least B (see Phases); the whole run's \
             figures against the limits:"
                .into(),
        ));
    }
    let grades = crate::grade::Grade::LIMITED;
    let mut head = vec!["criterion".to_string(), "measured".to_string()];
    head.extend(grades.iter().map(|g| g.as_str().to_string()));
    head.push("met".into());
    let rows = grading
        .criteria(&r.measured)
        .into_iter()
        .map(|((name, value, limit), met)| {
            let bold = |s: String| match name == r.verdict.criterion {
                true => format!("**{s}**"),
                false => s,
            };
            let mut row = vec![
                bold(name.trim_end_matches("_us").to_string()),
                in_units(name, value),
            ];
            row.extend(
                grades
                    .iter()
                    .map(|g| format!("≤ {}", in_units(name, limit(&grading.limits[g])))),
            );
            row.push(bold(met.as_str().to_string()));
            row
        })
        .collect();
    b.push(Block::Table { head, rows });
    b.push(Block::Para(format!(
        "Required: {}. Latencies are the worst workload's, from the intended send time.",
        grading.required.as_str()
    )));
}
