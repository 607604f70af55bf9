//! Folds one committed transaction's row changes into document events (spec §3).
//!
//! Main-table rows are grouped per document; each change becomes at most one event per
//! (document, locale, view, action). Auth-table and core-store rows set flags instead.
//! Pure: no I/O.

use std::collections::HashSet;
use std::sync::Arc;

use super::event::{Action, DocumentEvent, DocumentKey, EventOffset, TransactionEvents, View};
use super::row::RowImage;
use super::transaction::CommittedTransaction;
use crate::replication::{ChangeKind, Datum, PG_EPOCH_OFFSET_MICROS, TupleData};
use crate::strapi::{StrapiModel, TableRole};

/// The core-store key whose rewrite means Strapi (re)booted.
const SCHEMA_KEY: &str = "strapi_content_types_schema";

/// Turns a committed transaction into its document events.
pub fn fold_transaction(model: &StrapiModel, tx: &CommittedTransaction) -> TransactionEvents {
    let mut out = TransactionEvents {
        commit_lsn: tx.commit_lsn,
        end_lsn: tx.end_lsn,
        commit_time_micros: tx.commit_time + PG_EPOCH_OFFSET_MICROS,
        ..TransactionEvents::default()
    };
    let mut seen: HashSet<(DocumentKey, View, Action)> = HashSet::new();
    for change in &tx.changes {
        let Some(role) = model.catalog.role(&change.relation.name) else {
            continue;
        };
        let ct = match role {
            TableRole::Main(ct) => ct,
            TableRole::Auth(_) => {
                out.auth_changed = true;
                continue;
            }
            TableRole::CoreStore => {
                let image = change.new.as_ref().or(change.old.as_ref());
                if image.is_some_and(|t| {
                    RowImage::new(&change.relation, t).text("key") == Some(SCHEMA_KEY)
                }) {
                    out.schema_changed = true;
                }
                continue;
            }
        };
        let (image, action) = match change.kind {
            ChangeKind::Insert => (change.new.as_ref(), Action::Create),
            ChangeKind::Update => (change.new.as_ref(), Action::Update),
            ChangeKind::Delete => (change.old.as_ref(), Action::Delete),
        };
        let Some(tuple) = image else { continue };
        // Unchanged TOAST values are not in the new tuple; the FULL old image has them.
        let merged;
        let tuple = match (change.kind, &change.old) {
            (ChangeKind::Update, Some(old)) if tuple.contains(&Datum::UnchangedToast) => {
                merged = fill_unchanged_toast(tuple, old);
                &merged
            }
            _ => tuple,
        };
        let row = RowImage::new(&change.relation, tuple);
        let Some(document_id) = row.text("document_id") else {
            // A default-identity delete carries only the id; resolving it is the identity
            // index's job (spec §2). Never emit a delete without a documentId.
            continue;
        };
        let view = if ct.draft_and_publish && row.is_null("published_at") {
            View::Draft
        } else {
            View::Published
        };
        let key = DocumentKey {
            uid: Arc::from(ct.uid.as_str()),
            document_id: document_id.to_owned(),
            locale: row.text("locale").map(str::to_owned),
        };
        if !seen.insert((key.clone(), view, action)) {
            continue;
        }
        let sequence = out.events.len() as u32;
        out.events.push(DocumentEvent {
            key,
            singular_name: Arc::from(ct.singular_name.as_str()),
            view,
            action,
            entry: (action != Action::Delete).then(|| Arc::new(row.entry(ct))),
            deleted_id: (action == Action::Delete).then(|| row.int("id")).flatten(),
            offset: EventOffset {
                commit_lsn: tx.commit_lsn,
                sequence,
            },
        });
    }
    out
}

/// The new tuple with each unchanged-TOAST column taken from the old image (REPLICA
/// IDENTITY FULL sends it whole). Columns the old image lacks stay unchanged-TOAST and are
/// left out of the payload rather than emitted wrong.
pub fn fill_unchanged_toast(new: &TupleData, old: &TupleData) -> TupleData {
    new.iter()
        .enumerate()
        .map(|(i, datum)| match (datum, old.get(i)) {
            (
                Datum::UnchangedToast,
                Some(previous @ (Datum::Text(_) | Datum::Binary(_) | Datum::Null)),
            ) => previous.clone(),
            _ => datum.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn unchanged_toast_is_filled_from_the_old_image() {
        let body = Datum::Text(Bytes::from_static(b"13 KB of body"));
        let new = vec![
            Datum::Text(Bytes::from_static(b"16")),
            Datum::UnchangedToast,
            Datum::Text(Bytes::from_static(b"4")),
        ];
        let old = vec![
            Datum::Text(Bytes::from_static(b"16")),
            body.clone(),
            Datum::Text(Bytes::from_static(b"0")),
        ];
        let filled = fill_unchanged_toast(&new, &old);
        assert_eq!(filled[1], body);
        assert_eq!(filled[2], new[2]);
        // A key-only old image cannot fill it: it stays marked, never invented.
        let key_only = vec![
            Datum::Text(Bytes::from_static(b"16")),
            Datum::UnchangedToast,
            Datum::Null,
        ];
        assert_eq!(
            fill_unchanged_toast(&new, &key_only)[1],
            Datum::UnchangedToast
        );
    }
}
