//! A bare decode-only client on walcast's public `ReplicationStream`, for `make bench`
//! (bench/run.py): streams SLOT until the first commit past END_LSN, counts the row changes,
//! and prints `rows <n> seconds <s> rows_per_s <r>`. No assembly, fold, populate or route.
//!
//!   decode_only DATABASE_URL SLOT PUBLICATION END_LSN

use std::time::Instant;

use anyhow::bail;
use walcast::config::{Config, Secret};
use walcast::replication::{Lsn, ReplicationEvent};

mod support;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, slot, publication, end] = args.as_slice() else {
        bail!("usage: decode_only DATABASE_URL SLOT PUBLICATION END_LSN");
    };
    let end: Lsn = end.parse().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let mut config = Config::default();
    config.database.url = Secret::new(url.clone());
    config.replication.slot = slot.clone();
    config.replication.publication = publication.clone();
    let mut streaming = support::start(&config, "walcast bench decode_only");
    let mut rows = 0u64;
    while let Some(event) = streaming.events.recv().await {
        match event {
            ReplicationEvent::Change { .. } => rows += 1,
            ReplicationEvent::Commit { end_lsn, .. }
            | ReplicationEvent::StreamCommit { end_lsn, .. } => {
                streaming.handed_off.send_replace(end_lsn);
                if end_lsn > end {
                    break;
                }
            }
            _ => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    streaming.stop().await?;
    println!(
        "rows {rows} seconds {seconds:.3} rows_per_s {:.0}",
        rows as f64 / seconds
    );
    Ok(())
}
