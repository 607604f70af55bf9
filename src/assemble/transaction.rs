//! Buffers replication events into whole committed transactions, in bounded memory.
//!
//! Begin..Commit for ordinary transactions; Stream Start/Stop blocks keyed by xid for
//! protocol-2 streamed ones, released on Stream Commit and dropped on Stream Abort (a
//! subtransaction abort drops only that subtransaction's changes: inside a stream every
//! change carries the xid of the (sub)transaction that made it). A reconnect discards every
//! half-received transaction: the server sends it again.
//!
//! # Memory
//! At most `max_in_memory` row changes of one transaction are held in memory. When a
//! transaction has that many and another arrives, the ones in memory are appended to the
//! transaction's spill file (see [`super::spill`]) and memory starts over, so memory is a
//! write buffer in front of the file and the file always holds the older changes. A
//! committed transaction that spilled is handed over with all its changes on disk, and
//! [`CommittedTransaction::batches`] reads it back in windows of at most `max_in_memory`
//! changes. Transactional logical messages are few and stay in memory.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tracing::warn;

use super::spill::{SpillReader, SpillWriter};
use crate::config::ReplicationConfig;
use crate::replication::{Lsn, ReplicationEvent, RowChange};

pub use super::spill::SpillError;

/// A `pg_logical_emit_message` carried by the stream.
#[derive(Debug, Clone)]
pub struct LogicalMessage {
    pub prefix: String,
    pub content: Bytes,
    pub lsn: Lsn,
}

/// What one transaction changed, in commit order; or one window of it (see
/// [`CommittedTransaction::batches`]), which is what `fold` works on.
#[derive(Debug, Default)]
pub struct CommittedTransaction {
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC.
    pub commit_time: i64,
    /// The changes held in memory. They follow the spilled ones in commit order; the buffer
    /// hands over a transaction either wholly in memory or wholly spilled.
    pub changes: Vec<RowChange>,
    pub messages: Vec<LogicalMessage>,
    /// The changes that did not fit in memory, on disk; read them through `batches`.
    pub spilled: Option<SpillReader>,
}

impl CommittedTransaction {
    /// Whether some of the changes are on disk.
    pub fn is_spilled(&self) -> bool {
        self.spilled.is_some()
    }

    /// The transaction as windows of at most `max` changes (at least one window, even when
    /// there are no changes), each with this transaction's commit LSNs and time, in commit
    /// order; the messages travel with the last window. Spilled changes are read from disk
    /// one window at a time, so memory stays bounded by `max` whatever the size.
    pub fn batches(self, max: usize) -> Batches {
        Batches {
            commit_lsn: self.commit_lsn,
            end_lsn: self.end_lsn,
            commit_time: self.commit_time,
            max: max.max(1),
            spilled: self.spilled,
            memory: self.changes.into_iter(),
            messages: Some(self.messages),
        }
    }
}

/// The windows of a committed transaction; see [`CommittedTransaction::batches`].
#[derive(Debug)]
pub struct Batches {
    commit_lsn: Lsn,
    end_lsn: Lsn,
    commit_time: i64,
    max: usize,
    spilled: Option<SpillReader>,
    memory: std::vec::IntoIter<RowChange>,
    /// Taken by the last window; `None` once it was yielded.
    messages: Option<Vec<LogicalMessage>>,
}

impl Iterator for Batches {
    type Item = Result<CommittedTransaction, SpillError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.messages.as_ref()?;
        let changes = match &mut self.spilled {
            Some(reader) => match reader.next_batch(self.max) {
                Ok(batch) => {
                    if reader.remaining() == 0 {
                        self.spilled = None;
                    }
                    batch
                }
                Err(e) => {
                    self.messages = None;
                    return Some(Err(e));
                }
            },
            None => self.memory.by_ref().take(self.max).collect(),
        };
        let last = self.spilled.is_none() && self.memory.len() == 0;
        let messages = if last {
            self.messages.take().unwrap_or_default()
        } else {
            Vec::new()
        };
        Some(Ok(CommittedTransaction {
            commit_lsn: self.commit_lsn,
            end_lsn: self.end_lsn,
            commit_time: self.commit_time,
            changes,
            messages,
            spilled: None,
        }))
    }
}

/// Output of the buffer for one replication event.
#[derive(Debug)]
pub enum Assembled {
    Transaction(CommittedTransaction),
    /// A non-transactional logical message: delivered at once.
    Message(LogicalMessage),
}

