//! Completes a transaction's events through SQL before they are routed.
//!
//! The WAL carries the rows a transaction wrote, not the ones it only affected: an entry
//! whose relation changed without its own row being rewritten, or whose unchanged TOAST value
//! the default replica identity left out, is read from its table here — one query per table
//! per transaction, never one per event, with the column list prepared once per table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio_postgres::Client;

use crate::assemble::TransactionEvents;
use crate::assemble::event::Entry;
use crate::replication::value::decode_text;
use crate::strapi::StrapiModel;

/// Column names and type OIDs of each table, learned once.
#[derive(Debug, Default)]
pub struct EntryFetcher {
    columns: HashMap<String, Arc<Vec<(String, u32)>>>,
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl EntryFetcher {
    /// Forgets the column lists (after Strapi changed its schema).
    pub fn clear(&mut self) {
        self.columns.clear();
    }

    async fn columns_of(
        &mut self,
        client: &Client,
        table: &str,
    ) -> Result<Arc<Vec<(String, u32)>>, tokio_postgres::Error> {
        if let Some(c) = self.columns.get(table) {
            return Ok(Arc::clone(c));
        }
        let statement = client
            .prepare(&format!("SELECT * FROM {} LIMIT 0", quote_ident(table)))
            .await?;
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

    /// Fills `entry` of every non-delete event that lacks one. Rows gone since stay without
    /// an entry (the payload then names only the document).
    pub async fn complete(
        &mut self,
        client: &Client,
        model: &StrapiModel,
        events: &mut TransactionEvents,
    ) -> Result<(), tokio_postgres::Error> {
        let mut wanted: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for event in &events.events {
            if event.entry.is_none()
                && let Some(row) = event.row_id
                && let Some(ct) = model.content_types.by_uid.get(&*event.key.uid)
            {
                wanted.entry(ct.table.as_str()).or_default().push(row);
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let mut fetched: HashMap<(String, i64), Arc<Entry>> = HashMap::new();
        for (table, mut ids) in wanted {
            ids.sort_unstable();
            ids.dedup();
            let Some(ct) = model
                .content_types
                .by_uid
                .values()
                .find(|ct| ct.table == table)
            else {
                continue;
            };
            let columns = self.columns_of(client, table).await?;
            let select: Vec<String> = columns
                .iter()
                .map(|(name, _)| format!("{}::text", quote_ident(name)))
                .collect();
            let sql = format!(
                "SELECT {} FROM {} WHERE id = ANY($1::bigint[])",
                select.join(", "),
                quote_ident(table)
            );
            for row in client.query(&sql, &[&ids]).await? {
                let mut entry = Entry::new();
                let mut id = None;
                for (i, (name, oid)) in columns.iter().enumerate() {
                    let text: Option<String> = row.get(i);
                    if name == "id" {
                        id = text.as_deref().and_then(|t| t.parse::<i64>().ok());
                    }
                    let Some(key) = ct.public_key_of(name) else {
                        continue;
                    };
                    let value = match text {
                        Some(t) => decode_text(*oid, &t),
                        None => serde_json::Value::Null,
                    };
                    entry.insert(key.to_owned(), value);
                }
                if let Some(id) = id {
                    fetched.insert((table.to_owned(), id), Arc::new(entry));
                }
            }
        }
        for event in &mut events.events {
            if event.entry.is_none()
                && let Some(row) = event.row_id
                && let Some(ct) = model.content_types.by_uid.get(&*event.key.uid)
            {
                event.entry = fetched.get(&(ct.table.clone(), row)).map(Arc::clone);
            }
        }
        Ok(())
    }
}
