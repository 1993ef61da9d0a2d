//! A connection's reader task: parses what the server sends and records latencies, losses,
//! duplicates and errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::frame::{self, Reply};
use super::state::{workload_of, Role, Run};
use crate::stats::{Local, Sequence, Workload};
use crate::wsclient::{self, Incoming, Writer};

/// How often a subscriber's or group member's reader merges its samples into the run's
/// statistics (samples count in the second they are merged in).
const MERGE: std::time::Duration = std::time::Duration::from_millis(100);

/// Records the latency from the actual send time `a` beside the graded one.
fn from_send(local: &mut crate::stats::Local, kind: Workload, now: u64, a: Option<u64>) {
    if let (Some(w), Some(a)) = (kind.from_send(), a) {
        local.latency(w, now.saturating_sub(a));
    }
}

/// What a reader task shares with its user.
pub(super) struct Shared {
    pub(super) run: Arc<Run>,
    pub(super) role: Role,
    /// A group member's place in the run's shares.
    pub(super) member: Option<usize>,
    pub(super) writer: Writer,
    pub(super) local: Arc<Mutex<Local>>,
    pub(super) sequences: Arc<Mutex<BTreeMap<u64, Sequence>>>,
    pub(super) closing: Arc<AtomicBool>,
    pub(super) replies: Arc<AtomicU64>,
}

/// Reads replies and deliveries until the connection ends, recording latencies.
pub(super) async fn read_loop(shared: Shared, mut reader: wsclient::Reader) {
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
    let receiver = matches!(role, Role::Subscriber | Role::GroupMember);
    let mut next_merge_us = 0;
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
            frame::data(&text).map(|data| Reply {
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
            frame::reply(&text)
        };
        let Ok(reply) = parsed else {
            local.lock().unwrap().error(workload, "bad_json");
            continue;
        };
        let mut local = local.lock().unwrap();
        // A receiver hands its samples over itself, every MERGE: its user's tick only
        // watches for the end (thousands of subscribers waking ten times a second each cost
        // the client more CPU than their deliveries).
        if receiver && now >= next_merge_us {
            run.record(&mut local);
            next_merge_us = now + MERGE.as_micros() as u64;
        }
        let data = reply.data.unwrap_or_default();
        match reply.op.as_deref() {
            Some("echo") => {
                local.latency(Workload::Echo, now.saturating_sub(data.t.unwrap_or(now)));
                from_send(&mut local, Workload::Echo, now, data.a);
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
                from_send(&mut local, kind, now, data.a);
                let counts = local.counts(kind);
                counts.received += 1;
                if kind == Workload::Group {
                    if !run.tasks.lock().unwrap().take(member, p, s) {
                        counts.duplicated += 1;
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
