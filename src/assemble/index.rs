//! The document index: what walcast knows of every row that belongs to a document, so one
//! transaction can be compared with the document states before it.
//!
//! It holds, per table the catalog attributes, only what the fold needs: main rows as
//! `id → (documentId, locale, published, column hashes)`, link rows as `id → (owner, target,
//! orders)`, component links, component rows as column hashes, and media links. Loaded from a
//! snapshot at start (see [`snapshot`](super::snapshot)) and kept by applying every row
//! change of the WAL. With the default replica identity a DELETE carries only the `id`; the
//! index answers whose row it was (spec §2). Column *hashes*, never values: the index stays
//! small (measured per row in `benches/`, stated in the README).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::replication::{ChangeKind, Datum, Lsn, ReplicaIdentity, RowChange};
use crate::strapi::{Catalog, TableRole};

use super::row::RowImage;

/// Columns that are not content: identity, and what Strapi rewrites on every publish
/// (spec §3 "content changed").
pub const NOT_CONTENT_COLUMNS: &[&str] = &[
    "id",
    "document_id",
    "locale",
    "published_at",
    "updated_at",
    "updated_by_id",
    "first_published_at",
];

/// `(hash of column name, hash of value)` per content column, sorted by name hash.
pub type ColumnHashes = Box<[(u32, u32)]>;

/// What the index keeps of a main-table row.
#[derive(Debug, Clone)]
pub struct MainRow {
    pub document_id: Arc<str>,
    pub locale: Option<Arc<str>>,
    pub published: bool,
    pub columns: ColumnHashes,
}

/// A link-table row: `owner` row id → `target` row id, with both sides' orders.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub owner: i64,
    pub target: i64,
    pub order: f64,
    pub inverse_order: f64,
}

/// A `_cmps` row: component `cmp_id` of type `component_type` in attribute `field` of row
/// `entity`.
#[derive(Debug, Clone)]
pub struct ComponentLink {
    pub entity: i64,
    pub cmp_id: i64,
    pub component_type: Arc<str>,
    pub field: Arc<str>,
    pub order: f64,
}

/// A `files_related_mph` row: file `file` in attribute `field` of row `related` of type
/// `related_type`.
#[derive(Debug, Clone)]
pub struct MediaLink {
    pub file: i64,
    pub related: i64,
    pub related_type: Arc<str>,
    pub field: Arc<str>,
    pub order: f64,
}

#[derive(Debug, Default)]
pub struct MainRows {
    pub rows: HashMap<i64, MainRow>,
    pub by_document: HashMap<Arc<str>, Vec<i64>>,
}

/// Link rows by id, and their ids by owner and by target row. Sets, not lists: one target
/// (a category) can have hundreds of thousands of links, and each insert or delete must stay
/// O(1).
#[derive(Debug, Default)]
pub struct LinkRows {
    pub rows: HashMap<i64, Link>,
    pub by_owner: HashMap<i64, HashSet<i64>>,
    pub by_target: HashMap<i64, HashSet<i64>>,
}

#[derive(Debug, Default)]
pub struct ComponentLinkRows {
    pub rows: HashMap<i64, ComponentLink>,
    pub by_entity: HashMap<i64, Vec<i64>>,
}

#[derive(Debug, Default)]
pub struct MediaRows {
    pub rows: HashMap<i64, MediaLink>,
    pub by_related: HashMap<(Arc<str>, i64), Vec<i64>>,
}

/// The rows of one table, by the table's role.
#[derive(Debug)]
pub enum TableRows {
    Main(MainRows),
    Links(LinkRows),
    ComponentLinks(ComponentLinkRows),
    Components(HashMap<i64, ColumnHashes>),
    Media(MediaRows),
}

/// Every attributed row walcast knows, kept in step with the WAL.
#[derive(Debug, Default)]
pub struct DocumentIndex {
    /// The WAL position the snapshot was read at: transactions that end at or before it are
    /// already reflected, so their "before" states are unknown.
    pub snapshot_lsn: Lsn,
    tables: HashMap<String, TableRows>,
    /// (component uid, component row id) → (`_cmps` table, link id).
    component_owner: HashMap<(Arc<str>, i64), (Arc<str>, i64)>,
    strings: HashSet<Arc<str>>,
}

