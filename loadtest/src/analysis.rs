//! Turning a run's histograms, counters and /proc samples into a graded [`RunResult`]:
//! percentiles, phases, the per-second series, stress and spike summaries, and the machine.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::grade::{Grade, Measured, Verdict};
use crate::options::Options;
use crate::proc::Usage;
use crate::result::*;
use crate::scenario::{Phase, Shape};
use crate::stats::{self, worst_quantile, Counts, Second, Workload};

pub struct Assembly<'a> {
    pub opts: &'a Options,
    pub url: String,
    pub started_utc: String,
    pub wall: Duration,
    pub phases: Vec<Phase>,
    pub latency: BTreeMap<Workload, Histogram<u64>>,
    pub counts: BTreeMap<Workload, Counts>,
    pub seconds: Vec<Second>,
    pub samples: Vec<Option<Usage>>,
    /// The server's `/metrics`, once a second (empty when it has none).
    pub scrapes: Vec<Option<crate::scrape::Scrape>>,
    /// The machine's interference, once a second.
    pub noise: Vec<Option<crate::noise::Second>>,
    pub server_metrics: Option<crate::scrape::ServerSide>,
    pub server_pid: Option<u32>,
    pub server_before: Option<Usage>,
    pub server_after: Option<Usage>,
    pub client_cpu: u64,
    /// Load-generating processes.
    pub processes: usize,
    /// Tasks each queue group member took (empty without a group workload).
    pub group_shares: Vec<u64>,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p95: h.value_at_quantile(0.95),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

const CURVE: [f64; 12] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99, 99.999, 100.0,
];

/// The run's verdict. Stress is meant to break: it is judged by its highest step that held grade
/// B (or by its first step when none did); the other scenarios by the whole run.
pub fn overall_verdict(shape: Shape, phases: &[PhaseResult], whole: Verdict) -> Verdict {
    if shape != Shape::Steps {
        return whole;
    }
    phases
        .iter()
        .filter(|p| p.verdict.grade.meets(Grade::B))
        .max_by_key(|p| p.phase.multiplier)
        .or(phases.first())
        .map_or(whole, |p| p.verdict.clone())
}

