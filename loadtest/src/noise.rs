//! Interference: how much of the machine went to neither the server under test nor loadtest
//! while a run measured. Sampled from /proc once a second: the CPU time of every user-space
//! process other than loadtest's and the server's (`/proc/PID/stat`; kernel threads, which
//! carry the run's own loopback traffic, are left out), and the machine's steal time
//! (`/proc/stat`). A run in which others took more than [`NOISY_CORES`] in more than
//! [`NOISY_SHARE`] of its seconds, or which was client-bound, is **inconclusive**: its
//! latencies measure the neighbours (or the client) as much as the server, and `loadtest run`
//! exits 3 instead of grading it (`--allow-noisy` grades it anyway). A server loadtest does not
//! know (not spawned, no `--server-pid`, not found by its port) counts as a neighbour.

use serde::{Deserialize, Serialize};

/// CPU (in cores) that other processes and steal may take in one second before that second
/// counts as noisy.
pub const NOISY_CORES: f64 = 0.25;
/// Share of a run's seconds that may be noisy before the run is inconclusive.
pub const NOISY_SHARE: f64 = 0.10;

/// One second's interference, in cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// CPU used by processes other than the server and loadtest.
    pub others_cores: f64,
    /// CPU the hypervisor gave to other guests while this machine wanted it.
    pub steal_cores: f64,
    /// loadtest's own processes.
    pub client_cores: f64,
}

impl Second {
    /// Whether this second had more interference than [`NOISY_CORES`].
    pub fn noisy(&self) -> bool {
        self.others_cores + self.steal_cores > NOISY_CORES
    }
}

/// A run's interference, and whether it makes the run inconclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interference {
    /// Seconds sampled, and those above [`NOISY_CORES`].
    pub seconds: usize,
    pub noisy_seconds: usize,
    pub bound_cores: f64,
    pub bound_share: f64,
    pub others_cores_mean: f64,
    pub others_cores_max: f64,
    pub steal_cores_mean: f64,
    pub steal_cores_max: f64,
    /// Why the run's grade does not measure the server (`None`: it does).
    pub inconclusive: Option<String>,
}

impl Interference {
    /// Sums up `seconds`; `client_bound` (the client saturated the machine) makes the run
    /// inconclusive too.
    pub fn of(seconds: &[Second], client_bound: bool) -> Interference {
        let n = seconds.len();
        let noisy = seconds.iter().filter(|s| s.noisy()).count();
        let mean = |f: fn(&Second) -> f64| seconds.iter().map(f).sum::<f64>() / n.max(1) as f64;
        let max = |f: fn(&Second) -> f64| seconds.iter().map(f).fold(0.0, f64::max);
        let mut reasons = Vec::new();
        if n > 0 && noisy as f64 > NOISY_SHARE * n as f64 {
            reasons.push(format!(
                "other processes or steal took more than {NOISY_CORES} cores in {noisy} of {n} \
                 seconds (bound: {:.0} %; mean {:.2} cores, max {:.2})",
                NOISY_SHARE * 100.0,
                mean(|s| s.others_cores + s.steal_cores),
                max(|s| s.others_cores + s.steal_cores),
            ));
        }
        if client_bound {
            reasons.push(
                "the client saturated the machine (client-bound): the figures measure loadtest"
                    .to_string(),
            );
        }
        Interference {
            seconds: n,
            noisy_seconds: noisy,
            bound_cores: NOISY_CORES,
            bound_share: NOISY_SHARE,
            others_cores_mean: mean(|s| s.others_cores),
            others_cores_max: max(|s| s.others_cores),
            steal_cores_mean: mean(|s| s.steal_cores),
            steal_cores_max: max(|s| s.steal_cores),
            inconclusive: (!reasons.is_empty()).then(|| reasons.join("; ")),
        }
    }
}

/// Samples interference; [`Meter::sample`] once a second.
pub struct Meter {
    /// loadtest's own processes and the server: not interference.
    ours: Vec<u32>,
    client: Vec<u32>,
    hz: f64,
    last: Option<Reading>,
}

/// CPU ticks at one moment.
struct Reading {
    at: std::time::Instant,
    steal: u64,
    client: u64,
    /// Every other user-space process's utime + stime, by PID.
    others: std::collections::HashMap<u32, u64>,
}

impl Meter {
    /// `client`: loadtest's processes (this one and its workers); `server`: the server's PID.
    pub fn new(client: Vec<u32>, server: Option<u32>) -> Meter {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let mut ours = client.clone();
        ours.extend(server);
        Meter {
            ours,
            client,
            hz,
            last: None,
        }
    }

