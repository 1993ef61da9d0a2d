//! Where the processes of one run meet: a work folder, and the files they exchange in it (see
//! [`crate::workers`] for the whole protocol).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long a process waits for the others' `last-seq` files before counting them missing.
const LAST_SEQ_WAIT: Duration = Duration::from_secs(5);
/// How often a process looks for a file another process writes.
const POLL: Duration = Duration::from_millis(50);

/// Where and who a process is among the run's processes.
#[derive(Debug, Clone)]
pub struct Peers {
    pub dir: PathBuf,
    pub index: usize,
    pub processes: usize,
}

impl Peers {
    pub fn partial_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("partial-{index}.json"))
    }

    fn last_seq_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("last-seq-{index}.json"))
    }

    fn stop_path(&self) -> PathBuf {
        self.dir.join("stop")
    }

    /// Tells the children to stop (a stress step broke).
    pub fn request_stop(&self) -> Result<()> {
        write_atomic(&self.stop_path(), b"stop")
    }

    /// Resolves once the parent asked to stop.
    pub async fn stop_requested(&self) {
        while !self.stop_path().exists() {
            tokio::time::sleep(POLL).await;
        }
    }

    /// Publishes this process's last sequence numbers, then waits (at most [`LAST_SEQ_WAIT`]) for
    /// every other process's and returns them all; a process that never wrote is `Err`.
    pub async fn exchange_last_seq(&self, own: &HashMap<u64, u64>) -> Result<HashMap<u64, u64>> {
        write_atomic(&self.last_seq_path(self.index), &serde_json::to_vec(own)?)?;
        let deadline = Instant::now() + LAST_SEQ_WAIT;
        let mut all = HashMap::new();
        for i in 0..self.processes {
            let path = self.last_seq_path(i);
            while !path.exists() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "process {i} never published its last sequence numbers"
                );
                tokio::time::sleep(POLL).await;
            }
            let theirs: HashMap<u64, u64> = serde_json::from_slice(&std::fs::read(&path)?)?;
            all.extend(theirs);
        }
        Ok(all)
    }
}

/// Writes `bytes` to `path` so that readers see all of it or nothing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}
