//! The `reliable` workload: sender agents make persisted sends (`"persist":true`, with a
//! `msg_id`) to receiver agents, which acknowledge every message; with `groups`, every other
//! sender publishes its tasks persisted (with a `msg_id`) to a durable acknowledged group
//! ([`CHANNEL`], [`GROUP`]) whose members are the receivers. It runs on plain tokio tasks,
//! not goose users, because it must outlive the server: with `--fault kill9` the harness
//! SIGKILLs the spawned server mid-run and restarts it on the same port and store, and every
//! agent reconnects with full-jitter backoff and carries on. A sender resends what was not yet
//! confirmed, under the same `msg_id` (the dedup window makes that exactly-once).
//!
//! At the end it counts what matters: messages confirmed to their sender but never delivered
//! (`lost`, must be 0), deliveries repeated with `"redelivered"` (allowed: at-least-once) and
//! without it (`duplicated`, a bug), and the time from the kill to the first confirmation after
//! the restart. Latency is the intended send time → the sender's `ok` (the store's fsync
//! included).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::engine::Run;
use crate::proc::Spawned;
use crate::stats::{Local, Stats, Workload};
use crate::wsclient::{self, Incoming, Target};

/// First reconnect wait; each failure doubles it up to [`BACKOFF_MAX`] (full jitter).
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Wait before resending what the server refused.
const RETRY_PAUSE_US: u64 = 100_000;
/// Token lifetime of the agents.
const TOKEN_TTL_S: u64 = 86_400;
/// The channel group tasks are published to, and the durable group the receivers form.
const CHANNEL: &str = "rel-tasks";
const GROUP: &str = "rel-workers";

/// The workload's shape (from the scenario).
#[derive(Debug, Clone)]
pub struct Plan {
    pub senders: u32,
    pub receivers: u32,
    /// Sends per second of each sender.
    pub rate: f64,
    /// Schedule each send this far ahead (0: send at once).
    pub delay_ms: u64,
    /// Odd senders publish to the receivers' durable group instead of sending.
    pub groups: bool,
    pub pad: String,
    /// Sends stop at this run time (µs), and the drain ends at `end_us`.
    pub sends_until_us: u64,
    pub end_us: u64,
    /// SIGKILL the spawned server at this run time (µs), then restart it.
    pub kill9_at_us: Option<u64>,
}

/// What a fault did, for the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    pub kind: String,
    /// Run time of the SIGKILL (s).
    pub at_s: f64,
    /// SIGKILL → the restarted server listening (ms).
    pub restart_ms: u64,
    /// SIGKILL → the confirmation of the first send made after it (ms): the outage as a
    /// sender sees it.
    pub recovered_ms: Option<u64>,
    /// Messages confirmed to their senders, delivered to their receivers, confirmed but never
    /// delivered, and delivered again with `redelivered` (after the crash, or an ack lost).
    pub confirmed: u64,
    pub delivered: u64,
    pub lost: u64,
    pub redelivered: u64,
    /// Deliveries repeated *without* `redelivered`: must be 0.
    pub duplicated_unmarked: u64,
}

/// The run-wide bookkeeping of the agents.
#[derive(Default)]
struct Ledger {
    /// (sender, seq) confirmed by an `ok`.
    confirmed: Mutex<HashSet<(u32, u64)>>,
    /// (sender, seq) delivered at least once.
    delivered: Mutex<HashSet<(u32, u64)>>,
    /// Run time (µs) of the first confirmation after the kill; 0 = none yet.
    first_after_kill_us: AtomicU64,
    kill_us: AtomicU64,
    /// Senders that have finished (everything confirmed, or the run ended).
    senders_done: AtomicU64,
}

