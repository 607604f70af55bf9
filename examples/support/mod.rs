//! What the bench examples share: a replication stream over one slot, run on its own task.

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use walcast::config::Config;
use walcast::replication::{
    ConnectParams, Lsn, ReplicationError, ReplicationEvent, ReplicationStream,
};

/// A running stream: its events, the handed-off LSN it confirms, and how to stop it.
pub struct Streaming {
    pub events: mpsc::Receiver<ReplicationEvent>,
    pub handed_off: watch::Sender<Lsn>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), ReplicationError>>,
}

/// Starts streaming `config`'s slot and publication.
pub fn start(config: &Config, application_name: &str) -> Streaming {
    let mut params = ConnectParams::from_config(&config.postgres()).with_tls(config.tls());
    params.application_name = application_name.into();
    let stream = ReplicationStream {
        params,
        slot: config.replication.slot.clone(),
        publication: config.replication.publication.clone(),
        status_interval: std::time::Duration::from_secs(10),
    };
    let (events_tx, events) = mpsc::channel(4096);
    let (handed_off, handed_off_rx) = watch::channel(Lsn(0));
    let shutdown = CancellationToken::new();
    let task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { stream.run(events_tx, handed_off_rx, shutdown).await })
    };
    Streaming {
        events,
        handed_off,
        shutdown,
        task,
    }
}

impl Streaming {
    /// Stops the stream (it confirms what was handed off) and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        drop(self.events);
        self.task.await??;
        Ok(())
    }
}

/// With `WALCAST_BENCH_MEMORY` set, prints one line to stderr: the process's resident set
/// now and at its peak (`/proc/self/status`).
#[allow(dead_code)] // decode_only does not report memory
pub fn memory(label: &str) {
    if std::env::var_os("WALCAST_BENCH_MEMORY").is_none() {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mb = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    eprintln!(
        "memory {label}: rss {:.1} MB hwm {:.1} MB",
        mb("VmRSS:"),
        mb("VmHWM:")
    );
}
