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
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

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

/// A map keyed by row id, with a fixed fast hasher (ids are not attacker-chosen keys of a
/// public service; the tables are private and hold hundreds of thousands of them).
pub type IdMap<V> = hashbrown::HashMap<i64, V, FixedState>;
pub type IdSet = hashbrown::HashSet<i64, FixedState>;

fn hash_id(id: i64) -> u64 {
    FixedState::default().hash_one(id)
}

fn hash_str(s: &str) -> u64 {
    FixedState::default().hash_one(s)
}

/// `(hash of column name, hash of value)`.
type ColumnHash = (u32, u32);

/// What the index keeps of a row's content columns: one digest of every `(name, value)`
/// hash pair (compared by the fold: equal digests, same content), and the pairs of the
/// values Postgres may have stored out of line (TOAST), which a later UPDATE sends as
/// "unchanged" and whose hashes must then be carried over. A row of short strings, numbers
/// and dates keeps 8 bytes; one with a long body keeps one pair more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    digest: u64,
    toastable: Toastable,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Toastable {
    #[default]
    None,
    One(ColumnHash),
    /// Sorted by name hash.
    Many(Box<[ColumnHash]>),
}

impl Toastable {
    fn from_sorted(pairs: Vec<ColumnHash>) -> Self {
        match pairs.as_slice() {
            [] => Toastable::None,
            [one] => Toastable::One(*one),
            _ => Toastable::Many(pairs.into_boxed_slice()),
        }
    }

    fn get(&self, key: u32) -> Option<u32> {
        let pairs: &[ColumnHash] = match self {
            Toastable::None => &[],
            Toastable::One(one) => std::slice::from_ref(one),
            Toastable::Many(many) => many,
        };
        let i = pairs.binary_search_by_key(&key, |(k, _)| *k).ok()?;
        Some(pairs[i].1)
    }
}

impl Content {
    /// The digest of the content columns: what the fold compares.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The content of a row; unchanged TOAST values keep the hash in `previous` (a column
    /// `previous` does not know is left out, never invented).
    pub fn of(row: &dyn RowSource, previous: Option<&Content>) -> Content {
        let mut all: Vec<ColumnHash> = Vec::new();
        let mut toastable: Vec<ColumnHash> = Vec::new();
        for column in row.cells() {
            if NOT_CONTENT_COLUMNS.contains(&column.name) {
                continue;
            }
            let key = hash32(column.name);
            let (value, out_of_line) = match column.cell {
                Cell::Null => (0, false),
                Cell::Value(b) => (hash32(b) | 1, may_be_out_of_line(column.type_oid, b.len())),
                Cell::Unchanged => match previous.and_then(|p| p.toastable.get(key)) {
                    Some(value) => (value, true),
                    None => continue,
                },
            };
            all.push((key, value));
            if out_of_line {
                toastable.push((key, value));
            }
        }
        all.sort_unstable_by_key(|(k, _)| *k);
        toastable.sort_unstable_by_key(|(k, _)| *k);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        all.hash(&mut h);
        Content {
            digest: h.finish(),
            toastable: Toastable::from_sorted(toastable),
        }
    }
}

/// Whether Postgres may have stored a value of this type and text length out of line, so
/// that an UPDATE that leaves it alone sends it as "unchanged TOAST". Only a value larger
/// than a TOAST pointer (stored size > 24 bytes, `MAXALIGN(TOAST_POINTER_SIZE)` in
/// `toast_tuple_find_biggest_attribute`) is ever moved out of line, and fixed-length types
/// never are. For the types below the stored size is at most the text length + 8 bytes
/// (text, varchar, char(n), json, xml and bytea's hex output; numeric's 2 bytes per 4
/// digits); any other type (jsonb, arrays, unknown: `type_oid` 0) counts as possibly out of
/// line whatever its length.
pub fn may_be_out_of_line(type_oid: u32, text_len: usize) -> bool {
    match type_oid {
        // bool, "char", name, int8, int2, int4, oid, float4, float8, money, date, time,
        // timestamp, timestamptz, interval, timetz, uuid.
        16 | 18 | 19 | 20 | 21 | 23 | 26 | 700 | 701 | 790 | 1082 | 1083 | 1114 | 1184 | 1186
        | 1266 | 2950 => false,
        // bytea, text, json, xml, bpchar, varchar, numeric.
        17 | 25 | 114 | 142 | 1042 | 1043 | 1700 => text_len + 8 > 24,
        _ => true,
    }
}

