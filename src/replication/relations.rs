//! Relation cache: pgoutput relation ids → table shapes, per walsender connection.
//!
//! Postgres sends a Relation message once per table per session (and again after DDL), so
//! the cache lives exactly as long as one connection and is rebuilt on reconnect.

use std::collections::HashMap;
use std::sync::Arc;

use super::pgoutput::{ColumnDef, RelationBody};

/// The replica identity a table had when its Relation message was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// Primary key only: deletes carry only the key, updates no old row.
    Default,
    Nothing,
    /// The whole old row on update and delete.
    Full,
    Index,
}

/// A table as the replication stream describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<ColumnDef>,
}

impl Relation {
    /// Position of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

impl From<RelationBody> for Relation {
    fn from(body: RelationBody) -> Self {
        Relation {
            oid: body.oid,
            schema: body.namespace,
            name: body.name,
            replica_identity: match body.replica_identity {
                b'f' => ReplicaIdentity::Full,
                b'n' => ReplicaIdentity::Nothing,
                b'i' => ReplicaIdentity::Index,
                _ => ReplicaIdentity::Default,
            },
            columns: body.columns,
        }
    }
}

/// Relations seen on the current connection.
#[derive(Debug, Default)]
pub struct RelationCache {
    by_oid: HashMap<u32, Arc<Relation>>,
}

impl RelationCache {
    /// Stores (or replaces, after DDL) a relation.
    pub fn insert(&mut self, relation: Relation) -> Arc<Relation> {
        let relation = Arc::new(relation);
        self.by_oid.insert(relation.oid, Arc::clone(&relation));
        relation
    }

    pub fn get(&self, oid: u32) -> Option<&Arc<Relation>> {
        self.by_oid.get(&oid)
    }
}