/// Counters of what the buffer did, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Row changes written to spill files.
    pub spilled_changes: u64,
    pub spilled_bytes: u64,
    /// Transactions Postgres streamed (protocol 2) before their commit.
    pub streamed_transactions: u64,
    /// Streamed transactions aborted as a whole (subtransaction aborts not counted).
    pub aborted_streams: u64,
}

/// One transaction being received.
#[derive(Debug, Default)]
struct Pending {
    /// (xid of the (sub)transaction that made it, change); newer than everything spilled.
    changes: Vec<(Option<u32>, RowChange)>,
    spill: Option<SpillWriter>,
    /// Subtransactions aborted after some of their changes were spilled.
    aborted: HashSet<u32>,
    messages: Vec<(Option<u32>, LogicalMessage)>,
}

/// How much one operation moved to disk.
#[derive(Debug, Default)]
struct Moved {
    changes: usize,
    bytes: u64,
}

impl Pending {
    /// Appends the changes held in memory to the spill file (created on first use).
    fn spill(&mut self, dir: Option<&Path>) -> Result<Moved, SpillError> {
        let mut moved = Moved::default();
        if self.changes.is_empty() {
            return Ok(moved);
        }
        let writer = match &mut self.spill {
            Some(w) => w,
            None => self.spill.insert(SpillWriter::create(dir)?),
        };
        for (xid, change) in self.changes.drain(..) {
            moved.bytes += writer.append(xid, &change)?;
            moved.changes += 1;
        }
        Ok(moved)
    }

    /// Drops the changes and messages of an aborted subtransaction.
    fn abort_subtransaction(&mut self, subxid: u32) -> usize {
        let before = self.changes.len();
        self.changes.retain(|(x, _)| *x != Some(subxid));
        self.messages.retain(|(x, _)| *x != Some(subxid));
        if self.spill.is_some() {
            self.aborted.insert(subxid);
        }
        before - self.changes.len()
    }
}

/// Reassembles transactions from the ordered replication events.
#[derive(Debug)]
pub struct TransactionBuffer {
    max_in_memory: usize,
    spill_dir: Option<PathBuf>,
    current: Option<Pending>,
    streamed: HashMap<u32, Pending>,
    /// Top-level xid of the stream block being received.
    streaming_xid: Option<u32>,
    /// Row changes held in memory, over all pending transactions.
    in_memory: usize,
    high_water: usize,
    stats: BufferStats,
}

impl Default for TransactionBuffer {
    fn default() -> Self {
        Self::new(ReplicationConfig::DEFAULT_MAX_BUFFERED_CHANGES, None)
    }
}

impl Drop for TransactionBuffer {
    fn drop(&mut self) {
        self.set_in_memory(0);
    }
}

impl TransactionBuffer {
    /// A buffer holding at most `max_in_memory` (at least 1) changes of a transaction in
    /// memory, spilling the rest to anonymous files in `spill_dir` (the OS temp dir if `None`).
    pub fn new(max_in_memory: usize, spill_dir: Option<PathBuf>) -> Self {
        TransactionBuffer {
            max_in_memory: max_in_memory.max(1),
            spill_dir,
            current: None,
            streamed: HashMap::new(),
            streaming_xid: None,
            in_memory: 0,
            high_water: 0,
            stats: BufferStats::default(),
        }
    }

    /// The most row changes of one transaction held in memory, and the window size of
    /// [`CommittedTransaction::batches`].
    pub fn max_in_memory(&self) -> usize {
        self.max_in_memory
    }

    /// The most row changes this buffer ever held in memory at once.
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    /// Row changes held in memory now.
    pub fn in_memory(&self) -> usize {
        self.in_memory
    }

    pub fn stats(&self) -> BufferStats {
        self.stats
    }

