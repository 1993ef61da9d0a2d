//! The server under test: spawning the release `wsedge` for `--spawn-server`, and sampling a
//! server process's CPU, RSS and open files from /proc.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A spawned server, stopped (SIGTERM) by [`Spawned::stop`] or on drop. Its store is a fresh
/// directory under the temp dir, removed on drop.
pub struct Spawned {
    child: Child,
    pub url: String,
    pub pid: u32,
    store: PathBuf,
    shards: usize,
    secret: Option<String>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A store directory no other spawned server uses.
fn fresh_store() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("loadtest-store-{}-{n}", std::process::id()))
}

/// The `wsedge` binary beside this one (same target directory), or `LOADTEST_WSEDGE_BIN`.
pub fn server_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("LOADTEST_WSEDGE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no directory")?;
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    let candidate = dir.join("wsedge");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "no wsedge binary at {} (build it: cargo build --release -p wsedge, or set LOADTEST_WSEDGE_BIN)",
        candidate.display()
    )
}

impl Spawned {
    /// Starts the server on a free loopback port with `shards` shards and its default limits
    /// (flags, not environment variables, so that any build of wsedge takes them); with
    /// `hs256_secret`, it checks tokens signed with it (`WSEDGE_AUTH_HS256_SECRET`).
    pub async fn start(shards: usize, hs256_secret: Option<&str>) -> Result<Spawned> {
        let store = fresh_store();
        let _ = std::fs::remove_dir_all(&store);
        let (child, pid, addr) = launch(shards, hs256_secret, "127.0.0.1:0", &store).await?;
        Ok(Spawned {
            child,
            url: format!("ws://{addr}/ws"),
            pid,
            store,
            shards,
            secret: hs256_secret.map(Into::into),
        })
    }

    /// SIGKILLs the server (a crash: nothing is flushed), then starts it again on the same
    /// address and store.
    pub async fn kill9_and_restart(&mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        let listen = self
            .url
            .strip_prefix("ws://")
            .and_then(|rest| rest.strip_suffix("/ws"))
            .context("spawned url")?
            .to_string();
        let (child, pid, _) =
            launch(self.shards, self.secret.as_deref(), &listen, &self.store).await?;
        self.child = child;
        self.pid = pid;
        Ok(())
    }
}

/// Starts wsedge listening on `listen` with its store in `store`; returns the child, its pid and
/// the address it listens on.
async fn launch(
    shards: usize,
    hs256_secret: Option<&str>,
    listen: &str,
    store: &std::path::Path,
) -> Result<(Child, u32, String)> {
    let bin = server_binary()?;
    let mut cmd = Command::new(&bin);
    let shards = shards.to_string();
    cmd.args(["--listen", listen, "--shards", &shards])
        .env("WSEDGE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(secret) = hs256_secret {
        cmd.env("WSEDGE_AUTH_HS256_SECRET", secret);
    }
    // Builds without a store ignore it.
    cmd.env("WSEDGE_STORE_PATH", store);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("no pid")?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .context("wsedge did not start within 20 s")??
        .context("wsedge exited before listening")?;
    let addr = line
        .split_whitespace()
        .nth(3)
        .with_context(|| format!("unexpected line {line:?}"))?;
    Ok((child, pid, addr.to_string()))
}

impl Spawned {
    /// SIGTERM, then wait (up to 30 s) for the exit.
    pub async fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        anyhow::ensure!(status.success(), "wsedge exited with {status}");
        Ok(())
    }
}

/// One reading of a process's usage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_us: u64,
    pub rss_kib: u64,
    pub open_files: u64,
}

/// Reads /proc/PID; `None` once the process is gone.
pub fn sample(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: utime is the 14th field, stime the 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let open_files = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Some(Usage {
        cpu_us: ticks * 1_000_000 / hz,
        rss_kib,
        open_files,
    })
}

/// Raises this process's open-file soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur
    }
}

/// CPU time this process has used, in µs.
pub fn own_cpu_us() -> u64 {
    // SAFETY: getrusage writes only into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// The process listening on TCP `port` on this machine (from /proc/net/tcp{,6} and the
/// processes' open sockets), so that a `--target` run knows its server without `--server-pid`.
/// `None` when it cannot be seen (another user's process, no /proc).
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; the inode is field 9.
            let listening = f.get(3) == Some(&"0A");
            let on_port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening && on_port {
                inodes.extend(f.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .find(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok).any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
                })
            })
        })
}

/// Whether process `pid` exists.
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_of_a_port_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // This process is the listener, and the search leaves it out (it looks for a server).
        assert_eq!(listener_pid(port), None);
        drop(listener);
        let mut child = std::process::Command::new("python3")
            .args(["-c", "import socket,sys,time\ns=socket.socket();s.bind(('127.0.0.1',0));s.listen();print(s.getsockname()[1],flush=True);time.sleep(30)"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        let found = listener_pid(port);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, Some(child.id()));
        assert!(exists(std::process::id()));
        assert!(!exists(u32::MAX - 1));
    }
}