/// A documentId, inline when it is up to 30 bytes long (Strapi's are 24).
#[derive(Debug, Clone)]
enum DocumentId {
    Inline { len: u8, bytes: [u8; 30] },
    Heap(Box<str>),
}

impl DocumentId {
    fn new(s: &str) -> Self {
        if s.len() <= 30 {
            let mut bytes = [0u8; 30];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            DocumentId::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            DocumentId::Heap(s.into())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied from a `&str` whole: always valid UTF-8.
            DocumentId::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            DocumentId::Heap(s) => s,
        }
    }
}

/// No slot.
const NIL: u32 = u32::MAX;

/// One main row, in a slot of [`MainRows`].
#[derive(Debug, Clone)]
struct MainSlot {
    id: i64,
    content: Content,
    /// Its document's slot.
    document: u32,
    /// The next row of the same document (insertion order), or `NIL`.
    next: u32,
    /// 0 = no locale, `i` = `locales[i - 1]`.
    locale: u32,
    published: bool,
}

#[derive(Debug, Clone)]
struct DocumentSlot {
    id: DocumentId,
    /// Its first row's slot (`NIL` when the slot is free).
    first: u32,
}

/// What the index keeps of a main-table row, as the fold reads it.
#[derive(Debug, Clone, Copy)]
pub struct MainRow<'a> {
    pub id: i64,
    pub document_id: &'a str,
    pub locale: Option<&'a Arc<str>>,
    pub published: bool,
    pub content: &'a Content,
}

/// A vector that grows by fixed chunks of `CHUNK` elements and never moves what it holds.
///
/// The index's slot vectors reach tens of MB (1,200,000 rows × 56 bytes); a `Vec` doubling
/// there copies the old buffer into a new one while both are resident (+58 MB at the
/// 2^20-slot step with jemalloc, which does not grow large blocks with `mremap` as glibc
/// does). Chunks grow one at a time, so the peak is what is held plus one chunk.
#[derive(Debug, Clone)]
struct ChunkedVec<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

/// Elements per chunk of a [`ChunkedVec`] (~900 KB of 56-byte slots).
const CHUNK: usize = 1 << 14;

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ChunkedVec<T> {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, value: T) {
        if self.len == self.chunks.len() * CHUNK {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks[self.len / CHUNK].push(value);
        self.len += 1;
    }
}

impl<T> std::ops::Index<usize> for ChunkedVec<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl<T> std::ops::IndexMut<usize> for ChunkedVec<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

/// The rows of one main table: row slots found by id, document slots found by documentId,
/// each document's rows chained in insertion order. Two hash tables of `u32` slots and
/// two chunked vectors, nothing allocated per row (~60 bytes a row, see
/// `benches/index_memory.rs`).
#[derive(Debug, Default)]
pub struct MainRows {
    slots: ChunkedVec<MainSlot>,
    free: Vec<u32>,
    by_id: HashTable<u32>,
    documents: ChunkedVec<DocumentSlot>,
    free_documents: Vec<u32>,
    by_document: HashTable<u32>,
    locales: Vec<Arc<str>>,
}

impl MainRows {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn slot_of(&self, id: i64) -> Option<u32> {
        let slots = &self.slots;
        self.by_id
            .find(hash_id(id), |&s| slots[s as usize].id == id)
            .copied()
    }

    fn document_of(&self, document_id: &str) -> Option<u32> {
        let documents = &self.documents;
        self.by_document
            .find(hash_str(document_id), |&d| {
                documents[d as usize].id.as_str() == document_id
            })
            .copied()
    }

