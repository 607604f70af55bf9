//! `ReplicationStream`: the long-lived consumer of the slot.
//!
//! Connects, starts pgoutput streaming from the last handed-off position, decodes every
//! message into [`ReplicationEvent`]s, and reports progress. Reconnects with backoff on
//! transient failures; the server then resends whatever was not confirmed, and the assembler
//! drops any half-received transaction on [`ReplicationEvent::Restarted`].
//!
//! # Progress
//! The flush position sent to Postgres is what the pipeline reports as handed off (a
//! `watch` of commit end LSNs). When no transaction is open and everything received has been
//! handed off, a keepalive's `wal_end` is confirmed too: pgoutput skips transactions of other
//! databases and tables outside the publication, so without this the slot would pin WAL for
//! traffic walcast never sees (rust-stack-notes pitfall 3).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::connection::{ConnectError, ConnectParams, CopyFrame, WalSenderConnection};
use super::pgoutput::{self, DecodeError, PgOutputMessage};
use super::relations::RelationCache;
use super::{ChangeKind, Lsn, ReplicationEvent, RowChange};

/// How often progress is checked and, if it moved, confirmed to the server.
const PROGRESS_TICK: Duration = Duration::from_millis(250);
/// The first `server_version_num` whose pgoutput streams in-progress transactions
/// (protocol 2, `streaming 'on'`).
const STREAMING_SERVER_VERSION: u32 = 140_000;
/// First and largest pause between reconnection attempts.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Why the replication stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot decode pgoutput message at {lsn}")]
    Decode {
        lsn: Lsn,
        #[source]
        source: DecodeError,
    },
    #[error("row change for relation {0} arrived before its Relation message")]
    UnknownRelation(u32),
    #[error("replication slot {slot:?} does not exist; run `walcast setup`")]
    SlotMissing { slot: String },
    #[error("publication {publication:?} does not exist; run `walcast setup`")]
    PublicationMissing { publication: String },
    #[error(
        "wal_level is {0:?}, logical replication needs `logical`: run `ALTER SYSTEM SET wal_level = logical;` and restart postgres"
    )]
    WalLevel(String),
    #[error("the pipeline stopped")]
    PipelineClosed,
}

