//! Replication: walsender bytes → [`ReplicationEvent`]s; owns the slot position.
//!
//! Speaks the streaming replication protocol itself over `postgres-protocol` framing
//! (tokio-postgres cannot open a `replication=database` connection), decodes pgoutput,
//! resolves relation ids to [`Relation`]s and hands ordered events to the assembler. It
//! confirms to Postgres only what the pipeline reports as handed off. Knows nothing of Strapi.

mod connection;
pub mod pgoutput;
mod relations;
pub mod slot;
mod stream;
pub mod value;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;

pub use connection::{ConnectError, ConnectParams, server_advice};
pub use pgoutput::{Datum, TupleData};
pub use relations::{Relation, ReplicaIdentity};
pub use stream::{ReplicationError, ReplicationStream};

/// A position in the write-ahead log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("not an LSN: {s:?}"))?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| format!("not an LSN: {s:?}"))?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| format!("not an LSN: {s:?}"))?;
        if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
            return Err(format!("not an LSN: {s:?}"));
        }
        Ok(Lsn(hi << 32 | lo))
    }
}

/// What a row change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

/// One row change, with its relation resolved.
#[derive(Debug, Clone)]
pub struct RowChange {
    pub relation: Arc<Relation>,
    pub kind: ChangeKind,
    /// Delete: the key (default identity) or whole row (FULL). Update: the old row with FULL
    /// identity, or the old key when the key changed; `None` otherwise.
    pub old: Option<TupleData>,
    /// Insert and update: the new row.
    pub new: Option<TupleData>,
}

/// The ordered output of the replication stream.
#[derive(Debug, Clone)]
pub enum ReplicationEvent {
    /// The connection was (re)established: drop any partly received transaction, the server
    /// sends it again from the start.
    Restarted,
    Begin {
        xid: u32,
        final_lsn: Lsn,
    },
    Change {
        /// Set for changes of a streamed (protocol 2) transaction.
        xid: Option<u32>,
        change: RowChange,
    },
    Truncate {
        xid: Option<u32>,
        relations: Vec<Arc<Relation>>,
    },
    Message {
        xid: Option<u32>,
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        /// Microseconds since 2000-01-01 UTC.
        commit_time: i64,
    },
    StreamStart {
        xid: u32,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}

/// What a trial walsender connection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionProbe {
    /// Whether the connection was encrypted.
    pub tls: bool,
}

/// Opens and closes a walsender connection (TLS and authentication included): for
/// `walcast check` and tests.
pub async fn probe_connection(params: &ConnectParams) -> Result<ConnectionProbe, ConnectError> {
    let conn = connection::WalSenderConnection::connect(params).await?;
    Ok(ConnectionProbe { tls: conn.is_tls() })
}

/// Opens and closes a walsender connection (authentication included): for tests.
pub async fn connect_for_test(params: &ConnectParams) -> Result<(), ConnectError> {
    probe_connection(params).await.map(|_| ())
}

/// The cluster's system identifier and the database name, from `IDENTIFY_SYSTEM` on a
/// walsender connection: what names the WAL a slot's positions belong to.
pub async fn identify_system(params: &ConnectParams) -> Result<(String, String), ConnectError> {
    let mut conn = connection::WalSenderConnection::connect(params).await?;
    let rows = conn.simple_query("IDENTIFY_SYSTEM").await?;
    let row = rows.first().cloned().unwrap_or_default();
    let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    Ok((field(0), field(3)))
}

/// Microseconds between 1970-01-01 and 2000-01-01, the Postgres epoch.
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_text() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("nope".parse::<Lsn>().is_err());
        assert!("1/FFFFFFFFF".parse::<Lsn>().is_err());
    }
}