    fn view(&self, slot: u32) -> MainRow<'_> {
        let s = &self.slots[slot as usize];
        MainRow {
            id: s.id,
            document_id: self.documents[s.document as usize].id.as_str(),
            locale: s.locale.checked_sub(1).map(|i| &self.locales[i as usize]),
            published: s.published,
            content: &s.content,
        }
    }

    pub fn get(&self, id: i64) -> Option<MainRow<'_>> {
        self.slot_of(id).map(|s| self.view(s))
    }

    /// The rows of a document, in the order they were first indexed.
    pub fn rows_of<'a>(&'a self, document_id: &str) -> impl Iterator<Item = MainRow<'a>> + 'a {
        let mut next = self
            .document_of(document_id)
            .map_or(NIL, |d| self.documents[d as usize].first);
        std::iter::from_fn(move || {
            if next == NIL {
                return None;
            }
            let slot = next;
            next = self.slots[slot as usize].next;
            Some(self.view(slot))
        })
    }

    fn locale_index(&mut self, locale: Option<&str>) -> u32 {
        let Some(locale) = locale else { return 0 };
        if let Some(i) = self.locales.iter().position(|l| **l == *locale) {
            return i as u32 + 1;
        }
        self.locales.push(Arc::from(locale));
        self.locales.len() as u32
    }

    /// The slot of a document, made when new.
    fn document_for(&mut self, document_id: &str) -> u32 {
        if let Some(d) = self.document_of(document_id) {
            return d;
        }
        let slot = DocumentSlot {
            id: DocumentId::new(document_id),
            first: NIL,
        };
        let d = match self.free_documents.pop() {
            Some(d) => {
                self.documents[d as usize] = slot;
                d
            }
            None => {
                self.documents.push(slot);
                (self.documents.len() - 1) as u32
            }
        };
        let documents = &self.documents;
        self.by_document
            .insert_unique(hash_str(document_id), d, |&x| {
                hash_str(documents[x as usize].id.as_str())
            });
        d
    }

    /// Appends row `slot` to document `d`'s rows.
    fn link(&mut self, slot: u32, d: u32) {
        self.slots[slot as usize].document = d;
        self.slots[slot as usize].next = NIL;
        let first = self.documents[d as usize].first;
        if first == NIL {
            self.documents[d as usize].first = slot;
            return;
        }
        let mut last = first;
        while self.slots[last as usize].next != NIL {
            last = self.slots[last as usize].next;
        }
        self.slots[last as usize].next = slot;
    }

    /// Takes row `slot` out of its document's rows; frees the document when it was the last.
    fn unlink(&mut self, slot: u32) {
        let d = self.slots[slot as usize].document;
        let next = self.slots[slot as usize].next;
        if self.documents[d as usize].first == slot {
            self.documents[d as usize].first = next;
        } else {
            let mut prev = self.documents[d as usize].first;
            while prev != NIL && self.slots[prev as usize].next != slot {
                prev = self.slots[prev as usize].next;
            }
            if prev != NIL {
                self.slots[prev as usize].next = next;
            }
        }
        self.slots[slot as usize].next = NIL;
        if self.documents[d as usize].first == NIL {
            let documents = &self.documents;
            let hash = hash_str(documents[d as usize].id.as_str());
            if let Ok(entry) = self.by_document.find_entry(hash, |&x| x == d) {
                entry.remove();
            }
            self.documents[d as usize].id = DocumentId::new("");
            self.free_documents.push(d);
        }
    }

    fn upsert(
        &mut self,
        id: i64,
        document_id: &str,
        locale: Option<&str>,
        published: bool,
        row: &dyn RowSource,
    ) {
        let locale = self.locale_index(locale);
        match self.slot_of(id) {
            Some(slot) => {
                let content = Content::of(row, Some(&self.slots[slot as usize].content));
                let old = self.slots[slot as usize].document;
                if self.documents[old as usize].id.as_str() != document_id {
                    self.unlink(slot);
                    let d = self.document_for(document_id);
                    self.link(slot, d);
                }
                let s = &mut self.slots[slot as usize];
                s.content = content;
                s.locale = locale;
                s.published = published;
            }
            None => {
                let content = Content::of(row, None);
                let d = self.document_for(document_id);
                let new = MainSlot {
                    id,
                    content,
                    document: d,
                    next: NIL,
                    locale,
                    published,
                };
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slots[slot as usize] = new;
                        slot
                    }
                    None => {
                        self.slots.push(new);
                        (self.slots.len() - 1) as u32
                    }
                };
                let slots = &self.slots;
                self.by_id
                    .insert_unique(hash_id(id), slot, |&x| hash_id(slots[x as usize].id));
                self.link(slot, d);
            }
        }
    }

    fn remove(&mut self, id: i64) {
        let slots = &self.slots;
        let Ok(entry) = self
            .by_id
            .find_entry(hash_id(id), |&s| slots[s as usize].id == id)
        else {
            return;
        };
        let (slot, _) = entry.remove();
        self.unlink(slot);
        self.slots[slot as usize].content = Content::default();
        self.free.push(slot);
    }
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

