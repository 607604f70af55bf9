//! The replay log: every routed delivery, durable and bounded, so a client can resume.
//!
//! Sits between the router and the gateway (spec §6). [`ReplayLog::append`] writes a
//! transaction's deliveries to the active segment file (one `write`, page cache) and indexes
//! them; the pipeline then emits them live and reports the transaction's end LSN through
//! [`Handoff`]. [`LogSyncer`] fsyncs what was written (group commit: one fsync covers every
//! transaction appended while the previous one ran) and only then lets the slot's flush LSN
//! pass those transactions, so nothing confirmed to Postgres is missing from the log after a
//! crash. Events the slot resends after a restart (their offsets derive from the commit LSN, so
//! they are stable) are already logged and are skipped, not logged or emitted twice.
//!
//! Bounded by `replay_max_events` and `replay_max_age_secs`: the index forgets the oldest
//! records and whole segment files are deleted once nothing in them is retained. Only the index
//! (offset → segment and byte position, about 50 bytes an event) is held in memory; payloads are
//! read back from the files when a client resumes. On start the files are scanned, torn or
//! corrupt tails are cut off (see [`super::segment`]), and the window stays contiguous: every
//! event after [`ReplayLog::position`]'s threshold is held, or the answer is a gap.
//!
//! The live gate orders the two paths to a resuming socket: live emission of a transaction holds
//! it exclusively ([`ReplayLog::live_turn`]), a socket finishing its catch-up holds it shared
//! while it replays the last events and joins its rooms, so it sees every event exactly once.
//! Never calls socket.io.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, watch};
use tracing::{info, warn};

use super::segment::{self, LoggedDelivery, RecordLocation};
use crate::assemble::EventOffset;
use crate::config::DeliveryConfig;
use crate::replication::Lsn;
use crate::route::Delivery;

/// A segment is closed and a new one started past this size. Small enough that deleting whole
/// segments keeps the disk use near the configured window, large enough that rotation (one
/// file create and a directory fsync) is rare.
const SEGMENT_MAX_BYTES: u64 = 8 << 20;
/// How often age-based retention runs when nothing is appended.
const RETENTION_TICK: Duration = Duration::from_secs(1);

/// How much the log keeps.
#[derive(Debug, Clone, Copy)]
pub struct ReplayLimits {
    pub max_events: usize,
    pub max_age: Duration,
    pub segment_max_bytes: u64,
}

impl ReplayLimits {
    pub fn from_config(config: &DeliveryConfig) -> Self {
        ReplayLimits {
            max_events: config.replay_max_events,
            max_age: Duration::from_secs(config.replay_max_age_secs),
            segment_max_bytes: SEGMENT_MAX_BYTES,
        }
    }
}

/// What the log can do for a client that last saw `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePosition {
    /// Every event after the offset is held (possibly none): replay them.
    Complete,
    /// Some event after the offset is no longer held (or never was); `oldest` is the oldest
    /// event still held.
    Gap { oldest: Option<EventOffset> },
}

/// One batch read for a resuming client.
#[derive(Debug)]
pub enum ReplayBatch {
    /// The next deliveries after the requested offset, in offset order (empty: caught up).
    Events(Vec<Delivery>),
    /// Events after the requested offset were dropped by retention in the meantime.
    Gap { oldest: Option<EventOffset> },
}

/// The durable, bounded log of routed deliveries. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct ReplayLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    limits: ReplayLimits,
    writer: Mutex<Writer>,
    index: Mutex<Index>,
    /// The live gate; holds the highest offset that will not be emitted live any more
    /// (emitted, or logged before this process started).
    live: RwLock<Option<EventOffset>>,
    sync_due: Mutex<SyncDue>,
}

/// The active segment, written only by the pipeline.
#[derive(Debug)]
struct Writer {
    id: u64,
    file: Arc<File>,
    len: u64,
    /// The highest offset ever logged: the dedupe key for resent transactions.
    last: Option<EventOffset>,
    buf: Vec<u8>,
}

/// What is retained, and where.
#[derive(Debug, Default)]
struct Index {
    entries: VecDeque<Entry>,
    segments: BTreeMap<u64, SegmentFile>,
    active: u64,
    /// Every event with an offset above this is held; `None`: the window starts at the first
    /// entry (inclusive) and nothing is known of what came before it.
    covered_after: Option<EventOffset>,
    last: Option<EventOffset>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    segment: u64,
    location: RecordLocation,
}

