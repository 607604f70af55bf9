//! Folds one committed transaction's row changes into document events (spec §3).
//!
//! Every row change — main rows, relation links, component links, components, media links —
//! is attributed to the documents (content type, documentId, locale) that own it, on both
//! sides of a relation. Each touched document's views are described before the transaction
//! (from the [`DocumentIndex`]), the changes are applied to the index, and the views are
//! described again; the views table of spec §3 turns the two descriptions and the row
//! changes into at most one event per (document, locale, view, action). Auth-table and
//! core-store rows set flags instead. Pure: no I/O.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::event::{Action, DocumentEvent, DocumentKey, EventOffset, TransactionEvents, View};
use super::index::{DocumentIndex, MainRow, MainRows};
use super::row::RowImage;
use super::transaction::CommittedTransaction;
use crate::replication::{
    ChangeKind, Datum, PG_EPOCH_OFFSET_MICROS, Relation, RowChange, TupleData,
};
use crate::strapi::{AttributeKind, ContentType, Populate, RelationSide, StrapiModel, TableRole};

/// The core-store key whose rewrite means Strapi (re)booted.
const SCHEMA_KEY: &str = "strapi_content_types_schema";

/// The `populate` setting of each content type (absent: nothing populated).
pub type PopulateSettings = HashMap<String, Populate>;

/// One document in one locale, as the fold tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Doc {
    uid: Arc<str>,
    document_id: Arc<str>,
    locale: Option<Arc<str>>,
}

/// What a view of a document looked like at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ViewState {
    row: i64,
    /// Digest of the row's content columns and populated attributes; `None` = unknown.
    digest: Option<u64>,
}

/// Both views of a document: `[published, draft]`.
type Views = [Option<ViewState>; 2];

/// Main rows as this transaction's images show them: (table, row id) → document.
type LocalRows<'a> = HashMap<(&'a str, i64), (Arc<str>, Option<Arc<str>>)>;

/// The documents a transaction touched, in first-seen order.
#[derive(Default)]
struct Touched {
    order: Vec<Doc>,
    seen: HashSet<Doc>,
    /// Documents (locales) whose published row was inserted in this transaction.
    published_inserted: HashSet<Doc>,
}

impl Touched {
    fn add(&mut self, doc: Doc) {
        if self.seen.insert(doc.clone()) {
            self.order.push(doc);
        }
    }
}

