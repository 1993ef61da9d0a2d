//! The load engine on goose 0.19: each role (echo, publisher, subscriber, churn) is a goose
//! scenario whose users each own one WebSocket. A user's `tick` transaction sends what its
//! open-model schedule says is due (latency counts from the *intended* send time, so a stalled
//! server cannot hide its stall), then hands the samples its reader task collected to goose
//! (`record_custom_request_duration`) and to the run's HdrHistograms.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goose::prelude::*;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::peers::Peers;
use crate::scenario::Scenario as Plan;
use crate::stats::{Local, Sequence, Stats, Workload};
use crate::wsclient::{self, Incoming, Target, Writer};

/// Longest a tick runs before returning to goose (which may then stop the user).
const TICK: Duration = Duration::from_millis(100);
/// How long a churn cycle or a subscribe may wait for the server.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Failures of one kind reported to goose per tick at most (the run's counters stay exact).
const GOOSE_ERRORS_PER_TICK: u64 = 100;
/// The fan-out channel.
const CHANNEL: &str = "loadtest.fanout";
/// The channel tasks are published to, and the queue group of agents that takes them.
const TASKS: &str = "loadtest.tasks";
const GROUP: &str = "agents";
/// Sender ids of direct-message agents and of task publishers (fan-out publishers count up
/// from 0 per process).
const DIRECT_SENDER: u64 = 1 << 62;
const TASK_SENDER: u64 = 1 << 61;
/// How long a direct agent's token is valid: longer than any run.
const TOKEN_TTL_S: u64 = 7 * 86_400;

/// What the direct and group workloads need besides the rest.
#[derive(Debug, Clone, Default)]
pub struct Agents {
    /// The server's `auth.hs256_secret`: direct agents sign their own tokens with it.
    pub secret: Option<String>,
    /// Direct and task sends start here (µs since start): after the ramp, so that every
    /// recipient and group member is connected.
    pub sends_from_us: u64,
}

/// Which tasks the group members of this process received, to count losses and duplicates.
#[derive(Default)]
struct Tasks {
    /// Publisher → task sequence numbers received.
    seen: HashMap<u64, std::collections::HashSet<u64>>,
    /// Tasks each member took.
    shares: Vec<u64>,
    /// Losses were counted (once, by the first member to stop).
    accounted: bool,
}

/// What all users of a run share.
pub struct Run {
    pub target: Target,
    pub scenario: Plan,
    pub stats: Stats,
    /// Sends stop at this time (µs since start); the rest of the run drains in-flight messages.
    /// Moved earlier when a stress step breaks ([`Run::stop_sends`]).
    sends_until_us: AtomicU64,
    /// Last sequence number each publisher sent.
    pub last_seq: Mutex<HashMap<u64, u64>>,
    pub next_publisher: AtomicU64,
    /// Raw mode: bare payloads to `/echo` and `/broadcast`, no wsedge envelope (for a plain peer).
    pub raw: bool,
    pad: String,
    peers: Option<Peers>,
    all_last_seq: tokio::sync::OnceCell<Result<HashMap<u64, u64>, String>>,
    agents: Agents,
    next_direct: AtomicU64,
    tasks: Mutex<Tasks>,
}

impl Run {
    /// `peers`: the other processes of a run split over several (`None`: this one alone).
    pub fn new(
        target: Target,
        scenario: Plan,
        stats: Stats,
        sends_until_us: u64,
        raw: bool,
        peers: Option<Peers>,
        agents: Agents,
    ) -> Self {
        let pad = "x".repeat(scenario.payload_bytes);
        // Publisher ids are unique across processes.
        let first_publisher = peers.as_ref().map_or(0, |p| (p.index as u64) << 32);
        Run {
            target,
            scenario,
            stats,
            sends_until_us: AtomicU64::new(sends_until_us),
            last_seq: Mutex::default(),
            next_publisher: AtomicU64::new(first_publisher),
            raw,
            pad,
            peers,
            all_last_seq: tokio::sync::OnceCell::new(),
            agents,
            next_direct: AtomicU64::new(0),
            tasks: Mutex::default(),
        }
    }

