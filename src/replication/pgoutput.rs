//! Pure pgoutput decoder: the bytes of one XLogData payload → one [`PgOutputMessage`].
//!
//! Covers every message of pgoutput protocol versions 1 and 2 (Begin, Commit, Origin,
//! Relation, Type, Insert, Update, Delete, Truncate, Message, Stream Start/Stop/Commit/Abort).
//! Inside a streamed block (between Stream Start and Stream Stop) data messages carry a
//! leading xid, so the caller says whether it is inside one. No I/O, no panics: every read is
//! bounds-checked and malformed input is a [`DecodeError`]. Tuple values stay as zero-copy
//! slices of the input (`Bytes`); turning them into JSON is `value.rs`'s job.

use bytes::Bytes;

use super::Lsn;

/// Microseconds since 2000-01-01 00:00:00 UTC, as Postgres sends timestamps.
pub type PgTimestamp = i64;

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum PgOutputMessage {
    Begin(Begin),
    Commit(Commit),
    Origin {
        commit_lsn: Lsn,
        name: String,
    },
    Relation(RelationBody),
    Type {
        xid: Option<u32>,
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        xid: Option<u32>,
        relation_id: u32,
        new: TupleData,
    },
    Update {
        xid: Option<u32>,
        relation_id: u32,
        /// `Key` (replica identity columns changed) or `Old` (REPLICA IDENTITY FULL).
        old: Option<(OldTupleKind, TupleData)>,
        new: TupleData,
    },
    Delete {
        xid: Option<u32>,
        relation_id: u32,
        old_kind: OldTupleKind,
        old: TupleData,
    },
    Truncate {
        xid: Option<u32>,
        cascade: bool,
        restart_identity: bool,
        relation_ids: Vec<u32>,
    },
    Message {
        xid: Option<u32>,
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: PgTimestamp,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    pub final_lsn: Lsn,
    pub commit_time: PgTimestamp,
    pub xid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_time: PgTimestamp,
}

/// A Relation message: the shape of a table, sent before its first row in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationBody {
    pub xid: Option<u32>,
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<ColumnDef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// Part of the replica identity key.
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldTupleKind {
    /// Only the replica identity key columns are set (`K`).
    Key,
    /// The whole old row (`O`, REPLICA IDENTITY FULL).
    Full,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// A TOASTed value that did not change; its bytes are not in the WAL.
    UnchangedToast,
    Text(Bytes),
    Binary(Bytes),
}

/// The columns of one row, in the relation's column order.
pub type TupleData = Vec<Datum>;

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty pgoutput message")]
    Empty,
    #[error("unknown pgoutput message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("pgoutput message {tag:?} truncated at byte {at}")]
    Truncated { tag: char, at: usize },
    #[error("pgoutput message {tag:?}: {what}")]
    Malformed { tag: char, what: &'static str },
}

/// Decodes one pgoutput message. `in_stream` is true between Stream Start and Stream Stop,
/// where data messages carry the streamed transaction's xid first.
pub fn decode_message(data: &Bytes, in_stream: bool) -> Result<PgOutputMessage, DecodeError> {
    let tag = *data.first().ok_or(DecodeError::Empty)?;
    let mut r = Reader {
        data,
        pos: 1,
        tag: tag as char,
    };
    let stream_xid = |r: &mut Reader| -> Result<Option<u32>, DecodeError> {
        if in_stream {
            Ok(Some(r.u32()?))
        } else {
            Ok(None)
        }
    };
    let message = match tag {
        b'B' => PgOutputMessage::Begin(Begin {
            final_lsn: Lsn(r.u64()?),
            commit_time: r.i64()?,
            xid: r.u32()?,
        }),
        b'C' => {
            let _flags = r.u8()?;
            PgOutputMessage::Commit(Commit {
                commit_lsn: Lsn(r.u64()?),
                end_lsn: Lsn(r.u64()?),
                commit_time: r.i64()?,
            })
        }
        b'O' => PgOutputMessage::Origin {
            commit_lsn: Lsn(r.u64()?),
            name: r.cstr()?,
        },
        b'R' => {
            let xid = stream_xid(&mut r)?;
            let oid = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let replica_identity = r.u8()?;
            let count = r.i16()?;
            if count < 0 {
                return Err(r.malformed("negative column count"));
            }
            let mut columns = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let flags = r.u8()?;
                columns.push(ColumnDef {
                    is_key: flags & 1 == 1,
                    name: r.cstr()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            PgOutputMessage::Relation(RelationBody {
                xid,
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => PgOutputMessage::Type {
            xid: stream_xid(&mut r)?,
            oid: r.u32()?,
            namespace: r.cstr()?,
            name: r.cstr()?,
        },
        b'I' => {
            let xid = stream_xid(&mut r)?;
            let relation_id = r.u32()?;
            r.expect(b'N', "insert without a new tuple")?;
            PgOutputMessage::Insert {
                xid,
                relation_id,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let xid = stream_xid(&mut r)?;
            let relation_id = r.u32()?;
            let mut old = None;
            let mut marker = r.u8()?;
            if marker == b'K' || marker == b'O' {
                let kind = if marker == b'K' {
                    OldTupleKind::Key
                } else {
                    OldTupleKind::Full
                };
                old = Some((kind, r.tuple()?));
                marker = r.u8()?;
            }
            if marker != b'N' {
                return Err(r.malformed("update without a new tuple"));
            }
            PgOutputMessage::Update {
                xid,
                relation_id,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let xid = stream_xid(&mut r)?;
            let relation_id = r.u32()?;
            let old_kind = match r.u8()? {
                b'K' => OldTupleKind::Key,
                b'O' => OldTupleKind::Full,
                _ => return Err(r.malformed("delete without an old tuple")),
            };
            PgOutputMessage::Delete {
                xid,
                relation_id,
                old_kind,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let xid = stream_xid(&mut r)?;
            let count = r.u32()?;
            let options = r.u8()?;
            // Each relation id is 4 bytes; refuse counts the payload cannot hold before
            // allocating for them.
            if (count as usize).saturating_mul(4) > r.remaining() {
                return Err(r.malformed("relation count exceeds the message"));
            }
            let mut relation_ids = Vec::with_capacity(count as usize);
            for _ in 0..count {
                relation_ids.push(r.u32()?);
            }
            PgOutputMessage::Truncate {
                xid,
                cascade: options & 1 == 1,
                restart_identity: options & 2 == 2,
                relation_ids,
            }
        }
        b'M' => {
            let xid = stream_xid(&mut r)?;
            let flags = r.u8()?;
            let lsn = Lsn(r.u64()?);
            let prefix = r.cstr()?;
            let len = r.u32()? as usize;
            let content = r.bytes(len)?;
            PgOutputMessage::Message {
                xid,
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content,
            }
        }
        b'S' => PgOutputMessage::StreamStart {
            xid: r.u32()?,
            first_segment: r.u8()? == 1,
        },
        b'E' => PgOutputMessage::StreamStop,
        b'c' => {
            let xid = r.u32()?;
            let _flags = r.u8()?;
            PgOutputMessage::StreamCommit {
                xid,
                commit_lsn: Lsn(r.u64()?),
                end_lsn: Lsn(r.u64()?),
                commit_time: r.i64()?,
            }
        }
        // Protocol 4 appends abort LSN and time; protocol 2 does not: read what is common.
        b'A' => PgOutputMessage::StreamAbort {
            xid: r.u32()?,
            subxid: r.u32()?,
        },
        other => return Err(DecodeError::UnknownTag(other)),
    };
    Ok(message)
}

struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
    tag: char,
}

impl Reader<'_> {
    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated {
            tag: self.tag,
            at: self.pos,
        }
    }

    fn malformed(&self, what: &'static str) -> DecodeError {
        DecodeError::Malformed {
            tag: self.tag,
            what,
        }
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.pos.checked_add(N).ok_or_else(|| self.truncated())?;
        let slice = self
            .data
            .get(self.pos..end)
            .ok_or_else(|| self.truncated())?;
        self.pos = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), DecodeError> {
        if self.u8()? == byte {
            Ok(())
        } else {
            Err(self.malformed(what))
        }
    }

    fn bytes(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        let end = self.pos.checked_add(len).ok_or_else(|| self.truncated())?;
        if end > self.data.len() {
            return Err(self.truncated());
        }
        let out = self.data.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }

    fn cstr(&mut self) -> Result<String, DecodeError> {
        let rest = self.data.get(self.pos..).ok_or_else(|| self.truncated())?;
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.truncated())?;
        let s = std::str::from_utf8(&rest[..nul])
            .map_err(|_| self.malformed("name is not UTF-8"))?
            .to_owned();
        self.pos += nul + 1;
        Ok(s)
    }

    fn tuple(&mut self) -> Result<TupleData, DecodeError> {
        let count = self.i16()?;
        if count < 0 {
            return Err(self.malformed("negative column count"));
        }
        // Every column takes at least its kind byte.
        if count as usize > self.remaining() {
            return Err(self.truncated());
        }
        let mut columns = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let datum = match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                kind @ (b't' | b'b') => {
                    let len = self.i32()?;
                    if len < 0 {
                        return Err(self.malformed("negative value length"));
                    }
                    let value = self.bytes(len as usize)?;
                    if kind == b't' {
                        Datum::Text(value)
                    } else {
                        Datum::Binary(value)
                    }
                }
                _ => return Err(self.malformed("unknown column kind")),
            };
            columns.push(datum);
        }
        Ok(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(parts: &[&[u8]]) -> Bytes {
        Bytes::from(parts.concat())
    }

    fn text_col(s: &str) -> Vec<u8> {
        let mut v = vec![b't'];
        v.extend_from_slice(&(s.len() as i32).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn decodes_begin_and_commit() {
        let begin = msg(&[
            b"B",
            &7u64.to_be_bytes(),
            &9i64.to_be_bytes(),
            &42u32.to_be_bytes(),
        ]);
        assert_eq!(
            decode_message(&begin, false).unwrap(),
            PgOutputMessage::Begin(Begin {
                final_lsn: Lsn(7),
                commit_time: 9,
                xid: 42
            })
        );
        let commit = msg(&[
            b"C",
            &[0],
            &7u64.to_be_bytes(),
            &8u64.to_be_bytes(),
            &9i64.to_be_bytes(),
        ]);
        assert_eq!(
            decode_message(&commit, false).unwrap(),
            PgOutputMessage::Commit(Commit {
                commit_lsn: Lsn(7),
                end_lsn: Lsn(8),
                commit_time: 9
            })
        );
    }

    #[test]
    fn decodes_relation_and_insert_with_all_column_kinds() {
        let relation = msg(&[
            b"R",
            &16390u32.to_be_bytes(),
            b"public\0tags\0",
            b"d",
            &2i16.to_be_bytes(),
            &[1],
            b"id\0",
            &23u32.to_be_bytes(),
            &(-1i32).to_be_bytes(),
            &[0],
            b"name\0",
            &1043u32.to_be_bytes(),
            &259i32.to_be_bytes(),
        ]);
        let PgOutputMessage::Relation(r) = decode_message(&relation, false).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(r.name, "tags");
        assert_eq!(r.replica_identity, b'd');
        assert!(r.columns[0].is_key);
        assert_eq!(r.columns[1].type_oid, 1043);

        let insert = msg(&[
            b"I",
            &16390u32.to_be_bytes(),
            b"N",
            &4i16.to_be_bytes(),
            &text_col("1"),
            b"n",
            b"u",
            &text_col("rust"),
        ]);
        let PgOutputMessage::Insert { new, .. } = decode_message(&insert, false).unwrap() else {
            panic!("not an insert")
        };
        assert_eq!(
            new,
            vec![
                Datum::Text(Bytes::from_static(b"1")),
                Datum::Null,
                Datum::UnchangedToast,
                Datum::Text(Bytes::from_static(b"rust"))
            ]
        );
    }

    #[test]
    fn streamed_messages_carry_the_xid_first() {
        let delete = msg(&[
            b"D",
            &99u32.to_be_bytes(),
            &5u32.to_be_bytes(),
            b"K",
            &1i16.to_be_bytes(),
            &text_col("3"),
        ]);
        let PgOutputMessage::Delete {
            xid, relation_id, ..
        } = decode_message(&delete, true).unwrap()
        else {
            panic!("not a delete")
        };
        assert_eq!((xid, relation_id), (Some(99), 5));
    }

    #[test]
    fn update_with_full_old_tuple() {
        let update = msg(&[
            b"U",
            &5u32.to_be_bytes(),
            b"O",
            &1i16.to_be_bytes(),
            &text_col("a"),
            b"N",
            &1i16.to_be_bytes(),
            &text_col("b"),
        ]);
        let PgOutputMessage::Update { old, new, .. } = decode_message(&update, false).unwrap()
        else {
            panic!("not an update")
        };
        assert_eq!(old.unwrap().0, OldTupleKind::Full);
        assert_eq!(new, vec![Datum::Text(Bytes::from_static(b"b"))]);
    }

    #[test]
    fn message_truncate_and_stream_control() {
        let m = msg(&[
            b"M",
            &[1],
            &3u64.to_be_bytes(),
            b"walcast\0",
            &2u32.to_be_bytes(),
            b"{}",
        ]);
        let PgOutputMessage::Message {
            transactional,
            prefix,
            content,
            ..
        } = decode_message(&m, false).unwrap()
        else {
            panic!("not a message")
        };
        assert!(transactional);
        assert_eq!(prefix, "walcast");
        assert_eq!(&content[..], b"{}");

        let t = msg(&[
            b"T",
            &2u32.to_be_bytes(),
            &[1],
            &5u32.to_be_bytes(),
            &6u32.to_be_bytes(),
        ]);
        let PgOutputMessage::Truncate {
            cascade,
            relation_ids,
            ..
        } = decode_message(&t, false).unwrap()
        else {
            panic!("not a truncate")
        };
        assert!(cascade);
        assert_eq!(relation_ids, vec![5, 6]);

        let s = msg(&[b"S", &77u32.to_be_bytes(), &[1]]);
        assert_eq!(
            decode_message(&s, false).unwrap(),
            PgOutputMessage::StreamStart {
                xid: 77,
                first_segment: true
            }
        );
        let a = msg(&[b"A", &77u32.to_be_bytes(), &78u32.to_be_bytes()]);
        assert_eq!(
            decode_message(&a, false).unwrap(),
            PgOutputMessage::StreamAbort {
                xid: 77,
                subxid: 78
            }
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert_eq!(
            decode_message(&Bytes::new(), false),
            Err(DecodeError::Empty)
        );
        assert!(matches!(
            decode_message(&msg(&[b"Z"]), false),
            Err(DecodeError::UnknownTag(b'Z'))
        ));
        // A length that points past the end.
        let bad = msg(&[
            b"I",
            &1u32.to_be_bytes(),
            b"N",
            &1i16.to_be_bytes(),
            b"t",
            &1000i32.to_be_bytes(),
            b"x",
        ]);
        assert!(matches!(
            decode_message(&bad, false),
            Err(DecodeError::Truncated { .. })
        ));
        // A huge truncate count must not allocate.
        let huge = msg(&[b"T", &u32::MAX.to_be_bytes(), &[0]]);
        assert!(decode_message(&huge, false).is_err());
        // Every prefix of a valid message fails cleanly.
        let full = msg(&[
            b"U",
            &5u32.to_be_bytes(),
            b"O",
            &1i16.to_be_bytes(),
            &text_col("a"),
            b"N",
            &1i16.to_be_bytes(),
            &text_col("b"),
        ]);
        for end in 0..full.len() {
            assert!(decode_message(&full.slice(..end), false).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator (xorshift) over every tag, stream flag and length.
        let mut state = 0x9e3779b97f4a7c15u64;
        let tags = b"BCORYIUDTMSEcAxZ";
        for i in 0..20_000 {
            let mut buf = vec![tags[i % tags.len()]];
            let len = (i * 7) % 64;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                buf.push(state as u8);
            }
            let _ = decode_message(&Bytes::from(buf), i % 2 == 0);
        }
    }
}
