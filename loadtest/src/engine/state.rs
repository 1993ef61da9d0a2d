//! What all users of a run share ([`Run`]), the roles they play, and the state of the direct and
//! group workloads.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::peers::Peers;
use crate::scenario::Scenario as Plan;
use crate::stats::{Local, Stats, Workload};
use crate::wsclient::Target;

/// The channel tasks are published to, and the queue group of agents that takes them.
pub(super) const TASKS: &str = "loadtest.tasks";
pub(super) const GROUP: &str = "agents";
/// Sender ids of direct-message agents and of task publishers (fan-out publishers count up
/// from 0 per process).
pub(super) const DIRECT_SENDER: u64 = 1 << 62;
pub(super) const TASK_SENDER: u64 = 1 << 61;
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
pub(super) struct Tasks {
    /// Publisher → task sequence numbers received.
    seen: HashMap<u64, HashSet<u64>>,
    /// Tasks each member took.
    shares: Vec<u64>,
    /// Losses were counted (once, by the first member to stop).
    accounted: bool,
}

impl Tasks {
    /// A member's place in the shares.
    pub(super) fn member(&mut self) -> usize {
        self.shares.push(0);
        self.shares.len() - 1
    }

    /// `member` took task `s` of publisher `p`; false when a member already had it.
    pub(super) fn take(&mut self, member: Option<usize>, p: u64, s: u64) -> bool {
        if let Some(share) = member.and_then(|m| self.shares.get_mut(m)) {
            *share += 1;
        }
        self.seen.entry(p).or_default().insert(s)
    }

    /// The tasks no member took, given every publisher's last sequence number: once, for the
    /// first member to stop; `None` after.
    pub(super) fn lost(&mut self, last: &HashMap<u64, u64>) -> Option<u64> {
        if std::mem::replace(&mut self.accounted, true) {
            return None;
        }
        let seen = |p: &u64| self.seen.get(p).map_or(0, |s| s.len() as u64);
        let lost = last
            .iter()
            .filter(|(p, _)| **p & TASK_SENDER != 0)
            .map(|(p, &s)| (s + 1).saturating_sub(seen(p)))
            .sum();
        Some(lost)
    }
}

/// The (first) fan-out channel.
const CHANNEL: &str = "loadtest.fanout";

/// What all users of a run share.
pub struct Run {
    pub target: Target,
    pub scenario: Plan,
    pub stats: Stats,
    /// Sends stop at this time (µs since start); the rest of the run drains in-flight messages.
    /// Moved earlier when a stress step breaks ([`Run::stop_sends`]).
    pub(super) sends_until_us: AtomicU64,
    /// Last sequence number each publisher sent.
    pub last_seq: Mutex<HashMap<u64, u64>>,
    pub next_publisher: AtomicU64,
    /// Subscribers started in this process (the next one's fan-out channel follows from it).
    pub(super) next_subscriber: AtomicU64,
    /// Raw mode: bare payloads to `/echo` and `/broadcast`, no wsedge envelope (for a plain peer).
    pub raw: bool,
    pub(super) pad: String,
    pub(super) peers: Option<Peers>,
    pub(super) all_last_seq: tokio::sync::OnceCell<Result<HashMap<u64, u64>, String>>,
    pub(super) agents: Agents,
    pub(super) next_direct: AtomicU64,
    /// Direct agents and group members of this process that are connected and subscribed:
    /// direct and task senders wait for all of them (a send to an agent not yet connected is
    /// not delivered, and would count as lost).
    pub(super) agents_ready: AtomicU64,
    pub(super) tasks: Mutex<Tasks>,
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
            agents_ready: AtomicU64::new(0),
            last_seq: Mutex::default(),
            next_publisher: AtomicU64::new(first_publisher),
            next_subscriber: AtomicU64::new(0),
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

    /// The fan-out channel of this process's `k`-th publisher (`publisher`) or subscriber.
    /// With one channel (the default), every user of every process shares `loadtest.fanout`.
    /// With more, each process runs its share of whole channels, each taking an even share of
    /// the process's publishers and subscribers; as a phase adds users, new channels of the
    /// same size fill.
    pub(super) fn fanout_channel(&self, k: u64, publisher: bool) -> String {
        let s = &self.scenario;
        if s.channels <= 1 {
            return CHANNEL.to_string();
        }
        // This process's share of the channels, split as `Scenario::share` splits the users.
        let (index, processes) = self
            .peers
            .as_ref()
            .map_or((0, 1), |p| (p.index as u64, p.processes as u64));
        let total = u64::from(s.channels);
        let mine = (total / processes + u64::from(index < total % processes)).max(1);
        let users = u64::from(if publisher {
            s.publishers
        } else {
            s.subscribers
        });
        let c = k / users.div_ceil(mine).max(1);
        format!("{CHANNEL}.{index}.{c}")
    }

    /// Merges a user's samples and counts into the run's statistics. Goose keeps no metrics
    /// of its own (they cost a quarter of the client's CPU on fan-out: a hashed, formatted
    /// record per delivery); loadtest's HdrHistograms and counters are the only ones.
    pub(super) fn record(&self, batch: &mut Local) {
        let completed = batch.samples.iter().filter(|(w, _)| w.graded()).count();
        self.stats
            .ops
            .fetch_add(completed as u64, Ordering::Relaxed);
        self.stats.merge(batch);
    }

    /// This process's index among the run's processes.
    pub(super) fn process(&self) -> u64 {
        self.peers.as_ref().map_or(0, |p| p.index as u64)
    }

    /// Direct agent `k`'s sender id (unique across processes).
    pub(super) fn direct_sender(&self, k: u64) -> u64 {
        DIRECT_SENDER | self.process() << 32 | k
    }

    /// Direct agent `k`'s user id.
    pub(super) fn agent(&self, k: u64) -> String {
        format!("agent-{}-{k}", self.process())
    }

    /// The last sequence number every publisher of the run sent (of every process: exchanged
    /// once, after sends stopped).
    pub(super) async fn last_sent(&self) -> Result<HashMap<u64, u64>, String> {
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

    /// Whether every direct agent and group member of this process is connected.
    pub(super) fn agents_ready(&self) -> bool {
        let expected = (self.scenario.direct_users + self.scenario.group_members) as u64;
        self.agents_ready.load(Ordering::Relaxed) >= expected
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

    pub(super) fn subprotocol(&self) -> Option<&'static str> {
        (self.scenario.lz4 && !self.raw).then_some("wsedge.v1.lz4")
    }

    /// Where a role connects: the target's path, or in raw mode `/echo` or `/broadcast`.
    pub(super) fn target_for(&self, role: Role) -> Target {
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
pub(super) enum Role {
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

pub(super) fn workload_of(role: Role) -> Workload {
    match role {
        Role::Echo => Workload::Echo,
        Role::Publisher | Role::Subscriber => Workload::Fanout,
        Role::Churn => Workload::Churn,
        Role::Direct => Workload::Direct,
        Role::TaskPublisher | Role::GroupMember => Workload::Group,
    }
}

/// A direct agent's target: the server's path with its token.
pub(super) fn agent_target(run: &Run, role: Role, agent: u64) -> anyhow::Result<Target> {
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