    /// Tasks each group member of this process took (in member order).
    pub fn group_shares(&self) -> Vec<u64> {
        self.tasks.lock().unwrap().shares.clone()
    }

    /// This process's index among the run's processes.
    fn process(&self) -> u64 {
        self.peers.as_ref().map_or(0, |p| p.index as u64)
    }

    /// Direct agent `k`'s user id.
    fn agent(&self, k: u64) -> String {
        format!("agent-{}-{k}", self.process())
    }

    /// The last sequence number every publisher of the run sent (of every process: exchanged
    /// once, after sends stopped).
    async fn last_sent(&self) -> Result<HashMap<u64, u64>, String> {
        let own = self.last_seq.lock().unwrap().clone();
        let Some(peers) = &self.peers else {
            return Ok(own);
        };
        self.all_last_seq
            .get_or_init(|| async {
                peers
                    .exchange_last_seq(&own)
                    .await
                    .map_err(|e| format!("{e:#}"))
            })
            .await
            .clone()
    }

    /// When sends stop (µs since start).
    pub fn sends_until_us(&self) -> u64 {
        self.sends_until_us.load(Ordering::Relaxed)
    }

    /// Stops every sender now (at most one tick late); in-flight messages still count.
    pub fn stop_sends(&self) {
        self.sends_until_us
            .fetch_min(self.stats.now_us(), Ordering::Relaxed);
    }

    /// [`Run::stop_sends`] here and in the run's other processes.
    pub fn stop_sends_everywhere(&self) -> anyhow::Result<()> {
        self.stop_sends();
        self.peers.as_ref().map_or(Ok(()), Peers::request_stop)
    }

    fn subprotocol(&self) -> Option<&'static str> {
        (self.scenario.lz4 && !self.raw).then_some("wsedge.v1.lz4")
    }

    /// Where a role connects: the target's path, or in raw mode `/echo` or `/broadcast`.
    fn target_for(&self, role: Role) -> Target {
        let mut target = self.target.clone();
        if self.raw {
            let path = if matches!(role, Role::Publisher | Role::Subscriber) {
                "/broadcast"
            } else {
                "/echo"
            };
            target.path = path.into();
        }
        target
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Echo,
    Publisher,
    Subscriber,
    Churn,
    /// Sends direct messages to the next agent and receives the previous one's.
    Direct,
    /// Publishes tasks for the group.
    TaskPublisher,
    /// A member of the queue group that takes the tasks.
    GroupMember,
}

/// One user's state; goose keeps it as session data.
struct UserState {
    writer: Option<Writer>,
    reader: Option<JoinHandle<()>>,
    local: Arc<Mutex<Local>>,
    /// Subscriber sequence tracking per publisher (shared with the reader task).
    sequences: Arc<Mutex<BTreeMap<u64, Sequence>>>,
    /// Set before we close, so the reader does not count our own close as the server's.
    closing: Arc<AtomicBool>,
    /// Echo replies received over the user's life (the reader counts them).
    replies: Arc<AtomicU64>,
    next_due_us: u64,
    interval_us: u64,
    seq: u64,
    publisher: u64,
    /// A direct agent's number (its user is `agent-<process>-<k>`).
    agent: u64,
}

#[derive(Clone)]
struct Session(Arc<tokio::sync::Mutex<UserState>>);

