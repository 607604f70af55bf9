//! Spill files: the row changes of one transaction that do not fit in memory.
//!
//! A [`SpillWriter`] appends changes to an anonymous temp file (unlinked at creation, so it
//! disappears when dropped, on a reconnect, an abort or a crash alike) in a compact binary
//! encoding; [`SpillReader`] reads them back in commit order, in batches, skipping the
//! changes of aborted subtransactions. Relations are not written out: each record holds an
//! index into the transaction's small `Vec<Arc<Relation>>`, which stays in memory.
//!
//! Record layout (integers big-endian):
//!
//! ```text
//! record := xid_tag:u8 [xid:u32 if xid_tag = 1] relation:u32 kind:u8 tuple? tuple?   (old, new)
//! tuple? := 0:u8 | 1:u8 count:u16 datum*
//! datum  := 'n' | 'u' | 't' len:u32 bytes | 'b' len:u32 bytes
//! ```
//!
//! The I/O is synchronous: writes go to the page cache in 64 KiB chunks, and the caller (the
//! pipeline) has nothing else to do meanwhile.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::replication::{ChangeKind, Datum, Relation, RowChange, TupleData};

const IO_BUFFER: usize = 64 * 1024;

/// A spill file could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("cannot create a spill file in {dir}")]
    Create {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the spill file")]
    Write(#[source] io::Error),
    #[error("cannot read the spill file back")]
    Read(#[source] io::Error),
    #[error("the spill file is corrupt: {0}")]
    Corrupt(&'static str),
}

/// The spilled part of one transaction, being written.
#[derive(Debug)]
pub struct SpillWriter {
    file: BufWriter<File>,
    relations: Vec<Arc<Relation>>,
    /// Records written, aborted ones included.
    records: usize,
    scratch: Vec<u8>,
}

impl SpillWriter {
    /// Creates an anonymous spill file in `dir` (the OS temp dir when `None`).
    pub fn create(dir: Option<&Path>) -> Result<Self, SpillError> {
        let dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let file = tempfile::tempfile_in(&dir).map_err(|source| SpillError::Create {
            dir: dir.clone(),
            source,
        })?;
        Ok(SpillWriter {
            file: BufWriter::with_capacity(IO_BUFFER, file),
            relations: Vec::new(),
            records: 0,
            scratch: Vec::with_capacity(256),
        })
    }

    /// Appends one change made by (sub)transaction `xid`; returns the bytes it took.
    pub fn append(&mut self, xid: Option<u32>, change: &RowChange) -> Result<u64, SpillError> {
        let relation = self.relation_index(&change.relation);
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        encode(&mut buf, xid, relation, change)?;
        let written = self.file.write_all(&buf).map_err(SpillError::Write);
        let len = buf.len() as u64;
        self.scratch = buf;
        written?;
        self.records += 1;
        Ok(len)
    }

    /// The index of `relation` in this transaction's list, added when new. Compared by
    /// pointer: after DDL a table gets a new `Relation`, and both shapes must be kept.
    fn relation_index(&mut self, relation: &Arc<Relation>) -> u32 {
        // Most transactions touch a handful of tables, and consecutive changes the same one.
        if let Some(i) = self
            .relations
            .iter()
            .rposition(|r| Arc::ptr_eq(r, relation))
        {
            return i as u32;
        }
        self.relations.push(Arc::clone(relation));
        (self.relations.len() - 1) as u32
    }

    /// Finishes writing; the reader starts at the first record. Changes of the
    /// subtransactions in `aborted` are skipped.
    pub fn into_reader(self, aborted: HashSet<u32>) -> Result<SpillReader, SpillError> {
        let mut file = self
            .file
            .into_inner()
            .map_err(|e| SpillError::Write(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(SpillError::Read)?;
        Ok(SpillReader {
            file: BufReader::with_capacity(IO_BUFFER, file),
            relations: self.relations,
            remaining: self.records,
            aborted,
        })
    }
}

/// The spilled changes of a committed transaction, read back in commit order.
#[derive(Debug)]
pub struct SpillReader {
    file: BufReader<File>,
    relations: Vec<Arc<Relation>>,
    /// Records not read yet, aborted ones included.
    remaining: usize,
    aborted: HashSet<u32>,
}

impl SpillReader {
    /// Records not read yet (an upper bound on the changes still to come).
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Up to `max` further live changes; empty at the end.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<RowChange>, SpillError> {
        let mut batch = Vec::with_capacity(max.min(self.remaining));
        while batch.len() < max && self.remaining > 0 {
            self.remaining -= 1;
            let (xid, change) = decode(&mut self.file, &self.relations)?;
            if xid.is_some_and(|x| self.aborted.contains(&x)) {
                continue;
            }
            batch.push(change);
        }
        Ok(batch)
    }
}

fn encode(
    buf: &mut Vec<u8>,
    xid: Option<u32>,
    relation: u32,
    change: &RowChange,
) -> Result<(), SpillError> {
    match xid {
        Some(x) => {
            buf.push(1);
            buf.extend_from_slice(&x.to_be_bytes());
        }
        None => buf.push(0),
    }
    buf.extend_from_slice(&relation.to_be_bytes());
    buf.push(match change.kind {
        ChangeKind::Insert => b'I',
        ChangeKind::Update => b'U',
        ChangeKind::Delete => b'D',
    });
    for tuple in [&change.old, &change.new] {
        let Some(tuple) = tuple else {
            buf.push(0);
            continue;
        };
        buf.push(1);
        let count =
            u16::try_from(tuple.len()).map_err(|_| SpillError::Corrupt("too many columns"))?;
        buf.extend_from_slice(&count.to_be_bytes());
        for datum in tuple {
            let (tag, bytes) = match datum {
                Datum::Null => (b'n', None),
                Datum::UnchangedToast => (b'u', None),
                Datum::Text(b) => (b't', Some(b)),
                Datum::Binary(b) => (b'b', Some(b)),
            };
            buf.push(tag);
            if let Some(bytes) = bytes {
                let len = u32::try_from(bytes.len())
                    .map_err(|_| SpillError::Corrupt("value too long"))?;
                buf.extend_from_slice(&len.to_be_bytes());
                buf.extend_from_slice(bytes);
            }
        }
    }
    Ok(())
}

fn decode(
    r: &mut impl Read,
    relations: &[Arc<Relation>],
) -> Result<(Option<u32>, RowChange), SpillError> {
    let xid = match u8_(r)? {
        0 => None,
        1 => Some(u32_(r)?),
        _ => return Err(SpillError::Corrupt("bad xid tag")),
    };
    let relation = relations
        .get(u32_(r)? as usize)
        .cloned()
        .ok_or(SpillError::Corrupt("relation index out of range"))?;
    let kind = match u8_(r)? {
        b'I' => ChangeKind::Insert,
        b'U' => ChangeKind::Update,
        b'D' => ChangeKind::Delete,
        _ => return Err(SpillError::Corrupt("bad change kind")),
    };
    let old = tuple(r)?;
    let new = tuple(r)?;
    Ok((
        xid,
        RowChange {
            relation,
            kind,
            old,
            new,
        },
    ))
}

fn tuple(r: &mut impl Read) -> Result<Option<TupleData>, SpillError> {
    match u8_(r)? {
        0 => return Ok(None),
        1 => {}
        _ => return Err(SpillError::Corrupt("bad tuple tag")),
    }
    let mut count = [0u8; 2];
    r.read_exact(&mut count).map_err(SpillError::Read)?;
    let count = u16::from_be_bytes(count);
    let mut tuple = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let datum = match u8_(r)? {
            b'n' => Datum::Null,
            b'u' => Datum::UnchangedToast,
            tag @ (b't' | b'b') => {
                let mut bytes = vec![0u8; u32_(r)? as usize];
                r.read_exact(&mut bytes).map_err(SpillError::Read)?;
                let bytes = Bytes::from(bytes);
                if tag == b't' {
                    Datum::Text(bytes)
                } else {
                    Datum::Binary(bytes)
                }
            }
            _ => return Err(SpillError::Corrupt("bad datum tag")),
        };
        tuple.push(datum);
    }
    Ok(Some(tuple))
}

fn u8_(r: &mut impl Read) -> Result<u8, SpillError> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).map_err(SpillError::Read)?;
    Ok(b[0])
}

fn u32_(r: &mut impl Read) -> Result<u32, SpillError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(SpillError::Read)?;
    Ok(u32::from_be_bytes(b))
}
