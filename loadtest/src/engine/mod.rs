//! The load engine on goose 0.19: each role (echo, publisher, subscriber, churn) is a goose
//! scenario whose users each own one WebSocket. A user's `tick` transaction sends what its
//! open-model schedule says is due (latency counts from the *intended* send time, so a stalled
//! server cannot hide its stall), then hands the samples its reader task collected to goose
//! (`record_custom_request_duration`) and to the run's HdrHistograms.
//!
//! `state` holds what a run's users share and the roles; `reader` is each connection's reader.

mod frame;
mod reader;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goose::prelude::*;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::stats::{Local, Sequence, Workload};
use crate::wsclient::{self, Incoming, Writer};
use reader::{read_loop, Shared};
use state::{agent_target, workload_of, Role, GROUP, TASKS, TASK_SENDER};
pub use state::{Agents, Run};

/// Longest a tick runs before returning to goose (which may then stop the user).
const TICK: Duration = Duration::from_millis(100);
/// A subscriber's or group member's tick: its reader merges its samples (see
/// `reader::MERGE`), so the tick only hands goose control back to stop the user.
const RECEIVER_TICK: Duration = Duration::from_millis(1000);
/// How long a churn cycle or a subscribe may wait for the server.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// A publisher's or subscriber's fan-out channel.
    channel: String,
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
        channel: String::new(),
        agent: 0,
    };
    match role {
        Role::Publisher => {
            state.publisher = run.next_publisher.fetch_add(1, Ordering::Relaxed);
            state.channel = run.fanout_channel(state.publisher & u64::from(u32::MAX), true);
        }
        Role::Subscriber => {
            let k = run.next_subscriber.fetch_add(1, Ordering::Relaxed);
            state.channel = run.fanout_channel(k, false);
        }
        Role::TaskPublisher => {
            let n = run.next_publisher.fetch_add(1, Ordering::Relaxed);
            state.publisher = TASK_SENDER | n;
        }
        Role::Direct => {
            state.agent = run.next_direct.fetch_add(1, Ordering::Relaxed);
            state.publisher = run.direct_sender(state.agent);
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
            r#"{{"op":"subscribe","channel":"{}","ref":"s"}}"#,
            state.channel
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
    let member = (role == Role::GroupMember).then(|| run.tasks.lock().unwrap().member());
    if role == Role::Direct {
        // This agent hears from the previous one: a sequence it expects, so that losses count
        // even if nothing arrives.
        let n = run.scenario.direct_users.max(1) as u64;
        let from = run.direct_sender((state.agent + n - 1) % n);
        state
            .sequences
            .lock()
            .unwrap()
            .insert(from, Sequence::expecting(0));
    }
    run.stats.connections.fetch_add(1, Ordering::Relaxed);
    if matches!(role, Role::Direct | Role::GroupMember) {
        run.agents_ready.fetch_add(1, Ordering::Relaxed);
    }
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

/// Checks, before a run starts, that the target answers as the run will expect: it accepts a
/// connection, upgrades to WebSocket on the path, and (unless `raw`) greets with wsedge's
/// `welcome`. The error is one line saying what is wrong and what to try.
pub async fn preflight(
    target: &wsclient::Target,
    raw: bool,
    subprotocol: Option<&str>,
) -> anyhow::Result<()> {
    let mut target = target.clone();
    if raw {
        target.path = "/echo".into();
    }
    let url = format!("ws://{}{}", target.addr, target.path);
    let connected = tokio::time::timeout(REPLY_TIMEOUT, wsclient::connect(&target, 0, subprotocol));
    let (mut reader, writer) = match connected.await {
        Err(_) => {
            anyhow::bail!("{url}: no answer to the WebSocket upgrade within {REPLY_TIMEOUT:?}")
        }
        Ok(Err(e)) => {
            let why = format!("{e:#}");
            let hint = if why.contains("refused") {
                " (is the server running on that port?)"
            } else if why.contains("404") {
                " (wrong path? wsedge serves /ws)"
            } else if why.contains("upgrade refused") {
                ""
            } else {
                " (is it a WebSocket server?)"
            };
            anyhow::bail!("{url}: {why}{hint}")
        }
        Ok(Ok(halves)) => halves,
    };
    if !raw {
        welcome(&mut reader, &writer).await.map_err(|e| {
            anyhow::anyhow!(
                "{url}: not wsedge's protocol ({e:#}); for a plain WebSocket server give --raw"
            )
        })?;
    }
    wsclient::close(&writer).await;
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

async fn tick(run: Arc<Run>, role: Role, user: &mut GooseUser) -> TransactionResult {
    let session = user
        .get_session_data::<Session>()
        .ok_or_else(|| custom_error("no session"))?
        .clone();
    let mut state = session.0.lock().await;
    let tick_end = run.stats.now_us() + TICK.as_micros() as u64;
    match role {
        Role::Subscriber | Role::GroupMember => tokio::time::sleep(RECEIVER_TICK).await,
        Role::Direct | Role::TaskPublisher if !run.agents_ready() => {
            // Not every recipient is connected yet (a loaded machine can stretch the ramp):
            // these sends are skipped, not sent and lost.
            while state.next_due_us < tick_end {
                state.next_due_us += state.interval_us.max(1);
            }
            tokio::time::sleep(TICK).await;
        }
        Role::Echo | Role::Publisher | Role::Churn | Role::Direct | Role::TaskPublisher => {
            while state.next_due_us < tick_end && state.next_due_us < run.sends_until_us() {
                let due = state.next_due_us;
                crate::timer::sleep_until(run.stats.start + Duration::from_micros(due)).await;
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
    run.record(&mut batch);
    Ok(())
}

/// Sends one scheduled message (or runs one churn cycle).
async fn send_one(run: &Arc<Run>, role: Role, index: usize, state: &mut UserState, due: u64) {
    let (pad, seq) = (&run.pad, state.seq);
    let p = state.publisher;
    // The actual send time, beside the intended one (`due`): their difference is the client's
    // own timer lag, which the graded latency includes and `*_from_send` leaves out.
    let a = run.stats.now_us();
    let text = match (role, run.raw) {
        (Role::Echo, false) => {
            format!(r#"{{"op":"echo","ref":{seq},"data":{{"t":{due},"a":{a},"pad":"{pad}"}}}}"#)
        }
        (Role::Echo, true) => format!(r#"{{"ref":{seq},"t":{due},"a":{a},"pad":"{pad}"}}"#),
        (Role::Publisher, false) => {
            let channel = &state.channel;
            format!(
                r#"{{"op":"publish","channel":"{channel}","data":{{"p":{p},"s":{seq},"t":{due},"a":{a},"pad":"{pad}"}}}}"#
            )
        }
        (Role::Publisher, true) => {
            format!(r#"{{"p":{p},"s":{seq},"t":{due},"a":{a},"pad":"{pad}"}}"#)
        }
        (Role::Direct, _) => {
            let n = run.scenario.direct_users.max(1) as u64;
            let to = run.agent((state.agent + 1) % n);
            format!(
                r#"{{"op":"send","user":"{to}","data":{{"p":{p},"s":{seq},"t":{due},"a":{a},"pad":"{pad}"}}}}"#
            )
        }
        (Role::TaskPublisher, _) => format!(
            r#"{{"op":"publish","channel":"{TASKS}","data":{{"p":{p},"s":{seq},"t":{due},"a":{a},"pad":"{pad}"}}}}"#
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
            br#"{"op":"subscribe","channel":"loadtest.churn","ref":1}"#,
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
                // Every task of every publisher should have reached one member.
                let last = last.unwrap_or_default();
                if let Some(lost) = run.tasks.lock().unwrap().lost(&last) {
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
    run.record(&mut local);
    Ok(())
}
