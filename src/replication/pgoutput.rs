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
            // Each column takes at least 10 bytes (flags, name terminator, type, modifier):
            // refuse counts the payload cannot hold before allocating for them.
            if count as usize * 10 > r.remaining() {
                return Err(r.truncated());
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
        // A huge relation column count must not allocate either.
        let relation = msg(&[
            b"R",
            &1u32.to_be_bytes(),
            b"public\0t\0d",
            &i16::MAX.to_be_bytes(),
        ]);
        assert!(matches!(
            decode_message(&relation, false),
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

    /// Property tests: every message type round-trips through hand-built bytes, and no
    /// input, arbitrary or a damaged valid message, makes the decoder panic.
    mod properties {
        use super::super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Builds pgoutput bytes.
        #[derive(Default)]
        struct Wire(Vec<u8>);

        impl Wire {
            fn put(&mut self, bytes: &[u8]) -> &mut Self {
                self.0.extend_from_slice(bytes);
                self
            }
            fn u8(&mut self, b: u8) -> &mut Self {
                self.put(&[b])
            }
            fn u32(&mut self, n: u32) -> &mut Self {
                self.put(&n.to_be_bytes())
            }
            fn u64(&mut self, n: u64) -> &mut Self {
                self.put(&n.to_be_bytes())
            }
            fn cstr(&mut self, s: &str) -> &mut Self {
                self.put(s.as_bytes()).u8(0)
            }
            /// The xid prefix of a streamed data message.
            fn xid(&mut self, xid: Option<u32>) -> &mut Self {
                match xid {
                    Some(x) => self.u32(x),
                    None => self,
                }
            }
            fn old(&mut self, kind: OldTupleKind, t: &TupleData) -> &mut Self {
                self.u8(match kind {
                    OldTupleKind::Key => b'K',
                    OldTupleKind::Full => b'O',
                })
                .tuple(t)
            }
            fn tuple(&mut self, t: &TupleData) -> &mut Self {
                self.put(&(t.len() as i16).to_be_bytes());
                for datum in t {
                    match datum {
                        Datum::Null => self.u8(b'n'),
                        Datum::UnchangedToast => self.u8(b'u'),
                        Datum::Text(b) => self.u8(b't').u32(b.len() as u32).put(b),
                        Datum::Binary(b) => self.u8(b'b').u32(b.len() as u32).put(b),
                    };
                }
                self
            }
        }

        /// The wire form of `message`, as pgoutput sends it (streamed data messages carry
        /// their xid first: decode those with `in_stream`).
        fn encode(message: &PgOutputMessage) -> Vec<u8> {
            let mut w = Wire::default();
            match message {
                PgOutputMessage::Begin(b) => {
                    w.u8(b'B')
                        .u64(b.final_lsn.0)
                        .put(&b.commit_time.to_be_bytes())
                        .u32(b.xid);
                }
                PgOutputMessage::Commit(c) => {
                    w.put(b"C\0")
                        .u64(c.commit_lsn.0)
                        .u64(c.end_lsn.0)
                        .put(&c.commit_time.to_be_bytes());
                }
                PgOutputMessage::Origin { commit_lsn, name } => {
                    w.u8(b'O').u64(commit_lsn.0).cstr(name);
                }
                PgOutputMessage::Relation(r) => {
                    w.u8(b'R')
                        .xid(r.xid)
                        .u32(r.oid)
                        .cstr(&r.namespace)
                        .cstr(&r.name);
                    w.u8(r.replica_identity)
                        .put(&(r.columns.len() as i16).to_be_bytes());
                    for c in &r.columns {
                        w.u8(u8::from(c.is_key))
                            .cstr(&c.name)
                            .u32(c.type_oid)
                            .put(&c.type_modifier.to_be_bytes());
                    }
                }
                PgOutputMessage::Type {
                    xid,
                    oid,
                    namespace,
                    name,
                } => {
                    w.u8(b'Y').xid(*xid).u32(*oid).cstr(namespace).cstr(name);
                }
                PgOutputMessage::Insert {
                    xid,
                    relation_id,
                    new,
                } => {
                    w.u8(b'I').xid(*xid).u32(*relation_id).u8(b'N').tuple(new);
                }
                PgOutputMessage::Update {
                    xid,
                    relation_id,
                    old,
                    new,
                } => {
                    w.u8(b'U').xid(*xid).u32(*relation_id);
                    if let Some((kind, t)) = old {
                        w.old(*kind, t);
                    }
                    w.u8(b'N').tuple(new);
                }
                PgOutputMessage::Delete {
                    xid,
                    relation_id,
                    old_kind,
                    old,
                } => {
                    w.u8(b'D').xid(*xid).u32(*relation_id).old(*old_kind, old);
                }
                PgOutputMessage::Truncate {
                    xid,
                    cascade,
                    restart_identity,
                    relation_ids,
                } => {
                    w.u8(b'T')
                        .xid(*xid)
                        .u32(relation_ids.len() as u32)
                        .u8(u8::from(*cascade) | u8::from(*restart_identity) << 1);
                    for id in relation_ids {
                        w.u32(*id);
                    }
                }
                PgOutputMessage::Message {
                    xid,
                    transactional,
                    lsn,
                    prefix,
                    content,
                } => {
                    w.u8(b'M')
                        .xid(*xid)
                        .u8(u8::from(*transactional))
                        .u64(lsn.0)
                        .cstr(prefix)
                        .u32(content.len() as u32)
                        .put(content);
                }
                PgOutputMessage::StreamStart { xid, first_segment } => {
                    w.u8(b'S').u32(*xid).u8(u8::from(*first_segment));
                }
                PgOutputMessage::StreamStop => {
                    w.u8(b'E');
                }
                PgOutputMessage::StreamCommit {
                    xid,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                } => {
                    w.u8(b'c')
                        .u32(*xid)
                        .u8(0)
                        .u64(commit_lsn.0)
                        .u64(end_lsn.0)
                        .put(&commit_time.to_be_bytes());
                }
                PgOutputMessage::StreamAbort { xid, subxid } => {
                    w.u8(b'A').u32(*xid).u32(*subxid);
                }
            }
            w.0
        }

        fn name() -> impl Strategy<Value = String> {
            "[^\\x00]{0,12}"
        }

        fn bytes() -> impl Strategy<Value = Bytes> {
            vec(any::<u8>(), 0..24).prop_map(Bytes::from)
        }

        fn datum() -> impl Strategy<Value = Datum> {
            prop_oneof![
                Just(Datum::Null),
                Just(Datum::UnchangedToast),
                bytes().prop_map(Datum::Text),
                bytes().prop_map(Datum::Binary),
            ]
        }

        fn tuple() -> impl Strategy<Value = TupleData> {
            vec(datum(), 0..6)
        }

        fn old_kind() -> impl Strategy<Value = OldTupleKind> {
            prop_oneof![Just(OldTupleKind::Key), Just(OldTupleKind::Full)]
        }

        fn lsn() -> impl Strategy<Value = Lsn> {
            any::<u64>().prop_map(Lsn)
        }

        /// Any message, with the xid prefix of streamed data messages set iff `in_stream`.
        fn message(in_stream: bool) -> BoxedStrategy<PgOutputMessage> {
            let xid = move || {
                if in_stream {
                    any::<u32>().prop_map(Some).boxed()
                } else {
                    Just(None).boxed()
                }
            };
            let column = (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(
                |(is_key, name, type_oid, type_modifier)| ColumnDef {
                    is_key,
                    name,
                    type_oid,
                    type_modifier,
                },
            );
            prop_oneof![
                (lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
                    PgOutputMessage::Begin(Begin {
                        final_lsn,
                        commit_time,
                        xid,
                    })
                }),
                (lsn(), lsn(), any::<i64>()).prop_map(|(commit_lsn, end_lsn, commit_time)| {
                    PgOutputMessage::Commit(Commit {
                        commit_lsn,
                        end_lsn,
                        commit_time,
                    })
                }),
                (lsn(), name())
                    .prop_map(|(commit_lsn, name)| PgOutputMessage::Origin { commit_lsn, name }),
                (
                    xid(),
                    any::<u32>(),
                    name(),
                    name(),
                    any::<u8>(),
                    vec(column, 0..5)
                )
                    .prop_map(
                        |(xid, oid, namespace, name, replica_identity, columns)| {
                            PgOutputMessage::Relation(RelationBody {
                                xid,
                                oid,
                                namespace,
                                name,
                                replica_identity,
                                columns,
                            })
                        }
                    ),
                (xid(), any::<u32>(), name(), name()).prop_map(|(xid, oid, namespace, name)| {
                    PgOutputMessage::Type {
                        xid,
                        oid,
                        namespace,
                        name,
                    }
                }),
                (xid(), any::<u32>(), tuple()).prop_map(|(xid, relation_id, new)| {
                    PgOutputMessage::Insert {
                        xid,
                        relation_id,
                        new,
                    }
                }),
                (
                    xid(),
                    any::<u32>(),
                    proptest::option::of((old_kind(), tuple())),
                    tuple()
                )
                    .prop_map(|(xid, relation_id, old, new)| {
                        PgOutputMessage::Update {
                            xid,
                            relation_id,
                            old,
                            new,
                        }
                    }),
                (xid(), any::<u32>(), old_kind(), tuple()).prop_map(
                    |(xid, relation_id, old_kind, old)| PgOutputMessage::Delete {
                        xid,
                        relation_id,
                        old_kind,
                        old,
                    }
                ),
                (xid(), any::<bool>(), any::<bool>(), vec(any::<u32>(), 0..6)).prop_map(
                    |(xid, cascade, restart_identity, relation_ids)| PgOutputMessage::Truncate {
                        xid,
                        cascade,
                        restart_identity,
                        relation_ids,
                    }
                ),
                (xid(), any::<bool>(), lsn(), name(), bytes()).prop_map(
                    |(xid, transactional, lsn, prefix, content)| PgOutputMessage::Message {
                        xid,
                        transactional,
                        lsn,
                        prefix,
                        content,
                    }
                ),
                (any::<u32>(), any::<bool>()).prop_map(|(xid, first_segment)| {
                    PgOutputMessage::StreamStart { xid, first_segment }
                }),
                Just(PgOutputMessage::StreamStop),
                (any::<u32>(), lsn(), lsn(), any::<i64>()).prop_map(
                    |(xid, commit_lsn, end_lsn, commit_time)| PgOutputMessage::StreamCommit {
                        xid,
                        commit_lsn,
                        end_lsn,
                        commit_time,
                    }
                ),
                (any::<u32>(), any::<u32>())
                    .prop_map(|(xid, subxid)| PgOutputMessage::StreamAbort { xid, subxid }),
            ]
            .boxed()
        }

        fn framed() -> impl Strategy<Value = (bool, PgOutputMessage)> {
            any::<bool>().prop_flat_map(|in_stream| (Just(in_stream), message(in_stream)))
        }

        /// Ways to damage a valid message.
        #[derive(Debug, Clone)]
        enum Damage {
            Truncate(usize),
            Replace(usize, u8),
            Insert(usize, Vec<u8>),
            Append(Vec<u8>),
            Remove(usize),
        }

        fn damage() -> impl Strategy<Value = Damage> {
            prop_oneof![
                any::<usize>().prop_map(Damage::Truncate),
                (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Replace(i, b)),
                (any::<usize>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Damage::Insert(i, b)),
                vec(any::<u8>(), 1..8).prop_map(Damage::Append),
                any::<usize>().prop_map(Damage::Remove),
            ]
        }

        fn apply(mut bytes: Vec<u8>, damage: &Damage) -> Vec<u8> {
            let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
            match damage {
                Damage::Truncate(i) => bytes.truncate(at(*i, bytes.len())),
                Damage::Replace(i, b) => {
                    let i = at(*i, bytes.len());
                    if let Some(x) = bytes.get_mut(i) {
                        *x = *b;
                    }
                }
                Damage::Insert(i, b) => {
                    let i = at(*i, bytes.len() + 1);
                    bytes.splice(i..i, b.iter().copied());
                }
                Damage::Append(b) => bytes.extend_from_slice(b),
                Damage::Remove(i) => {
                    if !bytes.is_empty() {
                        let i = at(*i, bytes.len());
                        bytes.remove(i);
                    }
                }
            }
            bytes
        }

        proptest! {
            #[test]
            fn every_message_round_trips((in_stream, message) in framed()) {
                let bytes = Bytes::from(encode(&message));
                prop_assert_eq!(decode_message(&bytes, in_stream), Ok(message));
            }

            #[test]
            fn damaged_messages_are_errors_or_messages_never_panics(
                (in_stream, message) in framed(),
                damages in vec(damage(), 1..4),
                flip_stream in any::<bool>(),
            ) {
                let mut bytes = encode(&message);
                for d in &damages {
                    bytes = apply(bytes, d);
                }
                let _ = decode_message(&Bytes::from(bytes), in_stream ^ flip_stream);
            }

            #[test]
            fn arbitrary_bytes_are_errors_or_messages(
                bytes in vec(any::<u8>(), 0..128),
                in_stream in any::<bool>(),
            ) {
                let _ = decode_message(&Bytes::from(bytes), in_stream);
            }

            #[test]
            fn any_proper_prefix_of_a_message_is_an_error(
                (in_stream, message) in framed(),
                cut in any::<usize>(),
            ) {
                let bytes = Bytes::from(encode(&message));
                let end = cut % bytes.len();
                // StreamStop is one byte: its only proper prefix is empty.
                prop_assert!(decode_message(&bytes.slice(..end), in_stream).is_err());
            }
        }
    }
}
