//! Dead-letter queries (list, get, delete) that the API asks the store thread, and how it
//! answers them from the `dlq` keyspace.

use fjall::{Database, Keyspace, PersistMode};
use tokio::sync::oneshot;
use wsedge_core::broker::DeadLetter;

use super::codec;

/// A question to the store about its dead letters, answered through `reply`.
pub enum DeadLetters {
    /// Dead letters with an id above `after`, for `destination` if given, at most `limit`.
    List {
        destination: Option<String>,
        after: u64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<(u64, DeadLetter)>, String>>,
    },
    /// Dead letter `id`, if there is one.
    Get {
        id: u64,
        reply: oneshot::Sender<Result<Option<DeadLetter>, String>>,
    },
    /// Deletes dead letter `id` (synced): whether it was there.
    Delete {
        id: u64,
        reply: oneshot::Sender<Result<bool, String>>,
    },
}

/// The store's dead letters: their keyspace, the database (to sync a delete) and their count.
pub(super) struct Dlq<'a> {
    pub(super) db: &'a Database,
    pub(super) dlq: &'a Keyspace,
    pub(super) count: &'a mut u64,
}

impl Dlq<'_> {
    /// Answers a dead-letter query on the store thread (a delete is synced before its answer).
    pub(super) fn answer(&mut self, query: DeadLetters) {
        let text = |e: fjall::Error| e.to_string();
        match query {
            DeadLetters::List {
                destination,
                after,
                limit,
                reply,
            } => {
                let mut found = Vec::new();
                let mut result = Ok(());
                for item in self.dlq.range((after + 1).to_be_bytes()..) {
                    if found.len() >= limit {
                        break;
                    }
                    match item
                        .into_inner()
                        .map_err(text)
                        .and_then(|(k, v)| decode_dead(&k, &v))
                    {
                        Ok((id, dead)) => {
                            if destination
                                .as_deref()
                                .is_none_or(|d| *dead.destination == *d)
                            {
                                found.push((id, dead));
                            }
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                let _ = reply.send(result.map(|()| found));
            }
            DeadLetters::Get { id, reply } => {
                let got = self.dlq.get(id.to_be_bytes()).map_err(text).and_then(|v| {
                    v.map(|v| decode_dead(&id.to_be_bytes(), &v).map(|(_, d)| d))
                        .transpose()
                });
                let _ = reply.send(got);
            }
            DeadLetters::Delete { id, reply } => {
                let key = id.to_be_bytes();
                let deleted = self.dlq.get(key).map_err(text).and_then(|found| {
                    if found.is_none() {
                        return Ok(false);
                    }
                    self.dlq.remove(key).map_err(text)?;
                    self.db.persist(PersistMode::SyncData).map_err(text)?;
                    Ok(true)
                });
                if deleted == Ok(true) {
                    *self.count = self.count.saturating_sub(1);
                }
                let _ = reply.send(deleted);
            }
        }
    }
}

/// A dead letter's id and contents, from its key and value.
fn decode_dead(key: &[u8], value: &[u8]) -> Result<(u64, DeadLetter), String> {
    let id = <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| "a dead-letter key is not an id".to_string())?;
    let dead = codec::decode_dead_letter(value).map_err(|e| format!("dead letter {id}: {e}"))?;
    Ok((id, dead))
}