/// Turns a committed transaction into its document events and keeps `index` in step.
pub fn fold_transaction(
    model: &StrapiModel,
    populate: &PopulateSettings,
    index: &mut DocumentIndex,
    tx: &CommittedTransaction,
) -> TransactionEvents {
    let mut out = TransactionEvents {
        commit_lsn: tx.commit_lsn,
        end_lsn: tx.end_lsn,
        commit_time_micros: tx.commit_time + PG_EPOCH_OFFSET_MICROS,
        ..TransactionEvents::default()
    };
    // Main rows as this transaction's images show them, and the last new image of each row
    // (for payloads).
    let mut local: LocalRows<'_> = HashMap::new();
    let mut images: HashMap<(&str, i64), (&Relation, TupleData)> = HashMap::new();
    for change in &tx.changes {
        let table = change.relation.name.as_str();
        match model.catalog.role(table) {
            Some(TableRole::Auth(_)) => out.auth_changed = true,
            Some(TableRole::CoreStore) => {
                let image = change.new.as_ref().or(change.old.as_ref());
                match image.and_then(|t| RowImage::new(&change.relation, t).text("key")) {
                    Some(SCHEMA_KEY) => out.schema_changed = true,
                    // users-permissions advanced settings (email confirmation).
                    Some(crate::route::permissions::ADVANCED_SETTINGS_KEY) => {
                        out.auth_changed = true
                    }
                    _ => {}
                }
            }
            Some(TableRole::Main(_)) => {
                for tuple in [change.old.as_ref(), change.new.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    let row = RowImage::new(&change.relation, tuple);
                    if let (Some(id), Some(doc)) = (row.int("id"), row.text("document_id")) {
                        local.insert(
                            (table, id),
                            (Arc::from(doc), row.text("locale").map(Arc::from)),
                        );
                    }
                }
                if let Some(new) = &change.new {
                    let id = RowImage::new(&change.relation, new).int("id");
                    let tuple = match (&change.old, new.contains(&Datum::UnchangedToast)) {
                        (Some(old), true) => fill_unchanged_toast(new, old),
                        _ => new.clone(),
                    };
                    if let Some(id) = id {
                        images.insert((table, id), (&change.relation, tuple));
                    }
                }
            }
            _ => {}
        }
    }

    let mut touched = Touched::default();
    for change in &tx.changes {
        if !attribute_change(model, index, &local, change, &mut touched) {
            out.unattributed += 1;
        }
    }
    // A locale added or removed changes the other locales' `localizations`. The locales
    // this transaction's images show, by document (in `local`'s order): one pass, not one
    // per touched document (10,000 × 10,000 comparisons in a window of a large transaction).
    let mut tx_locales: HashMap<&str, Vec<Arc<str>>> = HashMap::new();
    for (d, l) in local.values() {
        if let Some(l) = l {
            tx_locales.entry(&**d).or_default().push(Arc::clone(l));
        }
    }
    for doc in touched.order.clone() {
        if let Some(ct) = model.content_types.by_uid.get(&*doc.uid)
            && ct.localized
        {
            let from_tx = tx_locales
                .get(&*doc.document_id)
                .into_iter()
                .flatten()
                .cloned();
            for locale in locales_of(index, &ct.table, &doc.document_id)
                .into_iter()
                .chain(from_tx)
            {
                touched.add(Doc {
                    locale: Some(locale),
                    ..doc.clone()
                });
            }
        }
    }

    // A transaction the snapshot already contains (resent by the slot after a restart): its
    // rows are taken back out of the index as far as the images allow (inserts removed, FULL
    // old images restored) and every view that existed counts as changed (at-least-once).
    let known_before = tx.end_lsn > index.snapshot_lsn;
    if !known_before {
        for change in tx.changes.iter().rev() {
            index.unapply(&model.catalog, change);
        }
    }
    let nothing = Populate::Nothing;
    let describe = |index: &DocumentIndex, doc: &Doc, known: bool| -> Option<Views> {
        let ct = model.content_types.by_uid.get(&*doc.uid)?;
        let populate = populate.get(&*doc.uid).unwrap_or(&nothing);
        let mut states = [None, None];
        for (slot, view) in [(0, View::Published), (1, View::Draft)] {
            if view == View::Draft && !ct.draft_and_publish {
                continue;
            }
            states[slot] = view_row(index, ct, doc, view).map(|row| ViewState {
                row,
                digest: known.then(|| digest(model, index, ct, populate, doc, row, view)),
            });
        }
        Some(states)
    };
    let before: Vec<Option<Views>> = touched
        .order
        .iter()
        .map(|doc| describe(index, doc, known_before))
        .collect();
    for change in &tx.changes {
        index.apply(&model.catalog, change);
    }

    for (doc, before) in touched.order.iter().zip(before) {
        let (Some(before), Some(ct)) = (before, model.content_types.by_uid.get(&*doc.uid)) else {
            continue;
        };
        let Some(after) = describe(index, doc, true) else {
            continue;
        };
        let published_inserted = touched.published_inserted.contains(doc);
        let views: &[View] = if ct.draft_and_publish {
            &[View::Published, View::Draft]
        } else {
            &[View::Published]
        };
        for &view in views {
            let slot = usize::from(view == View::Draft);
            let (b, a) = (before[slot], after[slot]);
            let other = (before[1 - slot], after[1 - slot]);
            let actions = decide(
                ct.draft_and_publish,
                view,
                (b, a),
                other,
                published_inserted,
            );
            // One entry for every action of the view (create + publish share it, as the
            // populator shares its populated entries).
            let mut view_entry = None;
            for action in actions {
                let entry_row = if action == Action::Delete {
                    None
                } else {
                    a.map(|s| s.row)
                };
                let entry = entry_row.and_then(|row| {
                    view_entry
                        .get_or_insert_with(|| {
                            let (relation, tuple) = images.get(&(ct.table.as_str(), row))?;
                            if tuple.contains(&Datum::UnchangedToast) {
                                return None;
                            }
                            Some(Arc::new(RowImage::new(relation, tuple).entry(ct)))
                        })
                        .clone()
                });
                let sequence = out.events.len() as u32;
                out.events.push(DocumentEvent {
                    key: DocumentKey {
                        uid: Arc::clone(&doc.uid),
                        document_id: doc.document_id.to_string(),
                        locale: doc.locale.as_deref().map(str::to_owned),
                    },
                    singular_name: Arc::from(ct.singular_name.as_str()),
                    view,
                    action,
                    entry,
                    row_id: entry_row,
                    deleted_id: (action == Action::Delete)
                        .then(|| b.map(|s| s.row))
                        .flatten(),
                    offset: EventOffset {
                        commit_lsn: tx.commit_lsn,
                        sequence,
                    },
                });
            }
        }
    }
    out
}

