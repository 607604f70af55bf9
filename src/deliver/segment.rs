//! The replay log's on-disk format: segment files of checksummed records.
//!
//! A segment is `<id, 20 digits>.seg`: a fixed header (magic, format version, and the offset of
//! the last record of the segment before it, so the window stays provably contiguous after older
//! segments are deleted), then records. A record is `[body length u32][crc32 of body u32][body]`,
//! little-endian; the body holds one routed [`Delivery`] and the wall-clock time it was logged.
//! Decoding never panics: a short, oversized or mismatching record is reported as the end of the
//! valid data, and [`scan_segment`] truncates the file there (a `kill -9` mid-write).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::assemble::{Action, EventOffset};
use crate::replication::Lsn;
use crate::route::Delivery;

/// Identifies a segment format; bump the last byte on any incompatible change.
const MAGIC: &[u8; 8] = b"WCRPLOG1";
/// Magic, then a presence byte and the previous segment's last offset (lsn u64, seq u32).
pub const HEADER_LEN: u64 = 8 + 1 + 8 + 4;
/// Record framing: body length and crc32.
pub const FRAME_LEN: u64 = 8;
/// No body is larger: a length above it is garbage, not a record (payloads are documents).
const MAX_BODY_LEN: u32 = 64 << 20;

/// The file name of segment `id`.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// The id of a segment file name, or `None` for any other file.
pub fn segment_id(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The header of a new segment whose predecessor ended at `previous`.
pub fn encode_header(previous: Option<EventOffset>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN as usize);
    out.extend_from_slice(MAGIC);
    out.push(u8::from(previous.is_some()));
    let previous = previous.unwrap_or(EventOffset {
        commit_lsn: Lsn(0),
        sequence: 0,
    });
    out.extend_from_slice(&previous.commit_lsn.0.to_le_bytes());
    out.extend_from_slice(&previous.sequence.to_le_bytes());
    out
}

/// The predecessor offset a header records, or `None` when the bytes are not a header.
fn decode_header(bytes: &[u8]) -> Option<Option<EventOffset>> {
    let mut r = Reader(bytes);
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let present = r.u8()?;
    let offset = EventOffset {
        commit_lsn: Lsn(r.u64()?),
        sequence: r.u32()?,
    };
    match present {
        0 => Some(None),
        1 => Some(Some(offset)),
        _ => None,
    }
}

/// Appends the framed record of `delivery`, logged at `logged_at_ms`, to `out`.
pub fn encode_record(out: &mut Vec<u8>, delivery: &Delivery, logged_at_ms: u64) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_LEN as usize]);
    out.extend_from_slice(&delivery.offset.commit_lsn.0.to_le_bytes());
    out.extend_from_slice(&delivery.offset.sequence.to_le_bytes());
    out.extend_from_slice(&logged_at_ms.to_le_bytes());
    out.push(action_code(delivery.action));
    put_str(out, &delivery.uid);
    put_str(out, &delivery.event_name);
    out.extend_from_slice(&(delivery.rooms.len() as u32).to_le_bytes());
    for room in &delivery.rooms {
        put_str(out, room);
    }
    put_str(out, delivery.payload.get());
    let body = &out[start + FRAME_LEN as usize..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A logged delivery and when it was logged.
#[derive(Debug, Clone)]
pub struct LoggedDelivery {
    pub delivery: Delivery,
    pub logged_at_ms: u64,
}

/// Decodes the framed record at the start of `bytes`; returns it and its framed length, or
/// `None` when the bytes there are not a whole, intact record.
pub fn decode_record(bytes: &[u8]) -> Option<(LoggedDelivery, u64)> {
    let mut frame = Reader(bytes);
    let len = frame.u32()?;
    let crc = frame.u32()?;
    if len > MAX_BODY_LEN {
        return None;
    }
    let body = frame.take(len as usize)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let mut r = Reader(body);
    let offset = EventOffset {
        commit_lsn: Lsn(r.u64()?),
        sequence: r.u32()?,
    };
    let logged_at_ms = r.u64()?;
    let action = action_of(r.u8()?)?;
    let uid: Arc<str> = Arc::from(r.str()?);
    let event_name = r.str()?.to_owned();
    let room_count = r.u32()?;
    let mut rooms = Vec::with_capacity(room_count.min(1024) as usize);
    for _ in 0..room_count {
        rooms.push(r.str()?.to_owned());
    }
    let payload = RawValue::from_string(r.str()?.to_owned()).ok()?;
    let delivery = Delivery {
        event_name,
        rooms,
        payload: Arc::from(payload),
        offset,
        uid,
        action,
        // Resuming sockets are served by permission, not by subscription.
        entity_rooms: Vec::new(),
    };
    Some((
        LoggedDelivery {
            delivery,
            logged_at_ms,
        },
        FRAME_LEN + u64::from(len),
    ))
}

/// Where one record sits in its segment, with what retention and resume need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLocation {
    pub offset: EventOffset,
    pub position: u64,
    pub len: u64,
    pub logged_at_ms: u64,
}