impl ReplicationError {
    /// Transient errors are retried with backoff; any other stops the service.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicationError::Connect(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Settings of one replication stream.
#[derive(Debug, Clone)]
pub struct ReplicationStream {
    pub params: ConnectParams,
    pub slot: String,
    pub publication: String,
    pub status_interval: Duration,
}

/// Per-connection decoding state.
struct Session {
    relations: RelationCache,
    in_stream: bool,
    /// Between Begin and Commit of a non-streamed transaction.
    in_transaction: bool,
    /// Streamed transactions started and not yet committed or aborted.
    open_streams: HashSet<u32>,
    /// Highest commit end LSN sent down the pipeline.
    last_commit_end: Lsn,
    /// Highest WAL position received.
    received: Lsn,
    /// The flush position last sent to the server.
    confirmed: Lsn,
    last_status: Instant,
}

impl ReplicationStream {
    /// Streams until `shutdown` is cancelled or a non-transient error occurs.
    ///
    /// `handed_off` carries the commit end LSN up to which the pipeline has delivered every
    /// event; it is what gets confirmed.
    pub async fn run(
        &self,
        events: mpsc::Sender<ReplicationEvent>,
        handed_off: watch::Receiver<Lsn>,
        shutdown: CancellationToken,
    ) -> Result<(), ReplicationError> {
        let mut backoff = BACKOFF_START;
        loop {
            let started = Instant::now();
            let result = self.stream_once(&events, &handed_off, &shutdown).await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && !shutdown.is_cancelled() => {
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = BACKOFF_START;
                    }
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "replication interrupted; reconnecting");
                    crate::metrics::REPLICATION_RECONNECTS.inc();
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn stream_once(
        &self,
        events: &mpsc::Sender<ReplicationEvent>,
        handed_off: &watch::Receiver<Lsn>,
        shutdown: &CancellationToken,
    ) -> Result<(), ReplicationError> {
        let mut conn = WalSenderConnection::connect(&self.params).await?;
        let server_version = self.preflight(&mut conn).await?;
        let start = *handed_off.borrow();
        let command = self.start_command(start, server_version);
        conn.start_copy_both(&command).await?;
        info!(
            slot = %self.slot,
            %start,
            streaming = server_version >= STREAMING_SERVER_VERSION,
            "replication streaming"
        );
        crate::metrics::REPLICATION_STREAMING.set(1);
        events
            .send(ReplicationEvent::Restarted)
            .await
            .map_err(|_| ReplicationError::PipelineClosed)?;
        let mut session = Session {
            relations: RelationCache::default(),
            in_stream: false,
            in_transaction: false,
            open_streams: HashSet::new(),
            last_commit_end: start,
            received: start,
            confirmed: start,
            last_status: Instant::now(),
        };
        let mut tick = tokio::time::interval(PROGRESS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                biased;
                // PRIORITY 1: shutdown stops intake; the last progress is confirmed below.
                _ = shutdown.cancelled() => break Ok(()),
                // PRIORITY 2: confirm progress before it falls behind wal_sender_timeout.
                _ = tick.tick() => {
                    self.confirm_progress(&mut conn, &mut session, handed_off, None, false).await?;
                }
                // PRIORITY 3: the next frame from the walsender.
                frame = conn.next_copy_frame() => {
                    match frame? {
                        CopyFrame::Data(data) => {
                            self.handle_frame(&mut conn, &mut session, data, events, handed_off).await?;
                        }
                        CopyFrame::Done => break Err(ReplicationError::Connect(ConnectError::Closed)),
                    }
                }
            }
        };
        crate::metrics::REPLICATION_STREAMING.set(0);
        if result.is_ok() {
            // Final status update with whatever was handed off, then leave CopyBoth.
            let _ = self
                .confirm_progress(&mut conn, &mut session, handed_off, None, true)
                .await;
            let _ = conn.send_copy_done().await;
        }
        result
    }

    /// `START_REPLICATION` for this slot from `start`. Postgres 14 and later stream large
    /// transactions before they commit (pgoutput protocol 2, `streaming 'on'`), so the first
    /// bytes arrive before the whole transaction is decoded and Postgres spills less; older
    /// servers get protocol 1.
    fn start_command(&self, start: Lsn, server_version: u32) -> String {
        let protocol = if server_version >= STREAMING_SERVER_VERSION {
            "proto_version '2', streaming 'on'"
        } else {
            "proto_version '1'"
        };
        format!(
            "START_REPLICATION SLOT {} LOGICAL {} ({protocol}, publication_names '{}', messages 'true')",
            self.slot, start, self.publication
        )
    }

    /// Checks wal_level, slot and publication on the replication connection itself;
    /// returns the server's `server_version_num`.
    async fn preflight(&self, conn: &mut WalSenderConnection) -> Result<u32, ReplicationError> {
        let rows = conn.simple_query("SHOW server_version_num").await?;
        let server_version = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let rows = conn.simple_query("SHOW wal_level").await?;
        let level = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default();
        if level != "logical" {
            return Err(ReplicationError::WalLevel(level));
        }
        let rows = conn
            .simple_query(&format!(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = '{}' AND database = current_database()",
                self.slot
            ))
            .await?;
        if rows.is_empty() {
            return Err(ReplicationError::SlotMissing {
                slot: self.slot.clone(),
            });
        }
        let rows = conn
            .simple_query(&format!(
                "SELECT 1 FROM pg_publication WHERE pubname = '{}'",
                self.publication
            ))
            .await?;
        if rows.is_empty() {
            return Err(ReplicationError::PublicationMissing {
                publication: self.publication.clone(),
            });
        }
        Ok(server_version)
    }

