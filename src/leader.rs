//! Leader election: exactly one walcast node consumes the slot.
//!
//! The leader holds a session-level advisory lock, keyed by the slot name, on a connection of
//! its own. The others follow: they serve their sockets and try the lock again every
//! [`RETRY`]. When the leader dies its connection goes and Postgres releases the lock, so a
//! follower takes over within about a second and resumes from the slot. A leader whose lock
//! connection breaks stops consuming at once (it can no longer prove it leads).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;

/// How often a follower tries to take the lead, and a leader checks its lock connection.
pub const RETRY: Duration = Duration::from_secs(1);
/// How long a leader whose lock connection broke keeps trying to take the lock again.
pub const REGAIN: Duration = Duration::from_secs(60);

/// The advisory-lock key of a slot: the first 8 bytes of SHA-256("walcast:" + slot).
pub fn lock_key(slot: &str) -> i64 {
    let digest = Sha256::digest(format!("walcast:{slot}").as_bytes());
    i64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

/// The lock, held on its own connection for as long as this value lives.
pub struct Leadership {
    client: tokio_postgres::Client,
    pub since: Instant,
}

impl Leadership {
    /// Waits until this node holds the lock (or `shutdown`, then `None`). Connection errors
    /// are logged and retried: a follower keeps following. `following` is set while another
    /// node holds the lock.
    pub async fn acquire(
        config: &Config,
        shutdown: &CancellationToken,
        following: &AtomicBool,
    ) -> Option<Leadership> {
        let key = lock_key(&config.replication.slot);
        let mut announced = false;
        let waited = Instant::now();
        loop {
            match try_lock(config, key).await {
                Ok(Some(client)) => {
                    following.store(false, Ordering::Relaxed);
                    let followed = announced;
                    info!(
                        slot = %config.replication.slot,
                        waited_ms = waited.elapsed().as_millis() as u64,
                        "leading: this node consumes the slot"
                    );
                    crate::metrics::LEADER.set(1);
                    crate::metrics::LEADER_SINCE.set(
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_secs() as i64)
                            .unwrap_or(0),
                    );
                    if followed {
                        crate::metrics::LEADER_TAKEOVERS.inc();
                    }
                    return Some(Leadership {
                        client,
                        since: Instant::now(),
                    });
                }
                Ok(None) => {
                    following.store(true, Ordering::Relaxed);
                    if !announced {
                        info!(slot = %config.replication.slot, "following: another walcast consumes the slot; taking over when it stops");
                        announced = true;
                    }
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "leader election: cannot reach Postgres; retrying")
                }
            }
            crate::metrics::LEADER.set(0);
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// Resolves when this node no longer leads. A broken lock connection (Postgres
    /// restarted, network lost) is not yet a loss: the lock is taken again on a new
    /// connection, unless another node took it meanwhile or Postgres stays unreachable for
    /// [`REGAIN`].
    pub async fn lost(mut self, config: &Config) {
        let key = lock_key(&config.replication.slot);
        loop {
            tokio::time::sleep(RETRY).await;
            if !self.client.is_closed() && self.client.simple_query("SELECT 1").await.is_ok() {
                continue;
            }
            warn!("leader lock connection lost; taking the lock again");
            let deadline = Instant::now() + REGAIN;
            loop {
                match try_lock(config, key).await {
                    Ok(Some(client)) => {
                        info!("leader lock taken again");
                        self.client = client;
                        break;
                    }
                    Ok(None) => {
                        warn!("another walcast took the lead meanwhile");
                        crate::metrics::LEADER.set(0);
                        return;
                    }
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!(error = %format!("{e:#}"), "leader lock: Postgres not reachable yet");
                        tokio::time::sleep(RETRY).await;
                    }
                    Err(_) => {
                        crate::metrics::LEADER.set(0);
                        return;
                    }
                }
            }
        }
    }
}

/// One attempt: a new connection that keeps the lock, or `None` when another node holds it.
async fn try_lock(config: &Config, key: i64) -> anyhow::Result<Option<tokio_postgres::Client>> {
    let client = crate::service::connect_sql(config).await?;
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await?;
    Ok(row.get::<_, bool>(0).then_some(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_depends_on_the_slot_only() {
        assert_eq!(lock_key("walcast"), lock_key("walcast"));
        assert_ne!(lock_key("walcast"), lock_key("walcast_2"));
    }
}