/// What a segment holds after [`scan_segment`].
#[derive(Debug)]
pub struct ScannedSegment {
    /// The predecessor's last offset, from the header.
    pub previous: Option<EventOffset>,
    pub records: Vec<RecordLocation>,
    /// Bytes of valid data (header and whole records); the file is truncated to it.
    pub valid_len: u64,
    /// Bytes cut off the end (a torn or corrupt tail), 0 when the file was intact.
    pub truncated: u64,
}

/// Reads a segment, locates its records and truncates a corrupt or torn tail. `None` when the
/// header itself is unreadable (the segment holds nothing usable).
pub fn scan_segment(path: &Path) -> io::Result<Option<ScannedSegment>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let Some(previous) = bytes.get(..HEADER_LEN as usize).and_then(decode_header) else {
        return Ok(None);
    };
    let mut records = Vec::new();
    let mut position = HEADER_LEN;
    let mut last: Option<EventOffset> = previous;
    while let Some((logged, len)) = bytes.get(position as usize..).and_then(decode_record) {
        // Offsets only grow inside the log; anything else is not a record walcast wrote.
        if last.is_some_and(|l| logged.delivery.offset <= l) {
            break;
        }
        last = Some(logged.delivery.offset);
        records.push(RecordLocation {
            offset: logged.delivery.offset,
            position,
            len,
            logged_at_ms: logged.logged_at_ms,
        });
        position += len;
    }
    let truncated = bytes.len() as u64 - position;
    if truncated > 0 {
        file.set_len(position)?;
        file.sync_all()?;
    }
    Ok(Some(ScannedSegment {
        previous,
        records,
        valid_len: position,
        truncated,
    }))
}

/// Reads the records at `locations` (consecutive, ascending, in one segment) with one read.
pub fn read_records(file: &File, locations: &[RecordLocation]) -> io::Result<Vec<LoggedDelivery>> {
    use std::os::unix::fs::FileExt;
    let (Some(first), Some(last)) = (locations.first(), locations.last()) else {
        return Ok(Vec::new());
    };
    let start = first.position;
    let end = last.position + last.len;
    let mut bytes = vec![0; (end - start) as usize];
    file.read_exact_at(&mut bytes, start)?;
    locations
        .iter()
        .map(|loc| {
            let at = (loc.position - start) as usize;
            bytes
                .get(at..)
                .and_then(decode_record)
                .filter(|(logged, _)| logged.delivery.offset == loc.offset)
                .map(|(logged, _)| logged)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("replay record {} changed on disk", loc.offset),
                    )
                })
        })
        .collect()
}

fn action_code(action: Action) -> u8 {
    match action {
        Action::Create => 0,
        Action::Update => 1,
        Action::Delete => 2,
        Action::Publish => 3,
        Action::Unpublish => 4,
    }
}

fn action_of(code: u8) -> Option<Action> {
    Some(match code {
        0 => Action::Create,
        1 => Action::Update,
        2 => Action::Delete,
        3 => Action::Publish,
        4 => Action::Unpublish,
        _ => return None,
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Checked little-endian reads over a byte slice: `None` past the end, never a panic.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }
}