    async fn handle_frame(
        &self,
        conn: &mut WalSenderConnection,
        session: &mut Session,
        data: bytes::Bytes,
        events: &mpsc::Sender<ReplicationEvent>,
        handed_off: &watch::Receiver<Lsn>,
    ) -> Result<(), ReplicationError> {
        match data.first() {
            Some(b'w') if data.len() >= 25 => {
                let start = Lsn(u64::from_be_bytes(data[1..9].try_into().expect("8 bytes")));
                let end = Lsn(u64::from_be_bytes(data[9..17].try_into().expect("8 bytes")));
                session.received = session.received.max(end).max(start);
                let payload = data.slice(25..);
                let message = pgoutput::decode_message(&payload, session.in_stream)
                    .map_err(|source| ReplicationError::Decode { lsn: start, source })?;
                crate::metrics::WAL_MESSAGES.inc();
                if let Some(event) = self.to_event(session, message)? {
                    self.forward(conn, session, event, events, handed_off)
                        .await?;
                }
            }
            Some(b'k') if data.len() >= 18 => {
                let wal_end = Lsn(u64::from_be_bytes(data[1..9].try_into().expect("8 bytes")));
                let reply = data[17] == 1;
                session.received = session.received.max(wal_end);
                self.confirm_progress(conn, session, handed_off, Some(wal_end), reply)
                    .await?;
            }
            _ => {
                warn!(len = data.len(), "ignoring unexpected replication frame");
                crate::metrics::WAL_UNEXPECTED.inc();
            }
        }
        Ok(())
    }

    /// Sends one event down the pipeline. While the pipeline is busy (a large transaction
    /// being emitted) the channel stays full and the socket is not read; status updates go
    /// on meanwhile, so the server does not end the session at `wal_sender_timeout`.
    async fn forward(
        &self,
        conn: &mut WalSenderConnection,
        session: &mut Session,
        event: ReplicationEvent,
        events: &mpsc::Sender<ReplicationEvent>,
        handed_off: &watch::Receiver<Lsn>,
    ) -> Result<(), ReplicationError> {
        loop {
            tokio::select! {
                permit = events.reserve() => {
                    permit.map_err(|_| ReplicationError::PipelineClosed)?.send(event);
                    return Ok(());
                }
                _ = tokio::time::sleep(PROGRESS_TICK) => {
                    self.confirm_progress(conn, session, handed_off, None, false).await?;
                }
            }
        }
    }