/// The views table of spec §3 for one view: `b`/`a` the view before/after the transaction,
/// `other` the other view before/after it, `published_inserted` whether a published row of
/// this locale was inserted.
fn decide(
    draft_and_publish: bool,
    view: View,
    (b, a): (Option<ViewState>, Option<ViewState>),
    other: (Option<ViewState>, Option<ViewState>),
    published_inserted: bool,
) -> Vec<Action> {
    let changed = |b: ViewState, a: ViewState| b.digest.is_none() || b.digest != a.digest;
    match (b, a) {
        (None, None) => vec![],
        (None, Some(_)) => {
            if draft_and_publish && (view == View::Published || published_inserted) {
                vec![Action::Create, Action::Publish]
            } else {
                vec![Action::Create]
            }
        }
        // Published row gone while the draft stays: unpublish. All rows gone: delete.
        (Some(_), None) => match (draft_and_publish, view, other.1) {
            (true, View::Published, Some(_)) => vec![Action::Delete, Action::Unpublish],
            _ => vec![Action::Delete],
        },
        (Some(b), Some(a)) => {
            let update = changed(b, a) || b.row != a.row;
            let mut actions = Vec::new();
            match (draft_and_publish, view) {
                (false, _) => {
                    if update {
                        actions.push(Action::Update);
                    }
                }
                // Re-publish (published row replaced) is always update + publish.
                (true, View::Published) => {
                    if update {
                        actions.push(Action::Update);
                    }
                    if b.row != a.row {
                        actions.push(Action::Publish);
                    }
                }
                (true, View::Draft) => {
                    // A draft re-inserted (discard) is an update whatever its content.
                    if update {
                        actions.push(Action::Update);
                    }
                    if published_inserted {
                        actions.push(Action::Publish);
                    } else if other.0.is_some() && other.1.is_none() {
                        actions.push(Action::Unpublish);
                    }
                }
            }
            actions
        }
    }
}