#[derive(Debug)]
struct SegmentFile {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
}

/// Files written since the last fsync.
#[derive(Debug, Default)]
struct SyncDue {
    files: Vec<Arc<File>>,
    directory: bool,
}

/// Why the log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum ReplayLogError {
    #[error("cannot use replay directory {dir} (delivery.replay_dir)")]
    Directory {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("replay log i/o failed in {dir}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ReplayLog {
    /// Opens (creating if needed) the log in `dir`: scans the segments, truncates a corrupt
    /// tail, drops what retention no longer allows. Blocking file I/O; call before serving.
    pub fn open(dir: &Path, limits: ReplayLimits) -> Result<Self, ReplayLogError> {
        let io_err = |source| ReplayLogError::Directory {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io_err)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(segment::segment_id))
            .collect();
        ids.sort_unstable();
        let next_id = ids.last().map_or(1, |id| id + 1);

        let mut index = Index::default();
        // The offset the next kept segment must start after for the window to be contiguous.
        let mut last: Option<EventOffset> = None;
        for &id in &ids {
            let path = segment::segment_path(dir, id);
            let scanned = segment::scan_segment(&path).map_err(io_err)?;
            let Some(scanned) = scanned else {
                warn!(path = %path.display(), "replay segment has no valid header; removing it");
                std::fs::remove_file(&path).map_err(io_err)?;
                continue;
            };
            if scanned.truncated > 0 {
                warn!(path = %path.display(), bytes = scanned.truncated, "replay segment had a torn or corrupt tail; truncated");
                crate::metrics::REPLAY_LOG_TRUNCATED_BYTES.inc_by(scanned.truncated);
            }
            if !index.segments.is_empty() && scanned.previous != last {
                // Something between the kept segments and this one is missing: keep only what
                // is provably contiguous with the newest data.
                warn!(path = %path.display(), "replay log is not contiguous before this segment; dropping older segments");
                for (_, old) in std::mem::take(&mut index.segments) {
                    std::fs::remove_file(&old.path).map_err(io_err)?;
                }
                index.entries.clear();
            }
            if index.segments.is_empty() {
                index.covered_after = scanned.previous;
                last = scanned.previous;
            }
            for location in scanned.records {
                last = Some(location.offset);
                index.entries.push_back(Entry {
                    segment: id,
                    location,
                });
            }
            let file = File::open(&path).map_err(io_err)?;
            index.segments.insert(
                id,
                SegmentFile {
                    path,
                    file: Arc::new(file),
                    len: scanned.valid_len,
                },
            );
        }
        index.last = last;

        // Keep appending to the newest segment, or start one.
        let (id, writer_file, len) = match index.segments.last_key_value() {
            Some((&id, segment)) => {
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&segment.path)
                    .map_err(io_err)?;
                (id, file, segment.len)
            }
            None => {
                let (file, len) = create_segment(dir, next_id, last).map_err(io_err)?;
                let path = segment::segment_path(dir, next_id);
                let reader = File::open(&path).map_err(io_err)?;
                index.segments.insert(
                    next_id,
                    SegmentFile {
                        path,
                        file: Arc::new(reader),
                        len,
                    },
                );
                (next_id, file, len)
            }
        };
        index.active = id;
        let log = ReplayLog {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                limits,
                writer: Mutex::new(Writer {
                    id,
                    file: Arc::new(writer_file),
                    len,
                    last,
                    buf: Vec::new(),
                }),
                index: Mutex::new(index),
                live: RwLock::new(last),
                sync_due: Mutex::new(SyncDue::default()),
            }),
        };
        log.prune_at(now_ms());
        {
            let index = lock(&log.inner.index);
            info!(
                dir = %dir.display(),
                events = index.entries.len(),
                last = ?index.last.map(|o| o.to_string()),
                "replay log opened"
            );
        }
        Ok(log)
    }

    /// Logs the deliveries not logged yet (offset above the last logged one) and returns them,
    /// in order: those are the ones to emit live. Written to the OS, not yet fsynced; the
    /// [`Handoff`] of the transaction waits for the fsync.
    pub fn append(&self, deliveries: Vec<Delivery>) -> Result<Vec<Delivery>, ReplayLogError> {
        self.append_at(deliveries, now_ms())
    }

    fn append_at(
        &self,
        deliveries: Vec<Delivery>,
        logged_at_ms: u64,
    ) -> Result<Vec<Delivery>, ReplayLogError> {
        let io_err = |source| ReplayLogError::Io {
            dir: self.inner.dir.clone(),
            source,
        };
        let mut guard = lock(&self.inner.writer);
        let fresh: Vec<Delivery> = deliveries
            .into_iter()
            .filter(|d| guard.last.is_none_or(|last| d.offset > last))
            .collect();
        if fresh.is_empty() {
            return Ok(fresh);
        }
        if guard.len >= self.inner.limits.segment_max_bytes {
            self.rotate(&mut guard).map_err(io_err)?;
        }
        let writer = &mut *guard;
        writer.buf.clear();
        let mut locations = Vec::with_capacity(fresh.len());
        for delivery in &fresh {
            let position = writer.len + writer.buf.len() as u64;
            segment::encode_record(&mut writer.buf, delivery, logged_at_ms);
            locations.push(RecordLocation {
                offset: delivery.offset,
                position,
                len: writer.len + writer.buf.len() as u64 - position,
                logged_at_ms,
            });
        }
        if let Err(e) = (&*writer.file).write_all(&writer.buf) {
            // Leave no partial record behind for the next append to follow.
            let _ = writer.file.set_len(writer.len);
            return Err(io_err(e));
        }
        writer.len += writer.buf.len() as u64;
        writer.last = fresh.last().map(|d| d.offset);
        {
            let mut due = lock(&self.inner.sync_due);
            if !due.files.iter().any(|f| Arc::ptr_eq(f, &writer.file)) {
                due.files.push(Arc::clone(&writer.file));
            }
        }
        let mut index = lock(&self.inner.index);
        if let Some(segment) = index.segments.get_mut(&writer.id) {
            segment.len = writer.len;
        }
        index
            .entries
            .extend(locations.into_iter().map(|location| Entry {
                segment: writer.id,
                location,
            }));
        index.last = writer.last;
        drop(index);
        drop(guard);
        self.prune_at(logged_at_ms);
        Ok(fresh)
    }

    /// The highest offset logged, if any.
    pub fn last(&self) -> Option<EventOffset> {
        lock(&self.inner.writer).last
    }

    /// Forgets everything held and declares the log to start right after `previous`: a
    /// follower found that its source (the cluster's shared stream) no longer holds what came
    /// between its last event and `previous`. Resuming from before `previous` is then a gap.
    pub fn restart_after(&self, previous: EventOffset) -> Result<(), ReplayLogError> {
        let mut writer = lock(&self.inner.writer);
        writer.last = Some(previous);
        self.rotate(&mut writer)
            .map_err(|source| ReplayLogError::Io {
                dir: self.inner.dir.clone(),
                source,
            })?;
        let mut index = lock(&self.inner.index);
        index.entries.clear();
        index.covered_after = Some(previous);
        index.last = Some(previous);
        drop(index);
        drop(writer);
        warn!(after = %previous, "replay log restarted: the cluster stream no longer held the events before this offset");
        self.prune_at(now_ms());
        Ok(())
    }

    /// Closes the active segment and starts the next one; called with the writer locked.
    fn rotate(&self, writer: &mut Writer) -> io::Result<()> {
        let id = writer.id + 1;
        let (file, len) = create_segment(&self.inner.dir, id, writer.last)?;
        let path = segment::segment_path(&self.inner.dir, id);
        let reader = Arc::new(File::open(&path)?);
        let file = Arc::new(file);
        {
            let mut due = lock(&self.inner.sync_due);
            due.files.push(Arc::clone(&file));
            due.directory = true;
        }
        let mut index = lock(&self.inner.index);
        index.segments.insert(
            id,
            SegmentFile {
                path,
                file: reader,
                len,
            },
        );
        index.active = id;
        drop(index);
        writer.id = id;
        writer.file = file;
        writer.len = len;
        Ok(())
    }

    /// Applies retention: forgets records beyond `max_events` or older than `max_age`, and
    /// deletes segment files that hold nothing retained any more.
    fn prune_at(&self, now_ms: u64) {
        let limits = self.inner.limits;
        let max_age_ms = limits.max_age.as_millis() as u64;
        let mut index = lock(&self.inner.index);
        while let Some(front) = index.entries.front().copied() {
            let too_many = index.entries.len() > limits.max_events;
            let too_old = front.location.logged_at_ms.saturating_add(max_age_ms) < now_ms;
            if !(too_many || too_old) {
                break;
            }
            index.covered_after = Some(front.location.offset);
            index.entries.pop_front();
        }
        let keep_from = index
            .entries
            .front()
            .map_or(index.active, |e| e.segment)
            .min(index.active);
        let doomed: Vec<u64> = index
            .segments
            .range(..keep_from)
            .map(|(&id, _)| id)
            .collect();
        let mut removed = Vec::new();
        for id in doomed {
            if let Some(segment) = index.segments.remove(&id) {
                removed.push(segment.path);
            }
        }
        crate::metrics::REPLAY_LOG_EVENTS.set(index.entries.len() as i64);
        crate::metrics::REPLAY_LOG_BYTES
            .set(index.segments.values().map(|s| s.len).sum::<u64>() as i64);
        drop(index);
        for path in removed {
            if let Err(e) = std::fs::remove_file(&path) {
                warn!(path = %path.display(), error = %e, "cannot remove an expired replay segment");
            }
        }
    }

    /// Whether every event after `offset` is still held.
    pub fn position(&self, offset: EventOffset) -> ResumePosition {
        lock(&self.inner.index).position(offset)
    }

    /// Up to `limit` deliveries after `after` and at most `upto`, read back from the files.
    pub async fn read_after(
        &self,
        after: EventOffset,
        upto: EventOffset,
        limit: usize,
    ) -> Result<ReplayBatch, ReplayLogError> {
        let groups = {
            let index = lock(&self.inner.index);
            if let ResumePosition::Gap { oldest } = index.position(after) {
                return Ok(ReplayBatch::Gap { oldest });
            }
            let start = index
                .entries
                .partition_point(|e| e.location.offset <= after);
            let mut groups: Vec<(Arc<File>, Vec<RecordLocation>)> = Vec::new();
            let mut taken: Option<(usize, EventOffset)> = None;
            for entry in index
                .entries
                .range(start..)
                .take_while(|e| e.location.offset <= upto)
            {
                // The payload variants of one event share its offset: a batch never splits
                // them, since the next one starts after that offset.
                let count = match taken {
                    Some((n, last)) if n >= limit && last != entry.location.offset => break,
                    Some((n, _)) => n + 1,
                    None => 1,
                };
                taken = Some((count, entry.location.offset));
                let Some(segment) = index.segments.get(&entry.segment) else {
                    break;
                };
                match groups.last_mut() {
                    Some((file, locations)) if Arc::ptr_eq(file, &segment.file) => {
                        locations.push(entry.location)
                    }
                    _ => groups.push((Arc::clone(&segment.file), vec![entry.location])),
                }
            }
            groups
        };
        if groups.is_empty() {
            return Ok(ReplayBatch::Events(Vec::new()));
        }
        let read = tokio::task::spawn_blocking(move || -> io::Result<Vec<Delivery>> {
            let mut out = Vec::new();
            for (file, locations) in &groups {
                out.extend(
                    segment::read_records(file, locations)?
                        .into_iter()
                        .map(|LoggedDelivery { delivery, .. }| delivery),
                );
            }
            Ok(out)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        read.map(ReplayBatch::Events)
            .map_err(|source| ReplayLogError::Io {
                dir: self.inner.dir.clone(),
                source,
            })
    }

    /// The highest offset that will not be emitted live any more, as of now.
    pub async fn live_horizon(&self) -> Option<EventOffset> {
        *self.inner.live.read().await
    }

    /// Holds the live gate shared: while held, no transaction is emitted live. The value is
    /// the highest offset already emitted live (or never to be).
    pub async fn live_gate(&self) -> RwLockReadGuard<'_, Option<EventOffset>> {
        self.inner.live.read().await
    }

    /// Takes the live gate exclusively to emit `deliveries` live; sockets finishing their
    /// catch-up wait until it is dropped, and then count these as emitted.
    pub async fn live_turn(&self, deliveries: &[Delivery]) -> LiveTurn<'_> {
        let mut guard = self.inner.live.write().await;
        if let Some(last) = deliveries.last() {
            *guard = Some(guard.map_or(last.offset, |h| h.max(last.offset)));
        }
        LiveTurn { _guard: guard }
    }

    /// Splits off the durable hand-off: the pipeline reports each transaction's end LSN to the
    /// [`Handoff`], and the [`LogSyncer`] passes it on to `handed_off` (the slot's flush LSN)
    /// once the log is fsynced up to there.
    pub fn handoff(&self, handed_off: watch::Sender<Lsn>) -> (Handoff, LogSyncer) {
        let (written, written_rx) = watch::channel(*handed_off.borrow());
        (
            Handoff { written },
            LogSyncer {
                log: self.clone(),
                written: written_rx,
                handed_off,
            },
        )
    }

    /// Fsyncs every file written since the last call (and the directory after a new segment).
    fn sync(&self) -> io::Result<bool> {
        let due = std::mem::take(&mut *lock(&self.inner.sync_due));
        if due.files.is_empty() && !due.directory {
            return Ok(false);
        }
        for file in &due.files {
            file.sync_data()?;
        }
        if due.directory {
            File::open(&self.inner.dir)?.sync_all()?;
        }
        Ok(true)
    }
}