    /// Feeds one event; returns what became complete. An error means a spill file could not
    /// be written or read: the transaction cannot be delivered, so the caller must stop
    /// rather than confirm past it.
    pub fn push(&mut self, event: ReplicationEvent) -> Result<Option<Assembled>, SpillError> {
        match event {
            ReplicationEvent::Restarted => {
                self.current = None;
                self.streamed.clear();
                self.streaming_xid = None;
                self.set_in_memory(0);
            }
            ReplicationEvent::Begin { .. } => {
                if let Some(open) = self.current.replace(Pending::default()) {
                    warn!("begin inside an open transaction; discarding the open one");
                    self.set_in_memory(self.in_memory - open.changes.len());
                }
            }
            ReplicationEvent::Change { xid, change } => {
                let dir = self.spill_dir.as_deref();
                let Some(pending) = target(
                    &mut self.current,
                    &mut self.streamed,
                    self.streaming_xid,
                    xid,
                ) else {
                    warn!("row change outside a transaction ignored");
                    return Ok(None);
                };
                let moved = if pending.changes.len() >= self.max_in_memory {
                    pending.spill(dir)?
                } else {
                    Moved::default()
                };
                pending.changes.push((xid, change));
                self.count_spilled(&moved);
                self.set_in_memory(self.in_memory - moved.changes + 1);
            }
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
                    return Ok(Some(Assembled::Message(message)));
                }
                match target(
                    &mut self.current,
                    &mut self.streamed,
                    self.streaming_xid,
                    xid,
                ) {
                    Some(p) => p.messages.push((xid, message)),
                    None => warn!("transactional message outside a transaction ignored"),
                }
            }
            ReplicationEvent::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                let pending = self.current.take().unwrap_or_default();
                return self
                    .finish(pending, commit_lsn, end_lsn, commit_time)
                    .map(|tx| Some(Assembled::Transaction(tx)));
            }
            ReplicationEvent::StreamStart { xid } => {
                self.streaming_xid = Some(xid);
                if let std::collections::hash_map::Entry::Vacant(e) = self.streamed.entry(xid) {
                    e.insert(Pending::default());
                    self.stats.streamed_transactions += 1;
                    crate::metrics::STREAMED_TRANSACTIONS.inc();
                }
            }
            ReplicationEvent::StreamStop => self.streaming_xid = None,
            ReplicationEvent::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                let pending = self.streamed.remove(&xid).unwrap_or_default();
                return self
                    .finish(pending, commit_lsn, end_lsn, commit_time)
                    .map(|tx| Some(Assembled::Transaction(tx)));
            }
            ReplicationEvent::StreamAbort { xid, subxid } => {
                if xid == subxid {
                    if let Some(p) = self.streamed.remove(&xid) {
                        // Dropping it deletes its spill file.
                        self.set_in_memory(self.in_memory - p.changes.len());
                        self.stats.aborted_streams += 1;
                        crate::metrics::ABORTED_STREAMS.inc();
                    }
                } else if let Some(p) = self.streamed.get_mut(&xid) {
                    let dropped = p.abort_subtransaction(subxid);
                    self.set_in_memory(self.in_memory - dropped);
                }
            }
        }
        Ok(None)
    }

    /// Hands a transaction over: wholly in memory, or (when it spilled) wholly on disk.
    fn finish(
        &mut self,
        mut pending: Pending,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    ) -> Result<CommittedTransaction, SpillError> {
        let held = pending.changes.len();
        let messages = std::mem::take(&mut pending.messages)
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        let mut tx = CommittedTransaction {
            commit_lsn,
            end_lsn,
            commit_time,
            messages,
            ..CommittedTransaction::default()
        };
        if pending.spill.is_some() {
            let moved = pending.spill(self.spill_dir.as_deref());
            self.set_in_memory(self.in_memory - held);
            let moved = moved?;
            self.count_spilled(&moved);
            let writer = pending.spill.take().expect("checked above");
            tx.spilled = Some(writer.into_reader(std::mem::take(&mut pending.aborted))?);
        } else {
            self.set_in_memory(self.in_memory - held);
            tx.changes = pending.changes.into_iter().map(|(_, c)| c).collect();
        }
        Ok(tx)
    }

    fn count_spilled(&mut self, moved: &Moved) {
        if moved.changes == 0 {
            return;
        }
        self.stats.spilled_changes += moved.changes as u64;
        self.stats.spilled_bytes += moved.bytes;
        crate::metrics::SPILLED_CHANGES.inc_by(moved.changes as u64);
        crate::metrics::SPILLED_BYTES.inc_by(moved.bytes);
    }

    /// Records the number of changes in memory, in this buffer and in the metrics.
    fn set_in_memory(&mut self, now: usize) {
        let delta = now as i64 - self.in_memory as i64;
        self.in_memory = now;
        crate::metrics::TRANSACTION_BUFFER_CHANGES.add(delta);
        if now > self.high_water {
            self.high_water = now;
            let gauge = &crate::metrics::TRANSACTION_BUFFER_HIGH_WATER;
            if gauge.get() < now as i64 {
                gauge.set(now as i64);
            }
        }
    }
}