/// Attributes one row change to the documents that own it; `false` when a main-table row
/// could not be tied to its document.
fn attribute_change(
    model: &StrapiModel,
    index: &DocumentIndex,
    local: &LocalRows<'_>,
    change: &RowChange,
    touched: &mut Touched,
) -> bool {
    let table = change.relation.name.as_str();
    let Some(role) = model.catalog.role(table) else {
        return true;
    };
    let images: Vec<RowImage<'_>> = [change.new.as_ref(), change.old.as_ref()]
        .into_iter()
        .flatten()
        .map(|t| RowImage::new(&change.relation, t))
        .collect();
    let id = images.iter().find_map(|r| r.int("id"));
    match role {
        TableRole::Main(ct) => {
            let Some(doc) = id.and_then(|id| main_doc(model, index, local, &ct.uid, id)) else {
                return false;
            };
            if change.kind == ChangeKind::Insert
                && ct.draft_and_publish
                && images.first().is_some_and(|r| !r.is_null("published_at"))
            {
                touched.published_inserted.insert(doc.clone());
            }
            touched.add(doc);
        }
        TableRole::Link(link) => {
            let stored = id.and_then(|id| index.links(table)?.rows.get(&id).copied());
            let mut pairs: Vec<(Option<i64>, Option<i64>)> = images
                .iter()
                .map(|r| (r.int(&link.owner_column), r.int(&link.target_column)))
                .collect();
            if let Some(s) = stored {
                pairs.push((Some(s.owner), Some(s.target)));
            }
            for (owner, target) in pairs {
                if let Some(doc) =
                    owner.and_then(|o| main_doc(model, index, local, &link.owner.uid, o))
                {
                    touched.add(doc);
                }
                if link.inverse_attribute.is_some()
                    && let Some(doc) =
                        target.and_then(|t| main_doc(model, index, local, &link.target_uid, t))
                {
                    touched.add(doc);
                }
            }
        }
        TableRole::ComponentLinks(ct) => {
            let mut entities: Vec<i64> = images.iter().filter_map(|r| r.int("entity_id")).collect();
            if let Some(stored) = id.and_then(|id| index.component_links(table)?.rows.get(&id)) {
                entities.push(stored.entity);
            }
            for entity in entities {
                if let Some(doc) = main_doc(model, index, local, &ct.uid, entity) {
                    touched.add(doc);
                }
            }
        }
        TableRole::Component(uid) => {
            // A component created in this transaction is reached through its new `_cmps`
            // row, which is attributed on its own.
            let Some(id) = id else { return true };
            if let Some((cmps_table, link)) = index.component_owner(uid, id)
                && let Some(TableRole::ComponentLinks(ct)) = model.catalog.role(cmps_table)
                && let Some(doc) = main_doc(model, index, local, &ct.uid, link.entity)
            {
                touched.add(doc);
            }
        }
        TableRole::MediaLinks => {
            let mut owners: Vec<(String, i64)> = images
                .iter()
                .filter_map(|r| Some((r.text("related_type")?.to_owned(), r.int("related_id")?)))
                .collect();
            if let Some(stored) = id.and_then(|id| index.media()?.rows.get(&id)) {
                owners.push((stored.related_type.to_string(), stored.related));
            }
            for (uid, related) in owners {
                if let Some(doc) = main_doc(model, index, local, &uid, related) {
                    touched.add(doc);
                }
            }
        }
        TableRole::Auth(_) | TableRole::CoreStore => {}
    }
    true
}

/// The document of main row `id` of content type `uid`: from this transaction's images, or
/// the index.
fn main_doc(
    model: &StrapiModel,
    index: &DocumentIndex,
    local: &LocalRows<'_>,
    uid: &str,
    id: i64,
) -> Option<Doc> {
    let ct = model.content_types.by_uid.get(uid)?;
    let (document_id, locale) = match local.get(&(ct.table.as_str(), id)) {
        Some((d, l)) => (Arc::clone(d), l.clone()),
        None => {
            let row = index.main(&ct.table)?.get(id)?;
            (Arc::from(row.document_id), row.locale.cloned())
        }
    };
    Some(Doc {
        uid: Arc::from(uid),
        document_id,
        locale,
    })
}

fn rows_of<'a>(main: &'a MainRows, document_id: &str) -> impl Iterator<Item = MainRow<'a>> {
    main.rows_of(document_id)
}

/// Whether a row of the index has this locale.
fn same_locale(row: &MainRow<'_>, locale: &Option<Arc<str>>) -> bool {
    row.locale.map(|l| &**l) == locale.as_deref()
}

fn locales_of(index: &DocumentIndex, table: &str, document_id: &str) -> Vec<Arc<str>> {
    let Some(main) = index.main(table) else {
        return vec![];
    };
    rows_of(main, document_id)
        .filter_map(|r| r.locale.cloned())
        .collect()
}

