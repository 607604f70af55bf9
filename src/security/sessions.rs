//! Admin session tokens (`plugin-io.md` §6.4, V5b): `POST /io/presence/session` gives an admin
//! a random UUID that a socket presents with `strategy: 'admin-jwt'`. Only its SHA-256 is
//! kept; it lives `session_ttl_secs` (10 minutes), should be refreshed after 70 % of that,
//! serves at most `session_max_uses` handshakes, and an admin may ask for a new one only once
//! per `session_cooldown_ms`. The token carries the admin's Strapi session, so revoking that
//! session still disconnects the sockets that used the token ([`crate::auth::live`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::cluster::SharedState;
use crate::config::SecurityConfig;
use crate::route::permissions::now_ms;

/// At most this many live tokens (expired ones are swept first); beyond it issuing fails.
const MAX_TOKENS: usize = 100_000;
/// `GET /io/security/sessions` counts tokens expiring within this as `expiringSoon`.
const EXPIRING_SOON: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("Please wait {0} seconds before requesting a new session")]
    Cooldown(u64),
    /// walcast: the token table is full.
    #[error("Too many active sessions")]
    Full,
    /// walcast, clustered: the cluster's Redis did not answer.
    #[error("Session store unavailable")]
    Unavailable,
}

/// A token just issued: the only time its plaintext exists in walcast.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub expires_at_ms: i64,
    pub refresh_after_ms: i64,
}

/// Who a consumed token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub user_id: i64,
    /// The admin's Strapi session (`strapi_sessions.session_id`) the token was issued under.
    pub session: String,
}

#[derive(Debug)]
struct Entry {
    owner: TokenOwner,
    expires: Instant,
    uses: u32,
}

#[derive(Debug, Default)]
struct State {
    /// SHA-256 of the token → its entry; the plaintext is never stored.
    tokens: HashMap<[u8; 32], Entry>,
    last_issued: HashMap<i64, Instant>,
}

/// Statistics for `GET /io/security/sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    pub active: usize,
    pub expiring_soon: usize,
}

/// The token table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionTokens {
    state: Arc<Mutex<State>>,
    /// Clustered: the tokens live in Redis instead, so any node accepts them.
    shared: Option<SharedState>,
    pub ttl: Duration,
    pub max_uses: u32,
    pub cooldown: Duration,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The plugin's UUID check on admin tokens.
pub fn is_uuid(token: &str) -> bool {
    uuid::Uuid::try_parse(token).is_ok() && token.len() == 36
}

impl SessionTokens {
    pub fn new(config: &SecurityConfig) -> Self {
        SessionTokens {
            state: Arc::default(),
            shared: None,
            ttl: Duration::from_secs(config.session_ttl_secs),
            max_uses: config.session_max_uses,
            cooldown: Duration::from_millis(config.session_cooldown_ms),
        }
    }

    /// Keeps the tokens in the cluster's Redis.
    pub fn with_shared(mut self, shared: Option<SharedState>) -> Self {
        self.shared = shared;
        self
    }

    /// A new token for admin `user_id`, signed in under Strapi session `session`.
    pub async fn issue(&self, user_id: i64, session: String) -> Result<Issued, SessionError> {
        let Some(shared) = &self.shared else {
            return self.issue_local(user_id, session);
        };
        if let Some(left) = shared
            .session_cooldown(user_id, self.cooldown)
            .await
            .map_err(|_| SessionError::Unavailable)?
        {
            let wait = left.as_millis().div_ceil(1000);
            return Err(SessionError::Cooldown(
                u64::try_from(wait).unwrap_or(u64::MAX).max(1),
            ));
        }
        let token = uuid::Uuid::new_v4().to_string();
        shared
            .session_store(&hex(&hash(&token)), user_id, &session, self.ttl)
            .await
            .map_err(|_| SessionError::Unavailable)?;
        Ok(self.issued(token))
    }

    /// Uses a token for one handshake (see [`Self::consume_local`]); `Err` when the cluster's
    /// Redis cannot be asked.
    pub async fn consume(&self, token: &str) -> Result<Option<TokenOwner>, SessionError> {
        let Some(shared) = &self.shared else {
            return Ok(self.consume_local(token));
        };
        let owner = shared
            .session_consume(&hex(&hash(token)), self.max_uses)
            .await
            .map_err(|_| SessionError::Unavailable)?;
        Ok(owner.map(|(user_id, session)| TokenOwner { user_id, session }))
    }

    /// Forgets every token of `user_id`; how many there were.
    pub async fn invalidate_user(&self, user_id: i64) -> Result<usize, SessionError> {
        match &self.shared {
            None => Ok(self.invalidate_user_local(user_id)),
            Some(shared) => shared
                .session_invalidate_user(user_id)
                .await
                .map_err(|_| SessionError::Unavailable),
        }
    }

