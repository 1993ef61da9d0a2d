//! Latency truth: HdrHistograms in microseconds (3 significant digits), per workload and per
//! second, plus counters for errors, late sends, loss, duplicates and reordering. Users record
//! into a [`Local`] and merge it into the shared [`Stats`] once per tick.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram holds: 60 s.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Echo round trip through the server's protocol, from the intended send time.
    Echo,
    /// Publish → subscriber delivery, from the intended publish time.
    Fanout,
    /// Connect → welcome for a churning connection.
    Churn,
    /// User-to-user `send` → delivery to the recipient, from the intended send time.
    Direct,
    /// Task published → delivery to the one group member that takes it.
    Group,
    /// Persisted `send` → the sender's `ok` (stored and synced), surviving server crashes.
    Reliable,
    /// A scheduled `send`'s due time → its delivery: how late schedules leave.
    Schedule,
    /// The same as echo, fan-out, direct and group, from the *actual* send time: without the
    /// client's own timer lag. Reported beside the graded figures, never graded.
    EchoFromSend,
    FanoutFromSend,
    DirectFromSend,
    GroupFromSend,
}

impl Workload {
    /// The workloads reported as such (the `*FromSend` ones are reported inside theirs).
    pub const ALL: [Workload; 7] = [
        Workload::Echo,
        Workload::Fanout,
        Workload::Churn,
        Workload::Direct,
        Workload::Group,
        Workload::Reliable,
        Workload::Schedule,
    ];

    /// The workloads whose latency grades a run (churn's connect time does not).
    pub const LATENCY: [Workload; 6] = [
        Workload::Echo,
        Workload::Fanout,
        Workload::Direct,
        Workload::Group,
        Workload::Reliable,
        Workload::Schedule,
    ];

    /// The workloads whose deliveries are counted for loss.
    pub const DELIVERY: [Workload; 4] = [
        Workload::Fanout,
        Workload::Direct,
        Workload::Group,
        Workload::Reliable,
    ];

    /// Whether this is one of the graded workloads (each sample a completed operation), not a
    /// `*FromSend` shadow of one.
    pub fn graded(self) -> bool {
        !matches!(
            self,
            Workload::EchoFromSend
                | Workload::FanoutFromSend
                | Workload::DirectFromSend
                | Workload::GroupFromSend
        )
    }

    /// The workload that measures `self` from the actual send time, if there is one.
    pub fn from_send(self) -> Option<Workload> {
        match self {
            Workload::Echo => Some(Workload::EchoFromSend),
            Workload::Fanout => Some(Workload::FanoutFromSend),
            Workload::Direct => Some(Workload::DirectFromSend),
            Workload::Group => Some(Workload::GroupFromSend),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::EchoFromSend => "echo_from_send",
            Workload::FanoutFromSend => "fanout_from_send",
            Workload::DirectFromSend => "direct_from_send",
            Workload::GroupFromSend => "group_from_send",
            Workload::Echo => "echo",
            Workload::Fanout => "fanout",
            Workload::Churn => "churn",
            Workload::Direct => "direct",
            Workload::Group => "group",
            Workload::Reliable => "reliable",
            Workload::Schedule => "schedule",
        }
    }
}

pub fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, sigfig).expect("valid bounds")
}

/// Adds the histograms of `from` into `into`, workload by workload.
pub fn add_latency(
    into: &mut BTreeMap<Workload, Histogram<u64>>,
    from: &BTreeMap<Workload, Histogram<u64>>,
) {
    for (w, h) in from {
        match into.get_mut(w) {
            // Every histogram has the bounds of `histogram()`, so adding cannot overflow them.
            Some(mine) => mine.add(h).expect("histograms share their bounds"),
            None => {
                into.insert(*w, h.clone());
            }
        }
    }
}

/// Adds the counters of `from` into `into`, workload by workload.
pub fn add_counts(into: &mut BTreeMap<Workload, Counts>, from: &BTreeMap<Workload, Counts>) {
    for (w, c) in from {
        into.entry(*w).or_default().merge(c);
    }
}

