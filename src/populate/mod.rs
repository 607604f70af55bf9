//! The populate stage: completes a transaction's events through SQL before they are routed.
//!
//! Two jobs, both batched over the whole transaction, never one query per event:
//!
//! - Entries the WAL did not carry (a row whose relation changed without the row being
//!   rewritten, or whose unchanged TOAST value the default replica identity left out) are read
//!   from their table: one query per table.
//! - The configured `populate` of each content type ([`plan::PayloadPlans`]) is resolved
//!   level by level: one query per populated attribute per content type (per component type
//!   for dynamic zones), over every row of the transaction that needs it, through the link
//!   tables, `_cmps` tables and `files_related_mph`. In the published view relations resolve
//!   to the targets' published rows (unpublished targets drop out); in the draft view, to
//!   drafts; targets without Draft & Publish have one row that both views see.
//!
//! Statements are prepared once and cached (cleared when Strapi's schema changes). The entry
//! that comes out is the document as Strapi's REST API shows it, *before* sanitization for a
//! recipient: private and password attributes never enter it, everything else is the
//! router's job ([`crate::route::payload`]).

pub mod plan;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio_postgres::{Client, Statement};

use crate::assemble::event::Entry;
use crate::assemble::{Action, TransactionEvents, View};
use crate::replication::slot::quote_ident;
use crate::replication::value::decode_text;
use crate::strapi::{ContentType, StrapiModel, naming};
use plan::{ChildKind, Level, PayloadPlans};

/// What the populate stage did for one transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PopulateStats {
    /// Statements executed (row reads and populate queries).
    pub queries: u32,
    /// Statements prepared (first use of a query shape since start or schema reload).
    pub prepares: u32,
    /// Rows read.
    pub rows: u64,
}

