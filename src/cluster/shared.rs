//! State the nodes of a cluster share in Redis: presence editors, admin session tokens and
//! failed-handshake counters. Plain operations on keys under the cluster's prefix; the
//! modules that own the rules ([`crate::gateway::presence`], [`crate::security`]) call them
//! and keep their local tables when there is no cluster.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::Value;

use super::{Cluster, ClusterError};

/// Uses a session token: `nil` when it is gone; else its owner fields, and deletes it once
/// its uses reach the limit. KEYS: token hash, sessions zset, the user's token set.
/// ARGV: max uses, token id.
const CONSUME: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local uses = redis.call('HINCRBY', KEYS[1], 'uses', 1)
local owner = redis.call('HMGET', KEYS[1], 'user', 'session')
if uses >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return owner
";

/// Redis-backed shared state of one cluster. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedState {
    cluster: Cluster,
    conn: std::sync::Arc<tokio::sync::Mutex<Option<MultiplexedConnection>>>,
}

fn now_ms() -> i64 {
    crate::route::permissions::now_ms()
}

impl SharedState {
    pub fn new(cluster: Cluster) -> Self {
        SharedState {
            cluster,
            conn: std::sync::Arc::default(),
        }
    }

    /// A connection (multiplexed: clones share it); reconnects after a failure.
    async fn conn(&self) -> Result<MultiplexedConnection, ClusterError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let c = self.cluster.connection(false).await?;
        *conn = Some(c.clone());
        Ok(c)
    }

    /// Runs `pipe`; a failed connection is dropped so that the next call reconnects.
    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, ClusterError> {
        let mut conn = self.conn().await?;
        match pipe.query_async(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    *self.conn.lock().await = None;
                }
                crate::metrics::CLUSTER_ERRORS.inc();
                Err(e.into())
            }
        }
    }

    // ---- presence -------------------------------------------------------------------------

    fn editors_key(&self, entity: &str) -> String {
        self.cluster.key(&format!("presence:{entity}"))
    }

    fn seen_key(&self, entity: &str) -> String {
        self.cluster.key(&format!("presence-seen:{entity}"))
    }

    /// Records `editor` (`{socketId, user, joinedAt}`) as editing `entity`, seen now. The
    /// keys expire `keep` after the last write, so a node that dies leaves nothing for good.
    pub async fn presence_put(
        &self,
        entity: &str,
        sid: &str,
        editor: &Value,
        keep: Duration,
    ) -> Result<(), ClusterError> {
        let (editors, seen) = (self.editors_key(entity), self.seen_key(entity));
        let keep_ms = keep.as_millis() as i64;
        let mut pipe = redis::pipe();
        pipe.hset(&editors, sid, editor.to_string())
            .ignore()
            .hset(&seen, sid, now_ms())
            .ignore()
            .pexpire(&editors, keep_ms)
            .ignore()
            .pexpire(&seen, keep_ms)
            .ignore();
        self.query(&pipe).await
    }

    /// Marks `sid` seen now on each of `entities`.
    pub async fn presence_touch(
        &self,
        entities: &[String],
        sid: &str,
        keep: Duration,
    ) -> Result<(), ClusterError> {
        if entities.is_empty() {
            return Ok(());
        }
        let keep_ms = keep.as_millis() as i64;
        let now = now_ms();
        let mut pipe = redis::pipe();
        for entity in entities {
            let (editors, seen) = (self.editors_key(entity), self.seen_key(entity));
            pipe.hset(&seen, sid, now)
                .ignore()
                .pexpire(&editors, keep_ms)
                .ignore()
                .pexpire(&seen, keep_ms)
                .ignore();
        }
        self.query(&pipe).await
    }

    /// Removes `sid` from `entity`'s editors.
    pub async fn presence_remove(&self, entity: &str, sid: &str) -> Result<(), ClusterError> {
        let mut pipe = redis::pipe();
        pipe.hdel(self.editors_key(entity), sid)
            .ignore()
            .hdel(self.seen_key(entity), sid)
            .ignore();
        self.query(&pipe).await
    }

    /// `entity`'s editors on every node, oldest first; those not seen for `stale` are
    /// removed (their node went away without saying so).
    pub async fn presence_editors(
        &self,
        entity: &str,
        stale: Duration,
    ) -> Result<Vec<Value>, ClusterError> {
        let (editors_key, seen_key) = (self.editors_key(entity), self.seen_key(entity));
        let mut pipe = redis::pipe();
        pipe.hgetall(&editors_key).hgetall(&seen_key);
        let (editors, seen): (
            std::collections::HashMap<String, String>,
            std::collections::HashMap<String, i64>,
        ) = self.query(&pipe).await?;
        let oldest = now_ms() - stale.as_millis() as i64;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (sid, editor) in editors {
            match (seen.get(&sid), serde_json::from_str::<Value>(&editor)) {
                (Some(&at), Ok(editor)) if at >= oldest => live.push(editor),
                _ => gone.push(sid),
            }
        }
        if !gone.is_empty() {
            let mut pipe = redis::pipe();
            pipe.hdel(&editors_key, &gone)
                .ignore()
                .hdel(&seen_key, &gone)
                .ignore();
            self.query::<()>(&pipe).await?;
        }
        live.sort_by_key(|e| e["joinedAt"].as_i64().unwrap_or(0));
        Ok(live)
    }

    // ---- admin session tokens -------------------------------------------------------------

    fn token_key(&self, hash_hex: &str) -> String {
        self.cluster.key(&format!("session:{hash_hex}"))
    }

    fn sessions_key(&self) -> String {
        self.cluster.key("sessions")
    }

    fn user_tokens_key(&self, user_id: i64) -> String {
        self.cluster.key(&format!("session-user:{user_id}"))
    }

    /// Starts `user_id`'s cooldown unless one runs: `None`, or the time left of the running one.
    pub async fn session_cooldown(
        &self,
        user_id: i64,
        cooldown: Duration,
    ) -> Result<Option<Duration>, ClusterError> {
        if cooldown.is_zero() {
            return Ok(None);
        }
        let key = self.cluster.key(&format!("session-cooldown:{user_id}"));
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(cooldown.as_millis() as u64)
            .pttl(&key);
        let (set, left): (Option<String>, i64) = self.query(&pipe).await?;
        Ok(match set {
            Some(_) => None,
            None => Some(Duration::from_millis(left.max(1) as u64)),
        })
    }

    /// Stores a token (by its SHA-256, hex) for `ttl`.
    pub async fn session_store(
        &self,
        hash_hex: &str,
        user_id: i64,
        session: &str,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        let key = self.token_key(hash_hex);
        let ttl_ms = ttl.as_millis() as i64;
        let expires = now_ms() + ttl_ms;
        let user_key = self.user_tokens_key(user_id);
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            &key,
            &[
                ("user", user_id.to_string()),
                ("session", session.to_owned()),
                ("uses", "0".to_owned()),
            ],
        )
        .ignore()
        .pexpire(&key, ttl_ms)
        .ignore()
        .zadd(self.sessions_key(), hash_hex, expires)
        .ignore()
        .sadd(&user_key, hash_hex)
        .ignore()
        .pexpire(&user_key, ttl_ms)
        .ignore();
        self.query(&pipe).await
    }

    /// Uses a token for one handshake: `(user id, session)`, or `None` when it is unknown,
    /// expired or used up.
    pub async fn session_consume(
        &self,
        hash_hex: &str,
        max_uses: u32,
    ) -> Result<Option<(i64, String)>, ClusterError> {
        let mut conn = self.conn().await?;
        let owner: Option<(Option<String>, Option<String>)> = redis::Script::new(CONSUME)
            .key(self.token_key(hash_hex))
            .key(self.sessions_key())
            .arg(max_uses)
            .arg(hash_hex)
            .invoke_async(&mut conn)
            .await
            .inspect_err(|_| crate::metrics::CLUSTER_ERRORS.inc())?;
        Ok(match owner {
            Some((Some(user), Some(session))) => user.parse().ok().map(|id| (id, session)),
            _ => None,
        })
    }

    /// Forgets every token of `user_id`; how many there were.
    pub async fn session_invalidate_user(&self, user_id: i64) -> Result<usize, ClusterError> {
        let user_key = self.user_tokens_key(user_id);
        let mut pipe = redis::pipe();
        pipe.smembers(&user_key).del(&user_key).ignore();
        let (hashes,): (Vec<String>,) = self.query(&pipe).await?;
        if hashes.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = hashes.iter().map(|h| self.token_key(h)).collect();
        let mut pipe = redis::pipe();
        pipe.del(&keys).zrem(self.sessions_key(), &hashes).ignore();
        let (deleted,): (usize,) = self.query(&pipe).await?;
        Ok(deleted)
    }

    /// Live tokens on the cluster, and how many expire within `soon`.
    pub async fn session_stats(&self, soon: Duration) -> Result<(usize, usize), ClusterError> {
        let key = self.sessions_key();
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.zrembyscore(&key, "-inf", now)
            .ignore()
            .zcard(&key)
            .zcount(&key, now, now + soon.as_millis() as i64);
        self.query(&pipe).await
    }

    // ---- failed handshakes ----------------------------------------------------------------

    fn failures_key(&self, ip: &str) -> String {
        self.cluster.key(&format!("failures:{ip}"))
    }

    /// Counts a failed handshake from `ip`; the count lives `window` from the first failure.
    pub async fn failure(&self, ip: &str, window: Duration) -> Result<u32, ClusterError> {
        let key = self.failures_key(ip);
        let mut pipe = redis::pipe();
        pipe.incr(&key, 1)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window.as_millis() as u64)
            .arg("NX")
            .ignore();
        let (count,): (u32,) = self.query(&pipe).await?;
        Ok(count)
    }

    /// Failed handshakes from `ip` in its current window, on every node.
    pub async fn failures(&self, ip: &str) -> Result<u32, ClusterError> {
        let mut pipe = redis::pipe();
        pipe.get(self.failures_key(ip));
        let (count,): (Option<u32>,) = self.query(&pipe).await?;
        Ok(count.unwrap_or(0))
    }
}