/// Registers one goose scenario per role with users.
pub fn register(
    mut attack: Box<GooseAttack>,
    run: &Arc<Run>,
) -> Result<Box<GooseAttack>, GooseError> {
    let s = &run.scenario;
    for (role, name, users) in [
        (Role::Echo, "echo", s.echo_users),
        (Role::Publisher, "publisher", s.publishers),
        (Role::Subscriber, "subscriber", s.subscribers),
        (Role::Churn, "churn", s.churn_users),
        (Role::Direct, "direct", s.direct_users),
        (Role::TaskPublisher, "task_publisher", s.task_publishers),
        (Role::GroupMember, "group_member", s.group_members),
    ] {
        if users == 0 {
            continue;
        }
        let (a, b, c) = (run.clone(), run.clone(), run.clone());
        let start = Transaction::new(Arc::new(move |u| Box::pin(on_start(a.clone(), role, u))))
            .set_on_start();
        let tick = Transaction::new(Arc::new(move |u| Box::pin(tick(b.clone(), role, u))));
        let stop = Transaction::new(Arc::new(move |u| Box::pin(on_stop(c.clone(), role, u))))
            .set_on_stop();
        attack = Box::new(
            attack.register_scenario(
                Scenario::new(name)
                    .set_weight(users as usize)?
                    .register_transaction(start.set_name("connect"))
                    .register_transaction(tick.set_name(name))
                    .register_transaction(stop.set_name("close")),
            ),
        );
    }
    Ok(attack)
}

fn custom_error(e: impl std::fmt::Display) -> Box<TransactionError> {
    Box::new(TransactionError::Custom(e.to_string()))
}

async fn on_start(run: Arc<Run>, role: Role, user: &mut GooseUser) -> TransactionResult {
    let rate = match role {
        Role::Echo => run.scenario.echo_rate,
        Role::Publisher => run.scenario.publish_rate,
        Role::Churn => run.scenario.churn_rate,
        Role::Direct => run.scenario.direct_rate,
        Role::TaskPublisher => run.scenario.task_rate,
        Role::Subscriber | Role::GroupMember => 1.0,
    };
    let interval_us = (1e6 / rate.max(0.001)) as u64;
    let index = user.weighted_users_index;
    let mut state = UserState {
        writer: None,
        reader: None,
        local: Arc::default(),
        sequences: Arc::default(),
        closing: Arc::default(),
        replies: Arc::default(),
        // Spread the users' schedules over one interval so they do not send in lockstep.
        next_due_us: run.stats.now_us() + (index as u64).wrapping_mul(7919) % interval_us.max(1),
        interval_us,
        seq: 0,
        publisher: 0,
        agent: 0,
    };
    match role {
        Role::Publisher => {
            state.publisher = run.next_publisher.fetch_add(1, Ordering::Relaxed);
        }
        Role::TaskPublisher => {
            let n = run.next_publisher.fetch_add(1, Ordering::Relaxed);
            state.publisher = TASK_SENDER | n;
        }
        Role::Direct => {
            state.agent = run.next_direct.fetch_add(1, Ordering::Relaxed);
            state.publisher = DIRECT_SENDER | run.process() << 32 | state.agent;
        }
        _ => {}
    }
    if matches!(role, Role::Direct | Role::TaskPublisher) {
        state.next_due_us = state
            .next_due_us
            .max(run.agents.sends_from_us + state.next_due_us % state.interval_us.max(1));
    }
    if role != Role::Churn {
        if let Err(e) = open(&run, role, index, &mut state).await {
            state
                .local
                .lock()
                .unwrap()
                .error(workload_of(role), &format!("connect: {e}"));
            run.stats.merge(&mut state.local.lock().unwrap());
        }
    }
    user.set_session_data(Session(Arc::new(tokio::sync::Mutex::new(state))));
    Ok(())
}

fn workload_of(role: Role) -> Workload {
    match role {
        Role::Echo => Workload::Echo,
        Role::Publisher | Role::Subscriber => Workload::Fanout,
        Role::Churn => Workload::Churn,
        Role::Direct => Workload::Direct,
        Role::TaskPublisher | Role::GroupMember => Workload::Group,
    }
}