/// One row to index: its columns by name, as text (NULL = `None`).
pub trait RowSource {
    /// The text of a column; `None` for NULL or a column the row lacks.
    fn text(&self, column: &str) -> Option<&str>;
    /// Every column: `(name, value)`, `Cell::Unchanged` for an unchanged TOAST value.
    fn cells(&self) -> Vec<(&str, Cell<'_>)>;
}

/// One column value for hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    Null,
    Value(&'a [u8]),
    /// Not in the WAL (TOAST, unchanged): keep what the index had.
    Unchanged,
}

impl RowSource for RowImage<'_> {
    fn text(&self, column: &str) -> Option<&str> {
        RowImage::text(self, column)
    }
    fn cells(&self) -> Vec<(&str, Cell<'_>)> {
        self.relation
            .columns
            .iter()
            .zip(self.tuple.iter())
            .map(|(c, d)| {
                let cell = match d {
                    Datum::Null => Cell::Null,
                    Datum::UnchangedToast => Cell::Unchanged,
                    Datum::Text(b) | Datum::Binary(b) => Cell::Value(b),
                };
                (c.name.as_str(), cell)
            })
            .collect()
    }
}

fn hash32<T: Hash + ?Sized>(value: &T) -> u32 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    let v = h.finish();
    (v ^ (v >> 32)) as u32
}

/// The content-column hashes of a row; unchanged TOAST values keep the hash in `previous`.
pub fn column_hashes(row: &dyn RowSource, previous: Option<&ColumnHashes>) -> ColumnHashes {
    let mut out: Vec<(u32, u32)> = row
        .cells()
        .into_iter()
        .filter(|(name, _)| !NOT_CONTENT_COLUMNS.contains(name))
        .filter_map(|(name, cell)| {
            let key = hash32(name);
            let value = match cell {
                Cell::Null => 0,
                Cell::Value(b) => hash32(b) | 1,
                Cell::Unchanged => previous?
                    .binary_search_by_key(&key, |(k, _)| *k)
                    .ok()
                    .map(|i| previous.map_or(0, |p| p[i].1))?,
            };
            Some((key, value))
        })
        .collect();
    out.sort_unstable_by_key(|(k, _)| *k);
    out.into_boxed_slice()
}

fn int(row: &dyn RowSource, column: &str) -> Option<i64> {
    row.text(column)?.parse().ok()
}

fn float(row: &dyn RowSource, column: &str) -> f64 {
    row.text(column)
        .and_then(|t| t.parse().ok())
        .unwrap_or(f64::INFINITY)
}

fn push_unique(list: &mut Vec<i64>, id: i64) {
    if !list.contains(&id) {
        list.push(id);
    }
}

fn remove_from_set(map: &mut HashMap<i64, HashSet<i64>>, key: i64, id: i64) {
    if let Some(set) = map.get_mut(&key) {
        set.remove(&id);
        if set.is_empty() {
            map.remove(&key);
        }
    }
}

fn remove_from(map: &mut HashMap<i64, Vec<i64>>, key: i64, id: i64) {
    if let Some(list) = map.get_mut(&key) {
        list.retain(|x| *x != id);
        if list.is_empty() {
            map.remove(&key);
        }
    }
}

