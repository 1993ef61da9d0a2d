//! What `loadtest run` was asked, shared by the run, its workers and the analysis.

use std::path::PathBuf;

use crate::grade::ScenarioGrading;
use crate::scenario::Scenario;

/// What `loadtest run` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenario_name: String,
    pub scenario: Scenario,
    pub grading: ScenarioGrading,
    /// `None`: spawn the server.
    pub target: Option<String>,
    pub server_pid: Option<u32>,
    pub duration_scale: f64,
    pub out: PathBuf,
    /// Shards for a spawned server (0: one per core).
    pub shards: usize,
    /// Drive a plain peer: bare payloads on `/echo` and `/broadcast`.
    pub raw: bool,
    /// Load-generating processes (0: as many as the open-file limit requires).
    pub processes: usize,
    /// The server's `auth.hs256_secret`, for the direct workload's tokens (a spawned server
    /// without one gets a fresh secret).
    pub hs256_secret: Option<String>,
    /// `--set key=value` overrides, already applied to `scenario`.
    pub overrides: Vec<String>,
}

impl Options {
    /// Whether the run SIGKILLs and restarts its spawned server midway (`fault = "kill9"`).
    pub fn kill9(&self) -> bool {
        self.scenario.fault == "kill9"
    }
}