/// The link ids of one owner or target: most rows have one link per relation, so one id is
/// held inline; a category with 100,000 articles has a set (insert and delete stay O(1)).
#[derive(Debug)]
enum LinkIds {
    One(i64),
    Many(Box<IdSet>),
}

impl LinkIds {
    fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        let (one, many) = match self {
            LinkIds::One(id) => (Some(*id), None),
            LinkIds::Many(set) => (None, Some(set.iter().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

fn add_link_id(map: &mut IdMap<LinkIds>, key: i64, id: i64) {
    match map.entry(key) {
        hashbrown::hash_map::Entry::Vacant(e) => {
            e.insert(LinkIds::One(id));
        }
        hashbrown::hash_map::Entry::Occupied(mut e) => match e.get_mut() {
            LinkIds::One(one) if *one == id => {}
            LinkIds::One(one) => {
                let mut set = IdSet::default();
                set.insert(*one);
                set.insert(id);
                e.insert(LinkIds::Many(Box::new(set)));
            }
            LinkIds::Many(set) => {
                set.insert(id);
            }
        },
    }
}

fn remove_link_id(map: &mut IdMap<LinkIds>, key: i64, id: i64) {
    let Some(ids) = map.get_mut(&key) else { return };
    let empty = match ids {
        LinkIds::One(one) => *one == id,
        LinkIds::Many(set) => {
            set.remove(&id);
            set.is_empty()
        }
    };
    if empty {
        map.remove(&key);
    }
}

/// Link rows by id, and their ids by owner and by target row.
#[derive(Debug, Default)]
pub struct LinkRows {
    pub rows: IdMap<Link>,
    by_owner: IdMap<LinkIds>,
    by_target: IdMap<LinkIds>,
}

impl LinkRows {
    /// The links of owner row `owner`: `(link id, link)`, in no particular order.
    pub fn of_owner(&self, owner: i64) -> impl Iterator<Item = (i64, &Link)> + '_ {
        self.by_owner
            .get(&owner)
            .into_iter()
            .flat_map(LinkIds::iter)
            .filter_map(|l| self.rows.get(&l).map(|x| (l, x)))
    }

    /// The links to target row `target`: `(link id, link)`, in no particular order.
    pub fn of_target(&self, target: i64) -> impl Iterator<Item = (i64, &Link)> + '_ {
        self.by_target
            .get(&target)
            .into_iter()
            .flat_map(LinkIds::iter)
            .filter_map(|l| self.rows.get(&l).map(|x| (l, x)))
    }
}

#[derive(Debug, Default)]
pub struct ComponentLinkRows {
    pub rows: IdMap<ComponentLink>,
    pub by_entity: IdMap<Vec<i64>>,
}

#[derive(Debug, Default)]
pub struct MediaRows {
    pub rows: IdMap<MediaLink>,
    pub by_related: HashMap<(Arc<str>, i64), Vec<i64>>,
}

/// The rows of one table, by the table's role.
#[derive(Debug)]
pub enum TableRows {
    Main(MainRows),
    Links(LinkRows),
    ComponentLinks(ComponentLinkRows),
    Components(IdMap<Content>),
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
    /// Component types, field names and table names (few, shared by many rows).
    strings: HashSet<Arc<str>>,
}

/// One row to index: its columns by name, as text (NULL = `None`).
pub trait RowSource {
    /// The text of a column; `None` for NULL or a column the row lacks.
    fn text(&self, column: &str) -> Option<&str>;
    /// Every column, `Cell::Unchanged` for an unchanged TOAST value.
    fn cells(&self) -> Vec<Column<'_>>;
}

/// One column of a [`RowSource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column<'a> {
    pub name: &'a str,
    /// The column's type; 0 when unknown (its values count as possibly out of line).
    pub type_oid: u32,
    pub cell: Cell<'a>,
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
    fn cells(&self) -> Vec<Column<'_>> {
        self.relation
            .columns
            .iter()
            .zip(self.tuple.iter())
            .map(|(c, d)| {
                let (cell, type_oid) = match d {
                    Datum::Null => (Cell::Null, c.type_oid),
                    Datum::UnchangedToast => (Cell::Unchanged, c.type_oid),
                    Datum::Text(b) => (Cell::Value(b), c.type_oid),
                    // The binary form's length says nothing of the stored size.
                    Datum::Binary(b) => (Cell::Value(b), 0),
                };
                Column {
                    name: c.name.as_str(),
                    type_oid,
                    cell,
                }
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

fn remove_from(map: &mut IdMap<Vec<i64>>, key: i64, id: i64) {
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
                TableRole::Component(_) => TableRows::Components(IdMap::default()),
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
                TableRows::Main(m) => m.len(),
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

    pub fn component(&self, table: &str, id: i64) -> Option<&Content> {
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
                let locale = row.text("locale");
                let published = row.text("published_at").is_some();
                let Some(TableRows::Main(main)) = self.tables.get_mut(table) else {
                    return;
                };
                main.upsert(id, document_id, locale, published, row);
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
                let content = Content::of(row, rows.get(&id));
                rows.insert(id, content);
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
        add_link_id(&mut links.by_owner, owner, id);
        add_link_id(&mut links.by_target, target, id);
    }

    /// Forgets one row.
    pub fn remove(&mut self, table: &str, id: i64) {
        let mut component_key = None;
        match self.tables.get_mut(table) {
            Some(TableRows::Main(main)) => main.remove(id),
            Some(TableRows::Links(links)) => {
                if let Some(old) = links.rows.remove(&id) {
                    remove_link_id(&mut links.by_owner, old.owner, id);
                    remove_link_id(&mut links.by_target, old.target, id);
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

    /// Columns as text, of an unknown type (every value counts as possibly out of line)
    /// unless a `(name, type)` pair says otherwise.
    struct Row(
        Vec<(&'static str, Option<&'static str>)>,
        &'static [(&'static str, u32)],
    );

    fn row(cells: Vec<(&'static str, Option<&'static str>)>) -> Row {
        Row(cells, &[])
    }

    impl RowSource for Row {
        fn text(&self, column: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(c, _)| *c == column)
                .and_then(|(_, v)| *v)
        }
        fn cells(&self) -> Vec<Column<'_>> {
            self.0
                .iter()
                .map(|(c, v)| {
                    let cell = match v {
                        None => Cell::Null,
                        Some("<toast>") => Cell::Unchanged,
                        Some(v) => Cell::Value(v.as_bytes()),
                    };
                    let type_oid = self.1.iter().find(|(n, _)| n == c).map_or(0, |(_, t)| *t);
                    Column {
                        name: c,
                        type_oid,
                        cell,
                    }
                })
                .collect()
        }
    }

    #[test]
    fn publish_bookkeeping_columns_are_not_content() {
        let a = row(vec![
            ("id", Some("1")),
            ("title", Some("Hello")),
            ("updated_at", Some("2026-01-01 00:00:00")),
        ]);
        let b = row(vec![
            ("id", Some("2")),
            ("title", Some("Hello")),
            ("updated_at", Some("2026-02-02 00:00:00")),
        ]);
        let c = row(vec![
            ("id", Some("2")),
            ("title", Some("Bye")),
            ("updated_at", Some("2026-02-02 00:00:00")),
        ]);
        assert_eq!(Content::of(&a, None), Content::of(&b, None));
        assert_ne!(Content::of(&a, None), Content::of(&c, None));
    }

    #[test]
    fn unchanged_toast_keeps_the_previous_hash() {
        let before = row(vec![("body", Some("long text")), ("views", Some("3"))]);
        let after = row(vec![("body", Some("<toast>")), ("views", Some("3"))]);
        let previous = Content::of(&before, None);
        assert_eq!(Content::of(&after, Some(&previous)), previous);
        // Without a previous image the column is left out, not invented.
        assert_eq!(
            Content::of(&after, None),
            Content::of(&row(vec![("views", Some("3"))]), None)
        );
    }

    #[test]
    fn only_values_that_may_be_out_of_line_are_kept_one_by_one() {
        const TYPES: &[(&str, u32)] = &[("body", 25), ("title", 1043), ("views", 23)];
        let body = "Lorem ipsum dolor sit amet. Lorem ipsum dolor sit amet.";
        let before = Row(
            vec![
                ("title", Some("Short")),
                ("body", Some(body)),
                ("views", Some("3")),
            ],
            TYPES,
        );
        let content = Content::of(&before, None);
        assert!(matches!(content.toastable, Toastable::One(_)));
        // The body comes back as unchanged TOAST: same content.
        let after = Row(
            vec![
                ("title", Some("Short")),
                ("body", Some("<toast>")),
                ("views", Some("3")),
            ],
            TYPES,
        );
        assert_eq!(Content::of(&after, Some(&content)), content);
        let changed = Row(
            vec![
                ("title", Some("Other")),
                ("body", Some("<toast>")),
                ("views", Some("3")),
            ],
            TYPES,
        );
        assert_ne!(Content::of(&changed, Some(&content)).digest, content.digest);
        assert!(!may_be_out_of_line(25, 16));
        assert!(may_be_out_of_line(25, 17));
        assert!(!may_be_out_of_line(1184, 1000));
        assert!(may_be_out_of_line(3802, 2));
        assert!(may_be_out_of_line(0, 0));
    }

    #[test]
    fn a_null_differs_from_an_empty_string() {
        let a = row(vec![("title", None)]);
        let b = row(vec![("title", Some(""))]);
        assert_ne!(Content::of(&a, None), Content::of(&b, None));
    }

    fn main_row(id: &'static str, document: &'static str, locale: &'static str) -> Row {
        row(vec![
            ("id", Some(id)),
            ("document_id", Some(document)),
            ("locale", Some(locale)),
            ("title", Some(id)),
        ])
    }

    #[test]
    fn main_rows_by_id_and_by_document() {
        let mut main = MainRows::default();
        let long = "a-document-id-longer-than-thirty-bytes-0001";
        for (id, doc, locale) in [
            ("1", "doc-a", "en"),
            ("2", "doc-b", "en"),
            ("3", "doc-a", "fr"),
            ("4", long, "en"),
            ("5", "doc-a", "en"),
        ] {
            let r = main_row(id, doc, locale);
            main.upsert(id.parse().unwrap(), doc, Some(locale), false, &r);
        }
        let ids =
            |main: &MainRows, doc: &str| -> Vec<i64> { main.rows_of(doc).map(|r| r.id).collect() };
        assert_eq!(main.len(), 5);
        assert_eq!(ids(&main, "doc-a"), [1, 3, 5]);
        assert_eq!(ids(&main, long), [4]);
        assert_eq!(main.get(4).unwrap().document_id, long);
        assert_eq!(main.get(3).unwrap().locale.map(|l| &**l), Some("fr"));
        // Re-upsert in place keeps the position; a move to another document appends.
        let r = main_row("3", "doc-a", "fr");
        main.upsert(3, "doc-a", Some("fr"), true, &r);
        assert_eq!(ids(&main, "doc-a"), [1, 3, 5]);
        assert!(main.get(3).unwrap().published);
        let r = main_row("1", "doc-b", "en");
        main.upsert(1, "doc-b", Some("en"), false, &r);
        assert_eq!(ids(&main, "doc-a"), [3, 5]);
        assert_eq!(ids(&main, "doc-b"), [2, 1]);
        main.remove(5);
        main.remove(3);
        main.remove(42);
        assert_eq!(ids(&main, "doc-a"), Vec::<i64>::new());
        assert!(main.get(3).is_none());
        // Freed slots are reused.
        let r = main_row("6", "doc-c", "en");
        main.upsert(6, "doc-c", None, false, &r);
        assert_eq!(ids(&main, "doc-c"), [6]);
        assert_eq!(main.get(6).unwrap().locale, None);
        assert_eq!(main.len(), 4);
        assert_eq!(main.slots.len(), 5);
    }

    #[test]
    fn main_rows_span_several_chunks() {
        let mut main = MainRows::default();
        let n = CHUNK as i64 * 2 + 7;
        // The row image only feeds the content hashes; the ids and documents are the arguments.
        let r = main_row("0", "doc", "en");
        for id in 1..=n {
            let doc = format!("doc-{}", id / 2);
            main.upsert(id, &doc, Some("en"), id % 3 == 0, &r);
        }
        assert_eq!(main.slots.len(), n as usize);
        assert_eq!(main.slots.chunks.len(), 3);
        for id in [1, CHUNK as i64, CHUNK as i64 + 1, n] {
            let row = main.get(id).unwrap();
            assert_eq!(row.id, id);
            assert_eq!(row.document_id, format!("doc-{}", id / 2));
            assert_eq!(row.published, id % 3 == 0);
        }
        let doc = format!("doc-{}", CHUNK / 2);
        let ids: Vec<i64> = main.rows_of(&doc).map(|r| r.id).collect();
        assert_eq!(ids, [CHUNK as i64, CHUNK as i64 + 1]);
    }
}