/// A direct agent's target: the server's path with its token.
fn agent_target(run: &Run, role: Role, agent: u64) -> anyhow::Result<Target> {
    let mut target = run.target_for(role);
    if role != Role::Direct {
        return Ok(target);
    }
    let secret = run.agents.secret.as_deref().ok_or_else(|| {
        anyhow::anyhow!("the direct workload needs the server's auth.hs256_secret (--hs256-secret)")
    })?;
    let exp = crate::clock::unix_ms() / 1000 + TOKEN_TTL_S;
    let claims = serde_json::json!({"sub": run.agent(agent), "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)?;
    let separator = if target.path.contains('?') { '&' } else { '?' };
    target.path = format!("{}{separator}token={token}", target.path);
    Ok(target)
}

/// Connects, subscribes subscribers, and starts the reader task.
async fn open(
    run: &Arc<Run>,
    role: Role,
    index: usize,
    state: &mut UserState,
) -> anyhow::Result<()> {
    let target = agent_target(run, role, state.agent)?;
    let (mut reader, writer) = wsclient::connect(&target, index, run.subprotocol()).await?;
    if !run.raw {
        welcome(&mut reader, &writer).await?;
    }
    let subscribe = match role {
        Role::Subscriber => Some(format!(
            r#"{{"op":"subscribe","channel":"{CHANNEL}","ref":"s"}}"#
        )),
        Role::GroupMember => Some(format!(
            r#"{{"op":"subscribe","channel":"{TASKS}","group":"{GROUP}","ref":"s"}}"#
        )),
        _ => None,
    };
    if let Some(request) = subscribe.filter(|_| !run.raw) {
        wsclient::send_text(&writer, request.as_bytes()).await?;
        expect_op(&mut reader, &writer, "ok").await?;
    }
    let member = (role == Role::GroupMember).then(|| {
        let mut tasks = run.tasks.lock().unwrap();
        tasks.shares.push(0);
        tasks.shares.len() - 1
    });
    if role == Role::Direct {
        // This agent hears from the previous one: a sequence it expects, so that losses count
        // even if nothing arrives.
        let n = run.scenario.direct_users.max(1) as u64;
        let from = DIRECT_SENDER | run.process() << 32 | ((state.agent + n - 1) % n);
        state
            .sequences
            .lock()
            .unwrap()
            .insert(from, Sequence::expecting(0));
    }
    run.stats.connections.fetch_add(1, Ordering::Relaxed);
    let shared = Shared {
        run: run.clone(),
        role,
        member,
        writer: writer.clone(),
        local: state.local.clone(),
        sequences: state.sequences.clone(),
        closing: state.closing.clone(),
        replies: state.replies.clone(),
    };
    state.reader = Some(tokio::spawn(read_loop(shared, reader)));
    state.writer = Some(writer);
    Ok(())
}

async fn welcome(reader: &mut wsclient::Reader, writer: &Writer) -> anyhow::Result<()> {
    expect_op(reader, writer, "welcome").await
}

async fn expect_op(reader: &mut wsclient::Reader, writer: &Writer, op: &str) -> anyhow::Result<()> {
    let frame = tokio::time::timeout(REPLY_TIMEOUT, wsclient::next(reader, writer))
        .await
        .map_err(|_| anyhow::anyhow!("timed out waiting for {op}"))??;
    let Incoming::Text(text) = frame else {
        anyhow::bail!("expected {op}, got a non-text frame")
    };
    let v: Value = serde_json::from_slice(&text)?;
    anyhow::ensure!(v["op"] == op, "expected {op}, got {v}");
    Ok(())
}

/// A server frame as the reader needs it (other fields are skipped).
#[derive(serde::Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    data: Option<Data>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    /// Set on direct messages.
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
}

/// The `data` loadtest sends: publisher, sequence number, intended send time (µs).
#[derive(serde::Deserialize, Default)]
struct Data {
    p: Option<u64>,
    s: Option<u64>,
    t: Option<u64>,
}

/// What a reader task shares with its user.
struct Shared {
    run: Arc<Run>,
    role: Role,
    /// A group member's place in the run's shares.
    member: Option<usize>,
    writer: Writer,
    local: Arc<Mutex<Local>>,
    sequences: Arc<Mutex<BTreeMap<u64, Sequence>>>,
    closing: Arc<AtomicBool>,
    replies: Arc<AtomicU64>,
}

/// Reads replies and deliveries until the connection ends, recording latencies.
async fn read_loop(shared: Shared, mut reader: wsclient::Reader) {
    let Shared {
        run,
        role,
        member,
        writer,
        local,
        sequences,
        closing,
        replies,
    } = shared;
    let workload = workload_of(role);
    loop {
        let text = match wsclient::next(&mut reader, &writer).await {
            Ok(Incoming::Text(t)) => t,
            Ok(Incoming::Binary(b)) => match lz4_flex::decompress_size_prepended(&b) {
                Ok(t) => t,
                Err(_) => {
                    local.lock().unwrap().error(workload, "bad_lz4");
                    continue;
                }
            },
            Ok(Incoming::Closed) | Err(_) => break,
        };
        let now = run.stats.now_us();
        // Typed, borrowed parsing: a subscriber may read hundreds of thousands of messages/s.
        let parsed = if run.raw {
            serde_json::from_slice::<Data>(&text).map(|data| Reply {
                // A plain peer broadcasts to publishers too: only subscribers count deliveries.
                op: match role {
                    Role::Echo => Some("echo".into()),
                    Role::Subscriber => Some("message".into()),
                    _ => None,
                },
                data: Some(data),
                code: None,
                user: None,
            })
        } else {
            serde_json::from_slice::<Reply<'_>>(&text)
        };
        let Ok(reply) = parsed else {
            local.lock().unwrap().error(workload, "bad_json");
            continue;
        };
        let mut local = local.lock().unwrap();
        let data = reply.data.unwrap_or_default();
        match reply.op.as_deref() {
            Some("echo") => {
                local.latency(Workload::Echo, now.saturating_sub(data.t.unwrap_or(now)));
                local.counts(Workload::Echo).received += 1;
                replies.fetch_add(1, Ordering::Relaxed);
            }
            Some("message") => {
                let kind = match (role, reply.user.is_some()) {
                    (_, true) => Workload::Direct,
                    (Role::GroupMember, false) => Workload::Group,
                    _ => Workload::Fanout,
                };
                let (Some(p), Some(s), Some(t)) = (data.p, data.s, data.t) else {
                    local.error(kind, "bad_message");
                    continue;
                };
                local.latency(kind, now.saturating_sub(t));
                let counts = local.counts(kind);
                counts.received += 1;
                if kind == Workload::Group {
                    let mut tasks = run.tasks.lock().unwrap();
                    if !tasks.seen.entry(p).or_default().insert(s) {
                        counts.duplicated += 1;
                    }
                    if let Some(share) = member.and_then(|m| tasks.shares.get_mut(m)) {
                        *share += 1;
                    }
                    continue;
                }
                sequences
                    .lock()
                    .unwrap()
                    .entry(p)
                    .or_default()
                    .observe(s, counts);
            }
            Some("error") => {
                let code = reply.code.as_deref().unwrap_or("unknown");
                local.error(workload, &format!("server_error:{code}"));
            }
            _ => {}
        }
    }
    if !closing.load(Ordering::Relaxed) {
        local.lock().unwrap().error(workload, "closed_by_server");
    }
}

async fn tick(run: Arc<Run>, role: Role, user: &mut GooseUser) -> TransactionResult {
    let session = user
        .get_session_data::<Session>()
        .ok_or_else(|| custom_error("no session"))?
        .clone();
    let mut state = session.0.lock().await;
    let tick_end = run.stats.now_us() + TICK.as_micros() as u64;
    match role {
        Role::Subscriber | Role::GroupMember => tokio::time::sleep(TICK).await,
        Role::Echo | Role::Publisher | Role::Churn | Role::Direct | Role::TaskPublisher => {
            while state.next_due_us < tick_end && state.next_due_us < run.sends_until_us() {
                let due = state.next_due_us;
                tokio::time::sleep_until(
                    tokio::time::Instant::from_std(run.stats.start) + Duration::from_micros(due),
                )
                .await;
                let late = run.stats.now_us().saturating_sub(due) > state.interval_us;
                send_one(&run, role, user.weighted_users_index, &mut state, due).await;
                let mut local = state.local.lock().unwrap();
                let counts = local.counts(workload_of(role));
                counts.sent += 1;
                counts.late += late as u64;
                drop(local);
                state.seq += 1;
                state.next_due_us += state.interval_us;
            }
            let rest = tick_end.saturating_sub(run.stats.now_us());
            tokio::time::sleep(Duration::from_micros(rest)).await;
        }
    }
    let mut batch = std::mem::take(&mut *state.local.lock().unwrap());
    drop(state);
    report(&run, user, &mut batch).await
}

/// Sends one scheduled message (or runs one churn cycle).
async fn send_one(run: &Arc<Run>, role: Role, index: usize, state: &mut UserState, due: u64) {
    let (pad, seq) = (&run.pad, state.seq);
    let p = state.publisher;
    let text = match (role, run.raw) {
        (Role::Echo, false) => {
            format!(r#"{{"op":"echo","ref":{seq},"data":{{"t":{due},"pad":"{pad}"}}}}"#)
        }
        (Role::Echo, true) => format!(r#"{{"ref":{seq},"t":{due},"pad":"{pad}"}}"#),
        (Role::Publisher, false) => {
            format!(
                r#"{{"op":"publish","channel":"{CHANNEL}","data":{{"p":{p},"s":{seq},"t":{due},"pad":"{pad}"}}}}"#
            )
        }
        (Role::Publisher, true) => format!(r#"{{"p":{p},"s":{seq},"t":{due},"pad":"{pad}"}}"#),
        (Role::Direct, _) => {
            let n = run.scenario.direct_users.max(1) as u64;
            let to = run.agent((state.agent + 1) % n);
            format!(
                r#"{{"op":"send","user":"{to}","data":{{"p":{p},"s":{seq},"t":{due},"pad":"{pad}"}}}}"#
            )
        }
        (Role::TaskPublisher, _) => format!(
            r#"{{"op":"publish","channel":"{TASKS}","data":{{"p":{p},"s":{seq},"t":{due},"pad":"{pad}"}}}}"#
        ),
        (Role::Churn, _) => return churn_cycle(run, index, state, due).await,
        (Role::Subscriber | Role::GroupMember, _) => return,
    };
    let Some(writer) = &state.writer else {
        state
            .local
            .lock()
            .unwrap()
            .error(workload_of(role), "not_connected");
        return;
    };
    if let Err(e) = wsclient::send_text(writer, text.as_bytes()).await {
        state
            .local
            .lock()
            .unwrap()
            .error(workload_of(role), &format!("send: {e}"));
        return;
    }
    if matches!(role, Role::Publisher | Role::Direct | Role::TaskPublisher) {
        run.last_seq.lock().unwrap().insert(state.publisher, seq);
    }
}

/// Connect, read the welcome, subscribe, disconnect: the latency is intended start → welcome.
async fn churn_cycle(run: &Arc<Run>, index: usize, state: &mut UserState, due: u64) {
    let result = async {
        let (mut reader, writer) =
            wsclient::connect(&run.target_for(Role::Churn), index, None).await?;
        if run.raw {
            let connected = run.stats.now_us();
            wsclient::close(&writer).await;
            return anyhow::Ok(connected);
        }
        welcome(&mut reader, &writer).await?;
        let welcomed = run.stats.now_us();
        wsclient::send_text(
            &writer,
            format!(r#"{{"op":"subscribe","channel":"{CHANNEL}.churn","ref":1}}"#).as_bytes(),
        )
        .await?;
        expect_op(&mut reader, &writer, "ok").await?;
        wsclient::close(&writer).await;
        anyhow::Ok(welcomed)
    }
    .await;
    let mut local = state.local.lock().unwrap();
    match result {
        Ok(welcomed) => {
            local.latency(Workload::Churn, welcomed.saturating_sub(due));
            local.counts(Workload::Churn).received += 1;
        }
        Err(e) => local.error(Workload::Churn, &format!("{e}")),
    }
}

/// Feeds a batch to goose and to the run's histograms.
async fn report(run: &Run, user: &mut GooseUser, batch: &mut Local) -> TransactionResult {
    let n = batch.samples.len() as u64;
    for &(w, us) in &batch.samples {
        user.record_custom_request_duration(
            "WS",
            w.name(),
            Duration::from_micros(us),
            true,
            None,
            None,
        )
        .await?;
    }
    // Failures go to goose one by one too, capped per kind and tick so that an error storm
    // (e.g. "no_reply" for every echo of a dead server) cannot flood goose's metrics channel;
    // our own counters keep the exact totals.
    for (w, counts) in &batch.counts {
        for (kind, &count) in &counts.errors {
            for _ in 0..count.min(GOOSE_ERRORS_PER_TICK) {
                user.record_custom_request_duration(
                    "WS",
                    w.name(),
                    Duration::ZERO,
                    false,
                    None,
                    Some(kind),
                )
                .await?;
            }
        }
    }
    run.stats.ops.fetch_add(n, Ordering::Relaxed);
    run.stats.merge(batch);
    Ok(())
}

async fn on_stop(run: Arc<Run>, role: Role, user: &mut GooseUser) -> TransactionResult {
    let Some(session) = user.get_session_data::<Session>().cloned() else {
        return Ok(());
    };
    let mut state = session.0.lock().await;
    let at_end = run.stats.now_us() >= run.sends_until_us();
    state.closing.store(true, Ordering::Relaxed);
    if let Some(writer) = state.writer.take() {
        wsclient::close(&writer).await;
        run.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }
    // Give the reader a moment to see the close answered, then stop it.
    if let Some(reader) = state.reader.take() {
        let _ = tokio::time::timeout(Duration::from_millis(200), reader).await;
    }
    let mut local = std::mem::take(&mut *state.local.lock().unwrap());
    if at_end {
        // Only users alive to the end can tell what never arrived. Every process takes part in
        // the exchange of last sequence numbers, whether it has subscribers or not.
        let last = run.last_sent().await;
        match role {
            Role::GroupMember => {
                let mut tasks = run.tasks.lock().unwrap();
                if !std::mem::replace(&mut tasks.accounted, true) {
                    // Every task of every publisher should have reached one member.
                    let last = last.unwrap_or_default();
                    let lost: u64 = last
                        .iter()
                        .filter(|(p, _)| **p & TASK_SENDER != 0)
                        .map(|(p, &s)| {
                            (s + 1).saturating_sub(tasks.seen.get(p).map_or(0, |x| x.len() as u64))
                        })
                        .sum();
                    local.counts(Workload::Group).lost += lost;
                }
            }
            Role::Subscriber | Role::Direct => {
                let workload = workload_of(role);
                let last = match last {
                    Ok(last) => last,
                    Err(e) => {
                        local.error(workload, &e);
                        HashMap::new()
                    }
                };
                let lost: u64 = state
                    .sequences
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(p, seq)| seq.lost(last.get(p).copied()))
                    .sum();
                local.counts(workload).lost += lost;
            }
            Role::Echo => {
                let missing = state
                    .seq
                    .saturating_sub(state.replies.load(Ordering::Relaxed));
                if missing > 0 {
                    *local
                        .counts(Workload::Echo)
                        .errors
                        .entry("no_reply".into())
                        .or_default() += missing;
                }
            }
            _ => {}
        }
    }
    drop(state);
    report(&run, user, &mut local).await
}
