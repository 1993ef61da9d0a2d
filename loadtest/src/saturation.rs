//! Who ran out first: for a phase (a stress step that broke, a spike), the CPU the server, the
//! load generator and other processes used in its seconds, and from that and the errors which
//! side saturated. On one machine the server and loadtest share the cores, so "the machine" is
//! an answer too; each rule below is checked in order and the first that holds names the side.
//!
//! 1. Connection errors: refusals by the server (an HTTP status, a reset) → `server`; the
//!    client's own limits (open files, source ports) → `client`.
//! 2. loadtest used at least 85 % of the machine's cores → `client`.
//! 3. The server used at least 85 % of its shards' cores → `server`.
//! 4. Together with other processes they used at least 75 % of the cores → `machine` (the side
//!    that used more is named in the reason): means over a phase's seconds hide the bursts in
//!    which both want the cores at once.
//! 5. No CPU ran out: if the server's own delivery p99 (from its `/metrics`) is at least half
//!    the client's p99, the time was spent in the server → `server`; else outside it (the
//!    client's reading, the kernel between them) → `client`.

use std::collections::BTreeMap;

use crate::result::{PhaseCpu, PhaseResult, Saturation, SecondPoint};

/// A share of the cores that counts as all of them (time slices, sampling).
const FULL: f64 = 0.85;
/// The share of the machine that counts as full when the server and loadtest share it: a
/// phase's per-second means hide the bursts in which both want the cores at once.
const SHARED_FULL: f64 = 0.75;

/// The whole seconds of `series` inside `from..to` (at least the first).
fn seconds(series: &[SecondPoint], from: f64, to: f64) -> impl Iterator<Item = &SecondPoint> {
    let (first, end) = (from.ceil(), to.floor().max(from.ceil() + 1.0));
    series
        .iter()
        .filter(move |p| (first..end).contains(&(p.t as f64)))
}