/// Counters that are not latencies.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Operations attempted (sends, connects).
    pub sent: u64,
    /// Operations completed (replies, deliveries, welcomes).
    pub received: u64,
    /// Sends that went out more than one interval after their intended time.
    pub late: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Repeated deliveries marked `redelivered` (acknowledged delivery: allowed, not loss).
    #[serde(default)]
    pub redelivered: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Counts {
    pub fn merge(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.received += o.received;
        self.late += o.late;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.redelivered += o.redelivered;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A user's samples since its last merge.
#[derive(Debug, Default)]
pub struct Local {
    pub samples: Vec<(Workload, u64)>,
    pub counts: BTreeMap<Workload, Counts>,
}

impl Local {
    pub fn latency(&mut self, w: Workload, us: u64) {
        self.samples.push((w, us.clamp(1, MAX_LATENCY_US)));
    }

    pub fn counts(&mut self, w: Workload) -> &mut Counts {
        self.counts.entry(w).or_default()
    }

    pub fn error(&mut self, w: Workload, kind: &str) {
        *self.counts(w).errors.entry(kind.to_string()).or_default() += 1;
    }
}

/// What a run measured: latency and counts per workload, and the per-second series.
pub type Totals = (
    BTreeMap<Workload, Histogram<u64>>,
    BTreeMap<Workload, Counts>,
    Vec<Second>,
);

/// One second of the run.
#[derive(Debug)]
pub struct Second {
    pub latency: BTreeMap<Workload, Histogram<u64>>,
    pub counts: BTreeMap<Workload, Counts>,
}

/// Everything measured in a run, shared by all users.
#[derive(Debug)]
pub struct Stats {
    pub start: Instant,
    inner: Mutex<Inner>,
    /// Live counters for the progress line.
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    pub connections: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    latency: BTreeMap<Workload, Histogram<u64>>,
    counts: BTreeMap<Workload, Counts>,
    seconds: Vec<Second>,
}

impl Stats {
    pub fn new(start: Instant) -> Self {
        Stats {
            start,
            inner: Mutex::new(Inner {
                latency: BTreeMap::new(),
                counts: BTreeMap::new(),
                seconds: Vec::new(),
            }),
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        }
    }

    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Merges a user's samples into the totals and into the current second.
    pub fn merge(&self, local: &mut Local) {
        let second = self.start.elapsed().as_secs() as usize;
        let mut inner = self.inner.lock().expect("stats lock");
        while inner.seconds.len() <= second {
            inner.seconds.push(Second {
                latency: BTreeMap::new(),
                counts: BTreeMap::new(),
            });
        }
        let mut errors = 0;
        for (w, us) in local.samples.drain(..) {
            inner
                .latency
                .entry(w)
                .or_insert_with(|| histogram(3))
                .saturating_record(us);
            inner.seconds[second]
                .latency
                .entry(w)
                .or_insert_with(|| histogram(2))
                .saturating_record(us);
        }
        for (w, c) in std::mem::take(&mut local.counts) {
            errors += c.error_total();
            inner.counts.entry(w).or_default().merge(&c);
            inner.seconds[second].counts.entry(w).or_default().merge(&c);
        }
        self.errors.fetch_add(errors, Ordering::Relaxed);
    }

    /// For the progress line: the worst p99 over latency workloads in second `last` (the last
    /// complete one), and over the seconds `from..=last` (the phase so far). `None` for a span
    /// without latency samples.
    pub fn recent_p99_us(&self, from: usize, last: usize) -> (Option<u64>, Option<u64>) {
        let inner = self.inner.lock().expect("stats lock");
        let p99 = |latency: &BTreeMap<Workload, Histogram<u64>>| {
            (!latency.is_empty()).then(|| worst_quantile(latency, 0.99))
        };
        let second = inner.seconds.get(last).and_then(|s| p99(&s.latency));
        let mut phase = BTreeMap::new();
        for s in inner.seconds.iter().take(last + 1).skip(from) {
            add_latency(&mut phase, &s.latency);
        }
        (second, p99(&phase))
    }

    /// Runs `f` on the per-second series so far.
    pub fn with_seconds<R>(&self, f: impl FnOnce(&[Second]) -> R) -> R {
        f(&self.inner.lock().expect("stats lock").seconds)
    }

    /// Takes the totals and the per-second series out.
    pub fn finish(&self) -> Totals {
        let mut inner = self.inner.lock().expect("stats lock");
        (
            std::mem::take(&mut inner.latency),
            std::mem::take(&mut inner.counts),
            std::mem::take(&mut inner.seconds),
        )
    }
}

/// The worst `q` quantile over the latency workloads (echo round trip, fan-out, direct and group
/// delivery): what grading, the spike summary and the progress line judge. 0 when none ran.
pub fn worst_quantile(latency: &BTreeMap<Workload, Histogram<u64>>, q: f64) -> u64 {
    Workload::LATENCY
        .iter()
        .filter_map(|w| latency.get(w))
        .map(|h| h.value_at_quantile(q))
        .max()
        .unwrap_or(0)
}

/// Per-publisher sequence tracking at one subscriber: counts lost, duplicated and reordered
/// messages. Gaps are remembered (up to `MAX_GAPS`) so a late arrival is reordering, not a
/// duplicate.
#[derive(Debug, Default)]
pub struct Sequence {
    next: u64,
    started: bool,
    gaps: std::collections::BTreeSet<u64>,
    gaps_forgotten: u64,
}

const MAX_GAPS: usize = 100_000;

impl Sequence {
    /// Notes `seq`; updates `counts`.
    /// A sequence that must start at `first` (a direct sender's, known from the start): what
    /// never arrives from it counts as lost.
    pub fn expecting(first: u64) -> Self {
        Sequence {
            started: true,
            next: first,
            ..Sequence::default()
        }
    }

    pub fn observe(&mut self, seq: u64, counts: &mut Counts) {
        if !self.started {
            self.started = true;
            self.next = seq + 1;
            return;
        }
        if seq == self.next {
            self.next += 1;
        } else if seq > self.next {
            for missing in self.next..seq {
                if self.gaps.len() < MAX_GAPS {
                    self.gaps.insert(missing);
                } else {
                    self.gaps_forgotten += 1;
                }
            }
            self.next = seq + 1;
        } else if self.gaps.remove(&seq) {
            counts.out_of_order += 1;
        } else {
            counts.duplicated += 1;
        }
    }

    /// Messages never received: open gaps, plus those after the last received up to `last_sent`.
    pub fn lost(&self, last_sent: Option<u64>) -> u64 {
        let tail = match (self.started, last_sent) {
            (true, Some(last)) if last >= self.next => last + 1 - self.next,
            _ => 0,
        };
        self.gaps.len() as u64 + self.gaps_forgotten + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_tells_loss_from_reordering_and_duplication() {
        let mut s = Sequence::default();
        let mut c = Counts::default();
        for seq in [5, 6, 8, 9, 7, 7, 10] {
            s.observe(seq, &mut c);
        }
        assert_eq!((c.out_of_order, c.duplicated), (1, 1));
        assert_eq!(s.lost(Some(10)), 0);
        assert_eq!(s.lost(Some(12)), 2, "11 and 12 never arrived");
        let silent = Sequence::expecting(0);
        assert_eq!(
            silent.lost(Some(4)),
            5,
            "an expected sender's messages count from 0"
        );
        assert_eq!(Sequence::default().lost(Some(4)), 0);
        s.observe(13, &mut c);
        assert_eq!(s.lost(Some(13)), 2, "11 and 12 are gaps now");
    }

    #[test]
    fn merge_keeps_totals_and_seconds() {
        let stats = Stats::new(Instant::now());
        let mut local = Local::default();
        for us in [100, 200, 300] {
            local.latency(Workload::Echo, us);
        }
        local.counts(Workload::Echo).sent = 3;
        local.error(Workload::Echo, "timeout");
        stats.merge(&mut local);
        let (lat, counts, seconds) = stats.finish();
        assert_eq!(lat[&Workload::Echo].len(), 3);
        assert_eq!(counts[&Workload::Echo].errors["timeout"], 1);
        assert_eq!(seconds[0].latency[&Workload::Echo].len(), 3);
        assert!(local.samples.is_empty());
    }
}