    fn to_event(
        &self,
        session: &mut Session,
        message: PgOutputMessage,
    ) -> Result<Option<ReplicationEvent>, ReplicationError> {
        let relation = |session: &Session, oid: u32| {
            session
                .relations
                .get(oid)
                .cloned()
                .ok_or(ReplicationError::UnknownRelation(oid))
        };
        Ok(Some(match message {
            PgOutputMessage::Begin(b) => {
                session.in_transaction = true;
                ReplicationEvent::Begin {
                    xid: b.xid,
                    final_lsn: b.final_lsn,
                }
            }
            PgOutputMessage::Commit(c) => {
                session.in_transaction = false;
                session.last_commit_end = session.last_commit_end.max(c.end_lsn);
                ReplicationEvent::Commit {
                    commit_lsn: c.commit_lsn,
                    end_lsn: c.end_lsn,
                    commit_time: c.commit_time,
                }
            }
            PgOutputMessage::Origin { .. } | PgOutputMessage::Type { .. } => return Ok(None),
            PgOutputMessage::Relation(body) => {
                debug!(relation = %body.name, oid = body.oid, "relation");
                session.relations.insert(body.into());
                return Ok(None);
            }
            PgOutputMessage::Insert {
                xid,
                relation_id,
                new,
            } => ReplicationEvent::Change {
                xid,
                change: RowChange {
                    relation: relation(session, relation_id)?,
                    kind: ChangeKind::Insert,
                    old: None,
                    new: Some(new),
                },
            },
            PgOutputMessage::Update {
                xid,
                relation_id,
                old,
                new,
            } => ReplicationEvent::Change {
                xid,
                change: RowChange {
                    relation: relation(session, relation_id)?,
                    kind: ChangeKind::Update,
                    old: old.map(|(_, t)| t),
                    new: Some(new),
                },
            },
            PgOutputMessage::Delete {
                xid,
                relation_id,
                old,
                ..
            } => ReplicationEvent::Change {
                xid,
                change: RowChange {
                    relation: relation(session, relation_id)?,
                    kind: ChangeKind::Delete,
                    old: Some(old),
                    new: None,
                },
            },
            PgOutputMessage::Truncate {
                xid, relation_ids, ..
            } => ReplicationEvent::Truncate {
                xid,
                relations: relation_ids
                    .into_iter()
                    .map(|oid| relation(session, oid))
                    .collect::<Result<_, _>>()?,
            },
            PgOutputMessage::Message {
                xid,
                transactional,
                lsn,
                prefix,
                content,
            } => ReplicationEvent::Message {
                xid,
                transactional,
                lsn,
                prefix,
                content,
            },
            PgOutputMessage::StreamStart { xid, .. } => {
                session.in_stream = true;
                session.open_streams.insert(xid);
                ReplicationEvent::StreamStart { xid }
            }
            PgOutputMessage::StreamStop => {
                session.in_stream = false;
                ReplicationEvent::StreamStop
            }
            PgOutputMessage::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                session.open_streams.remove(&xid);
                session.last_commit_end = session.last_commit_end.max(end_lsn);
                ReplicationEvent::StreamCommit {
                    xid,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                }
            }
            PgOutputMessage::StreamAbort { xid, subxid } => {
                if xid == subxid {
                    session.open_streams.remove(&xid);
                }
                ReplicationEvent::StreamAbort { xid, subxid }
            }
        }))
    }

    /// Sends a status update when progress moved, the server asked, or the interval passed.
    async fn confirm_progress(
        &self,
        conn: &mut WalSenderConnection,
        session: &mut Session,
        handed_off: &watch::Receiver<Lsn>,
        keepalive_wal_end: Option<Lsn>,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        let delivered = *handed_off.borrow();
        let mut flush = delivered.max(session.confirmed);
        let idle = !session.in_transaction
            && session.open_streams.is_empty()
            && delivered >= session.last_commit_end;
        if idle && let Some(wal_end) = keepalive_wal_end {
            flush = flush.max(wal_end);
        }
        let due = session.last_status.elapsed() >= self.status_interval;
        if flush > session.confirmed || reply_requested || due {
            let write = session.received.max(flush);
            conn.send_status_update(write.0, flush.0, flush.0, false)
                .await?;
            if flush > session.confirmed {
                debug!(%flush, "confirmed");
            }
            session.confirmed = flush;
            session.last_status = Instant::now();
            crate::metrics::CONFIRMED_LSN.set(flush.0 as i64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_is_asked_for_from_postgres_14_on() {
        let stream = ReplicationStream {
            params: ConnectParams::from_config(&"postgres://u@h/d".parse().unwrap()),
            slot: "walcast".into(),
            publication: "walcast_pub".into(),
            status_interval: Duration::from_secs(10),
        };
        let v2 = stream.start_command(Lsn(0x1_0000_0010), 150_018);
        assert_eq!(
            v2,
            "START_REPLICATION SLOT walcast LOGICAL 1/10 (proto_version '2', streaming 'on', publication_names 'walcast_pub', messages 'true')"
        );
        let v1 = stream.start_command(Lsn(0), 130_016);
        assert!(v1.contains("(proto_version '1', publication_names"), "{v1}");
        assert!(!v1.contains("streaming"), "{v1}");
    }
}