/// Why a transaction's events could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum PopulateError {
    #[error("reading the columns of table {table}")]
    Columns {
        table: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("reading rows of table {table}")]
    Rows {
        table: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("populating {attribute} of {uid}")]
    Populate {
        uid: String,
        attribute: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// A row being populated: its id, the view it is seen in, and its entry so far.
#[derive(Debug, Clone)]
struct Node {
    id: i64,
    published: bool,
    entry: Entry,
}

/// A row in a view: (id, seen in the published view).
type RowKey = (i64, bool);

/// Where a populated row goes among its parent's: (order column, link row id).
type Place = (f64, i64);

/// One row a populate query returned: the parent it belongs to, its place among the
/// parent's rows, and its entry.
struct Fetched {
    parent: RowKey,
    order: Place,
    node: Node,
}

/// The populate stage's caches: column lists per table and prepared statements.
#[derive(Debug, Default)]
pub struct Populator {
    columns: HashMap<String, Arc<Vec<(String, u32)>>>,
    statements: HashMap<String, Statement>,
}

/// The first four columns of every populate query: parent id, parent view, order, link id.
const LEAD_COLUMNS: usize = 4;

impl Populator {
    /// Forgets column lists and statements (after Strapi changed its schema).
    pub fn clear(&mut self) {
        self.columns.clear();
        self.statements.clear();
    }

    async fn columns_of(
        &mut self,
        client: &Client,
        table: &str,
        stats: &mut PopulateStats,
    ) -> Result<Arc<Vec<(String, u32)>>, PopulateError> {
        if let Some(c) = self.columns.get(table) {
            return Ok(Arc::clone(c));
        }
        stats.prepares += 1;
        let statement = client
            .prepare(&format!("SELECT * FROM {} LIMIT 0", quote_ident(table)))
            .await
            .map_err(|source| PopulateError::Columns {
                table: table.to_owned(),
                source,
            })?;
        let columns: Arc<Vec<(String, u32)>> = Arc::new(
            statement
                .columns()
                .iter()
                .map(|c| (c.name().to_owned(), c.type_().oid()))
                .collect(),
        );
        self.columns.insert(table.to_owned(), Arc::clone(&columns));
        Ok(columns)
    }

    async fn statement(
        &mut self,
        client: &Client,
        sql: String,
        stats: &mut PopulateStats,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.get(&sql) {
            return Ok(s.clone());
        }
        stats.prepares += 1;
        let statement = client.prepare(&sql).await?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// Completes every non-delete event of the transaction: its entry when the WAL did not
    /// carry it, then its populated attributes. Rows gone since stay without an entry (the
    /// payload then names only the document).
    pub async fn run(
        &mut self,
        client: &Client,
        model: &StrapiModel,
        plans: &PayloadPlans,
        events: &mut TransactionEvents,
    ) -> Result<PopulateStats, PopulateError> {
        let mut stats = PopulateStats::default();
        self.complete_entries(client, model, events, &mut stats)
            .await?;
        // The rows to populate, once each per (type, row, view).
        let mut roots: BTreeMap<&str, Vec<Node>> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for event in &events.events {
            let (Some(row), Some(entry)) = (event.row_id, &event.entry) else {
                continue;
            };
            if event.action == Action::Delete || plans.get(&event.key.uid).is_none() {
                continue;
            }
            let published = event.view == View::Published;
            if seen.insert((Arc::clone(&event.key.uid), row, published)) {
                roots.entry(&event.key.uid).or_default().push(Node {
                    id: row,
                    published,
                    entry: (**entry).clone(),
                });
            }
        }
        let mut done: HashMap<(String, i64, bool), Arc<Entry>> = HashMap::new();
        for (uid, mut nodes) in roots {
            let Some(level) = plans.get(uid) else {
                continue;
            };
            self.fill(client, level, &mut nodes, &mut stats).await?;
            for node in nodes {
                done.insert(
                    (uid.to_owned(), node.id, node.published),
                    Arc::new(node.entry),
                );
            }
        }
        if done.is_empty() {
            return Ok(stats);
        }
        for event in &mut events.events {
            if event.action == Action::Delete {
                continue;
            }
            if let Some(row) = event.row_id
                && let Some(entry) = done.get(&(
                    event.key.uid.to_string(),
                    row,
                    event.view == View::Published,
                ))
            {
                event.entry = Some(Arc::clone(entry));
            }
        }
        Ok(stats)
    }

    /// Reads the entries of events that lack one: one query per table.
    async fn complete_entries(
        &mut self,
        client: &Client,
        model: &StrapiModel,
        events: &mut TransactionEvents,
        stats: &mut PopulateStats,
    ) -> Result<(), PopulateError> {
        let mut wanted: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for event in &events.events {
            if event.entry.is_none()
                && let Some(row) = event.row_id
                && let Some(ct) = model.content_types.by_uid.get(&*event.key.uid)
            {
                wanted.entry(ct.uid.as_str()).or_default().push(row);
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let mut fetched: HashMap<(String, i64), Arc<Entry>> = HashMap::new();
        for (uid, mut ids) in wanted {
            ids.sort_unstable();
            ids.dedup();
            let Some(ct) = model.content_types.by_uid.get(uid) else {
                continue;
            };
            let columns = self.columns_of(client, &ct.table, stats).await?;
            let sql = format!(
                "SELECT {} FROM {} t WHERE id = ANY($1::int8[])",
                select_list(&columns),
                quote_ident(&ct.table)
            );
            let failed = |source| PopulateError::Rows {
                table: ct.table.clone(),
                source,
            };
            let statement = self.statement(client, sql, stats).await.map_err(failed)?;
            stats.queries += 1;
            let rows = client.query(&statement, &[&ids]).await.map_err(failed)?;
            stats.rows += rows.len() as u64;
            for row in rows {
                let (id, entry) = entry_of(&row, 0, &columns, ct, None);
                if let Some(id) = id {
                    fetched.insert((uid.to_owned(), id), Arc::new(entry));
                }
            }
        }
        for event in &mut events.events {
            if event.entry.is_none()
                && let Some(row) = event.row_id
            {
                event.entry = fetched
                    .get(&(event.key.uid.to_string(), row))
                    .map(Arc::clone);
            }
        }
        Ok(())
    }

    /// Populates every child of `level` into `nodes`, one query per child (per member type
    /// for dynamic zones), recursing into the populated rows.
    fn fill<'a>(
        &'a mut self,
        client: &'a Client,
        level: &'a Level,
        nodes: &'a mut [Node],
        stats: &'a mut PopulateStats,
    ) -> Pin<Box<dyn Future<Output = Result<(), PopulateError>> + Send + 'a>> {
        Box::pin(async move {
            if nodes.is_empty() {
                return Ok(());
            }
            let mut parents: Vec<(i64, bool)> = nodes.iter().map(|n| (n.id, n.published)).collect();
            parents.sort_unstable();
            parents.dedup();
            for child in &level.children {
                let targets: Vec<&Level> = child.kind.targets();
                // Per parent: (order, link id, rendered value) of each populated row.
                let mut values: HashMap<RowKey, Vec<(Place, Value)>> = HashMap::new();
                for target in targets {
                    let fetched = self
                        .query_child(
                            client,
                            level,
                            &child.kind,
                            &child.attribute,
                            target,
                            &parents,
                            stats,
                        )
                        .await?;
                    // Populate below this level once per distinct row.
                    let mut unique: Vec<Node> = Vec::new();
                    let mut position: HashMap<(i64, bool), usize> = HashMap::new();
                    for f in &fetched {
                        position
                            .entry((f.node.id, f.node.published))
                            .or_insert_with(|| {
                                unique.push(f.node.clone());
                                unique.len() - 1
                            });
                    }
                    self.fill(client, target, &mut unique, stats).await?;
                    let is_zone = matches!(child.kind, ChildKind::DynamicZone { .. });
                    for f in fetched {
                        let mut entry = unique[position[&(f.node.id, f.node.published)]]
                            .entry
                            .clone();
                        if is_zone {
                            entry.insert(
                                "__component".to_owned(),
                                Value::String(target.model.uid.clone()),
                            );
                        }
                        values
                            .entry(f.parent)
                            .or_default()
                            .push((f.order, Value::Object(entry)));
                    }
                }
                for node in nodes.iter_mut() {
                    let mut items = values
                        .remove(&(node.id, node.published))
                        .unwrap_or_default();
                    items.sort_by(|a, b| a.0.0.total_cmp(&b.0.0).then(a.0.1.cmp(&b.0.1)));
                    let mut items = items.into_iter().map(|(_, v)| v);
                    let value = match &child.kind {
                        ChildKind::Relation { many: false, .. }
                        | ChildKind::Media {
                            multiple: false, ..
                        }
                        | ChildKind::Component {
                            repeatable: false, ..
                        } => items.next().unwrap_or(Value::Null),
                        _ => Value::Array(items.collect()),
                    };
                    // Parents of several rows (a row seen twice) share the rendering.
                    node.entry.insert(child.attribute.clone(), value);
                }
            }
            Ok(())
        })
    }

    /// Runs the query of one child attribute (one dynamic-zone member type) for `parents`.
    #[allow(clippy::too_many_arguments)]
    async fn query_child(
        &mut self,
        client: &Client,
        level: &Level,
        kind: &ChildKind,
        attribute: &str,
        target: &Level,
        parents: &[(i64, bool)],
        stats: &mut PopulateStats,
    ) -> Result<Vec<Fetched>, PopulateError> {
        let table = &target.model.table;
        let columns = self.columns_of(client, table, stats).await?;
        let select = select_list(&columns);
        let from = "unnest($1::int8[], $2::bool[]) AS r(id, pub)";
        let view_filter = if target.model.draft_and_publish {
            " AND (t.published_at IS NOT NULL) = r.pub"
        } else {
            ""
        };
        let target_table = quote_ident(table);
        let (sql, with_names) = match kind {
            ChildKind::Relation { link, .. } => {
                let order = link
                    .order_column
                    .as_ref()
                    .map_or("NULL".to_owned(), |c| format!("l.{}", quote_ident(c)));
                (
                    format!(
                        "SELECT r.id, r.pub, {order}::float8, l.id::int8, {select} FROM {from} \
                         JOIN {link_table} l ON l.{parent} = r.id \
                         JOIN {target_table} t ON t.id = l.{child}{view_filter} \
                         ORDER BY 1, 2, 3, 4",
                        link_table = quote_ident(&link.table),
                        parent = quote_ident(&link.parent_column),
                        child = quote_ident(&link.child_column),
                    ),
                    false,
                )
            }
            ChildKind::Localizations { .. } => (
                format!(
                    "SELECT r.id, r.pub, NULL::float8, t.id::int8, {select} FROM {from} \
                     JOIN {target_table} p ON p.id = r.id \
                     JOIN {target_table} t ON t.document_id = p.document_id AND t.id <> p.id \
                      AND t.locale IS DISTINCT FROM p.locale{view_filter} \
                     ORDER BY 1, 2, 4"
                ),
                false,
            ),
            ChildKind::Media { .. } => (
                format!(
                    "SELECT r.id, r.pub, m.\"order\"::float8, m.id::int8, {select} FROM {from} \
                     JOIN {media} m ON m.related_id = r.id AND m.related_type = $3 AND m.field = $4 \
                     JOIN {target_table} t ON t.id = m.file_id \
                     ORDER BY 1, 2, 3, 4",
                    media = quote_ident(crate::strapi::catalog::MEDIA_LINK_TABLE),
                ),
                true,
            ),
            ChildKind::Component { .. } | ChildKind::DynamicZone { .. } => (
                format!(
                    "SELECT r.id, r.pub, c.\"order\"::float8, c.id::int8, {select} FROM {from} \
                     JOIN {cmps} c ON c.entity_id = r.id AND c.component_type = $3 AND c.field = $4 \
                     JOIN {target_table} t ON t.id = c.cmp_id \
                     ORDER BY 1, 2, 3, 4",
                    cmps = quote_ident(&naming::component_join_table_name(&level.model.table)),
                ),
                true,
            ),
        };
        let failed = |source| PopulateError::Populate {
            uid: level.model.uid.clone(),
            attribute: attribute.to_owned(),
            source,
        };
        let statement = self.statement(client, sql, stats).await.map_err(failed)?;
        let ids: Vec<i64> = parents.iter().map(|p| p.0).collect();
        let published: Vec<bool> = parents.iter().map(|p| p.1).collect();
        // Media rows name their owner's uid; component rows the component's.
        let owner_or_component: &str = match kind {
            ChildKind::Media { .. } => &level.model.uid,
            _ => &target.model.uid,
        };
        stats.queries += 1;
        let rows = if with_names {
            client
                .query(
                    &statement,
                    &[&ids, &published, &owner_or_component, &attribute],
                )
                .await
        } else {
            client.query(&statement, &[&ids, &published]).await
        }
        .map_err(failed)?;
        stats.rows += rows.len() as u64;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let parent: i64 = row.get(0);
                let published: bool = row.get(1);
                let order: Option<f64> = row.get(2);
                let link_id: Option<i64> = row.get(3);
                let (id, entry) =
                    entry_of(row, LEAD_COLUMNS, &columns, &target.model, Some(target));
                Some(Fetched {
                    parent: (parent, published),
                    order: (order.unwrap_or(f64::MAX), link_id.unwrap_or_default()),
                    node: Node {
                        id: id?,
                        published,
                        entry,
                    },
                })
            })
            .collect())
    }
}

