//! The process's own figures from `/proc` (Linux), under the standard `process_*` names, and a
//! thread's CPU time. Each read costs a few small file reads; a missing file reads as zero.

use std::fs;

/// The process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    /// Unix seconds.
    pub start_time: f64,
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    }
}

/// The fields of a `stat` file after the command name (field 3 on), which may hold spaces.
fn stat_fields(text: &str) -> Vec<&str> {
    text.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// utime + stime (fields 14 and 15) of a `stat` file, in seconds.
fn cpu_of(fields: &[&str]) -> f64 {
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    (ticks(14).unwrap_or(0) + ticks(15).unwrap_or(0)) as f64 / ticks_per_s()
}

/// The CPU time thread `tid` of this process has used, in seconds.
pub fn thread_cpu_seconds(tid: i32) -> f64 {
    let path = format!("/proc/self/task/{tid}/stat");
    fs::read_to_string(path).map_or(0.0, |text| cpu_of(&stat_fields(&text)))
}

/// Reads the process's CPU, memory, descriptors and start time.
pub fn process_stats() -> ProcessStats {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields = stat_fields(&stat);
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    };
    let statm = fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let mut pages = statm
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0));
    let (virtual_pages, resident_pages) = (pages.next().unwrap_or(0), pages.next().unwrap_or(0));
    let start_ticks = fields.get(22 - 3).and_then(|f| f.parse::<u64>().ok());
    let boot = fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ").map(|v| v.trim().parse::<u64>()))
        })
        .and_then(Result::ok);
    let start_time = match (boot, start_ticks) {
        (Some(boot), Some(ticks)) => boot as f64 + ticks as f64 / ticks_per_s(),
        _ => 0.0,
    };
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to write into.
    let max_fds = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => limit.rlim_cur,
        _ => 0,
    };
    ProcessStats {
        cpu_seconds: cpu_of(&fields),
        resident_bytes: resident_pages * page,
        virtual_bytes: virtual_pages * page,
        open_fds: fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
        max_fds,
        start_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_reads_as_itself() {
        let stats = process_stats();
        assert!(stats.resident_bytes > 0 && stats.virtual_bytes >= stats.resident_bytes);
        assert!(stats.open_fds > 0 && stats.max_fds >= stats.open_fds);
        assert!(stats.start_time > 1.6e9);
        let fields = stat_fields("12 (a b) c) S 1 2 3");
        assert_eq!(fields[..2], ["S", "1"]);
    }
}