pub fn assemble(a: Assembly<'_>) -> RunResult {
    // Throughput counts what arrived within the measured phases' whole seconds (not the ramp's
    // or the drain's), over those seconds.
    let in_phases: Vec<&Second> = a
        .phases
        .iter()
        .flat_map(|p| seconds_of(p, &a.seconds))
        .collect();
    let measured_s = in_phases.len().max(1) as f64;
    let received_in = |w: Workload| -> u64 {
        in_phases
            .iter()
            .filter_map(|s| s.counts.get(&w))
            .map(|c| c.received)
            .sum()
    };
    let mut workloads = BTreeMap::new();
    for w in Workload::ALL {
        let (Some(h), c) = (
            a.latency.get(&w),
            a.counts.get(&w).cloned().unwrap_or_default(),
        ) else {
            if let Some(c) = a.counts.get(&w) {
                let per_s = received_in(w) as f64 / measured_s;
                workloads.insert(
                    w.name().to_string(),
                    workload_result(None, c.clone(), per_s),
                );
            }
            continue;
        };
        let per_s = received_in(w) as f64 / measured_s;
        let mut result = workload_result(Some(h), c, per_s);
        result.latency_from_send_us = w
            .from_send()
            .and_then(|f| a.latency.get(&f))
            .map(percentiles);
        workloads.insert(w.name().to_string(), result);
    }
    let measured = measure(&a.latency, &a.counts);
    let series = series(&a.seconds, &a.samples, &a.scrapes, &a.noise);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let phases: Vec<PhaseResult> = a
        .phases
        .iter()
        .map(|p| PhaseResult {
            cpu: Some(PhaseCpu::of(&series, p.start_s, p.end_s)),
            ..phase_result(a.opts, p, &a.seconds)
        })
        .collect();
    let verdict = overall_verdict(
        a.opts.scenario.shape,
        &phases,
        a.opts.grading.grade(&measured),
    );
    let wall_us = a.wall.as_micros().max(1) as u64;
    let completed: u64 = a.counts.values().map(|c| c.received).sum::<u64>().max(1);
    let server = match (a.server_pid, a.server_before, a.server_after) {
        (Some(pid), Some(before), Some(after)) => {
            let cpu_us = after.cpu_us.saturating_sub(before.cpu_us);
            Some(ServerUsage {
                pid,
                cpu_us,
                cpu_us_per_message: cpu_us as f64 / completed as f64,
                rss_kib_start: before.rss_kib,
                rss_kib_end: after.rss_kib,
                rss_kib_max: a
                    .samples
                    .iter()
                    .flatten()
                    .map(|u| u.rss_kib)
                    .max()
                    .unwrap_or(after.rss_kib),
                open_files_start: before.open_files,
                open_files_end: after.open_files,
            })
        }
        _ => None,
    };
    let client_cores = a.client_cpu as f64 / wall_us as f64;
    // Client-bound when a graded phase was: for stress, one it sustained (the step that broke
    // is expected to saturate something; its `saturation` says what).
    let stress_shape = a.opts.scenario.shape == Shape::Steps;
    let client_bound = phases.iter().any(|p| {
        (!stress_shape || p.verdict.grade.meets(Grade::B))
            && p.cpu.is_some_and(|c| c.client_bound(cores))
    });
    let client = ClientUsage {
        cpu_us: a.client_cpu,
        cpu_us_per_message: a.client_cpu as f64 / completed as f64,
        cores_used: client_cores,
        client_bound,
        processes: a.processes,
    };
    // Interference over the measured phases' seconds.
    let noisy: Vec<crate::noise::Second> = a
        .phases
        .iter()
        .flat_map(|p| {
            let (from, to) = whole_seconds(p, a.noise.len());
            a.noise[from..to].iter().flatten().copied()
        })
        .collect();
    let interference = crate::noise::Interference::of(&noisy, client.client_bound);
    let errors: BTreeMap<String, u64> = a.counts.values().fold(BTreeMap::new(), |mut all, c| {
        for (k, n) in &c.errors {
            *all.entry(k.clone()).or_default() += n;
        }
        all
    });
    let saturation = |name: &str| {
        let phase = phases.iter().find(|p| p.phase.name == name)?;
        Some(crate::saturation::of(
            phase,
            &series,
            &errors,
            cores,
            a.opts.shards,
        ))
    };
    let stress = stress_shape.then(|| {
        let mut summary = stress_summary(&phases);
        let last = phases.last().map(|p| p.phase.name.clone());
        summary.saturation = summary
            .broken_step
            .clone()
            .or(last)
            .and_then(|n| saturation(&n));
        summary
    });
    let spike = (a.opts.scenario.shape == Shape::Spike).then(|| SpikeSummary {
        saturation: saturation("spike"),
        ..spike_summary(&a.phases, &a.seconds)
    });
    RunResult {
        schema: SCHEMA_VERSION,
        scenario: a.opts.scenario_name.clone(),
        started_utc: a.started_utc,
        duration_s: a.wall.as_secs_f64(),
        duration_scale: a.opts.duration_scale,
        target: a.url,
        spawned_server: a.opts.target.is_none(),
        config: a.opts.scenario.clone(),
        git_commit: git_commit(),
        machine: machine(),
        workloads,
        phases,
        series,
        server,
        client,
        measured,
        verdict,
        stress,
        spike,
        group: group_shares(&a.group_shares),
        reliable: None,
        server_metrics: a.server_metrics,
        interference: Some(interference),
        interrupted: false,
        grading: Some(a.opts.grading.clone()),
        overrides: a.opts.overrides.clone(),
    }
}

fn group_shares(shares: &[u64]) -> Option<GroupShares> {
    let tasks: u64 = shares.iter().sum();
    Some(GroupShares {
        members: shares.len(),
        tasks,
        min: *shares.iter().min()?,
        max: *shares.iter().max()?,
        even: tasks as f64 / shares.len() as f64,
    })
}

fn workload_result(h: Option<&Histogram<u64>>, c: Counts, per_s: f64) -> WorkloadResult {
    WorkloadResult {
        samples: h.map_or(0, |h| h.len()),
        latency_us: h.map(percentiles).unwrap_or_default(),
        latency_from_send_us: None,
        curve: h.map_or_else(Vec::new, |h| {
            CURVE
                .iter()
                .map(|&p| (p, h.value_at_percentile(p)))
                .collect()
        }),
        throughput_per_s: per_s,
        sent: c.sent,
        received: c.received,
        late_sends: c.late,
        lost: c.lost,
        duplicated: c.duplicated,
        out_of_order: c.out_of_order,
        errors: c.errors,
    }
}

