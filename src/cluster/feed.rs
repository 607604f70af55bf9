//! The cluster's shared replay buffer: the leader's routed deliveries in a Redis stream, and
//! the followers that read it.
//!
//! One stream entry per event offset (all of its payload variants): its id is the offset
//! itself (`<commit LSN>-<sequence>`, both decimal), so ids rise with commit order, a resent
//! transaction cannot be added twice (Redis refuses an id at or below the top), and a node
//! can read on from its own replay log's last offset. Each entry also names the offset of the
//! entry before it (`p`): a follower that finds it is not the last one it holds knows the
//! stream trimmed events it never saw, and restarts its log after `p` (resuming from before
//! is then a `walcast:gap`, never a silent hole). Fields: `p` previous offset or empty, `d`
//! the deliveries in the replay log's record format, `e` their entity rooms (JSON).
//! The stream is capped at `delivery.replay_max_events` entries (`MAXLEN ~`).

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Cluster, ClusterError};
use crate::assemble::EventOffset;
use crate::deliver::ReplayLog;
use crate::deliver::segment;
use crate::replication::Lsn;
use crate::route::Delivery;

/// Entries added per round trip.
const PUBLISH_CHUNK: usize = 1000;
/// Entries read per round trip.
const READ_COUNT: usize = 512;
/// How long one blocking read waits for new entries.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Pause before reconnecting to Redis after an error.
const RETRY: Duration = Duration::from_millis(500);

/// The stream of routed deliveries shared by the nodes of a cluster.
#[derive(Debug)]
pub struct DeliveryFeed {
    cluster: Cluster,
    key: String,
    max_events: usize,
    /// Deliveries emitted between two yields to the sockets' writers.
    emit_batch: usize,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// The offset of the last entry this node published (or found at the top).
    previous: Mutex<Option<EventOffset>>,
}

/// The stream id of an offset.
fn entry_id(offset: EventOffset) -> String {
    format!("{}-{}", offset.commit_lsn.0, offset.sequence)
}

/// The offset of a stream id, or `None` for an id walcast did not write.
fn entry_offset(id: &str) -> Option<EventOffset> {
    let (lsn, sequence) = id.split_once('-')?;
    Some(EventOffset {
        commit_lsn: Lsn(lsn.parse().ok()?),
        sequence: sequence.parse().ok()?,
    })
}

/// What one stream entry holds.
#[derive(Debug)]
struct Entry {
    previous: Option<EventOffset>,
    deliveries: Vec<Delivery>,
}

fn decode_entry(entry: &StreamId) -> Result<Entry, ClusterError> {
    let damaged = || ClusterError::Damaged(entry.id.clone());
    let offset = entry_offset(&entry.id).ok_or_else(damaged)?;
    let previous: String = entry.get("p").ok_or_else(damaged)?;
    let previous = if previous.is_empty() {
        None
    } else {
        Some(previous.parse().map_err(|_| damaged())?)
    };
    let bytes: Vec<u8> = entry.get("d").ok_or_else(damaged)?;
    let rooms: String = entry.get("e").ok_or_else(damaged)?;
    let rooms: Vec<Vec<String>> = serde_json::from_str(&rooms).map_err(|_| damaged())?;
    let mut deliveries = Vec::with_capacity(rooms.len());
    let mut rest = &bytes[..];
    for entity_rooms in rooms {
        let (logged, len) = segment::decode_record(rest).ok_or_else(damaged)?;
        let mut delivery = logged.delivery;
        if delivery.offset != offset {
            return Err(damaged());
        }
        delivery.entity_rooms = entity_rooms;
        deliveries.push(delivery);
        rest = rest.get(len as usize..).ok_or_else(damaged)?;
    }
    if !rest.is_empty() || deliveries.is_empty() {
        return Err(damaged());
    }
    Ok(Entry {
        previous,
        deliveries,
    })
}

impl DeliveryFeed {
    /// The feed of `cluster`, capped at `max_events` entries; a follower emits its entries
    /// `emit_batch` deliveries between yields (see [`crate::gateway::socketio::emit_all`]).
    pub fn new(cluster: Cluster, max_events: usize, emit_batch: usize) -> Self {
        let key = cluster.key("deliveries");
        DeliveryFeed {
            cluster,
            key,
            max_events: max_events.max(1),
            emit_batch,
            conn: tokio::sync::Mutex::new(None),
            previous: Mutex::new(None),
        }
    }

    /// Starts publishing after `last` (this node's replay log's last offset when it took the
    /// lead; it followed the stream up to its top).
    pub fn publish_after(&self, last: Option<EventOffset>) {
        *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = last;
    }

