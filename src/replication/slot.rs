//! Setup of what replication needs: the publication and the slot, from `migrations/`.
//!
//! Idempotent: each step checks the current state first and reports what it changed, so
//! `walcast setup` can run on every deploy. Runs on an ordinary (tokio-postgres) connection.

use tokio_postgres::Client;

/// The SQL templates `walcast setup` applies, in order.
pub const CREATE_PUBLICATION: &str = include_str!("../../migrations/0001_create_publication.sql");
pub const SET_PUBLICATION_TABLES: &str =
    include_str!("../../migrations/0002_publication_tables.sql");
pub const CREATE_SLOT: &str = include_str!("../../migrations/0003_create_slot.sql");
pub const REPLICA_IDENTITY_FULL: &str =
    include_str!("../../migrations/0004_replica_identity_full.sql");
pub const DROP_SLOT: &str = include_str!("../../migrations/teardown/0001_drop_slot.sql");
pub const DROP_PUBLICATION: &str =
    include_str!("../../migrations/teardown/0002_drop_publication.sql");
pub const REPLICA_IDENTITY_DEFAULT: &str =
    include_str!("../../migrations/teardown/0003_replica_identity_default.sql");

/// Why setup failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "the replication slot {slot} is in use: stop every walcast consuming it, then run teardown again"
    )]
    SlotActive { slot: String },
    #[error("{step}")]
    Sql {
        step: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("no table to publish: is this Strapi's database? (none of the watched tables exist)")]
    NothingToPublish,
}

fn sql_error(step: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SetupError {
    let step = step.into();
    move |source| SetupError::Sql { step, source }
}

/// Quotes an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Fills a migration template (placeholders `{publication}`, `{tables}`, `{slot}`).
fn render(template: &str, publication: &str, tables: &[String], slot: &str) -> String {
    let tables = tables
        .iter()
        .map(|t| format!("public.{}", quote_ident(t)))
        .collect::<Vec<_>>()
        .join(", ");
    template
        .replace("{publication}", &quote_ident(publication))
        .replace("{tables}", &tables)
        .replace("{slot}", &slot.replace('\'', "''"))
}

/// Of `wanted`, the tables that exist in the `public` schema, sorted.
pub async fn existing_tables(client: &Client, wanted: &[&str]) -> Result<Vec<String>, SetupError> {
    let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
    let rows = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY($1) ORDER BY 1",
            &[&wanted],
        )
        .await
        .map_err(sql_error("listing tables"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The tables a publication currently covers, sorted.
pub async fn publication_tables(
    client: &Client,
    publication: &str,
) -> Result<Option<Vec<String>>, SetupError> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(sql_error("reading pg_publication"))?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'public' ORDER BY 1",
            &[&publication],
        )
        .await
        .map_err(sql_error("reading pg_publication_tables"))?;
    Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
}

/// Creates the publication, or aligns its table list. Returns what it did.
pub async fn ensure_publication(
    client: &Client,
    publication: &str,
    tables: &[String],
) -> Result<Option<String>, SetupError> {
    if tables.is_empty() {
        return Err(SetupError::NothingToPublish);
    }
    match publication_tables(client, publication).await? {
        None => {
            let sql = render(CREATE_PUBLICATION, publication, tables, "");
            client
                .batch_execute(&sql)
                .await
                .map_err(sql_error(format!("creating publication {publication}")))?;
            Ok(Some(format!(
                "created publication {publication} over {} tables",
                tables.len()
            )))
        }
        Some(current) if current == tables => Ok(None),
        Some(current) => {
            let sql = render(SET_PUBLICATION_TABLES, publication, tables, "");
            client
                .batch_execute(&sql)
                .await
                .map_err(sql_error(format!("updating publication {publication}")))?;
            let added: Vec<&String> = tables.iter().filter(|t| !current.contains(t)).collect();
            let removed: Vec<&String> = current.iter().filter(|t| !tables.contains(t)).collect();
            Ok(Some(format!(
                "updated publication {publication}: added {added:?}, removed {removed:?}"
            )))
        }
    }
}

/// Replica identity of each table (`d`, `f`, `n`, `i`), by name.
pub async fn replica_identities(
    client: &Client,
    tables: &[String],
) -> Result<Vec<(String, char)>, SetupError> {
    let rows = client
        .query(
            "SELECT c.relname::text, c.relreplident::text FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relname = ANY($1) ORDER BY 1",
            &[&tables],
        )
        .await
        .map_err(sql_error("reading replica identities"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let ident: String = r.get(1);
            (r.get(0), ident.chars().next().unwrap_or('d'))
        })
        .collect())
}

/// Sets `REPLICA IDENTITY FULL` on each of `tables` that lacks it. Returns what it did.
pub async fn ensure_replica_identity_full(
    client: &Client,
    tables: &[String],
) -> Result<Vec<String>, SetupError> {
    let mut changes = Vec::new();
    for (table, ident) in replica_identities(client, tables).await? {
        if ident == 'f' {
            continue;
        }
        let sql =
            REPLICA_IDENTITY_FULL.replace("{table}", &format!("public.{}", quote_ident(&table)));
        client.batch_execute(&sql).await.map_err(sql_error(format!(
            "setting REPLICA IDENTITY FULL on {table}"
        )))?;
        changes.push(format!(
            "set REPLICA IDENTITY FULL on {table} (was {ident})"
        ));
    }
    Ok(changes)
}

