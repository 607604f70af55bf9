//! walcast's full path without sockets, for `make bench` (bench/run.py).
//!
//!   drain prepare DATABASE_URL PUBLICATION
//!       creates the publication over walcast's watched tables (and REPLICA IDENTITY FULL).
//!   drain run DATABASE_URL SLOT PUBLICATION
//!       loads the Strapi model, permissions and document index snapshot, prints `ready`,
//!       waits for a line `go <end_lsn>` on stdin, then streams the slot through the real
//!       stages (transaction buffer, fold, populate, route) until the first commit past
//!       `end_lsn` and prints `rows <n> seconds <s> rows_per_s <r> events <e> deliveries <d> …`.
//!
//! The clock starts at `go`: connecting and START_REPLICATION are inside it, the snapshot is not.

use std::io::BufRead;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use walcast::assemble::{Assembled, TransactionBuffer, fold_transaction, snapshot};
use walcast::config::{Config, Secret};
use walcast::populate::Populator;
use walcast::populate::plan::PayloadPlans;
use walcast::replication::{Lsn, slot};
use walcast::route::{PermissionModel, Router};
use walcast::service::{connect_sql, populate_settings};
use walcast::strapi::StrapiModel;

mod support;

// The service's allocator, so that the peak resident set is the service's.
walcast::service_allocator!();

fn config(url: &str, slot: &str, publication: &str) -> Config {
    let mut config = Config::default();
    config.database.url = Secret::new(url.to_owned());
    config.replication.slot = slot.to_owned();
    config.replication.publication = publication.to_owned();
    config
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["prepare", url, publication] => prepare(&config(url, "unused", publication)).await,
        ["run", url, slot, publication] => run(config(url, slot, publication)).await,
        _ => bail!("usage: drain prepare URL PUBLICATION | drain run URL SLOT PUBLICATION"),
    }
}

async fn prepare(config: &Config) -> anyhow::Result<()> {
    let client = connect_sql(config).await?;
    let model = StrapiModel::load_for(&client, &config.strapi).await?;
    let tables = slot::existing_tables(&client, &model.catalog.watched_tables()).await?;
    slot::ensure_publication(&client, &config.replication.publication, &tables).await?;
    let content = slot::existing_tables(&client, &model.catalog.content_tables()).await?;
    slot::ensure_replica_identity_full(&client, &content).await?;
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    let client = connect_sql(&config).await?;
    let model = StrapiModel::load_for(&client, &config.strapi)
        .await
        .context("reading the Strapi schema")?;
    let mut index = snapshot::load(&client, &model.catalog).await?;
    let permissions = PermissionModel::load(&client, &config.events.draft_roles).await?;
    let populate = populate_settings(&config);
    let plans = Arc::new(PayloadPlans::build(&model, &populate));
    let mut router = Router::new(&config, permissions);
    router.set_plans(Arc::clone(&plans));
    let mut populator = Populator::default();

    // As the service does: the snapshot's rows and query buffers were transient.
    walcast::memory::release_free_memory();
    support::memory("after the snapshot");
    println!("ready");
    let end: Lsn = tokio::task::spawn_blocking(|| -> anyhow::Result<Lsn> {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let lsn = line
            .trim()
            .strip_prefix("go ")
            .context("expected `go <end_lsn>`")?;
        lsn.parse().map_err(anyhow::Error::msg)
    })
    .await??;
    let started = Instant::now();

    let mut streaming = support::start(&config, "walcast bench drain");

    let mut buffer = TransactionBuffer::new(
        config.replication.max_buffered_changes,
        config.replication.spill_dir.clone(),
    );
    let window = buffer.max_in_memory();
    let (mut rows, mut events_out, mut deliveries, mut queries) = (0u64, 0u64, 0u64, 0u64);
    let mut received = 0u64;
    'events: while let Some(event) = streaming.events.recv().await {
        received += 1;
        if received.is_multiple_of(250_000) {
            support::memory(&format!("{received} events received"));
        }
        if let Some(Assembled::Transaction(tx)) = buffer.push(event)? {
            if tx.is_spilled() {
                support::memory("spilled transaction committed");
            }
            let end_lsn = tx.end_lsn;
            let spilled = tx.is_spilled();
            for (n, batch) in tx.batches(window).enumerate() {
                let batch = batch?;
                if n % 20 == 1 {
                    support::memory(&format!("window {n}"));
                }
                rows += batch.changes.len() as u64;
                let mut events = fold_transaction(&model, &populate, &mut index, &batch);
                if n == 1 {
                    support::memory("window 1 folded");
                }
                let stats = populator
                    .run(&client, &model, &plans, &mut events)
                    .await
                    .unwrap_or_default();
                queries += u64::from(stats.queries);
                events_out += events.events.len() as u64;
                let routed = router.route(&events, &model);
                if n == 1 {
                    support::memory("window 1 routed");
                }
                deliveries += routed.len() as u64;
                drop((events, routed));
                if spilled {
                    // As the service does between the windows of a spilled transaction.
                    walcast::memory::release_free_memory();
                }
            }
            streaming.handed_off.send_replace(end_lsn);
            if end_lsn > end {
                break 'events;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    support::memory("at the end");
    streaming.stop().await.context("replication")?;
    println!(
        "rows {rows} seconds {seconds:.3} rows_per_s {:.0} events {events_out} deliveries {deliveries} populate_queries {queries}",
        rows as f64 / seconds
    );
    Ok(())
}