/// Runs the workload to its end; with `spawned` and a kill time, crashes and restarts it.
pub async fn drive(
    plan: Plan,
    target: Target,
    secret: String,
    stats: Arc<StatsHandle>,
    spawned: Option<&mut Spawned>,
) -> FaultReport {
    let ledger = Arc::new(Ledger::default());
    if plan.groups {
        // The group must be durable before the first task: a persist publish to a channel
        // without one is confirmed at once, and kept nowhere.
        let agent = Agent::new(&target, &secret, "rel-setup", 999);
        let end = stats.stats().now_us() + 10_000_000;
        if let Err(e) = agent.join_group(stats.stats(), end).await {
            eprintln!("loadtest: making the durable group failed: {e:#}");
        }
    }
    let mut tasks = Vec::new();
    for r in 0..plan.receivers {
        let agent = Agent::new(&target, &secret, &format!("rel-r-{r}"), r as usize);
        tasks.push(tokio::spawn(receive(
            agent,
            plan.clone(),
            stats.clone(),
            ledger.clone(),
        )));
    }
    for s in 0..plan.senders {
        let agent = Agent::new(&target, &secret, &format!("rel-s-{s}"), s as usize + 1000);
        let to = format!("rel-r-{}", s % plan.receivers.max(1));
        let publish = plan.groups && s % 2 == 1;
        let sender = Sender { id: s, to, publish };
        tasks.push(tokio::spawn(send(
            agent,
            sender,
            plan.clone(),
            stats.clone(),
            ledger.clone(),
        )));
    }
    let mut report = FaultReport::default();
    if let (Some(server), Some(at)) = (spawned, plan.kill9_at_us) {
        let start = stats.stats().start;
        tokio::time::sleep_until((start + Duration::from_micros(at)).into()).await;
        let killed = stats.stats().now_us();
        ledger.kill_us.store(killed, Ordering::Relaxed);
        report.kind = "kill9".into();
        report.at_s = killed as f64 / 1e6;
        match server.kill9_and_restart().await {
            Ok(()) => report.restart_ms = (stats.stats().now_us() - killed) / 1000,
            Err(e) => eprintln!("loadtest: restarting the server after SIGKILL failed: {e:#}"),
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let confirmed = ledger.confirmed.lock().unwrap();
    let delivered = ledger.delivered.lock().unwrap();
    report.confirmed = confirmed.len() as u64;
    report.delivered = delivered.len() as u64;
    report.lost = confirmed.difference(&delivered).count() as u64;
    let counts = stats.counts();
    report.redelivered = counts.redelivered;
    report.duplicated_unmarked = counts.duplicated;
    let first = ledger.first_after_kill_us.load(Ordering::Relaxed);
    let kill = ledger.kill_us.load(Ordering::Relaxed);
    if first > 0 && kill > 0 {
        report.recovered_ms = Some((first - kill) / 1000);
    }
    let mut local = Local::default();
    local.counts(Workload::Reliable).lost += report.lost;
    stats.stats().merge(&mut local);
    report
}

/// The run (its [`Stats`]), and this workload's counters as merged so far.
pub struct StatsHandle(Arc<Run>, Mutex<crate::stats::Counts>);

impl StatsHandle {
    pub fn new(run: Arc<Run>) -> Self {
        StatsHandle(run, Mutex::default())
    }

    fn stats(&self) -> &Stats {
        &self.0.stats
    }

    fn merge(&self, local: &mut Local) {
        if let Some(c) = local.counts.get(&Workload::Reliable) {
            self.1.lock().unwrap().merge(c);
        }
        self.0.stats.merge(local);
    }

    fn counts(&self) -> crate::stats::Counts {
        self.1.lock().unwrap().clone()
    }
}

/// One agent's connection details.
struct Agent {
    target: Target,
    index: usize,
}

impl Agent {
    fn new(target: &Target, secret: &str, user: &str, index: usize) -> Agent {
        let exp = crate::clock::unix_ms() / 1000 + TOKEN_TTL_S;
        let claims = serde_json::json!({"sub": user, "exp": exp});
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
            .expect("HS256 signing cannot fail");
        let mut target = target.clone();
        let separator = if target.path.contains('?') { '&' } else { '?' };
        target.path = format!("{}{separator}token={token}", target.path);
        Agent { target, index }
    }

    /// Connects (retrying with backoff until `end_us`), reads the welcome, and starts a reader
    /// task that forwards every JSON message; `None` once the run is over.
    async fn connect(&self, stats: &Stats, end_us: u64) -> Option<Link> {
        let mut wait = BACKOFF_MIN;
        while stats.now_us() < end_us {
            if let Ok(link) = self.try_connect().await {
                return Some(link);
            }
            let jitter = rand_below(wait.as_micros() as u64);
            tokio::time::sleep(Duration::from_micros(jitter)).await;
            wait = (wait * 2).min(BACKOFF_MAX);
        }
        None
    }

    /// Connects and joins the durable group, waiting for its `ok`, then leaves.
    async fn join_group(&self, stats: &Stats, end_us: u64) -> anyhow::Result<()> {
        let Some(mut link) = self.connect(stats, end_us).await else {
            anyhow::bail!("cannot connect");
        };
        wsclient::send_text(&link.writer, &join_text()).await?;
        let answer = tokio::time::timeout(Duration::from_secs(10), link.rx.recv()).await?;
        match answer {
            Some(v) if v["op"] == "ok" => Ok(()),
            other => anyhow::bail!("the subscribe was answered {other:?}"),
        }
    }

    async fn try_connect(&self) -> anyhow::Result<Link> {
        let (mut reader, writer) = wsclient::connect(&self.target, self.index, None).await?;
        match wsclient::next(&mut reader, &writer).await? {
            Incoming::Text(t) if t.starts_with(br#"{"op":"welcome""#) => {}
            _ => anyhow::bail!("no welcome"),
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let w = writer.clone();
        tokio::spawn(async move {
            while let Ok(Incoming::Text(text)) = wsclient::next(&mut reader, &w).await {
                let Ok(v) = serde_json::from_slice::<Value>(&text) else {
                    break;
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Ok(Link { writer, rx })
    }
}

/// The subscribe that joins the receivers' durable group.
fn join_text() -> Vec<u8> {
    let text = format!(
        r#"{{"op":"subscribe","channel":"{CHANNEL}","group":"{GROUP}","ack":true,"durable":true,"ref":"join"}}"#
    );
    text.into_bytes()
}

/// A live connection: the write half and what the reader task forwards.
struct Link {
    writer: wsclient::Writer,
    rx: mpsc::UnboundedReceiver<Value>,
}

struct Sender {
    id: u32,
    to: String,
    /// Publishes to the durable group instead of sending to `to`.
    publish: bool,
}

/// A sender: one persisted send per interval until the sends stop, then waits (to the end of
/// the drain) for the rest to be confirmed, reconnecting and resending as needed.
async fn send(agent: Agent, me: Sender, plan: Plan, stats: Arc<StatsHandle>, ledger: Arc<Ledger>) {
    let interval = (1e6 / plan.rate.max(0.001)) as u64;
    // The run clock's start as Unix milliseconds.
    let wall_at_start = crate::clock::unix_ms().saturating_sub(stats.stats().now_us() / 1000);
    let mut next_due = stats.stats().now_us() + rand_below(interval);
    let mut seq = 0u64;
    // seq → (intended time, request text), until confirmed.
    let mut unconfirmed: BTreeMap<u64, (u64, String)> = BTreeMap::new();
    let mut link: Option<Link> = None;
    let mut local = Local::default();
    let mut last_merge = stats.stats().now_us();
    // Sends the server refused (store unavailable, overloaded, inbox full), resent at
    // `retry_at` on the same link.
    let mut refused: Vec<u64> = Vec::new();
    let mut retry_at = u64::MAX;
    loop {
        let now = stats.stats().now_us();
        let sending = next_due < plan.sends_until_us;
        if (!sending && unconfirmed.is_empty()) || now >= plan.end_us {
            break;
        }
        if link.is_none() {
            link = agent.connect(stats.stats(), plan.end_us).await;
            let Some(l) = &link else { break };
            // Resend what was not confirmed, with the same msg_ids.
            for (_, text) in unconfirmed.values() {
                if wsclient::send_text(&l.writer, text.as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        let l = link.as_mut().expect("connected");
        if now >= retry_at {
            retry_at = u64::MAX;
            for seq in refused.drain(..) {
                let Some((_, text)) = unconfirmed.get(&seq) else {
                    continue;
                };
                if wsclient::send_text(&l.writer, text.as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        let wake = if sending { next_due } else { plan.end_us }.min(retry_at);
        let sleep = crate::timer::sleep_until(stats.stats().start + Duration::from_micros(wake));
        tokio::select! {
            _ = sleep, if sending || now < plan.end_us => {
                if !sending || stats.stats().now_us() < next_due {
                    continue;
                }
                // Due at an absolute time (the intended send time plus the delay), so that
                // how late it arrives does not count the send's own trip.
                let delay = match plan.delay_ms {
                    0 => String::new(),
                    ms => {
                        let due = wall_at_start + next_due / 1000 + ms;
                        format!(r#","deliver_at":"{}""#, crate::clock::utc_ms(due))
                    }
                };
                let to = match me.publish {
                    true => format!(r#""op":"publish","channel":"{CHANNEL}""#),
                    false => format!(r#""op":"send","user":"{}""#, me.to),
                };
                let text = format!(
                    r#"{{{to},"persist":true,"msg_id":"{}-{seq}","ref":{seq}{delay},"data":{{"s":{},"q":{seq},"t":{next_due},"pad":"{}"}}}}"#,
                    me.id, me.id, plan.pad
                );
                let counts = local.counts(Workload::Reliable);
                counts.sent += 1;
                counts.late += (stats.stats().now_us().saturating_sub(next_due) > interval) as u64;
                let failed = wsclient::send_text(&l.writer, text.as_bytes()).await.is_err();
                unconfirmed.insert(seq, (next_due, text));
                seq += 1;
                next_due += interval;
                if failed {
                    link = None;
                }
            }
            answer = l.rx.recv() => match answer {
                None => link = None,
                Some(v) => {
                    let Some(q) = v["ref"].as_u64() else { continue };
                    match v["op"].as_str() {
                        Some("ok") => {
                            if let Some((due, _)) = unconfirmed.remove(&q) {
                                let now = stats.stats().now_us();
                                local.latency(Workload::Reliable, now.saturating_sub(due));
                                ledger.confirmed.lock().unwrap().insert((me.id, q));
                                // The first send made after the kill to be confirmed.
                                let killed = ledger.kill_us.load(Ordering::Relaxed);
                                if killed > 0 && due > killed {
                                    let _ = ledger.first_after_kill_us.compare_exchange(
                                        0, now, Ordering::Relaxed, Ordering::Relaxed);
                                }
                            }
                        }
                        // Refused: resent after a pause (errors count; a lasting refusal shows
                        // as "unconfirmed" at the end).
                        _ => {
                            let code = v["code"].as_str().unwrap_or("error").to_string();
                            local.error(Workload::Reliable, &code);
                            refused.push(q);
                            retry_at = retry_at.min(stats.stats().now_us() + RETRY_PAUSE_US);
                        }
                    }
                }
            },
        }
        if stats.stats().now_us() - last_merge > 200_000 {
            stats.merge(&mut local);
            last_merge = stats.stats().now_us();
        }
    }
    for _ in &unconfirmed {
        local.error(Workload::Reliable, "unconfirmed");
    }
    stats.merge(&mut local);
    ledger.senders_done.fetch_add(1, Ordering::Relaxed);
}

/// A receiver: acknowledges every message, records each (sender, seq) once, and counts
/// repeats, until the drain ends or everything confirmed so far has arrived after sends stop.
async fn receive(agent: Agent, plan: Plan, stats: Arc<StatsHandle>, ledger: Arc<Ledger>) {
    let mut link: Option<Link> = None;
    let mut local = Local::default();
    let mut last_merge = stats.stats().now_us();
    loop {
        let now = stats.stats().now_us();
        if now >= plan.end_us {
            break;
        }
        let senders_done = ledger.senders_done.load(Ordering::Relaxed) == u64::from(plan.senders);
        if senders_done && all_delivered(&ledger) {
            break;
        }
        if link.is_none() {
            link = agent.connect(stats.stats(), plan.end_us).await;
            let Some(l) = &link else { break };
            if plan.groups && wsclient::send_text(&l.writer, &join_text()).await.is_err() {
                link = None;
                continue;
            }
        }
        let l = link.as_mut().expect("connected");
        let tick = tokio::time::sleep(Duration::from_millis(100));
        tokio::select! {
            _ = tick => {}
            message = l.rx.recv() => match message {
                None => link = None,
                Some(m) if m["op"] == "message" => {
                    let key = (m["data"]["s"].as_u64().unwrap_or(0) as u32,
                               m["data"]["q"].as_u64().unwrap_or(0));
                    let first = ledger.delivered.lock().unwrap().insert(key);
                    if first && plan.delay_ms > 0 {
                        // Due at the intended send time plus the delay (run clock, µs).
                        let due = m["data"]["t"].as_u64().unwrap_or(0) + plan.delay_ms * 1000;
                        let late = stats.stats().now_us().saturating_sub(due);
                        local.latency(Workload::Schedule, late);
                        local.counts(Workload::Schedule).received += 1;
                    }
                    let counts = local.counts(Workload::Reliable);
                    if first {
                        counts.received += 1;
                    } else if m.get("redelivered").is_some() {
                        counts.redelivered += 1;
                    } else {
                        counts.duplicated += 1;
                    }
                    let ack = format!(r#"{{"op":"ack","id":{}}}"#, m["id"]);
                    if wsclient::send_text(&l.writer, ack.as_bytes()).await.is_err() {
                        link = None;
                    }
                }
                Some(_) => {}
            },
        }
        if stats.stats().now_us() - last_merge > 200_000 {
            stats.merge(&mut local);
            last_merge = stats.stats().now_us();
        }
    }
    stats.merge(&mut local);
}

fn all_delivered(ledger: &Ledger) -> bool {
    let confirmed = ledger.confirmed.lock().unwrap();
    let delivered = ledger.delivered.lock().unwrap();
    confirmed.is_subset(&delivered)
}

/// A number in [0, n) from the clock's low bits (jitter needs no better randomness).
fn rand_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mixed = nanos.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17;
    mixed % n.max(1)
}
