//! The vocabulary of document events: keys, views, actions, offsets.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::replication::Lsn;

/// What happened to a document, as clients hear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Create,
    Update,
    Delete,
    Publish,
    Unpublish,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Publish => "publish",
            Action::Unpublish => "unpublish",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "create" => Action::Create,
            "update" => Action::Update,
            "delete" => Action::Delete,
            "publish" => Action::Publish,
            "unpublish" => Action::Unpublish,
            _ => return None,
        })
    }
}

/// Which version of a document an event describes, like Strapi REST's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum View {
    Published,
    Draft,
}

impl View {
    pub fn as_str(self) -> &'static str {
        match self {
            View::Published => "published",
            View::Draft => "draft",
        }
    }
}

/// One document in one locale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentKey {
    pub uid: Arc<str>,
    pub document_id: String,
    pub locale: Option<String>,
}

/// Where an event sits in the stream: the commit LSN of its transaction and its sequence
/// inside it. Totally ordered; rendered as an opaque string for clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventOffset {
    pub commit_lsn: Lsn,
    pub sequence: u32,
}

impl fmt::Display for EventOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}-{:010}", self.commit_lsn.0, self.sequence)
    }
}

impl std::str::FromStr for EventOffset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a walcast offset: {s:?}");
        let (lsn, seq) = s.split_once('-').ok_or_else(bad)?;
        if lsn.len() != 16 {
            return Err(bad());
        }
        Ok(EventOffset {
            commit_lsn: Lsn(u64::from_str_radix(lsn, 16).map_err(|_| bad())?),
            sequence: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// A row's public columns, keyed as Strapi's REST API names them.
pub type Entry = Map<String, Value>;

/// One event about one document, locale and view.
#[derive(Debug, Clone)]
pub struct DocumentEvent {
    pub key: DocumentKey,
    /// `<singularName>`, for the event name.
    pub singular_name: Arc<str>,
    pub view: View,
    pub action: Action,
    /// The entry as it now is in this view: from the transaction's row image when it has
    /// one; `None` for deletes and until fetched when the row was not rewritten (a
    /// relation-only change) or its image lacks an unchanged TOAST value.
    pub entry: Option<Arc<Entry>>,
    /// The row that is this view of the document now (`None` for deletes).
    pub row_id: Option<i64>,
    /// The row id the view had before a delete.
    pub deleted_id: Option<i64>,
    pub offset: EventOffset,
}

impl DocumentEvent {
    /// `<singularName>:<action>`.
    pub fn event_name(&self) -> String {
        format!("{}:{}", self.singular_name, self.action.as_str())
    }
}

/// The events of one committed transaction, in order.
#[derive(Debug, Clone, Default)]
pub struct TransactionEvents {
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    /// Microseconds since the Unix epoch.
    pub commit_time_micros: i64,
    pub events: Vec<DocumentEvent>,
    /// Whether the transaction touched tables that feed the permission model.
    pub auth_changed: bool,
    /// Whether Strapi rewrote its schema row.
    pub schema_changed: bool,
    /// Main-table row changes that could not be tied to a document (a default-identity
    /// DELETE of a row the index never held).
    pub unattributed: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_order_like_the_wal() {
        let a = EventOffset {
            commit_lsn: Lsn(0x16_B374_D848),
            sequence: 2,
        };
        let b = EventOffset {
            commit_lsn: Lsn(0x16_B374_D848),
            sequence: 10,
        };
        let c = EventOffset {
            commit_lsn: Lsn(0x17_0000_0000),
            sequence: 0,
        };
        assert_eq!(a.to_string().parse::<EventOffset>().unwrap(), a);
        assert!(a < b && b < c);
        assert!(a.to_string() < b.to_string() && b.to_string() < c.to_string());
        // Past 100,000 events in one transaction the text still sorts like the offsets.
        let big = EventOffset {
            commit_lsn: Lsn(0x16_B374_D848),
            sequence: 200_000,
        };
        assert!(b.to_string() < big.to_string() && big.to_string() < c.to_string());
        assert!("junk".parse::<EventOffset>().is_err());
    }
}
