//! A bare decode-only client on walcast's public `ReplicationStream`, for `make bench`
//! (bench/run.py): streams SLOT until the first commit past END_LSN, counts the row changes,
//! and prints `rows <n> seconds <s> rows_per_s <r>`. No assembly, fold, populate or route.
//!
//!   decode_only DATABASE_URL SLOT PUBLICATION END_LSN

use std::time::Instant;

use anyhow::bail;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use walcast::config::{Config, Secret};
use walcast::replication::{ConnectParams, Lsn, ReplicationEvent, ReplicationStream};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, slot, publication, end] = args.as_slice() else {
        bail!("usage: decode_only DATABASE_URL SLOT PUBLICATION END_LSN");
    };
    let end: Lsn = end.parse().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let mut config = Config::default();
    config.database.url = Secret::new(url.clone());
    let mut params = ConnectParams::from_config(&config.postgres()).with_tls(config.tls());
    params.application_name = "walcast bench decode_only".into();
    let stream = ReplicationStream {
        params,
        slot: slot.clone(),
        publication: publication.clone(),
        status_interval: std::time::Duration::from_secs(10),
    };
    let (events_tx, mut events_rx) = mpsc::channel(4096);
    let (handed_off_tx, handed_off_rx) = watch::channel(Lsn(0));
    let shutdown = CancellationToken::new();
    let replication = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { stream.run(events_tx, handed_off_rx, shutdown).await })
    };
    let mut rows = 0u64;
    while let Some(event) = events_rx.recv().await {
        match event {
            ReplicationEvent::Change { .. } => rows += 1,
            ReplicationEvent::Commit { end_lsn, .. }
            | ReplicationEvent::StreamCommit { end_lsn, .. } => {
                handed_off_tx.send_replace(end_lsn);
                if end_lsn > end {
                    break;
                }
            }
            _ => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    shutdown.cancel();
    drop(events_rx);
    replication.await??;
    println!(
        "rows {rows} seconds {seconds:.3} rows_per_s {:.0}",
        rows as f64 / seconds
    );
    Ok(())
}