impl PhaseCpu {
    /// Means over the seconds `from..to` of the series.
    pub fn of(series: &[SecondPoint], from: f64, to: f64) -> PhaseCpu {
        let inside: Vec<&SecondPoint> = seconds(series, from, to).collect();
        let mean = |f: &dyn Fn(&SecondPoint) -> Option<f64>| {
            let v: Vec<f64> = inside.iter().filter_map(|p| f(p)).collect();
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        PhaseCpu {
            server_cores: mean(&|p| Some(p.server_cpu_pct? / 100.0)),
            client_cores: mean(&|p| Some(p.interference?.client_cores)),
            others_cores: mean(&|p| p.interference.map(|i| i.others_cores + i.steal_cores)),
        }
    }

    /// Whether loadtest was the bottleneck: the machine was full and loadtest took a large
    /// share of it.
    pub fn client_bound(&self, cores: usize) -> bool {
        let cores = cores as f64;
        self.client_cores + self.server_cores >= 0.9 * cores && self.client_cores >= 0.4 * cores
    }
}

/// Applies the rules of this module to `phase`. `errors` are the run's errors by kind (the
/// breaking step's are the bulk of them); `shards` the server's (0: one per core).
pub fn of(
    phase: &PhaseResult,
    series: &[SecondPoint],
    errors: &BTreeMap<String, u64>,
    cores: usize,
    shards: usize,
) -> Saturation {
    let cpu = PhaseCpu::of(series, phase.phase.start_s, phase.phase.end_s);
    let shards = if shards == 0 {
        cores
    } else {
        shards.min(cores)
    } as f64;
    let total = cpu.server_cores + cpu.client_cores + cpu.others_cores;
    let used = format!(
        "server {:.2} cores, loadtest {:.2}, others {:.2}, of {cores}",
        cpu.server_cores, cpu.client_cores, cpu.others_cores
    );
    let (side, reason) = if let Some((side, kind)) = connection_errors(phase, errors) {
        (side, format!("connections failed ({kind}); {used}"))
    } else if cpu.client_cores >= FULL * cores as f64 {
        ("client", format!("loadtest used the cores: {used}"))
    } else if cpu.server_cores >= FULL * shards {
        (
            "server",
            format!("the server used its {shards} shards' cores: {used}"),
        )
    } else if total >= SHARED_FULL * cores as f64 {
        let more = if cpu.server_cores >= cpu.client_cores {
            "the server"
        } else {
            "loadtest"
        };
        (
            "machine",
            format!("the shared cores ran out, {more} using more: {used}"),
        )
    } else {
        latency_side(phase, series, &used)
    };
    Saturation {
        phase: phase.phase.name.clone(),
        side: side.into(),
        reason,
        cpu,
        cores,
    }
}

/// Rule 1: the most frequent connection error, if the phase had errors.
fn connection_errors(
    phase: &PhaseResult,
    errors: &BTreeMap<String, u64>,
) -> Option<(&'static str, String)> {
    if phase.errors == 0 {
        return None;
    }
    let (kind, _) = errors
        .iter()
        .filter(|(k, _)| k.starts_with("connect"))
        .max_by_key(|(_, n)| **n)?;
    let client_side = [
        "Too many open files",
        "Cannot assign requested address",
        "os error 24",
        "os error 99",
    ];
    let side = if client_side.iter().any(|c| kind.contains(c)) {
        "client"
    } else {
        "server"
    };
    Some((side, kind.clone()))
}

/// Rule 5: where the latency was spent when no CPU ran out.
fn latency_side(phase: &PhaseResult, series: &[SecondPoint], used: &str) -> (&'static str, String) {
    let server = seconds(series, phase.phase.start_s, phase.phase.end_s)
        .filter_map(|p| p.server.as_ref()?.delivery_p99_ms)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let client = phase
        .workloads
        .values()
        .map(|w| w.p99_us as f64 / 1000.0)
        .fold(0.0, f64::max);
    match server {
        Some(s) if s >= client / 2.0 => (
            "server",
            format!("no CPU ran out; the server's own delivery p99 reached {s:.1} ms of the client's {client:.1} ms; {used}"),
        ),
        Some(s) => (
            "client",
            format!("no CPU ran out; the server's own delivery p99 stayed at {s:.1} ms while the client read {client:.1} ms: the time was spent outside the server; {used}"),
        ),
        None => (
            "server",
            format!("no CPU ran out and the server's /metrics were not available; {used}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grade::{Grade, Verdict};
    use crate::noise::Second;
    use crate::result::PhaseWorkload;
    use crate::scenario::Phase;

    fn phase(errors: u64, p99_ms: u64) -> PhaseResult {
        PhaseResult {
            phase: Phase {
                name: "step4x8".into(),
                multiplier: 8,
                start_s: 2.0,
                end_s: 5.0,
            },
            connections: 8000,
            workloads: [(
                "fanout".to_string(),
                PhaseWorkload {
                    p95_us: p99_ms * 500,
                    p99_us: p99_ms * 1000,
                    per_s: 1.0,
                },
            )]
            .into(),
            errors,
            verdict: Verdict {
                grade: Grade::D,
                criterion: "p99_us".into(),
                value: 0.0,
                required: Grade::B,
                passed: false,
            },
            cpu: None,
        }
    }

    /// Seconds 0..8; seconds 2..5 (the phase) with the given cores and server delivery p99.
    fn series(server: f64, client: f64, others: f64, server_p99_ms: f64) -> Vec<SecondPoint> {
        (0..8)
            .map(|t| {
                let inside = (2..5).contains(&t);
                let pick = |v: f64| if inside { v } else { 0.1 };
                SecondPoint {
                    t,
                    ops: BTreeMap::new(),
                    p99_us: BTreeMap::new(),
                    errors: 0,
                    server_rss_kib: None,
                    server_cpu_pct: Some(pick(server) * 100.0),
                    server_open_files: None,
                    server: Some(crate::scrape::ServerSide {
                        delivery_p99_ms: Some(pick(server_p99_ms)),
                        ..Default::default()
                    }),
                    interference: Some(Second {
                        others_cores: pick(others),
                        steal_cores: 0.0,
                        client_cores: pick(client),
                    }),
                }
            })
            .collect()
    }

    fn side(p: &PhaseResult, s: &[SecondPoint], errors: &[(&str, u64)]) -> String {
        let errors = errors.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        of(p, s, &errors, 2, 0).side
    }

    #[test]
    fn each_rule_names_its_side() {
        let quiet = series(0.5, 0.5, 0.0, 1.0);
        let refused = [("connect: upgrade refused: HTTP/1.1 503", 40)];
        assert_eq!(side(&phase(40, 90), &quiet, &refused), "server");
        let emfile = [("connect: Too many open files (os error 24)", 40)];
        assert_eq!(side(&phase(40, 90), &quiet, &emfile), "client");
        assert_eq!(
            side(&phase(0, 90), &series(0.2, 1.8, 0.0, 1.0), &[]),
            "client"
        );
        assert_eq!(
            side(&phase(0, 90), &series(1.8, 0.1, 0.0, 1.0), &[]),
            "server"
        );
        let shared = series(0.8, 0.6, 0.1, 1.0);
        assert_eq!(side(&phase(0, 90), &shared, &[]), "machine");
        assert!(of(&phase(0, 90), &shared, &BTreeMap::new(), 2, 0)
            .reason
            .contains("the server using more"));
        // No CPU ran out: where the latency was spent.
        assert_eq!(
            side(&phase(0, 90), &series(0.5, 0.5, 0.0, 60.0), &[]),
            "server"
        );
        assert_eq!(
            side(&phase(0, 90), &series(0.5, 0.5, 0.0, 2.0), &[]),
            "client"
        );
    }

    #[test]
    fn phase_cpu_is_the_mean_over_the_phase_seconds_only() {
        let cpu = PhaseCpu::of(&series(1.2, 0.6, 0.2, 1.0), 2.0, 5.0);
        assert!((cpu.server_cores - 1.2).abs() < 1e-9, "{cpu:?}");
        assert!((cpu.client_cores - 0.6).abs() < 1e-9);
        assert!((cpu.others_cores - 0.2).abs() < 1e-9);
        assert!(!cpu.client_bound(2));
        assert!(PhaseCpu::of(&series(1.0, 0.9, 0.0, 1.0), 2.0, 5.0).client_bound(2));
    }
}