    /// Adds `deliveries` (fresh ones, in offset order) to the stream. An entry already there
    /// (a transaction resent after a takeover) is left as it is.
    pub async fn publish(&self, deliveries: &[Delivery]) -> Result<(), ClusterError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut previous = *self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let mut pipe = redis::pipe();
        let mut queued = 0;
        let mut conn = self.conn.lock().await;
        let logged_at = crate::deliver::replay::now_ms();
        for group in deliveries.chunk_by(|a, b| a.offset == b.offset) {
            let offset = group[0].offset;
            let mut records = Vec::new();
            for delivery in group {
                segment::encode_record(&mut records, delivery, logged_at);
            }
            let rooms: Vec<&Vec<String>> = group.iter().map(|d| &d.entity_rooms).collect();
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.max_events)
                .arg(entry_id(offset))
                .arg("p")
                .arg(previous.map(|p| p.to_string()).unwrap_or_default())
                .arg("d")
                .arg(records)
                .arg("e")
                .arg(serde_json::to_string(&rooms).unwrap_or_else(|_| "[]".into()))
                .ignore();
            previous = Some(offset);
            queued += 1;
            if queued == PUBLISH_CHUNK {
                self.send(&mut conn, &pipe).await?;
                pipe = redis::pipe();
                queued = 0;
            }
        }
        if queued > 0 {
            self.send(&mut conn, &pipe).await?;
        }
        *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = previous;
        crate::metrics::CLUSTER_PUBLISHED.inc_by(deliveries.len() as u64);
        Ok(())
    }

    async fn send(
        &self,
        conn: &mut Option<MultiplexedConnection>,
        pipe: &redis::Pipeline,
    ) -> Result<(), ClusterError> {
        if conn.is_none() {
            *conn = Some(self.cluster.connection(false).await?);
        }
        let Some(c) = conn.as_mut() else {
            unreachable!("connected above")
        };
        match pipe.query_async::<()>(c).await {
            Ok(()) => Ok(()),
            // Redis ran every command of the pipeline; one refused id means that entry was
            // there already (a resent transaction), the others went in.
            Err(e) if e.to_string().contains("equal or smaller") => {
                debug!(error = %e, "cluster stream already held some entries");
                Ok(())
            }
            Err(e) => {
                *conn = None;
                Err(e.into())
            }
        }
    }

    /// Publishes, retrying until it works or `stop` fires: the slot is not confirmed past
    /// these deliveries before the other nodes can have them.
    pub async fn publish_retrying(&self, deliveries: &[Delivery], stop: &CancellationToken) {
        let mut warned = false;
        loop {
            match self.publish(deliveries).await {
                Ok(()) => {
                    if warned {
                        info!("publishing to the cluster stream works again");
                    }
                    return;
                }
                Err(e) => {
                    crate::metrics::CLUSTER_ERRORS.inc();
                    if !warned {
                        warn!(error = %e, "cannot publish deliveries to the cluster stream; retrying (the slot waits)");
                        warned = true;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// Follows the stream until `stop` fires, then reads what is left (this node takes the
    /// lead and must hold everything the last leader published). Entries already in the
    /// stream when following starts are logged without being emitted (they are history for
    /// resuming clients); later ones are logged and emitted to this node's sockets.
    pub async fn follow<A: Adapter>(
        &self,
        log: &ReplayLog,
        io: &SocketIo<A>,
        stop: &CancellationToken,
    ) -> Result<(), ClusterError> {
        let mut live = false;
        let mut cursor = log.last().map_or_else(|| "0-0".to_owned(), entry_id);
        let mut conn: Option<MultiplexedConnection> = None;
        let mut warned = false;
        loop {
            let block = live && !stop.is_cancelled();
            let read = async {
                if conn.is_none() {
                    conn = Some(self.cluster.connection(true).await?);
                }
                let Some(c) = conn.as_mut() else {
                    unreachable!("connected above")
                };
                self.read(c, &cursor, block).await
            };
            let result = if block {
                tokio::select! {
                    _ = stop.cancelled() => continue,
                    r = read => r,
                }
            } else {
                read.await
            };
            match result {
                Ok(ids) => {
                    if warned {
                        info!("following the cluster stream again");
                        warned = false;
                    }
                    let empty = ids.is_empty();
                    for id in ids {
                        cursor.clone_from(&id.id);
                        match decode_entry(&id) {
                            Ok(entry) => self.apply(entry, log, io, live).await?,
                            Err(e) => {
                                // Not walcast's, or damaged: skip it, and never let a resume
                                // reach across it silently.
                                crate::metrics::CLUSTER_ERRORS.inc();
                                error!(error = %e, "skipping an entry of the cluster stream");
                                if let Some(offset) = entry_offset(&id.id)
                                    && log.last().is_none_or(|last| last < offset)
                                {
                                    log.restart_after(offset)?;
                                }
                            }
                        }
                    }
                    if empty && !block {
                        if stop.is_cancelled() {
                            return Ok(());
                        }
                        if !live {
                            info!(last = ?log.last().map(|o| o.to_string()), "caught up with the cluster stream; following it");
                        }
                        live = true;
                    }
                }
                Err(e) => {
                    conn = None;
                    crate::metrics::CLUSTER_ERRORS.inc();
                    if !warned {
                        warn!(error = %e, "cannot read the cluster stream; retrying");
                        warned = true;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(RETRY) => {}
                    }
                    if stop.is_cancelled() {
                        return Err(e);
                    }
                }
            }
        }
    }

    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        after: &str,
        block: bool,
    ) -> Result<Vec<StreamId>, ClusterError> {
        let mut options = StreamReadOptions::default().count(READ_COUNT);
        if block {
            options = options.block(READ_BLOCK.as_millis() as usize);
        }
        let reply: Option<StreamReadReply> =
            redis::AsyncCommands::xread_options(conn, &[&self.key], &[after], &options).await?;
        Ok(reply
            .map(|r| r.keys)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|k| k.ids)
            .collect())
    }

    /// Logs one entry and, when following live, emits it to this node's sockets.
    async fn apply<A: Adapter>(
        &self,
        entry: Entry,
        log: &ReplayLog,
        io: &SocketIo<A>,
        live: bool,
    ) -> Result<(), ClusterError> {
        if let Some(previous) = entry.previous
            && log.last().is_none_or(|last| last < previous)
        {
            log.restart_after(previous)?;
        }
        let fresh = log.append(entry.deliveries)?;
        crate::metrics::CLUSTER_FOLLOWED.inc_by(fresh.len() as u64);
        let _turn = log.live_turn(&fresh).await;
        if live {
            crate::gateway::socketio::emit_all(io, &fresh, self.emit_batch).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::Action;
    use std::sync::Arc;

    #[test]
    fn ids_are_offsets_and_read_back() {
        let offset = EventOffset {
            commit_lsn: Lsn(0x1_0000_0000),
            sequence: 7,
        };
        assert_eq!(entry_id(offset), "4294967296-7");
        assert_eq!(entry_offset(&entry_id(offset)), Some(offset));
        assert_eq!(entry_offset("12-x"), None);
        assert_eq!(entry_offset("12"), None);
    }

    fn delivery(room: &str) -> Delivery {
        Delivery {
            event_name: "article:update".into(),
            rooms: vec![room.into()],
            payload: Arc::from(
                serde_json::value::RawValue::from_string("{\"a\":1}".into()).unwrap(),
            ),
            offset: EventOffset {
                commit_lsn: Lsn(42),
                sequence: 3,
            },
            uid: Arc::from("api::article.article"),
            action: Action::Update,
            entity_rooms: vec![format!("{room}-entity")],
        }
    }

    #[test]
    fn an_entry_decodes_to_its_variants_and_damage_is_an_error() {
        let variants = [delivery("io-role-a"), delivery("io-role-b")];
        let mut records = Vec::new();
        for d in &variants {
            segment::encode_record(&mut records, d, 1);
        }
        let rooms: Vec<&Vec<String>> = variants.iter().map(|d| &d.entity_rooms).collect();
        let mut map = std::collections::HashMap::new();
        map.insert(
            "p".to_owned(),
            redis::Value::BulkString(b"0000000000000029-0000000001".to_vec()),
        );
        map.insert("d".to_owned(), redis::Value::BulkString(records.clone()));
        map.insert(
            "e".to_owned(),
            redis::Value::BulkString(serde_json::to_vec(&rooms).unwrap()),
        );
        let id = StreamId {
            id: "42-3".into(),
            map: map.clone(),
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        };
        let entry = decode_entry(&id).unwrap();
        assert_eq!(
            entry.previous.unwrap().to_string(),
            "0000000000000029-0000000001"
        );
        assert_eq!(entry.deliveries.len(), 2);
        assert_eq!(entry.deliveries[1].rooms, vec!["io-role-b".to_owned()]);
        assert_eq!(
            entry.deliveries[1].entity_rooms,
            vec!["io-role-b-entity".to_owned()]
        );
        assert_eq!(entry.deliveries[0].payload.get(), "{\"a\":1}");

        // An id that is not the deliveries' offset, a cut record, a missing field.
        let mut wrong = id.clone();
        wrong.id = "42-4".into();
        assert!(matches!(
            decode_entry(&wrong),
            Err(ClusterError::Damaged(_))
        ));
        let mut cut = id.clone();
        cut.map.insert(
            "d".into(),
            redis::Value::BulkString(records[..records.len() - 3].to_vec()),
        );
        assert!(matches!(decode_entry(&cut), Err(ClusterError::Damaged(_))));
        let mut missing = id;
        missing.map.remove("e");
        assert!(matches!(
            decode_entry(&missing),
            Err(ClusterError::Damaged(_))
        ));
    }
}