/// Grading inputs: the worst latency workload's p95/p99, errors per operation, loss per delivery.
fn measure(
    latency: &BTreeMap<Workload, Histogram<u64>>,
    counts: &BTreeMap<Workload, Counts>,
) -> Measured {
    let ops: u64 = counts.values().map(|c| c.sent.max(c.received)).sum();
    let errors: u64 = counts.values().map(Counts::error_total).sum();
    let mut fan = Counts::default();
    for w in Workload::DELIVERY {
        if let Some(c) = counts.get(&w) {
            fan.merge(c);
        }
    }
    let expected = fan.received + fan.lost;
    Measured {
        p95_us: worst_quantile(latency, 0.95) as f64,
        p99_us: worst_quantile(latency, 0.99) as f64,
        error_rate: if ops == 0 {
            1.0
        } else {
            errors as f64 / ops as f64
        },
        loss_rate: if expected == 0 {
            0.0
        } else {
            (fan.lost + fan.duplicated + fan.out_of_order) as f64 / expected as f64
        },
    }
}

/// The indices of the whole seconds inside a phase, of `len` seconds.
fn whole_seconds(p: &Phase, len: usize) -> (usize, usize) {
    let from = (p.start_s.ceil() as usize).min(len);
    let to = (p.end_s.floor() as usize).clamp(from, len);
    (from, to)
}

/// The seconds a phase covers (whole seconds inside it).
fn seconds_of<'a>(p: &Phase, seconds: &'a [Second]) -> &'a [Second] {
    let (from, to) = whole_seconds(p, seconds.len());
    &seconds[from..to]
}

fn merged(
    seconds: &[Second],
) -> (
    BTreeMap<Workload, Histogram<u64>>,
    BTreeMap<Workload, Counts>,
) {
    let (mut latency, mut counts) = (BTreeMap::new(), BTreeMap::new());
    for s in seconds {
        stats::add_latency(&mut latency, &s.latency);
        stats::add_counts(&mut counts, &s.counts);
    }
    (latency, counts)
}

/// A phase's statistics and grade, from the seconds inside it.
pub fn phase_result(opts: &Options, p: &Phase, seconds: &[Second]) -> PhaseResult {
    let secs = seconds_of(p, seconds);
    let (latency, counts) = merged(secs);
    let n = secs.len().max(1) as f64;
    let workloads = Workload::ALL
        .iter()
        .filter_map(|w| {
            let h = latency.get(w)?;
            let per_s = counts.get(w).map_or(0, |c| c.received) as f64 / n;
            Some((
                w.name().to_string(),
                PhaseWorkload {
                    p95_us: h.value_at_quantile(0.95),
                    p99_us: h.value_at_quantile(0.99),
                    per_s,
                },
            ))
        })
        .collect();
    PhaseResult {
        phase: p.clone(),
        connections: (opts.scenario.base_users() * p.multiplier) as u64,
        workloads,
        errors: counts.values().map(Counts::error_total).sum(),
        verdict: opts.grading.grade(&measure(&latency, &counts)),
        cpu: None,
    }
}

fn series(
    seconds: &[Second],
    samples: &[Option<Usage>],
    scrapes: &[Option<crate::scrape::Scrape>],
    noise: &[Option<crate::noise::Second>],
) -> Vec<SecondPoint> {
    seconds
        .iter()
        .enumerate()
        .map(|(t, s)| {
            let usage = samples.get(t).copied().flatten();
            let previous = t
                .checked_sub(1)
                .and_then(|i| samples.get(i).copied().flatten());
            SecondPoint {
                t: t as u64,
                ops: s
                    .counts
                    .iter()
                    .map(|(w, c)| (w.name().to_string(), c.received))
                    .collect(),
                p99_us: s
                    .latency
                    .iter()
                    .filter(|(w, _)| Workload::ALL.contains(w))
                    .map(|(w, h)| (w.name().to_string(), h.value_at_quantile(0.99)))
                    .collect(),
                errors: s.counts.values().map(Counts::error_total).sum(),
                server_rss_kib: usage.map(|u| u.rss_kib),
                server_cpu_pct: usage
                    .zip(previous)
                    .map(|(u, p)| u.cpu_us.saturating_sub(p.cpu_us) as f64 / 1e4),
                server_open_files: usage.map(|u| u.open_files),
                server: t
                    .checked_sub(1)
                    .and_then(|i| scrapes.get(i)?.as_ref().zip(scrapes.get(t)?.as_ref()))
                    .map(|(then, now)| crate::scrape::between(then, now)),
                interference: noise.get(t).copied().flatten(),
            }
        })
        .collect()
}