impl Index {
    fn position(&self, offset: EventOffset) -> ResumePosition {
        let oldest = self.entries.front().map(|e| e.location.offset);
        let complete = match (self.last, self.covered_after) {
            // Nothing was ever logged: an offset from elsewhere cannot be vouched for.
            (None, _) => false,
            (Some(last), _) if offset >= last => true,
            (_, Some(covered_after)) => offset >= covered_after,
            (_, None) => oldest.is_some_and(|first| offset >= first),
        };
        if complete {
            ResumePosition::Complete
        } else {
            ResumePosition::Gap { oldest }
        }
    }
}

/// Creates segment `id` with its header; returns it opened for appending, and its length.
fn create_segment(dir: &Path, id: u64, previous: Option<EventOffset>) -> io::Result<(File, u64)> {
    let header = segment::encode_header(previous);
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(segment::segment_path(dir, id))?;
    file.write_all(&header)?;
    Ok((file, header.len() as u64))
}

/// Exclusive hold of the live gate while a transaction is emitted live.
#[must_use = "the gate is released when this is dropped"]
pub struct LiveTurn<'a> {
    _guard: RwLockWriteGuard<'a, Option<EventOffset>>,
}

/// The pipeline's side of the durable hand-off.
#[derive(Debug)]
pub struct Handoff {
    written: watch::Sender<Lsn>,
}