/// Removes what setup made: the slot (refused while a walcast consumes it), the publication,
/// and `REPLICA IDENTITY FULL` on `tables`. Idempotent; returns what it did.
pub async fn teardown(
    client: &Client,
    slot: &str,
    publication: &str,
    tables: &[String],
) -> Result<Vec<String>, SetupError> {
    let mut changes = Vec::new();
    if let Some(lag) = slot_lag(client, slot).await? {
        if lag.active {
            return Err(SetupError::SlotActive {
                slot: slot.to_owned(),
            });
        }
        client
            .batch_execute(&render(DROP_SLOT, "", &[], slot))
            .await
            .map_err(sql_error(format!("dropping replication slot {slot}")))?;
        changes.push(format!("dropped replication slot {slot}"));
    }
    if publication_tables(client, publication).await?.is_some() {
        client
            .batch_execute(&render(DROP_PUBLICATION, publication, &[], ""))
            .await
            .map_err(sql_error(format!("dropping publication {publication}")))?;
        changes.push(format!("dropped publication {publication}"));
    }
    for (table, ident) in replica_identities(client, tables).await? {
        if ident != 'f' {
            continue;
        }
        let sql =
            REPLICA_IDENTITY_DEFAULT.replace("{table}", &format!("public.{}", quote_ident(&table)));
        client.batch_execute(&sql).await.map_err(sql_error(format!(
            "resetting the replica identity of {table}"
        )))?;
        changes.push(format!("set REPLICA IDENTITY DEFAULT on {table} (was f)"));
    }
    Ok(changes)
}

/// Whether the slot exists in the current database.
pub async fn slot_exists(client: &Client, slot: &str) -> Result<bool, SetupError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
            &[&slot],
        )
        .await
        .map_err(sql_error("reading pg_replication_slots"))?
        .is_some())
}

/// Creates the logical slot if it is missing. Returns what it did.
pub async fn ensure_slot(client: &Client, slot: &str) -> Result<Option<String>, SetupError> {
    if slot_exists(client, slot).await? {
        return Ok(None);
    }
    let sql = render(CREATE_SLOT, "", &[], slot);
    client
        .batch_execute(&sql)
        .await
        .map_err(sql_error(format!("creating replication slot {slot}")))?;
    Ok(Some(format!(
        "created logical replication slot {slot} (pgoutput)"
    )))
}

/// How far a slot is behind the server's current WAL position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLag {
    /// Whether a walsender is consuming the slot.
    pub active: bool,
    /// Bytes between the current position and the slot's confirmed flush LSN.
    pub confirmed_bytes: u64,
    /// Bytes of WAL the slot keeps on the server (from its restart LSN).
    pub retained_bytes: u64,
}

/// The lag of `slot` in the current database, if it exists. One query.
pub async fn slot_lag(client: &Client, slot: &str) -> Result<Option<SlotLag>, SetupError> {
    let row = client
        .query_opt(
            "SELECT active,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
               FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
            &[&slot],
        )
        .await
        .map_err(sql_error("reading pg_replication_slots"))?;
    let bytes = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    Ok(row.map(|row| SlotLag {
        active: row.get(0),
        confirmed_bytes: bytes(row.get(1)),
        retained_bytes: bytes(row.get(2)),
    }))
}

/// Whether a slot retains more WAL than `replication.lag_budget_bytes`, remembered between
/// probes so that the warning is logged once per crossing rather than on every probe. The
/// slot counts as back within budget below 90% of it, so a lag hovering at the budget does
/// not warn again and again.
#[derive(Debug, Clone)]
pub struct LagBudget {
    budget_bytes: u64,
    over: bool,
}

/// A change of side of the lag budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetCrossing {
    /// The lag went over the budget.
    Exceeded,
    /// The lag came back under 90% of the budget.
    Recovered,
}

impl LagBudget {
    pub fn new(budget_bytes: u64) -> Self {
        LagBudget {
            budget_bytes,
            over: false,
        }
    }

    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// Whether the last measurement left the slot over budget.
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// Records one measurement; returns the crossing it made, if any.
    pub fn observe(&mut self, lag_bytes: u64) -> Option<BudgetCrossing> {
        if !self.over && lag_bytes > self.budget_bytes {
            self.over = true;
            Some(BudgetCrossing::Exceeded)
        } else if self.over && lag_bytes < self.budget_bytes / 10 * 9 {
            self.over = false;
            Some(BudgetCrossing::Recovered)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_budget_reports_each_crossing_once() {
        let mut budget = LagBudget::new(1000);
        assert_eq!(budget.observe(10), None);
        assert_eq!(budget.observe(1000), None, "at the budget is within it");
        assert!(!budget.is_over());
        assert_eq!(budget.observe(1001), Some(BudgetCrossing::Exceeded));
        assert!(budget.is_over());
        // Still over, or only a little under: no new report.
        assert_eq!(budget.observe(5000), None);
        assert_eq!(budget.observe(950), None);
        assert!(budget.is_over());
        assert_eq!(budget.observe(899), Some(BudgetCrossing::Recovered));
        assert!(!budget.is_over());
        assert_eq!(budget.observe(899), None);
        assert_eq!(budget.observe(2000), Some(BudgetCrossing::Exceeded));
        // A budget of 0 bytes: any lag is over, none is back under.
        let mut zero = LagBudget::new(0);
        assert_eq!(zero.observe(0), None);
        assert_eq!(zero.observe(1), Some(BudgetCrossing::Exceeded));
        assert_eq!(zero.observe(0), None);
    }

    #[test]
    fn templates_render_quoted_identifiers() {
        let sql = render(
            CREATE_PUBLICATION,
            "walcast",
            &["articles".into(), "up_roles".into()],
            "",
        );
        assert!(sql.contains(
            r#"CREATE PUBLICATION "walcast" FOR TABLE public."articles", public."up_roles";"#
        ));
        let sql = render(CREATE_SLOT, "", &[], "walcast");
        assert!(sql.contains("pg_create_logical_replication_slot('walcast', 'pgoutput')"));
    }
}