    pub async fn stats(&self) -> Result<SessionStats, SessionError> {
        match &self.shared {
            None => Ok(self.stats_local()),
            Some(shared) => {
                let (active, expiring_soon) = shared
                    .session_stats(EXPIRING_SOON)
                    .await
                    .map_err(|_| SessionError::Unavailable)?;
                Ok(SessionStats {
                    active,
                    expiring_soon,
                })
            }
        }
    }

    fn issued(&self, token: String) -> Issued {
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let issued_ms = now_ms();
        Issued {
            token,
            expires_at_ms: issued_ms.saturating_add(ttl_ms),
            refresh_after_ms: issued_ms.saturating_add(ttl_ms / 10 * 7),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn issue_local(&self, user_id: i64, session: String) -> Result<Issued, SessionError> {
        let now = Instant::now();
        let mut state = self.state();
        if let Some(last) = state.last_issued.get(&user_id) {
            let since = now.duration_since(*last);
            if since < self.cooldown {
                let wait = (self.cooldown - since).as_millis().div_ceil(1000);
                return Err(SessionError::Cooldown(
                    u64::try_from(wait).unwrap_or(u64::MAX).max(1),
                ));
            }
        }
        state.tokens.retain(|_, e| e.expires > now);
        let cooldown = self.cooldown;
        state
            .last_issued
            .retain(|_, at| now.duration_since(*at) < cooldown);
        if state.tokens.len() >= MAX_TOKENS {
            return Err(SessionError::Full);
        }
        let token = uuid::Uuid::new_v4().to_string();
        state.tokens.insert(
            hash(&token),
            Entry {
                owner: TokenOwner { user_id, session },
                expires: now + self.ttl,
                uses: 0,
            },
        );
        state.last_issued.insert(user_id, now);
        drop(state);
        Ok(self.issued(token))
    }

    /// Uses a token for one handshake: its owner, or `None` when unknown, expired or used
    /// up (a used-up token is forgotten).
    fn consume_local(&self, token: &str) -> Option<TokenOwner> {
        let key = hash(token);
        let mut state = self.state();
        let entry = state.tokens.get_mut(&key)?;
        if entry.expires <= Instant::now() {
            state.tokens.remove(&key);
            return None;
        }
        entry.uses += 1;
        let owner = entry.owner.clone();
        if entry.uses >= self.max_uses {
            state.tokens.remove(&key);
        }
        Some(owner)
    }

    fn invalidate_user_local(&self, user_id: i64) -> usize {
        let mut state = self.state();
        let before = state.tokens.len();
        state.tokens.retain(|_, e| e.owner.user_id != user_id);
        before - state.tokens.len()
    }

    fn stats_local(&self) -> SessionStats {
        let now = Instant::now();
        let mut state = self.state();
        state.tokens.retain(|_, e| e.expires > now);
        let expiring_soon = state
            .tokens
            .values()
            .filter(|e| e.expires.duration_since(now) < EXPIRING_SOON)
            .count();
        SessionStats {
            active: state.tokens.len(),
            expiring_soon,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(f: impl FnOnce(&mut SecurityConfig)) -> SessionTokens {
        let mut config = SecurityConfig::default();
        f(&mut config);
        SessionTokens::new(&config)
    }

    #[test]
    fn stored_only_as_sha256() {
        let t = tokens(|_| {});
        let issued = t.issue_local(1, "s".into()).unwrap();
        assert!(is_uuid(&issued.token));
        let state = t.state();
        let (key, _) = state.tokens.iter().next().unwrap();
        let expected: [u8; 32] = Sha256::digest(issued.token.as_bytes()).into();
        assert_eq!(*key, expected);
        let debug = format!("{:?}", *state);
        assert!(!debug.contains(&issued.token));
    }

    #[test]
    fn uses_cooldown_and_refresh() {
        let t = tokens(|c| c.session_max_uses = 3);
        let issued = t.issue_local(7, "s7".into()).unwrap();
        let ttl = 600_000;
        assert_eq!(issued.refresh_after_ms + ttl * 3 / 10, issued.expires_at_ms);
        assert_eq!(
            t.issue_local(7, "s7".into()).unwrap_err(),
            SessionError::Cooldown(3)
        );
        for _ in 0..3 {
            assert_eq!(t.consume_local(&issued.token).unwrap().user_id, 7);
        }
        assert_eq!(t.consume_local(&issued.token), None);
        assert_eq!(
            t.consume_local("00000000-0000-0000-0000-000000000000"),
            None
        );
        assert!(!is_uuid("not-a-uuid"));
    }

    #[test]
    fn invalidate_and_stats() {
        let t = tokens(|c| c.session_cooldown_ms = 0);
        t.issue_local(1, "a".into()).unwrap();
        t.issue_local(1, "a".into()).unwrap();
        t.issue_local(2, "b".into()).unwrap();
        assert_eq!(t.stats_local().active, 3);
        assert_eq!(t.invalidate_user_local(1), 2);
        assert_eq!(t.stats_local().active, 1);
        assert_eq!(t.stats_local().expiring_soon, 0);
    }
}