/// The transaction a change or message belongs to: inside a stream block, the streamed
/// transaction being received; otherwise the open ordinary one.
fn target<'a>(
    current: &'a mut Option<Pending>,
    streamed: &'a mut HashMap<u32, Pending>,
    streaming_xid: Option<u32>,
    xid: Option<u32>,
) -> Option<&'a mut Pending> {
    match (xid, streaming_xid) {
        (Some(_), Some(top)) => streamed.get_mut(&top),
        _ => current.as_mut(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::replication::pgoutput::ColumnDef;
    use crate::replication::{ChangeKind, Datum, Relation, ReplicaIdentity};

    fn relation(name: &str) -> Arc<Relation> {
        Arc::new(Relation {
            oid: 16390,
            schema: "public".into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Full,
            columns: ["id", "name", "body"]
                .iter()
                .map(|c| ColumnDef {
                    is_key: *c == "id",
                    name: (*c).into(),
                    type_oid: 25,
                    type_modifier: -1,
                })
                .collect(),
        })
    }

    fn insert(xid: Option<u32>, rel: &Arc<Relation>, id: u32) -> ReplicationEvent {
        ReplicationEvent::Change {
            xid,
            change: RowChange {
                relation: Arc::clone(rel),
                kind: ChangeKind::Insert,
                old: None,
                new: Some(vec![
                    Datum::Text(Bytes::from(id.to_string())),
                    Datum::Null,
                    Datum::UnchangedToast,
                ]),
            },
        }
    }

    fn id_of(change: &RowChange) -> u32 {
        let tuple = change.new.as_ref().or(change.old.as_ref()).unwrap();
        match &tuple[0] {
            Datum::Text(b) => std::str::from_utf8(b).unwrap().parse().unwrap(),
            other => panic!("id column is {other:?}"),
        }
    }

    fn begin(buffer: &mut TransactionBuffer, xid: u32, final_lsn: u64) {
        let begin = ReplicationEvent::Begin {
            xid,
            final_lsn: Lsn(final_lsn),
        };
        assert!(buffer.push(begin).unwrap().is_none());
    }

    /// One Stream Start/Stop block of `top` with inserts made by (sub)transaction `xid`.
    fn stream_block(
        buffer: &mut TransactionBuffer,
        top: u32,
        xid: u32,
        rel: &Arc<Relation>,
        ids: std::ops::Range<u32>,
    ) {
        buffer
            .push(ReplicationEvent::StreamStart { xid: top })
            .unwrap();
        for id in ids {
            buffer.push(insert(Some(xid), rel, id)).unwrap();
        }
        buffer.push(ReplicationEvent::StreamStop).unwrap();
    }

    fn commit(lsn: u64) -> ReplicationEvent {
        ReplicationEvent::Commit {
            commit_lsn: Lsn(lsn),
            end_lsn: Lsn(lsn + 8),
            commit_time: 7,
        }
    }

    fn stream_commit(xid: u32, lsn: u64) -> ReplicationEvent {
        ReplicationEvent::StreamCommit {
            xid,
            commit_lsn: Lsn(lsn),
            end_lsn: Lsn(lsn + 8),
            commit_time: 7,
        }
    }

    fn committed(out: Option<Assembled>) -> CommittedTransaction {
        match out {
            Some(Assembled::Transaction(tx)) => tx,
            other => panic!("expected a transaction, got {other:?}"),
        }
    }

    /// Every window's ids, checking the window size and the header of each.
    fn read_back(tx: CommittedTransaction, max: usize) -> (Vec<Vec<u32>>, Vec<LogicalMessage>) {
        let lsn = tx.commit_lsn;
        let mut windows = Vec::new();
        let mut messages = Vec::new();
        for window in tx.batches(max) {
            let window = window.unwrap();
            assert!(window.changes.len() <= max);
            assert_eq!(window.commit_lsn, lsn);
            assert!(window.spilled.is_none());
            messages.extend(window.messages);
            windows.push(window.changes.iter().map(id_of).collect());
        }
        (windows, messages)
    }

    fn flat(windows: &[Vec<u32>]) -> Vec<u32> {
        windows.concat()
    }

    #[test]
    fn a_small_transaction_stays_in_memory_and_is_one_window() {
        let rel = relation("tags");
        let mut buffer = TransactionBuffer::new(10, None);
        begin(&mut buffer, 1, 100);
        for id in 0..10 {
            buffer.push(insert(None, &rel, id)).unwrap();
        }
        assert_eq!(buffer.in_memory(), 10);
        let tx = committed(buffer.push(commit(100)).unwrap());
        assert!(!tx.is_spilled());
        assert_eq!(buffer.in_memory(), 0);
        assert_eq!(buffer.stats().spilled_changes, 0);
        let (windows, _) = read_back(tx, 10);
        assert_eq!(windows, vec![(0..10).collect::<Vec<_>>()]);
    }

    #[test]
    fn a_large_transaction_spills_and_reads_back_in_order_in_windows() {
        let rel = relation("tags");
        let other = relation("categories");
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = TransactionBuffer::new(100, Some(dir.path().to_owned()));
        begin(&mut buffer, 1, 100);
        for id in 0..1050 {
            let r = if id % 3 == 0 { &other } else { &rel };
            buffer.push(insert(None, r, id)).unwrap();
            assert!(buffer.in_memory() <= 100);
        }
        buffer
            .push(ReplicationEvent::Message {
                xid: None,
                transactional: true,
                lsn: Lsn(99),
                prefix: "walcast".into(),
                content: Bytes::from_static(b"{}"),
            })
            .unwrap();
        assert_eq!(buffer.high_water(), 100);
        let tx = committed(buffer.push(commit(100)).unwrap());
        assert!(tx.is_spilled() && tx.changes.is_empty());
        assert_eq!(buffer.in_memory(), 0);
        assert_eq!(buffer.stats().spilled_changes, 1050);
        assert!(buffer.stats().spilled_bytes > 1050 * 10);

        // Decode one window fully: relation, kind and every datum kind survive the trip.
        let mut batches = tx.batches(100);
        let first = batches.next().unwrap().unwrap();
        assert_eq!(first.changes.len(), 100);
        assert_eq!(first.commit_time, 7);
        assert_eq!(first.end_lsn, Lsn(108));
        assert!(first.messages.is_empty());
        let c = &first.changes[1];
        assert_eq!(c.relation.name, "tags");
        assert!(Arc::ptr_eq(&c.relation, &rel));
        assert_eq!(c.kind, ChangeKind::Insert);
        assert_eq!(
            c.new.as_deref().unwrap(),
            &[
                Datum::Text(Bytes::from_static(b"1")),
                Datum::Null,
                Datum::UnchangedToast
            ]
        );
        assert_eq!(first.changes[0].relation.name, "categories");
        let rest: Vec<CommittedTransaction> = batches.map(Result::unwrap).collect();
        assert_eq!(rest.len(), 10);
        assert_eq!(rest.last().unwrap().changes.len(), 50);
        assert_eq!(rest.last().unwrap().messages.len(), 1, "messages ride last");
        let ids: Vec<u32> = first
            .changes
            .iter()
            .chain(rest.iter().flat_map(|w| w.changes.iter()))
            .map(id_of)
            .collect();
        assert_eq!(ids, (0..1050).collect::<Vec<_>>());
        // The spill file is anonymous: nothing is left in the spill dir.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn stream_abort_of_a_spilled_transaction_drops_it_and_keeps_others() {
        let rel = relation("tags");
        let mut buffer = TransactionBuffer::new(50, None);
        // Two interleaved streamed transactions; 10 aborts after spilling.
        for (xid, base) in [(10, 0), (20, 1000), (10, 100), (20, 1100)] {
            buffer.push(ReplicationEvent::StreamStart { xid }).unwrap();
            for id in base..base + 80 {
                buffer.push(insert(Some(xid), &rel, id)).unwrap();
            }
            buffer.push(ReplicationEvent::StreamStop).unwrap();
        }
        assert_eq!(buffer.stats().streamed_transactions, 2);
        assert!(buffer.stats().spilled_changes > 0);
        assert!(buffer.in_memory() <= 100);
        assert!(
            buffer
                .push(ReplicationEvent::StreamAbort {
                    xid: 10,
                    subxid: 10
                })
                .unwrap()
                .is_none()
        );
        assert_eq!(buffer.stats().aborted_streams, 1);
        let tx = committed(buffer.push(stream_commit(20, 500)).unwrap());
        assert_eq!(buffer.in_memory(), 0);
        let (windows, _) = read_back(tx, 50);
        let expected: Vec<u32> = (1000..1080).chain(1100..1180).collect();
        assert_eq!(flat(&windows), expected);
        // A commit for the aborted xid finds nothing (an empty window, no changes).
        let tx = committed(buffer.push(stream_commit(10, 600)).unwrap());
        assert_eq!(flat(&read_back(tx, 50).0), Vec::<u32>::new());
    }

    #[test]
    fn subtransaction_abort_drops_only_its_changes_spilled_or_not() {
        let rel = relation("tags");
        let mut buffer = TransactionBuffer::new(30, None);
        let top = 100;
        let sub = 101;
        let sub2 = 102;
        stream_block(&mut buffer, top, top, &rel, 0..40);
        // These get spilled (memory is full again after 30 more).
        stream_block(&mut buffer, top, sub, &rel, 40..80);
        buffer
            .push(ReplicationEvent::StreamStart { xid: top })
            .unwrap();
        buffer
            .push(ReplicationEvent::Message {
                xid: Some(sub2),
                transactional: true,
                lsn: Lsn(1),
                prefix: "walcast".into(),
                content: Bytes::from_static(b"{}"),
            })
            .unwrap();
        // Still in memory when its subtransaction aborts.
        for id in 80..85 {
            buffer.push(insert(Some(sub2), &rel, id)).unwrap();
        }
        buffer.push(ReplicationEvent::StreamStop).unwrap();
        let before = buffer.in_memory();
        buffer
            .push(ReplicationEvent::StreamAbort {
                xid: top,
                subxid: sub,
            })
            .unwrap();
        buffer
            .push(ReplicationEvent::StreamAbort {
                xid: top,
                subxid: sub2,
            })
            .unwrap();
        assert!(buffer.in_memory() < before);
        assert_eq!(
            buffer.stats().aborted_streams,
            0,
            "subxact aborts are not counted"
        );
        stream_block(&mut buffer, top, top, &rel, 85..90);
        let tx = committed(buffer.push(stream_commit(top, 900)).unwrap());
        assert!(tx.is_spilled());
        let (windows, messages) = read_back(tx, 30);
        let expected: Vec<u32> = (0..40).chain(85..90).collect();
        assert_eq!(flat(&windows), expected);
        assert!(messages.is_empty(), "the aborted subxact's message is gone");
    }

    #[test]
    fn restarted_clears_everything_half_received() {
        let rel = relation("tags");
        let mut buffer = TransactionBuffer::new(10, None);
        stream_block(&mut buffer, 5, 5, &rel, 0..25);
        begin(&mut buffer, 6, 1);
        buffer.push(insert(None, &rel, 99)).unwrap();
        assert!(buffer.in_memory() > 0);
        assert!(buffer.push(ReplicationEvent::Restarted).unwrap().is_none());
        assert_eq!(buffer.in_memory(), 0);
        assert_eq!(buffer.high_water(), 10);
        // The server resends from the start: nothing of the old attempt remains.
        begin(&mut buffer, 6, 1);
        buffer.push(insert(None, &rel, 7)).unwrap();
        let tx = committed(buffer.push(commit(1)).unwrap());
        assert_eq!(flat(&read_back(tx, 10).0), vec![7]);
        let tx = committed(buffer.push(stream_commit(5, 2)).unwrap());
        assert_eq!(flat(&read_back(tx, 10).0), Vec::<u32>::new());
    }

    #[test]
    fn a_relation_replaced_by_ddl_mid_transaction_keeps_both_shapes() {
        let before = relation("tags");
        let mut after = (*before).clone();
        after.columns.pop();
        let after = Arc::new(after);
        let mut buffer = TransactionBuffer::new(2, None);
        begin(&mut buffer, 1, 1);
        for id in 0..6 {
            let r = if id < 3 { &before } else { &after };
            buffer.push(insert(None, r, id)).unwrap();
        }
        let tx = committed(buffer.push(commit(1)).unwrap());
        let changes: Vec<RowChange> = tx.batches(2).flat_map(|w| w.unwrap().changes).collect();
        assert!(Arc::ptr_eq(&changes[2].relation, &before));
        assert!(Arc::ptr_eq(&changes[3].relation, &after));
    }
}
