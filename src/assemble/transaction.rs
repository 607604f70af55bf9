//! Buffers replication events into whole committed transactions.
//!
//! Begin..Commit for ordinary transactions; Stream Start/Stop blocks keyed by xid for
//! protocol-2 streamed ones, released on Stream Commit and dropped on Stream Abort (a
//! subtransaction abort drops only that subtransaction's changes). A reconnect discards the
//! half-received transaction: the server sends it again.

use std::collections::HashMap;

use bytes::Bytes;
use tracing::warn;

use crate::replication::{Lsn, ReplicationEvent, RowChange};

/// A `pg_logical_emit_message` carried by the stream.
#[derive(Debug, Clone)]
pub struct LogicalMessage {
    pub prefix: String,
    pub content: Bytes,
    pub lsn: Lsn,
}

/// What one transaction changed, in commit order.
#[derive(Debug, Clone, Default)]
pub struct CommittedTransaction {
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
    pub changes: Vec<RowChange>,
    pub messages: Vec<LogicalMessage>,
}

/// Output of the buffer for one replication event.
#[derive(Debug)]
pub enum Assembled {
    Transaction(CommittedTransaction),
    /// A non-transactional logical message: delivered at once.
    Message(LogicalMessage),
}

#[derive(Debug, Default)]
struct Pending {
    /// (xid of the (sub)transaction that made it, change)
    changes: Vec<(Option<u32>, RowChange)>,
    messages: Vec<LogicalMessage>,
}

/// Reassembles transactions from the ordered replication events.
#[derive(Debug, Default)]
pub struct TransactionBuffer {
    current: Option<Pending>,
    streamed: HashMap<u32, Pending>,
    /// Top-level xid of the stream block being received.
    streaming_xid: Option<u32>,
}

impl TransactionBuffer {
    /// Feeds one event; returns what became complete.
    pub fn push(&mut self, event: ReplicationEvent) -> Option<Assembled> {
        match event {
            ReplicationEvent::Restarted => {
                self.current = None;
                self.streamed.clear();
                self.streaming_xid = None;
            }
            ReplicationEvent::Begin { .. } => {
                if self.current.is_some() {
                    warn!("begin inside an open transaction; discarding the open one");
                }
                self.current = Some(Pending::default());
            }
            ReplicationEvent::Change { xid, change } => match self.target(xid) {
                Some(p) => p.changes.push((xid, change)),
                None => warn!("row change outside a transaction ignored"),
            },
            ReplicationEvent::Truncate { .. } => {
                // Strapi never truncates content tables; a truncate is an operator action.
                warn!("truncate seen; content events are not emitted for truncates");
            }
            ReplicationEvent::Message {
                xid,
                transactional,
                lsn,
                prefix,
                content,
            } => {
                let message = LogicalMessage {
                    prefix,
                    content,
                    lsn,
                };
                if !transactional {
                    return Some(Assembled::Message(message));
                }
                match self.target(xid) {
                    Some(p) => p.messages.push(message),
                    None => warn!("transactional message outside a transaction ignored"),
                }
            }
            ReplicationEvent::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                let pending = self.current.take().unwrap_or_default();
                return Some(Assembled::Transaction(finish(
                    pending,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                )));
            }
            ReplicationEvent::StreamStart { xid } => {
                self.streaming_xid = Some(xid);
                self.streamed.entry(xid).or_default();
            }
            ReplicationEvent::StreamStop => self.streaming_xid = None,
            ReplicationEvent::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                let pending = self.streamed.remove(&xid).unwrap_or_default();
                return Some(Assembled::Transaction(finish(
                    pending,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                )));
            }
            ReplicationEvent::StreamAbort { xid, subxid } => {
                if xid == subxid {
                    self.streamed.remove(&xid);
                } else if let Some(p) = self.streamed.get_mut(&xid) {
                    p.changes.retain(|(x, _)| *x != Some(subxid));
                }
            }
        }
        None
    }

    fn target(&mut self, xid: Option<u32>) -> Option<&mut Pending> {
        match (xid, self.streaming_xid) {
            (Some(_), Some(top)) => self.streamed.get_mut(&top),
            _ => self.current.as_mut(),
        }
    }
}

fn finish(
    pending: Pending,
    commit_lsn: Lsn,
    end_lsn: Lsn,
    commit_time: i64,
) -> CommittedTransaction {
    CommittedTransaction {
        commit_lsn,
        end_lsn,
        commit_time,
        changes: pending.changes.into_iter().map(|(_, c)| c).collect(),
        messages: pending.messages,
    }
}