    /// The interference since the last call (`None` on the first, or without /proc).
    pub fn sample(&mut self) -> Option<Second> {
        let now = self.read()?;
        let last = self.last.replace(now)?;
        let now = self.last.as_ref()?;
        let secs = now.at.duration_since(last.at).as_secs_f64().max(1e-3);
        let cores = |ticks: u64| ticks as f64 / self.hz / secs;
        // A process not seen last time started since: all its time is in this interval.
        let others: u64 = now
            .others
            .iter()
            .map(|(pid, &t)| t.saturating_sub(last.others.get(pid).copied().unwrap_or(0)))
            .sum();
        Some(Second {
            others_cores: cores(others),
            steal_cores: cores(now.steal.saturating_sub(last.steal)),
            client_cores: cores(now.client.saturating_sub(last.client)),
        })
    }

    fn read(&self) -> Option<Reading> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu user nice system idle iowait irq softirq steal guest guest_nice
        let steal = stat
            .lines()
            .next()?
            .split_whitespace()
            .nth(8)
            .and_then(|f| f.parse().ok())
            .unwrap_or(0);
        let mut others = std::collections::HashMap::new();
        for pid in std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| !self.ours.contains(pid))
        {
            if let Some((ticks, false)) = process_ticks(pid) {
                others.insert(pid, ticks);
            }
        }
        let client = self
            .client
            .iter()
            .filter_map(|&p| process_ticks(p))
            .map(|t| t.0)
            .sum();
        Some(Reading {
            at: std::time::Instant::now(),
            steal,
            client,
            others,
        })
    }
}

/// utime + stime of a process (all its threads), in clock ticks, and whether it is a kernel
/// thread (its work, such as softirq processing of the run's own loopback traffic, is not
/// counted as interference).
fn process_ticks(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state, ppid, ... flags (the 9th field), ... utime (14th), stime (15th).
    const PF_KTHREAD: u64 = 0x0020_0000;
    let flags: u64 = fields.get(6)?.parse().ok()?;
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ticks, flags & PF_KTHREAD != 0 || pid == 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(others: f64, steal: f64) -> Second {
        Second {
            others_cores: others,
            steal_cores: steal,
            client_cores: 0.1,
        }
    }

    #[test]
    fn a_run_is_inconclusive_past_the_share_of_noisy_seconds() {
        let quiet: Vec<Second> = (0..20).map(|_| s(0.05, 0.0)).collect();
        assert_eq!(Interference::of(&quiet, false).inconclusive, None);
        // Two noisy seconds of 20 is 10 %: not more than the bound.
        let mut two = quiet.clone();
        two[3] = s(0.5, 0.0);
        two[9] = s(0.1, 0.2);
        let i = Interference::of(&two, false);
        assert_eq!((i.noisy_seconds, i.inconclusive.as_deref()), (2, None));
        let mut three = two;
        three[15] = s(1.0, 0.0);
        let i = Interference::of(&three, false);
        assert!(
            i.inconclusive.as_deref().unwrap().contains("3 of 20"),
            "{i:?}"
        );
        assert_eq!(i.others_cores_max, 1.0);
        let bound = Interference::of(&quiet, true);
        assert!(bound.inconclusive.unwrap().contains("client-bound"));
    }

    #[test]
    fn the_meter_sees_a_busy_neighbour() {
        let mut meter = Meter::new(vec![std::process::id()], None);
        let mut busy = std::process::Command::new("python3")
            .args([
                "-c",
                "import time\nt=time.time()\nwhile time.time()-t<5: pass",
            ])
            .spawn()
            .expect("python3");
        assert!(
            meter.sample().is_none(),
            "the first reading has nothing to compare"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
        let second = meter.sample().expect("a reading");
        let _ = busy.kill();
        let _ = busy.wait();
        // The neighbour spins on one core (unless the machine is so loaded that it cannot).
        assert!(second.others_cores > 0.3, "{second:?}");
    }

    #[test]
    fn the_meter_counts_loadtest_as_the_client() {
        let mut meter = Meter::new(vec![std::process::id()], None);
        assert!(
            meter.sample().is_none(),
            "the first reading has nothing to compare"
        );
        // This test's own spinning is the client's: it must not count as others.
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(300) {
            std::hint::black_box(0u64);
        }
        let second = meter.sample().expect("a reading");
        assert!(second.client_cores > 0.3, "{second:?}");
    }
}