impl DocumentIndex {
    /// An empty index with a slot for every table the catalog attributes to documents.
    pub fn new(catalog: &Catalog) -> Self {
        let mut tables = HashMap::new();
        for (table, role) in catalog.iter() {
            let rows = match role {
                TableRole::Main(_) => TableRows::Main(MainRows::default()),
                TableRole::Link(_) => TableRows::Links(LinkRows::default()),
                TableRole::ComponentLinks(_) => {
                    TableRows::ComponentLinks(ComponentLinkRows::default())
                }
                TableRole::Component(_) => TableRows::Components(HashMap::new()),
                TableRole::MediaLinks => TableRows::Media(MediaRows::default()),
                TableRole::Auth(_) | TableRole::CoreStore => continue,
            };
            tables.insert(table.to_owned(), rows);
        }
        DocumentIndex {
            tables,
            ..Default::default()
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(existing) = self.strings.get(s) {
            return Arc::clone(existing);
        }
        let arc: Arc<str> = Arc::from(s);
        self.strings.insert(Arc::clone(&arc));
        arc
    }

    /// Number of rows held, over all tables.
    pub fn len(&self) -> usize {
        self.tables
            .values()
            .map(|t| match t {
                TableRows::Main(m) => m.rows.len(),
                TableRows::Links(l) => l.rows.len(),
                TableRows::ComponentLinks(c) => c.rows.len(),
                TableRows::Components(c) => c.len(),
                TableRows::Media(m) => m.rows.len(),
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn main(&self, table: &str) -> Option<&MainRows> {
        match self.tables.get(table)? {
            TableRows::Main(m) => Some(m),
            _ => None,
        }
    }

    pub fn links(&self, table: &str) -> Option<&LinkRows> {
        match self.tables.get(table)? {
            TableRows::Links(l) => Some(l),
            _ => None,
        }
    }

    pub fn component_links(&self, table: &str) -> Option<&ComponentLinkRows> {
        match self.tables.get(table)? {
            TableRows::ComponentLinks(c) => Some(c),
            _ => None,
        }
    }

    pub fn component(&self, table: &str, id: i64) -> Option<&ColumnHashes> {
        match self.tables.get(table)? {
            TableRows::Components(c) => c.get(&id),
            _ => None,
        }
    }

    pub fn media(&self) -> Option<&MediaRows> {
        self.tables.values().find_map(|t| match t {
            TableRows::Media(m) => Some(m),
            _ => None,
        })
    }

    /// The `_cmps` row that holds component row `id` of type `uid`.
    pub fn component_owner(&self, uid: &str, id: i64) -> Option<(&str, &ComponentLink)> {
        let (table, link) = self.component_owner.get(&(Arc::from(uid), id))?;
        let links = self.component_links(table)?;
        Some((table, links.rows.get(link)?))
    }

    /// Adds or replaces one row (snapshot or WAL insert/update).
    pub fn upsert(&mut self, table: &str, row: &dyn RowSource) {
        let Some(id) = int(row, "id") else { return };
        // Interned strings first (the borrow of `self.tables` comes after).
        match self.tables.get(table) {
            Some(TableRows::Main(_)) => {
                let Some(document_id) = row.text("document_id") else {
                    return;
                };
                let document_id = self.intern(document_id);
                let locale = row.text("locale").map(|l| self.intern(l));
                let published = row.text("published_at").is_some();
                let Some(TableRows::Main(main)) = self.tables.get_mut(table) else {
                    return;
                };
                let columns = column_hashes(row, main.rows.get(&id).map(|r| &r.columns));
                if let Some(old) = main.rows.insert(
                    id,
                    MainRow {
                        document_id: Arc::clone(&document_id),
                        locale,
                        published,
                        columns,
                    },
                ) && old.document_id != document_id
                    && let Some(list) = main.by_document.get_mut(&old.document_id)
                {
                    list.retain(|x| *x != id);
                }
                push_unique(main.by_document.entry(document_id).or_default(), id);
            }
            // A link table's columns are named after its types: see `upsert_link`.
            Some(TableRows::Links(_)) | None => {}
            Some(TableRows::ComponentLinks(_)) => {
                let (Some(entity), Some(cmp_id), Some(component_type), Some(field)) = (
                    int(row, "entity_id"),
                    int(row, "cmp_id"),
                    row.text("component_type"),
                    row.text("field"),
                ) else {
                    return;
                };
                let component_type = self.intern(component_type);
                let field = self.intern(field);
                let table_name = self.intern(table);
                self.remove(table, id);
                self.component_owner
                    .insert((Arc::clone(&component_type), cmp_id), (table_name, id));
                let Some(TableRows::ComponentLinks(links)) = self.tables.get_mut(table) else {
                    return;
                };
                links.rows.insert(
                    id,
                    ComponentLink {
                        entity,
                        cmp_id,
                        component_type,
                        field,
                        order: float(row, "order"),
                    },
                );
                push_unique(links.by_entity.entry(entity).or_default(), id);
            }
            Some(TableRows::Components(_)) => {
                let Some(TableRows::Components(rows)) = self.tables.get_mut(table) else {
                    return;
                };
                let columns = column_hashes(row, rows.get(&id));
                rows.insert(id, columns);
            }
            Some(TableRows::Media(_)) => {
                let (Some(file), Some(related), Some(related_type), Some(field)) = (
                    int(row, "file_id"),
                    int(row, "related_id"),
                    row.text("related_type"),
                    row.text("field"),
                ) else {
                    return;
                };
                let related_type = self.intern(related_type);
                let field = self.intern(field);
                self.remove(table, id);
                let Some(TableRows::Media(media)) = self.tables.get_mut(table) else {
                    return;
                };
                push_unique(
                    media
                        .by_related
                        .entry((Arc::clone(&related_type), related))
                        .or_default(),
                    id,
                );
                media.rows.insert(
                    id,
                    MediaLink {
                        file,
                        related,
                        related_type,
                        field,
                        order: float(row, "order"),
                    },
                );
            }
        }
    }

    /// Adds or replaces one link row, reading the link table's own column names.
    pub fn upsert_link(
        &mut self,
        table: &str,
        link: &crate::strapi::catalog::LinkTable,
        row: &dyn RowSource,
    ) {
        let (Some(id), Some(owner), Some(target)) = (
            int(row, "id"),
            int(row, &link.owner_column),
            int(row, &link.target_column),
        ) else {
            return;
        };
        self.remove(table, id);
        let Some(TableRows::Links(links)) = self.tables.get_mut(table) else {
            return;
        };
        links.rows.insert(
            id,
            Link {
                owner,
                target,
                order: float(row, &link.order_column),
                inverse_order: float(row, &link.inverse_order_column),
            },
        );
        links.by_owner.entry(owner).or_default().insert(id);
        links.by_target.entry(target).or_default().insert(id);
    }

    /// Forgets one row.
    pub fn remove(&mut self, table: &str, id: i64) {
        let mut component_key = None;
        match self.tables.get_mut(table) {
            Some(TableRows::Main(main)) => {
                if let Some(old) = main.rows.remove(&id)
                    && let Some(list) = main.by_document.get_mut(&old.document_id)
                {
                    list.retain(|x| *x != id);
                    if list.is_empty() {
                        main.by_document.remove(&old.document_id);
                    }
                }
            }
            Some(TableRows::Links(links)) => {
                if let Some(old) = links.rows.remove(&id) {
                    remove_from_set(&mut links.by_owner, old.owner, id);
                    remove_from_set(&mut links.by_target, old.target, id);
                }
            }
            Some(TableRows::ComponentLinks(links)) => {
                if let Some(old) = links.rows.remove(&id) {
                    remove_from(&mut links.by_entity, old.entity, id);
                    component_key = Some((old.component_type, old.cmp_id));
                }
            }
            Some(TableRows::Components(rows)) => {
                rows.remove(&id);
            }
            Some(TableRows::Media(media)) => {
                if let Some(old) = media.rows.remove(&id) {
                    let key = (old.related_type, old.related);
                    if let Some(list) = media.by_related.get_mut(&key) {
                        list.retain(|x| *x != id);
                        if list.is_empty() {
                            media.by_related.remove(&key);
                        }
                    }
                }
            }
            None => {}
        }
        if let Some(key) = component_key
            && self
                .component_owner
                .get(&key)
                .is_some_and(|(t, l)| &**t == table && *l == id)
        {
            self.component_owner.remove(&key);
        }
    }

    /// Undoes one WAL row change as far as its images allow: an insert is removed; with
    /// `REPLICA IDENTITY FULL` an updated or deleted row gets its old image back. Used to
    /// rebuild the "before" of a transaction the snapshot already contains.
    pub fn unapply(&mut self, catalog: &Catalog, change: &RowChange) {
        let table = change.relation.name.as_str();
        let Some(role) = catalog.role(table) else {
            return;
        };
        if matches!(role, TableRole::Auth(_) | TableRole::CoreStore) {
            return;
        }
        if let Some(id) = change
            .new
            .as_ref()
            .and_then(|t| RowImage::new(&change.relation, t).int("id"))
        {
            self.remove(table, id);
        }
        let full = change.relation.replica_identity == ReplicaIdentity::Full;
        if let (true, Some(old), ChangeKind::Update | ChangeKind::Delete) =
            (full, change.old.as_ref(), change.kind)
        {
            let image = RowImage::new(&change.relation, old);
            match role {
                TableRole::Link(link) => {
                    let link = Arc::clone(link);
                    self.upsert_link(table, &link, &image);
                }
                _ => self.upsert(table, &image),
            }
        }
    }

    /// Applies one WAL row change.
    pub fn apply(&mut self, catalog: &Catalog, change: &RowChange) {
        let table = change.relation.name.as_str();
        let Some(role) = catalog.role(table) else {
            return;
        };
        if matches!(role, TableRole::Auth(_) | TableRole::CoreStore) {
            return;
        }
        let old_id = change
            .old
            .as_ref()
            .and_then(|t| RowImage::new(&change.relation, t).int("id"));
        match change.kind {
            ChangeKind::Delete => {
                if let Some(id) = old_id {
                    self.remove(table, id);
                }
            }
            ChangeKind::Insert | ChangeKind::Update => {
                let Some(new) = change.new.as_ref() else {
                    return;
                };
                let image = RowImage::new(&change.relation, new);
                if let Some(old_id) = old_id
                    && Some(old_id) != image.int("id")
                {
                    self.remove(table, old_id);
                }
                match role {
                    TableRole::Link(link) => {
                        let link = Arc::clone(link);
                        self.upsert_link(table, &link, &image);
                    }
                    _ => self.upsert(table, &image),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Row(Vec<(&'static str, Option<&'static str>)>);

    impl RowSource for Row {
        fn text(&self, column: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(c, _)| *c == column)
                .and_then(|(_, v)| *v)
        }
        fn cells(&self) -> Vec<(&str, Cell<'_>)> {
            self.0
                .iter()
                .map(|(c, v)| {
                    let cell = match v {
                        None => Cell::Null,
                        Some("<toast>") => Cell::Unchanged,
                        Some(v) => Cell::Value(v.as_bytes()),
                    };
                    (*c, cell)
                })
                .collect()
        }
    }

    #[test]
    fn publish_bookkeeping_columns_are_not_content() {
        let a = Row(vec![
            ("id", Some("1")),
            ("title", Some("Hello")),
            ("updated_at", Some("2026-01-01 00:00:00")),
        ]);
        let b = Row(vec![
            ("id", Some("2")),
            ("title", Some("Hello")),
            ("updated_at", Some("2026-02-02 00:00:00")),
        ]);
        let c = Row(vec![
            ("id", Some("2")),
            ("title", Some("Bye")),
            ("updated_at", Some("2026-02-02 00:00:00")),
        ]);
        assert_eq!(column_hashes(&a, None), column_hashes(&b, None));
        assert_ne!(column_hashes(&a, None), column_hashes(&c, None));
    }

    #[test]
    fn unchanged_toast_keeps_the_previous_hash() {
        let before = Row(vec![("body", Some("long text")), ("views", Some("3"))]);
        let after = Row(vec![("body", Some("<toast>")), ("views", Some("3"))]);
        let previous = column_hashes(&before, None);
        assert_eq!(column_hashes(&after, Some(&previous)), previous);
        // Without a previous image the column is left out, not invented.
        assert_eq!(column_hashes(&after, None).len(), 1);
    }

    #[test]
    fn a_null_differs_from_an_empty_string() {
        let a = Row(vec![("title", None)]);
        let b = Row(vec![("title", Some(""))]);
        assert_ne!(column_hashes(&a, None), column_hashes(&b, None));
    }
}