impl Handoff {
    /// Reports that every event of the transactions up to `end_lsn` is appended and emitted.
    pub fn send(&self, end_lsn: Lsn) {
        self.written.send_replace(end_lsn);
    }
}

/// Fsyncs the log and advances the slot's hand-off LSN behind it (group commit).
#[derive(Debug)]
pub struct LogSyncer {
    log: ReplayLog,
    written: watch::Receiver<Lsn>,
    handed_off: watch::Sender<Lsn>,
}

impl LogSyncer {
    /// Runs until the [`Handoff`] is dropped (after a last fsync), or an fsync fails: then the
    /// hand-off stops advancing, and the error stops the service, since what the log holds can
    /// no longer be trusted to be on disk.
    pub async fn run(mut self) -> Result<(), ReplayLogError> {
        let mut retention = tokio::time::interval(RETENTION_TICK);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = self.written.changed() => {
                    let closed = changed.is_err();
                    let lsn = *self.written.borrow_and_update();
                    let log = self.log.clone();
                    tokio::task::spawn_blocking(move || log.sync())
                        .await
                        .unwrap_or_else(|e| Err(io::Error::other(e)))
                        .map_err(|source| ReplayLogError::Io {
                            dir: self.log.inner.dir.clone(),
                            source,
                        })?;
                    self.handed_off.send_if_modified(|current| {
                        let moved = lsn > *current;
                        if moved {
                            *current = lsn;
                        }
                        moved
                    });
                    crate::metrics::record_handoff();
                    if closed {
                        return Ok(());
                    }
                }
                _ = retention.tick() => self.log.prune_at(now_ms()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::Action;
    use serde_json::value::RawValue;

    fn offset(lsn: u64, sequence: u32) -> EventOffset {
        EventOffset {
            commit_lsn: Lsn(lsn),
            sequence,
        }
    }

    fn delivery(lsn: u64, sequence: u32) -> Delivery {
        let payload =
            format!(r#"{{"id":{lsn},"documentId":"doc{lsn}-{sequence}","name":"a tag"}}"#);
        Delivery {
            event_name: "tag:create".into(),
            rooms: vec!["io-role-public".into()],
            payload: Arc::from(RawValue::from_string(payload).unwrap()),
            offset: offset(lsn, sequence),
            uid: Arc::from("api::tag.tag"),
            action: Action::Create,
            entity_rooms: Vec::new(),
        }
    }

    fn limits(max_events: usize) -> ReplayLimits {
        ReplayLimits {
            max_events,
            max_age: Duration::from_secs(300),
            segment_max_bytes: 1024,
        }
    }

    async fn read_all(log: &ReplayLog, after: EventOffset) -> Vec<EventOffset> {
        match log
            .read_after(after, offset(u64::MAX, u32::MAX), usize::MAX)
            .await
            .unwrap()
        {
            ReplayBatch::Events(events) => events.iter().map(|d| d.offset).collect(),
            ReplayBatch::Gap { oldest } => panic!("unexpected gap, oldest {oldest:?}"),
        }
    }

    /// Every offset held, read back from the files (checks every record decodes).
    async fn held(log: &ReplayLog) -> Vec<EventOffset> {
        let first = lock(&log.inner.index)
            .entries
            .front()
            .map(|e| e.location.offset);
        let Some(first) = first else {
            return Vec::new();
        };
        let mut all = vec![first];
        all.extend(read_all(log, first).await);
        all
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        files.sort();
        files
    }

    #[tokio::test]
    async fn a_batch_keeps_the_variants_of_one_event_together() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        let mut other_room = delivery(10, 1);
        other_room.rooms = vec!["io-role-authenticated".into()];
        log.append(vec![
            delivery(10, 0),
            delivery(10, 1),
            other_room,
            delivery(10, 2),
        ])
        .unwrap();
        let ReplayBatch::Events(events) = log
            .read_after(offset(10, 0), offset(20, 0), 1)
            .await
            .unwrap()
        else {
            panic!("gap")
        };
        assert_eq!(events.len(), 2, "both variants of (10, 1)");
        assert!(events.iter().all(|d| d.offset == offset(10, 1)));
    }

    #[tokio::test]
    async fn appends_read_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        let fresh = log
            .append(vec![delivery(10, 0), delivery(10, 1), delivery(20, 0)])
            .unwrap();
        assert_eq!(fresh.len(), 3);
        let read = log
            .read_after(offset(10, 0), offset(20, 0), 10)
            .await
            .unwrap();
        let ReplayBatch::Events(events) = read else {
            panic!("gap")
        };
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].offset, offset(10, 1));
        assert_eq!(events[1].payload.get(), delivery(20, 0).payload.get());
        assert_eq!(events[1].rooms, vec!["io-role-public".to_string()]);
        assert_eq!(events[1].action, Action::Create);
        drop(log);

        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        assert_eq!(
            held(&log).await,
            vec![offset(10, 0), offset(10, 1), offset(20, 0)]
        );
        assert_eq!(log.live_horizon().await, Some(offset(20, 0)));
    }

    #[tokio::test]
    async fn resent_events_are_not_logged_twice() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        log.append(vec![delivery(10, 0), delivery(10, 1)]).unwrap();
        drop(log);
        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        // The slot resends the transaction at 10 (partly logged or not) and then goes on.
        let fresh = log
            .append(vec![delivery(10, 0), delivery(10, 1), delivery(10, 2)])
            .unwrap();
        assert_eq!(
            fresh.iter().map(|d| d.offset).collect::<Vec<_>>(),
            vec![offset(10, 2)]
        );
        assert!(log.append(vec![delivery(5, 0)]).unwrap().is_empty());
        assert_eq!(
            held(&log).await,
            vec![offset(10, 0), offset(10, 1), offset(10, 2)]
        );
    }

    #[tokio::test]
    async fn segments_rotate_and_the_oldest_are_removed_beyond_max_events() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReplayLog::open(dir.path(), limits(20)).unwrap();
        for lsn in 1..=100 {
            log.append(vec![delivery(lsn, 0)]).unwrap();
        }
        let held = read_all(&log, offset(80, 0)).await;
        assert_eq!(held.len(), 20);
        assert_eq!(held.first(), Some(&offset(81, 0)));
        // 20 events of ~130 bytes in 1 KiB segments: a handful of files, not 100 events' worth.
        let files = segment_files(dir.path());
        assert!(files.len() >= 3 && files.len() <= 5, "{files:?}");
        assert_eq!(
            log.position(offset(79, 0)),
            ResumePosition::Gap {
                oldest: Some(offset(81, 0))
            }
        );
        assert_eq!(log.position(offset(80, 0)), ResumePosition::Complete);
        assert_eq!(log.position(offset(500, 0)), ResumePosition::Complete);

        // After a restart the window is the same: contiguous from the oldest segment's header.
        drop(log);
        let log = ReplayLog::open(dir.path(), limits(20)).unwrap();
        assert_eq!(read_all(&log, offset(80, 0)).await.len(), 20);
        assert!(matches!(
            log.position(offset(79, 0)),
            ResumePosition::Gap { .. }
        ));
    }

    #[tokio::test]
    async fn events_older_than_max_age_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = limits(1000);
        l.max_age = Duration::from_secs(60);
        let log = ReplayLog::open(dir.path(), l).unwrap();
        let t0 = 1_000_000_000;
        log.append_at(vec![delivery(1, 0), delivery(2, 0)], t0)
            .unwrap();
        log.append_at(vec![delivery(3, 0)], t0 + 50_000).unwrap();
        log.prune_at(t0 + 61_000);
        assert_eq!(
            log.position(offset(1, 0)),
            ResumePosition::Gap {
                oldest: Some(offset(3, 0))
            }
        );
        assert_eq!(log.position(offset(2, 0)), ResumePosition::Complete);
        log.prune_at(t0 + 200_000);
        assert_eq!(
            log.position(offset(2, 0)),
            ResumePosition::Gap { oldest: None }
        );
        assert_eq!(
            log.position(offset(3, 0)),
            ResumePosition::Complete,
            "up to date"
        );
    }

    #[tokio::test]
    async fn a_torn_tail_is_truncated_and_appending_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        log.append(vec![delivery(1, 0), delivery(2, 0)]).unwrap();
        drop(log);
        let file = segment_files(dir.path()).pop().unwrap();
        let whole = std::fs::read(&file).unwrap();
        // kill -9 in the middle of the next record: half of a copy of the last one.
        let mut torn = whole.clone();
        let record_len = (whole.len() as u64 - segment::HEADER_LEN) / 2;
        torn.extend_from_slice(
            &whole[whole.len() - record_len as usize..][..record_len as usize / 2],
        );
        std::fs::write(&file, &torn).unwrap();

        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().len(), whole.len() as u64);
        assert_eq!(held(&log).await, vec![offset(1, 0), offset(2, 0)]);
        log.append(vec![delivery(3, 0)]).unwrap();
        drop(log);
        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        assert_eq!(
            read_all(&log, offset(1, 0)).await,
            vec![offset(2, 0), offset(3, 0)]
        );
    }

    #[tokio::test]
    async fn a_corrupt_record_ends_the_valid_data_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        log.append(vec![delivery(1, 0), delivery(2, 0), delivery(3, 0)])
            .unwrap();
        drop(log);
        let file = segment_files(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let record_len = (bytes.len() - segment::HEADER_LEN as usize) / 3;
        // Flip one payload byte of the second record: its checksum no longer matches.
        let at = segment::HEADER_LEN as usize + record_len + record_len - 5;
        bytes[at] ^= 0x55;
        std::fs::write(&file, &bytes).unwrap();
        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        assert_eq!(held(&log).await, vec![offset(1, 0)]);

        // Garbage of every length never panics the scanner.
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            std::fs::write(&file, &junk).unwrap();
            let _ = segment::scan_segment(&file).unwrap();
        }
    }

    #[tokio::test]
    async fn a_missing_middle_segment_drops_everything_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        for lsn in 1..=40 {
            log.append(vec![delivery(lsn, 0)]).unwrap();
        }
        drop(log);
        let files = segment_files(dir.path());
        assert!(files.len() >= 3, "{files:?}");
        std::fs::remove_file(&files[1]).unwrap();
        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        let held = held(&log).await;
        assert_eq!(held.last(), Some(&offset(40, 0)));
        let first = held[0];
        assert!(first.commit_lsn.0 > 1);
        assert!(matches!(
            log.position(offset(1, 0)),
            ResumePosition::Gap { .. }
        ));
        assert_eq!(
            log.position(EventOffset {
                commit_lsn: Lsn(first.commit_lsn.0 - 1),
                sequence: 0
            }),
            ResumePosition::Complete
        );
    }

    #[tokio::test]
    async fn nothing_logged_yet_is_a_gap_for_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReplayLog::open(dir.path(), limits(10)).unwrap();
        assert_eq!(
            log.position(offset(1, 0)),
            ResumePosition::Gap { oldest: None }
        );
    }

    #[tokio::test]
    async fn the_syncer_hands_off_only_after_appends_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReplayLog::open(dir.path(), limits(1000)).unwrap();
        let (handed_off, mut handed_off_rx) = watch::channel(Lsn(0));
        let (handoff, syncer) = log.handoff(handed_off);
        let task = tokio::spawn(syncer.run());
        log.append(vec![delivery(10, 0)]).unwrap();
        handoff.send(Lsn(11));
        handed_off_rx.wait_for(|l| *l == Lsn(11)).await.unwrap();
        assert!(
            lock(&log.inner.sync_due).files.is_empty(),
            "synced before hand-off"
        );
        drop(handoff);
        task.await.unwrap().unwrap();
    }

    /// Measures the append cost per event and the bytes per event (`cargo test --release
    /// replay_log_append_cost -- --ignored --nocapture`).
    #[tokio::test]
    #[ignore]
    async fn replay_log_append_cost() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReplayLog::open(
            dir.path(),
            ReplayLimits {
                max_events: 100_000,
                max_age: Duration::from_secs(300),
                segment_max_bytes: SEGMENT_MAX_BYTES,
            },
        )
        .unwrap();
        let body = format!(
            r#"{{"id":1,"documentId":"k3m0q9x8a7b6c5d4e3f2g1h0","name":"{}","createdAt":"2026-11-25T16:45:58.684Z","updatedAt":"2026-11-25T16:45:58.684Z","publishedAt":"2026-11-25T16:45:58.684Z"}}"#,
            "x".repeat(60)
        );
        let make = |lsn: u64| Delivery {
            payload: Arc::from(RawValue::from_string(body.clone()).unwrap()),
            ..delivery(lsn, 0)
        };
        for per_tx in [1usize, 10] {
            let n = 20_000u64;
            let batches: Vec<Vec<Delivery>> = (0..n / per_tx as u64)
                .map(|t| {
                    (0..per_tx as u32)
                        .map(|s| Delivery {
                            offset: offset(1_000_000 * per_tx as u64 + t, s),
                            ..make(t)
                        })
                        .collect()
                })
                .collect();
            let start = std::time::Instant::now();
            for batch in batches {
                log.append(batch).unwrap();
            }
            let append = start.elapsed();
            let start = std::time::Instant::now();
            log.sync().unwrap();
            let one_sync = start.elapsed();
            eprintln!(
                "{per_tx} events/tx: append {:.2} µs/event (no fsync); one fsync after {n} events {:?}",
                append.as_secs_f64() * 1e6 / n as f64,
                one_sync
            );
        }
        let mut fsyncs = Vec::new();
        for t in 0..200u64 {
            log.append(vec![Delivery {
                offset: offset(90_000_000 + t, 0),
                ..make(t)
            }])
            .unwrap();
            let start = std::time::Instant::now();
            log.sync().unwrap();
            fsyncs.push(start.elapsed());
        }
        fsyncs.sort();
        eprintln!(
            "fsync per 1-event transaction: p50 {:?} p90 {:?} max {:?}",
            fsyncs[100], fsyncs[180], fsyncs[199]
        );
        let index = lock(&log.inner.index);
        let bytes: u64 = index.segments.values().map(|s| s.len).sum();
        eprintln!(
            "bytes per event on disk: {:.1} (payload {} bytes)",
            bytes as f64 / index.entries.len() as f64,
            body.len()
        );
    }
}