/// Whether a row belongs to `view` (types without D&P have one view, shown to both).
fn in_view(ct: &ContentType, row: &MainRow<'_>, view: View) -> bool {
    !ct.draft_and_publish || row.published == (view == View::Published)
}

/// The row that is the document's `view` (the latest, should Postgres hold two).
fn view_row(index: &DocumentIndex, ct: &ContentType, doc: &Doc, view: View) -> Option<i64> {
    let main = index.main(&ct.table)?;
    rows_of(main, &doc.document_id)
        .filter(|r| same_locale(r, &doc.locale) && in_view(ct, r, view))
        .map(|r| r.id)
        .max()
}

/// Sorts `(order, link id, value)` triples the way Strapi orders them and keeps the values.
fn ordered(mut items: Vec<(f64, i64, i64)>) -> Vec<i64> {
    items.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    items.into_iter().map(|(_, _, v)| v).collect()
}

/// Digest of what a client of `view` sees of row `row`: its content columns and populated
/// attributes (relations as ordered documentIds, components by content, media by file id,
/// `localizations` as the set of other locales).
fn digest(
    model: &StrapiModel,
    index: &DocumentIndex,
    ct: &ContentType,
    populate: &Populate,
    doc: &Doc,
    row: i64,
    view: View,
) -> u64 {
    let mut h = DefaultHasher::new();
    if let Some(main_row) = index.main(&ct.table).and_then(|m| m.get(row)) {
        main_row.content.digest().hash(&mut h);
    }
    for attribute in &ct.attributes {
        if !populate.includes(&attribute.name) {
            continue;
        }
        attribute.name.hash(&mut h);
        match &attribute.kind {
            AttributeKind::Relation { .. } => {
                let (related_uid, ids) = match model.catalog.relation(&ct.uid, &attribute.name) {
                    Some(RelationSide::Owner(link)) => {
                        let Some(links) = index.links(&link.table) else {
                            continue;
                        };
                        let items = links
                            .of_owner(row)
                            .map(|(l, x)| (x.order, l, x.target))
                            .collect();
                        (&link.target_uid, ordered(items))
                    }
                    Some(RelationSide::Inverse(link)) => {
                        let Some(links) = index.links(&link.table) else {
                            continue;
                        };
                        let items = links
                            .of_target(row)
                            .map(|(l, x)| (x.inverse_order, l, x.owner))
                            .collect();
                        (&link.owner.uid, ordered(items))
                    }
                    None => continue,
                };
                let related: Vec<String> = ids
                    .into_iter()
                    .filter_map(|id| related_document(model, index, related_uid, id, view))
                    .collect();
                related.hash(&mut h);
            }
            AttributeKind::Component { .. } | AttributeKind::DynamicZone { .. } => {
                let cmps = crate::strapi::naming::component_join_table_name(&ct.table);
                let Some(links) = index.component_links(&cmps) else {
                    continue;
                };
                let mut items: Vec<(f64, i64, &str, i64)> = links
                    .by_entity
                    .get(&row)
                    .into_iter()
                    .flatten()
                    .filter_map(|l| links.rows.get(l).map(|x| (l, x)))
                    .filter(|(_, x)| *x.field == *attribute.name)
                    .map(|(l, x)| (x.order, *l, &*x.component_type, x.cmp_id))
                    .collect();
                items.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                for (_, _, component_type, cmp_id) in items {
                    component_type.hash(&mut h);
                    let content = model
                        .content_types
                        .components
                        .get(component_type)
                        .and_then(|table| index.component(table, cmp_id));
                    content.map(|c| c.digest()).hash(&mut h);
                }
            }
            AttributeKind::Media { .. } => {
                let Some(media) = index.media() else { continue };
                let items = media
                    .by_related
                    .get(&(Arc::from(ct.uid.as_str()), row))
                    .into_iter()
                    .flatten()
                    .filter_map(|l| media.rows.get(l).map(|x| (l, x)))
                    .filter(|(_, x)| *x.field == *attribute.name)
                    .map(|(l, x)| (x.order, *l, x.file))
                    .collect();
                ordered(items).hash(&mut h);
            }
            AttributeKind::Scalar { .. } => {}
        }
    }
    if ct.localized && populate.includes("localizations") {
        "localizations".hash(&mut h);
        if let Some(main) = index.main(&ct.table) {
            let locales: BTreeSet<&str> = rows_of(main, &doc.document_id)
                .filter(|r| !same_locale(r, &doc.locale) && in_view(ct, r, view))
                .filter_map(|r| r.locale.map(|l| &**l))
                .collect();
            locales.hash(&mut h);
        }
    }
    h.finish()
}

