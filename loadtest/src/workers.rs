//! Load from several processes: one process may hold only as many connections as its open-file
//! limit allows (20,000 here), so a bigger scenario is split into shares, one per process. The
//! parent (`loadtest run`) runs share 0 and starts `loadtest worker` children for the others;
//! they meet in a work folder:
//!
//! - `plan-<i>.json`: what child `i` runs ([`WorkerPlan`]), written by the parent.
//! - `last-seq-<i>.json`: the last sequence number each of process `i`'s publishers sent, written
//!   once sends stop, so every subscriber can count what it never received ([`exchange_last_seq`]).
//! - `stop`: written by the parent when a stress step breaks; children then stop too.
//! - `partial-<i>.json`: child `i`'s histograms and counters ([`Partial`]), merged by the parent.
//!
//! All processes share one start time (a Unix time in milliseconds), so their per-second series
//! line up. Everything is on one machine; the folder is removed after the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::options::Options;
use crate::peers::{write_atomic, Peers};
use crate::scenario::Scenario;
use crate::stats::{add_counts, add_latency, Counts, Second, Totals, Workload};

/// Processes needed so that each holds at most `per_process` connections.
pub fn processes_for(peak_connections: u64, per_process: u64) -> usize {
    peak_connections.div_ceil(per_process.max(1)).max(1) as usize
}

/// What one child process runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub scenario_name: String,
    /// This process's share of the users.
    pub scenario: Scenario,
    pub url: String,
    pub raw: bool,
    pub duration_scale: f64,
    pub index: usize,
    pub processes: usize,
    /// When every process starts its clock (Unix ms).
    pub start_unix_ms: u64,
    /// The server's `auth.hs256_secret`, for direct agents' tokens.
    #[serde(default)]
    pub hs256_secret: Option<String>,
}

impl WorkerPlan {
    pub fn read(dir: &Path, index: usize) -> Result<Self> {
        let path = plan_path(dir, index);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// The parent's side: the children it started and their work folder.
pub struct Workers {
    pub peers: Peers,
    children: Vec<(usize, tokio::process::Child)>,
}

impl Workers {
    /// Writes a plan for each share but the first (the parent's) and starts a `loadtest worker`
    /// for it. The children die with the parent.
    pub fn spawn(
        opts: &Options,
        url: &str,
        processes: usize,
        start_unix_ms: u64,
        hs256_secret: Option<&str>,
    ) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("loadtest-workers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let peers = Peers {
            dir,
            index: 0,
            processes,
        };
        let exe = std::env::current_exe()?;
        let mut children = Vec::new();
        for index in 1..processes {
            let plan = WorkerPlan {
                scenario_name: opts.scenario_name.clone(),
                scenario: opts.scenario.share(index, processes),
                url: url.to_string(),
                raw: opts.raw,
                duration_scale: opts.duration_scale,
                index,
                processes,
                start_unix_ms,
                hs256_secret: hs256_secret.map(str::to_string),
            };
            write_atomic(&plan_path(&peers.dir, index), &serde_json::to_vec(&plan)?)?;
            let child = tokio::process::Command::new(&exe)
                .arg("worker")
                .arg("--dir")
                .arg(&peers.dir)
                .arg("--index")
                .arg(index.to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?;
            children.push((index, child));
        }
        Ok(Workers { peers, children })
    }

    /// The children's PIDs (for the interference meter).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|(_, c)| c.id()).collect()
    }

    /// Waits (at most `limit`) for every child, merges its measurements into `totals`, removes
    /// the work folder, and returns the children's CPU time (µs).
    pub async fn collect(self, totals: &mut Totals, limit: Duration) -> Result<u64> {
        let mut cpu = 0;
        for (index, child) in self.children {
            let output = tokio::time::timeout(limit, child.wait_with_output())
                .await
                .with_context(|| format!("worker {index} did not finish"))??;
            anyhow::ensure!(
                output.status.success(),
                "worker {index} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
            let partial = Partial::read(&self.peers.partial_path(index))?;
            cpu += partial.client_cpu_us;
            partial.merge_into(totals)?;
        }
        let _ = std::fs::remove_dir_all(&self.peers.dir);
        Ok(cpu)
    }
}

fn plan_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("plan-{index}.json"))
}

