//! Fills the [`DocumentIndex`] from a consistent snapshot of the attributed tables.
//!
//! One `REPEATABLE READ` transaction reads every main, link, `_cmps`, component and media-link
//! table (rows streamed, never all in memory) and notes the WAL position it saw. Prints a
//! progress line per table.

use std::time::Instant;

use futures_util::{StreamExt, pin_mut};
use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};
use tracing::info;

use super::index::{Cell, Column, DocumentIndex, RowSource};
use crate::replication::Lsn;
use crate::replication::slot::quote_ident;
use crate::strapi::{Catalog, TableRole};

/// A snapshot row with its table's column types (by position; 0 = unknown).
struct SnapshotRow<'a> {
    row: &'a SimpleQueryRow,
    types: &'a [u32],
}

impl RowSource for SnapshotRow<'_> {
    fn text(&self, column: &str) -> Option<&str> {
        self.row.try_get(column).ok().flatten()
    }
    fn cells(&self) -> Vec<Column<'_>> {
        self.row
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let cell = match self.row.get(i) {
                    None => Cell::Null,
                    Some(v) => Cell::Value(v.as_bytes()),
                };
                Column {
                    name: c.name(),
                    type_oid: self.types.get(i).copied().unwrap_or(0),
                    cell,
                }
            })
            .collect()
    }
}

/// Reads every attributed table into a new index. Tables that do not exist are skipped.
pub async fn load(
    client: &tokio_postgres::Client,
    catalog: &Catalog,
) -> Result<DocumentIndex, tokio_postgres::Error> {
    let started = Instant::now();
    let mut index = DocumentIndex::new(catalog);
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let result = async {
        let lsn: String = client
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await?
            .get(0);
        index.snapshot_lsn = lsn.parse().unwrap_or(Lsn(0));
        let existing: Vec<String> = client
            .query(
                "SELECT c.relname::text FROM pg_class c WHERE c.relkind IN ('r', 'p') AND c.relnamespace = current_schema()::regnamespace",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut tables: Vec<(&str, &TableRole)> = catalog
            .iter()
            .filter(|(t, r)| {
                !matches!(r, TableRole::Auth(_) | TableRole::CoreStore)
                    && existing.iter().any(|e| e == t)
            })
            .collect();
        tables.sort_by_key(|(t, _)| *t);
        for (table, role) in tables {
            // Column types, in the order of `SELECT *`.
            let type_by_name: Vec<(String, u32)> = client
                .query(
                    "SELECT attname::text, atttypid FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    &[&quote_ident(table)],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let mut types: Option<Vec<u32>> = None;
            let sql = format!("SELECT * FROM {}", quote_ident(table));
            let stream = client.simple_query_raw(&sql).await?;
            pin_mut!(stream);
            let mut rows = 0u64;
            while let Some(message) = stream.next().await {
                if let SimpleQueryMessage::Row(row) = message? {
                    let types = types.get_or_insert_with(|| {
                        row.columns()
                            .iter()
                            .map(|c| {
                                type_by_name
                                    .iter()
                                    .find(|(n, _)| n == c.name())
                                    .map_or(0, |(_, t)| *t)
                            })
                            .collect()
                    });
                    let row = SnapshotRow { row: &row, types };
                    match role {
                        TableRole::Link(link) => index.upsert_link(table, link, &row),
                        _ => index.upsert(table, &row),
                    }
                    rows += 1;
                }
            }
            info!(table, rows, "snapshot: table indexed");
        }
        Ok::<_, tokio_postgres::Error>(())
    }
    .await;
    let end = client.batch_execute("COMMIT").await;
    result?;
    end?;
    info!(
        rows = index.len(),
        lsn = %index.snapshot_lsn,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot: document index ready"
    );
    Ok(index)
}