fn stress_summary(phases: &[PhaseResult]) -> StressSummary {
    let sustained: Vec<&PhaseResult> = phases
        .iter()
        .filter(|p| p.verdict.grade.meets(Grade::B))
        .collect();
    let best = sustained.iter().max_by_key(|p| p.phase.multiplier);
    let per_s = |p: &PhaseResult, w: &str| p.workloads.get(w).map_or(0.0, |x| x.per_s);
    StressSummary {
        broken_step: phases
            .iter()
            .find(|p| !p.verdict.grade.meets(Grade::B))
            .map(|p| p.phase.name.clone()),
        max_sustained_step: best.map(|p| p.phase.name.clone()),
        max_sustained_connections: best.map_or(0, |p| p.connections),
        max_fanout_deliveries_per_s: sustained
            .iter()
            .map(|p| per_s(p, "fanout"))
            .fold(0.0, f64::max),
        max_echo_round_trips_per_s: sustained
            .iter()
            .map(|p| per_s(p, "echo"))
            .fold(0.0, f64::max),
        saturation: None,
    }
}

fn spike_summary(phases: &[Phase], seconds: &[Second]) -> SpikeSummary {
    let find = |name: &str| phases.iter().find(|p| p.name == name).cloned();
    let (before, spike) = (find("before").unwrap(), find("spike").unwrap());
    let (pre, _) = merged(seconds_of(&before, seconds));
    let (during, _) = merged(seconds_of(&spike, seconds));
    let pre_p99 = worst_quantile(&pre, 0.99);
    let end = spike.end_s.ceil() as usize;
    let recovery_s = seconds
        .iter()
        .enumerate()
        .skip(end)
        .find(|(_, s)| !s.latency.is_empty() && worst_quantile(&s.latency, 0.99) <= pre_p99)
        .map(|(t, _)| (t - end) as u64);
    SpikeSummary {
        pre_spike_p99_us: pre_p99,
        spike_p99_us: worst_quantile(&during, 0.99),
        spike_p95_us: worst_quantile(&during, 0.95),
        recovery_s,
        saturation: None,
    }
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
}

fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_kib: read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        cpu: read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map_or_else(String::new, |v| {
                v.trim_start_matches([' ', '\t', ':']).to_string()
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(multiplier: u32, grade: Grade) -> PhaseResult {
        let verdict = Verdict {
            grade,
            criterion: "p99_us".into(),
            value: 0.0,
            required: Grade::B,
            passed: grade <= Grade::B,
        };
        PhaseResult {
            phase: Phase {
                name: format!("x{multiplier}"),
                multiplier,
                start_s: 0.0,
                end_s: 1.0,
            },
            connections: 0,
            workloads: BTreeMap::new(),
            errors: 0,
            verdict,
            cpu: None,
        }
    }

    #[test]
    fn stress_is_judged_by_its_highest_sustained_step() {
        let whole = phase(1, Grade::F).verdict;
        let steps = [
            phase(1, Grade::APlus),
            phase(2, Grade::B),
            phase(4, Grade::F),
        ];
        assert_eq!(
            overall_verdict(Shape::Steps, &steps, whole.clone()).grade,
            Grade::B
        );
        let broken = [phase(1, Grade::C), phase(2, Grade::F)];
        assert_eq!(
            overall_verdict(Shape::Steps, &broken, whole.clone()).grade,
            Grade::C
        );
        assert_eq!(
            overall_verdict(Shape::Steady, &steps, whole).grade,
            Grade::F
        );
    }
}
