//! `result.json`: everything a run measured, in the schema documented in `loadtest/RESULTS.md`.
//! Reports are rendered from this file alone, so `loadtest report` can redo them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::grade::{Measured, Verdict};
use crate::scenario::{Phase, Scenario};

/// Version of this schema; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub schema: u32,
    pub scenario: String,
    pub started_utc: String,
    pub duration_s: f64,
    pub duration_scale: f64,
    pub target: String,
    pub spawned_server: bool,
    pub config: Scenario,
    pub git_commit: String,
    pub machine: Machine,
    pub workloads: BTreeMap<String, WorkloadResult>,
    pub phases: Vec<PhaseResult>,
    pub series: Vec<SecondPoint>,
    pub server: Option<ServerUsage>,
    pub client: ClientUsage,
    pub measured: Measured,
    pub verdict: Verdict,
    pub stress: Option<StressSummary>,
    pub spike: Option<SpikeSummary>,
    /// How the queue group shared the tasks (with a group workload).
    #[serde(default)]
    pub group: Option<GroupShares>,
    /// With the reliable workload: what was confirmed, delivered and lost, and the fault
    /// injected (`--fault kill9`).
    #[serde(default)]
    pub reliable: Option<crate::reliable::FaultReport>,
    /// The server's own figures from its `/metrics` (a wsedge target), over the whole run.
    #[serde(default)]
    pub server_metrics: Option<crate::scrape::ServerSide>,
    /// Other processes' CPU and steal while the run measured, and whether that (or a
    /// client-bound run) makes the grade inconclusive.
    #[serde(default)]
    pub interference: Option<crate::noise::Interference>,
    /// Stopped by Ctrl-C before its end: the phases that finished are reported, the run is not
    /// graded as a whole one.
    #[serde(default)]
    pub interrupted: bool,
    /// The grading table the run was graded by (for the report's explanation).
    #[serde(default)]
    pub grading: Option<crate::grade::ScenarioGrading>,
    /// `--set key=value` overrides the run was given (`config` is the scenario with them).
    #[serde(default)]
    pub overrides: Vec<String>,
}

impl RunResult {
    /// Why the grade does not measure the server, if it does not.
    pub fn inconclusive(&self) -> Option<&str> {
        self.interference.as_ref()?.inconclusive.as_deref()
    }
}

/// How evenly a queue group's members took the tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupShares {
    pub members: usize,
    pub tasks: u64,
    /// Fewest and most tasks one member took, and what an even share would be.
    pub min: u64,
    pub max: u64,
    pub even: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_kib: u64,
    pub kernel: String,
    pub cpu: String,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub samples: u64,
    /// From the intended send time (what grades the run: a stalled client or server cannot
    /// hide a stall).
    pub latency_us: Percentiles,
    /// From the actual send time: without the client's own timer lag (echo, fan-out, direct
    /// and group; null for the others and for older results).
    #[serde(default)]
    pub latency_from_send_us: Option<Percentiles>,
    /// (percentile, µs) points of the whole latency distribution, for the percentile plot.
    pub curve: Vec<(f64, u64)>,
    /// Completed operations per second over the measured phases.
    pub throughput_per_s: f64,
    pub sent: u64,
    pub received: u64,
    pub late_sends: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    pub phase: Phase,
    pub connections: u64,
    /// Per workload: p95, p99 and operations per second within the phase.
    pub workloads: BTreeMap<String, PhaseWorkload>,
    pub errors: u64,
    pub verdict: Verdict,
    /// CPU the server, loadtest and other processes used in the phase (null in older results).
    #[serde(default)]
    pub cpu: Option<PhaseCpu>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PhaseWorkload {
    pub p95_us: u64,
    pub p99_us: u64,
    pub per_s: f64,
}

/// The CPU a phase used, in cores (means over its whole seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseCpu {
    pub server_cores: f64,
    pub client_cores: f64,
    pub others_cores: f64,
}

/// Which side ran out in a phase, and why that answer (`crate::saturation` has the rules).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saturation {
    pub phase: String,
    /// `server`, `client` or `machine`.
    pub side: String,
    pub reason: String,
    pub cpu: PhaseCpu,
    pub cores: usize,
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondPoint {
    pub t: u64,
    /// Per workload: completed operations and p99 (µs) in this second.
    pub ops: BTreeMap<String, u64>,
    pub p99_us: BTreeMap<String, u64>,
    pub errors: u64,
    pub server_rss_kib: Option<u64>,
    pub server_cpu_pct: Option<f64>,
    pub server_open_files: Option<u64>,
    /// The server's own figures for this second (from `/metrics`).
    #[serde(default)]
    pub server: Option<crate::scrape::ServerSide>,
    /// Other processes' CPU, steal and loadtest's own CPU in this second.
    #[serde(default)]
    pub interference: Option<crate::noise::Second>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerUsage {
    pub pid: u32,
    pub cpu_us: u64,
    /// Server CPU per completed operation (echo round trip, delivery, churn cycle).
    pub cpu_us_per_message: f64,
    pub rss_kib_start: u64,
    pub rss_kib_end: u64,
    pub rss_kib_max: u64,
    pub open_files_start: u64,
    pub open_files_end: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientUsage {
    pub cpu_us: u64,
    pub cpu_us_per_message: f64,
    /// Client CPU time / wall time, in cores.
    pub cores_used: f64,
    /// True when the machine was saturated and the client took a large share of it: the
    /// figures may measure the client rather than the server.
    pub client_bound: bool,
    /// Load-generating processes (the run was split over them; CPU is their sum).
    #[serde(default = "one")]
    pub processes: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StressSummary {
    /// The first step graded below B: the run stopped after it (`None`: every step held).
    #[serde(default)]
    pub broken_step: Option<String>,
    /// The last step graded at least B, if any.
    pub max_sustained_step: Option<String>,
    pub max_sustained_connections: u64,
    pub max_fanout_deliveries_per_s: f64,
    pub max_echo_round_trips_per_s: f64,
    /// Which side ran out at the step that broke (or the last step, if none broke).
    #[serde(default)]
    pub saturation: Option<Saturation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpikeSummary {
    pub pre_spike_p99_us: u64,
    pub spike_p99_us: u64,
    pub spike_p95_us: u64,
    /// Seconds after the spike until a second's p99 is back to the pre-spike p99 (None: never).
    pub recovery_s: Option<u64>,
    /// Which side ran out during the spike.
    #[serde(default)]
    pub saturation: Option<Saturation>,
}

impl RunResult {
    pub fn load(path: &std::path::Path) -> anyhow::Result<RunResult> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let result: RunResult = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a loadtest result: {e}", path.display()))?;
        anyhow::ensure!(
            result.schema == SCHEMA_VERSION,
            "{}: schema {} (expected {SCHEMA_VERSION})",
            path.display(),
            result.schema
        );
        Ok(result)
    }
}