/// How a related row appears in `view`: its documentId when the target is a content type
/// (and, for D&P targets, the row belongs to the view), its id otherwise.
fn related_document(
    model: &StrapiModel,
    index: &DocumentIndex,
    uid: &str,
    id: i64,
    view: View,
) -> Option<String> {
    let Some(ct) = model.content_types.by_uid.get(uid) else {
        return Some(id.to_string());
    };
    let row = index.main(&ct.table)?.get(id)?;
    in_view(ct, &row, view).then(|| row.document_id.to_string())
}

/// The new tuple with each unchanged-TOAST column taken from the old image (REPLICA
/// IDENTITY FULL sends it whole). Columns the old image lacks stay unchanged-TOAST and are
/// fetched before the payload is built, never emitted wrong.
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

    fn state(row: i64, digest: u64) -> Option<ViewState> {
        Some(ViewState {
            row,
            digest: Some(digest),
        })
    }

    #[test]
    fn the_views_table() {
        use Action::*;
        use View::*;
        let d = |b, a| (state(1, b), state(1, a));
        // First publish: published create+publish; draft publish (+ update when changed).
        assert_eq!(
            decide(true, Published, (None, state(2, 1)), d(1, 1), true),
            [Create, Publish]
        );
        assert_eq!(
            decide(true, Draft, d(1, 1), (None, state(2, 1)), true),
            [Publish]
        );
        assert_eq!(
            decide(true, Draft, d(1, 2), (None, state(2, 1)), true),
            [Update, Publish]
        );
        // Re-publish: always update + publish, even with the same content.
        assert_eq!(
            decide(true, Published, (state(2, 1), state(3, 1)), d(1, 1), true),
            [Update, Publish]
        );
        // Unpublish.
        assert_eq!(
            decide(true, Published, (state(2, 1), None), d(1, 1), false),
            [Delete, Unpublish]
        );
        assert_eq!(
            decide(true, Draft, d(1, 1), (state(2, 1), None), false),
            [Unpublish]
        );
        // Delete document.
        assert_eq!(
            decide(
                true,
                Published,
                (state(2, 1), None),
                (state(1, 1), None),
                false
            ),
            [Delete]
        );
        assert_eq!(
            decide(true, Draft, (state(1, 1), None), (state(2, 1), None), false),
            [Delete]
        );
        // Discard draft: re-inserted draft is an update even with the same content.
        assert_eq!(
            decide(true, Draft, (state(1, 1), state(5, 1)), d(2, 2), false),
            [Update]
        );
        // Created and published at once: draft create + publish.
        assert_eq!(
            decide(true, Draft, (None, state(1, 1)), (None, state(2, 1)), true),
            [Create, Publish]
        );
        assert_eq!(
            decide(true, Draft, (None, state(1, 1)), (None, None), false),
            [Create]
        );
        // In-place update without visible change: nothing.
        assert_eq!(decide(true, Published, d(1, 1), d(1, 1), false), []);
        // No D&P.
        assert_eq!(
            decide(false, Published, d(1, 2), (None, None), false),
            [Update]
        );
        assert_eq!(
            decide(false, Published, (None, state(1, 2)), (None, None), false),
            [Create]
        );
        // Unknown "before": counted as changed.
        let unknown = Some(ViewState {
            row: 1,
            digest: None,
        });
        assert_eq!(
            decide(true, Published, (unknown, state(1, 1)), d(1, 1), false),
            [Update]
        );
    }

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
