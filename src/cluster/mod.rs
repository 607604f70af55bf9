//! Several walcast nodes on one slot, through Redis (spec §6): what they share.
//!
//! One node leads (it holds the slot, [`crate::leader`]); every node serves sockets. With
//! `redis.url`:
//! - the Socket.IO server runs on socketioxide's Redis adapter (RESP3, key prefix
//!   `redis.prefix`), so room broadcasts (custom events, presence updates, private messages)
//!   and socket operations reach the sockets of every node;
//! - the leader publishes every routed delivery to a Redis stream ([`DeliveryFeed`]), the
//!   cluster's shared replay buffer, bounded like the replay log; every other node follows
//!   it, keeps its own replay log in step (so a client resumes by offset on any node) and
//!   emits to its own sockets with the same per-socket checks as the leader — permission,
//!   catch-up, slow consumers;
//! - admin session tokens and handshake failure counters live in Redis ([`SharedState`]),
//!   so a token issued by one node is accepted by another and a lockout holds on all.

pub mod feed;
pub mod shared;

pub use feed::DeliveryFeed;
pub use shared::SharedState;

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach Redis at redis.url")]
    Connect(#[source] redis::RedisError),
    #[error("a Redis command failed")]
    Command(#[from] redis::RedisError),
    #[error("a delivery in the cluster stream is damaged (entry {0})")]
    Damaged(String),
    #[error(transparent)]
    ReplayLog(#[from] crate::deliver::ReplayLogError),
}

/// How long one Redis command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The Redis side of a cluster: a client and the key prefix of this slot's cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    client: redis::Client,
    prefix: String,
}

impl Cluster {
    /// A cluster on `url` (RESP3 is required by the adapter) under `prefix`.
    pub fn new(url: &str, prefix: &str) -> Result<Self, ClusterError> {
        let client = redis::Client::open(url).map_err(ClusterError::Connect)?;
        Ok(Cluster {
            client,
            prefix: prefix.to_owned(),
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The key prefix every walcast key of this cluster starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A key of this cluster.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// A new multiplexed connection; `blocking` ones have no response timeout (for `XREAD
    /// BLOCK`), the others fail a command after [`COMMAND_TIMEOUT`].
    pub async fn connection(&self, blocking: bool) -> Result<MultiplexedConnection, ClusterError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(if blocking {
                None
            } else {
                Some(COMMAND_TIMEOUT)
            });
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(ClusterError::Connect)
    }
}