/// `t."col"::text, …` over every column of a table.
fn select_list(columns: &[(String, u32)]) -> String {
    columns
        .iter()
        .map(|(name, _)| format!("t.{}::text", quote_ident(name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The row's id and its entry: the public columns (from column `first` on), as Strapi's REST
/// API names and shows them, limited to the level's `fields`.
fn entry_of(
    row: &tokio_postgres::Row,
    first: usize,
    columns: &[(String, u32)],
    model: &ContentType,
    level: Option<&Level>,
) -> (Option<i64>, Entry) {
    let mut entry = Entry::new();
    let mut id = None;
    for (i, (name, oid)) in columns.iter().enumerate() {
        let text: Option<String> = row.get(first + i);
        if name == "id" {
            id = text.as_deref().and_then(|t| t.parse::<i64>().ok());
        }
        let Some(key) = model.public_key_of(name) else {
            continue;
        };
        if level.is_some_and(|l| !l.shows_field(key)) {
            continue;
        }
        let value = match text.as_deref() {
            // `bool::text` says `true`/`false`, the WAL's text form `t`/`f`.
            Some("true") if *oid == BOOL_OID => Value::Bool(true),
            Some("false") if *oid == BOOL_OID => Value::Bool(false),
            Some(t) => decode_text(*oid, t),
            None => Value::Null,
        };
        entry.insert(key.to_owned(), value);
    }
    (id, entry)
}

/// The type OID of `boolean`.
const BOOL_OID: u32 = 16;