/// One child's measurements, histograms in HdrHistogram's V2 encoding.
#[derive(Debug, Serialize, Deserialize)]
pub struct Partial {
    latency: BTreeMap<Workload, Vec<u8>>,
    counts: BTreeMap<Workload, Counts>,
    seconds: Vec<PartialSecond>,
    pub client_cpu_us: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PartialSecond {
    latency: BTreeMap<Workload, Vec<u8>>,
    counts: BTreeMap<Workload, Counts>,
}

fn encode(map: &BTreeMap<Workload, Histogram<u64>>) -> Result<BTreeMap<Workload, Vec<u8>>> {
    map.iter()
        .map(|(w, h)| {
            let mut bytes = Vec::new();
            V2Serializer::new()
                .serialize(h, &mut bytes)
                .map_err(|e| anyhow::anyhow!("encoding a histogram: {e:?}"))?;
            Ok((*w, bytes))
        })
        .collect()
}

fn decode(map: BTreeMap<Workload, Vec<u8>>) -> Result<BTreeMap<Workload, Histogram<u64>>> {
    map.into_iter()
        .map(|(w, bytes)| {
            let h = Deserializer::new()
                .deserialize(&mut bytes.as_slice())
                .map_err(|e| anyhow::anyhow!("decoding a histogram: {e:?}"))?;
            Ok((w, h))
        })
        .collect()
}

impl Partial {
    pub fn new(totals: &Totals, client_cpu_us: u64) -> Result<Self> {
        let (latency, counts, seconds) = totals;
        Ok(Partial {
            latency: encode(latency)?,
            counts: counts.clone(),
            seconds: seconds
                .iter()
                .map(|s| {
                    Ok(PartialSecond {
                        latency: encode(&s.latency)?,
                        counts: s.counts.clone(),
                    })
                })
                .collect::<Result<_>>()?,
            client_cpu_us,
        })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &serde_json::to_vec(self)?)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Adds this child's measurements into `totals` (histograms merged, counters summed, the
    /// per-second series aligned on the shared start).
    pub fn merge_into(self, totals: &mut Totals) -> Result<()> {
        let (latency, counts, seconds) = totals;
        add_latency(latency, &decode(self.latency)?);
        add_counts(counts, &self.counts);
        for (t, s) in self.seconds.into_iter().enumerate() {
            while seconds.len() <= t {
                seconds.push(Second {
                    latency: BTreeMap::new(),
                    counts: BTreeMap::new(),
                });
            }
            add_latency(&mut seconds[t].latency, &decode(s.latency)?);
            add_counts(&mut seconds[t].counts, &s.counts);
        }
        Ok(())
    }
}

impl Scenario {
    /// Share `index` of `processes`: every role's users split as evenly as they go (the first
    /// processes take the remainders); rates and timings unchanged.
    pub fn share(&self, index: usize, processes: usize) -> Scenario {
        let part = |n: u32| {
            let (n, p, i) = (n as usize, processes.max(1), index);
            (n / p + usize::from(i < n % p)) as u32
        };
        Scenario {
            echo_users: part(self.echo_users),
            publishers: part(self.publishers),
            subscribers: part(self.subscribers),
            churn_users: part(self.churn_users),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{parse, DEFAULT_SCENARIOS_TOML};

    #[test]
    fn shares_add_up_to_the_whole() {
        let base = parse(DEFAULT_SCENARIOS_TOML).unwrap()["baseline"].clone();
        for processes in 1..=7 {
            let shares: Vec<Scenario> = (0..processes).map(|i| base.share(i, processes)).collect();
            let sum = |f: fn(&Scenario) -> u32| shares.iter().map(f).sum::<u32>();
            assert_eq!(sum(|s| s.echo_users), base.echo_users);
            assert_eq!(sum(|s| s.publishers), base.publishers);
            assert_eq!(sum(|s| s.subscribers), base.subscribers);
            assert_eq!(sum(|s| s.churn_users), base.churn_users);
        }
        assert_eq!(processes_for(45_000, 19_800), 3);
        assert_eq!(processes_for(10, 19_800), 1);
    }

    #[test]
    fn a_partial_round_trips_and_merges() {
        let mut h = crate::stats::histogram(3);
        h.record(1500).unwrap();
        let mut counts = BTreeMap::new();
        counts.insert(
            Workload::Echo,
            Counts {
                received: 1,
                ..Counts::default()
            },
        );
        let second = Second {
            latency: [(Workload::Echo, h.clone())].into(),
            counts: counts.clone(),
        };
        let totals: Totals = ([(Workload::Echo, h)].into(), counts, vec![second]);
        let dir = std::env::temp_dir().join(format!("loadtest-partial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.json");
        Partial::new(&totals, 7).unwrap().write(&path).unwrap();
        let mut merged = totals;
        let partial = Partial::read(&path).unwrap();
        assert_eq!(partial.client_cpu_us, 7);
        partial.merge_into(&mut merged).unwrap();
        assert_eq!(merged.0[&Workload::Echo].len(), 2);
        assert_eq!(merged.1[&Workload::Echo].received, 2);
        assert_eq!(merged.2[0].latency[&Workload::Echo].len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
