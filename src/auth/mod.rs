//! Who a socket is: handshake authentication (spec §5) and keeping live sockets honest when
//! Strapi's auth tables change ([`live`]).
//!
//! A handshake is checked against the database once (user, token, session and admin rows,
//! through a short-lived cache that every permission reload empties); routing never queries:
//! it uses the in-memory [`PermissionModel`](crate::route::PermissionModel). Secrets are never
//! logged, and neither are the credentials clients send.

pub mod credentials;
pub mod live;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, watch};
use tracing::warn;

use crate::config::{Config, Secret};
use crate::route::permissions::{TokenType, now_ms};
use crate::route::{Access, Principal, Router};
use crate::security::sessions::{SessionTokens, is_uuid};
use credentials::{JwtSubject, api_token_hash, verify_jwt};

/// Why a handshake was refused; the message is what the client's `connect_error` shows (the
/// plugin's messages, spec §5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Invalid token.")]
    InvalidToken,
    #[error("Invalid credentials")]
    InvalidCredentials,
    #[error("Token expired")]
    TokenExpired,
    #[error("Authentication required")]
    AuthenticationRequired,
    #[error("Draft access denied")]
    DraftDenied,
    /// The database could not be asked; never a reason to let a socket in.
    #[error("Authentication unavailable")]
    Unavailable,
}

/// The handshake `auth` object, as the plugin's clients send it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HandshakeAuth {
    pub token: Option<String>,
    pub strategy: Option<String>,
    pub status: Option<String>,
    /// The offset of the last event the client saw (the trailing argument of every event), to
    /// resume after. Kept as JSON so a wrong type is refused, not read as no auth at all.
    pub offset: Option<Value>,
}

impl HandshakeAuth {
    /// Reads the handshake's `auth`: absent or `null` is no auth; anything else must be an
    /// object of the right shape (a token that is not a string is an invalid token, never
    /// public).
    pub fn from_json(value: Option<Value>) -> Result<Self, AuthError> {
        match value {
            None | Some(Value::Null) => Ok(HandshakeAuth::default()),
            Some(v @ Value::Object(_)) => {
                serde_json::from_value(v).map_err(|_| AuthError::InvalidToken)
            }
            Some(_) => Err(AuthError::InvalidToken),
        }
    }
}

/// The handshake's database connection (separate from the pipeline's), reconnected when lost.
#[derive(Debug)]
pub struct Db {
    config: Config,
    client: Mutex<Option<Arc<tokio_postgres::Client>>>,
}

impl Db {
    pub fn new(config: Config) -> Self {
        Db {
            config,
            client: Mutex::new(None),
        }
    }

    /// The connection, opened if needed.
    pub async fn client(&self) -> Result<Arc<tokio_postgres::Client>, AuthError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        match crate::service::connect_sql(&self.config).await {
            Ok(c) => {
                let c = Arc::new(c);
                *slot = Some(Arc::clone(&c));
                Ok(c)
            }
            Err(e) => {
                warn!(error = %e, "auth database connection failed");
                Err(AuthError::Unavailable)
            }
        }
    }
}

/// A users-permissions user as authentication sees it.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub blocked: bool,
    pub confirmed: bool,
    pub role_id: Option<i64>,
}

/// A `strapi_api_tokens` row.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub token_type: Option<TokenType>,
    pub expires_at_ms: Option<i64>,
    pub content_api: bool,
}

/// A `strapi_sessions` row.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub user_id: String,
    pub origin: String,
    pub expires_at_ms: Option<i64>,
    pub revoked: bool,
}

impl SessionRow {
    /// Live for `origin` and user `user_id` now: Strapi's `isSessionActive`.
    fn live_for(&self, origin: &str, user_id: i64) -> bool {
        self.origin == origin
            && self.user_id == user_id.to_string()
            && !self.revoked
            && self.expires_at_ms.is_some_and(|at| at > now_ms())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LookupKey {
    User(i64),
    Token(String),
    Session(String),
    Admin(i64),
}

#[derive(Debug, Clone)]
enum Lookup {
    User(Option<UserRow>),
    Token(Option<TokenRow>),
    Session(Option<SessionRow>),
    Admin(bool),
}

/// How long a handshake lookup is reused (every permission reload also empties the cache).
const LOOKUP_TTL: Duration = Duration::from_secs(10);
const LOOKUP_CAPACITY: u64 = 10_000;

/// Handshake authentication. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    jwt_secret: Secret,
    admin_jwt_secret: Secret,
    api_token_salt: Secret,
    require_authentication: bool,
    db: Arc<Db>,
    router: watch::Receiver<Router>,
    cache: Cache<LookupKey, Lookup>,
    /// Counts permission reloads; a socket authenticated across one is checked again.
    generation: AtomicU64,
    /// Admin session tokens from `POST /io/presence/session`.
    sessions: SessionTokens,
}

impl Authenticator {
    /// `shared`: the cluster's Redis, where admin session tokens live when clustered.
    pub fn new(
        config: &Config,
        db: Arc<Db>,
        router: watch::Receiver<Router>,
        shared: Option<crate::cluster::SharedState>,
    ) -> Self {
        Authenticator {
            inner: Arc::new(Inner {
                jwt_secret: config.strapi.jwt_secret.clone(),
                admin_jwt_secret: config.strapi.admin_jwt_secret.clone(),
                api_token_salt: config.strapi.api_token_salt.clone(),
                require_authentication: config.security.require_authentication,
                db,
                router,
                cache: Cache::builder()
                    .max_capacity(LOOKUP_CAPACITY)
                    .time_to_live(LOOKUP_TTL)
                    .build(),
                generation: AtomicU64::new(0),
                sessions: SessionTokens::new(&config.security).with_shared(shared),
            }),
        }
    }

    /// The admin session tokens this authenticator accepts.
    pub fn sessions(&self) -> &SessionTokens {
        &self.inner.sessions
    }

    pub fn db(&self) -> &Arc<Db> {
        &self.inner.db
    }

    /// The permission snapshot in force.
    pub fn router(&self) -> Router {
        self.inner.router.borrow().clone()
    }

    /// The reload generation (see [`live`]).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    /// Called by the reloader before it checks the live sockets: forget cached lookups.
    pub(crate) fn reloaded(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        self.inner.cache.invalidate_all();
    }

    /// Who the handshake is, and which view it gets.
    pub async fn authenticate(&self, auth: &HandshakeAuth) -> Result<Access, AuthError> {
        let token = auth.token.as_deref().filter(|t| !t.is_empty());
        let principal = match (token, auth.strategy.as_deref()) {
            (None, _) if self.inner.require_authentication => {
                return Err(AuthError::AuthenticationRequired);
            }
            (None, _) => Principal::Public,
            (Some(token), None | Some("" | "jwt")) => self.user(token).await?,
            (Some(token), Some("admin-jwt")) => self.admin(token).await?,
            (Some(token), Some(_)) => self.api_token(token).await?,
        };
        let draft = auth.status.as_deref() == Some("draft");
        if draft && !self.router().permissions.may_use_drafts(&principal) {
            return Err(AuthError::DraftDenied);
        }
        Ok(Access { principal, draft })
    }

    async fn user(&self, token: &str) -> Result<Principal, AuthError> {
        let subject = verify_jwt(token, self.inner.jwt_secret.expose(), true)
            .map_err(|_| AuthError::InvalidToken)?;
        let (id, session) = match subject {
            JwtSubject::Legacy { id } => (id, None),
            JwtSubject::Session {
                user_id,
                session_id,
            } => {
                let live = self
                    .session(&session_id)
                    .await?
                    .is_some_and(|s| s.live_for("users-permissions", user_id));
                if !live {
                    return Err(AuthError::InvalidToken);
                }
                (user_id, Some(session_id))
            }
        };
        let user = self
            .user_row(id)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        let router = self.router();
        let model = &router.permissions;
        if (model.email_confirmation && !user.confirmed) || user.blocked {
            return Err(AuthError::InvalidCredentials);
        }
        let role_id = user.role_id.ok_or(AuthError::InvalidCredentials)?;
        let role = model
            .roles
            .get(&role_id)
            .ok_or(AuthError::InvalidCredentials)?;
        Ok(Principal::User {
            id,
            role_id,
            role: role.name.clone(),
            session,
        })
    }

    /// `strategy: 'admin-jwt'`: an admin session token (a UUID) or a Strapi admin access JWT.
    async fn admin(&self, token: &str) -> Result<Principal, AuthError> {
        if is_uuid(token) {
            let owner = self
                .inner
                .sessions
                .consume(token)
                .await
                .map_err(|_| AuthError::Unavailable)?
                .ok_or(AuthError::InvalidToken)?;
            return self.live_admin(owner.user_id, owner.session).await;
        }
        self.admin_jwt(token).await
    }

    /// A Strapi admin access JWT with a live admin session of an active admin user: the
    /// admin routes' authentication too.
    pub async fn admin_jwt(&self, token: &str) -> Result<Principal, AuthError> {
        let subject = verify_jwt(token, self.inner.admin_jwt_secret.expose(), false)
            .map_err(|_| AuthError::InvalidToken)?;
        let JwtSubject::Session {
            user_id,
            session_id,
        } = subject
        else {
            return Err(AuthError::InvalidToken);
        };
        self.live_admin(user_id, session_id).await
    }

    async fn live_admin(&self, user_id: i64, session_id: String) -> Result<Principal, AuthError> {
        let live = self
            .session(&session_id)
            .await?
            .is_some_and(|s| s.live_for("admin", user_id));
        if !live {
            return Err(AuthError::InvalidToken);
        }
        if !self.admin_active(user_id).await? {
            return Err(AuthError::InvalidCredentials);
        }
        Ok(Principal::Admin {
            id: user_id,
            session: session_id,
        })
    }

    async fn api_token(&self, token: &str) -> Result<Principal, AuthError> {
        let access_key = api_token_hash(self.inner.api_token_salt.expose(), token);
        let row = self
            .token_row(access_key)
            .await?
            .filter(|t| t.content_api && t.token_type.is_some())
            .ok_or(AuthError::InvalidCredentials)?;
        if row.expires_at_ms.is_some_and(|at| at <= now_ms()) {
            return Err(AuthError::TokenExpired);
        }
        Ok(Principal::ApiToken {
            id: row.id,
            name: row.name,
            expires_at_ms: row.expires_at_ms,
        })
    }

    async fn lookup(&self, key: LookupKey) -> Result<Lookup, AuthError> {
        let db = Arc::clone(&self.inner.db);
        let query_key = key.clone();
        if let Some(hit) = self.inner.cache.get(&key).await {
            crate::metrics::PERMISSION_CACHE
                .with_label_values(&["hit"])
                .inc();
            return Ok(hit);
        }
        crate::metrics::PERMISSION_CACHE
            .with_label_values(&["miss"])
            .inc();
        self.inner
            .cache
            .try_get_with(key, async move {
                let client = db.client().await?;
                query(&client, &query_key).await.map_err(|e| {
                    warn!(error = %e, "auth lookup failed");
                    AuthError::Unavailable
                })
            })
            .await
            .map_err(|e| (*e).clone())
    }

    async fn user_row(&self, id: i64) -> Result<Option<UserRow>, AuthError> {
        match self.lookup(LookupKey::User(id)).await? {
            Lookup::User(u) => Ok(u),
            _ => Err(AuthError::Unavailable),
        }
    }

    async fn token_row(&self, access_key: String) -> Result<Option<TokenRow>, AuthError> {
        match self.lookup(LookupKey::Token(access_key)).await? {
            Lookup::Token(t) => Ok(t),
            _ => Err(AuthError::Unavailable),
        }
    }

    async fn session(&self, session_id: &str) -> Result<Option<SessionRow>, AuthError> {
        match self
            .lookup(LookupKey::Session(session_id.to_owned()))
            .await?
        {
            Lookup::Session(s) => Ok(s),
            _ => Err(AuthError::Unavailable),
        }
    }

    async fn admin_active(&self, id: i64) -> Result<bool, AuthError> {
        match self.lookup(LookupKey::Admin(id)).await? {
            Lookup::Admin(a) => Ok(a),
            _ => Err(AuthError::Unavailable),
        }
    }
}

/// Ids are `serial` (int4) in Strapi's tables.
fn int4(id: i64) -> Option<i32> {
    i32::try_from(id).ok()
}

pub(crate) const USER_QUERY: &str = "SELECT u.id, u.blocked, u.confirmed, l.role_id
       FROM up_users u LEFT JOIN up_users_role_lnk l ON l.user_id = u.id
      WHERE u.id = ANY($1)";
pub(crate) const TOKEN_COLUMNS: &str = "SELECT t.id, t.name, t.type,
        (extract(epoch FROM t.expires_at) * 1000)::bigint,
        coalesce(to_jsonb(t) ->> 'kind', 'content-api') = 'content-api'
       FROM strapi_api_tokens t";
pub(crate) const SESSION_QUERY: &str = "SELECT session_id, user_id, origin,
        (extract(epoch FROM expires_at) * 1000)::bigint, status
       FROM strapi_sessions WHERE session_id = ANY($1)";
pub(crate) const ADMIN_QUERY: &str = "SELECT id FROM admin_users
      WHERE id = ANY($1) AND is_active IS TRUE AND blocked IS NOT TRUE";

pub(crate) fn user_of(row: &tokio_postgres::Row) -> (i64, UserRow) {
    (
        i64::from(row.get::<_, i32>(0)),
        UserRow {
            blocked: row.get::<_, Option<bool>>(1).unwrap_or(false),
            confirmed: row.get::<_, Option<bool>>(2).unwrap_or(false),
            role_id: row.get::<_, Option<i32>>(3).map(i64::from),
        },
    )
}

pub(crate) fn token_of(row: &tokio_postgres::Row) -> TokenRow {
    TokenRow {
        id: i64::from(row.get::<_, i32>(0)),
        name: row.get::<_, Option<String>>(1).unwrap_or_default(),
        token_type: row
            .get::<_, Option<String>>(2)
            .as_deref()
            .and_then(TokenType::parse),
        expires_at_ms: row.get(3),
        content_api: row.get::<_, Option<bool>>(4).unwrap_or(false),
    }
}

pub(crate) fn session_of(row: &tokio_postgres::Row) -> (String, SessionRow) {
    (
        row.get(0),
        SessionRow {
            user_id: row.get::<_, Option<String>>(1).unwrap_or_default(),
            origin: row.get::<_, Option<String>>(2).unwrap_or_default(),
            expires_at_ms: row.get(3),
            revoked: row.get::<_, Option<String>>(4).as_deref() == Some("revoked"),
        },
    )
}

async fn query(
    client: &tokio_postgres::Client,
    key: &LookupKey,
) -> Result<Lookup, tokio_postgres::Error> {
    Ok(match key {
        LookupKey::User(id) => {
            let ids: Vec<i32> = int4(*id).into_iter().collect();
            let rows = client.query(USER_QUERY, &[&ids]).await?;
            Lookup::User(rows.first().map(|r| user_of(r).1))
        }
        LookupKey::Token(access_key) => {
            let sql = format!("{TOKEN_COLUMNS} WHERE t.access_key = $1");
            let row = client.query_opt(&sql, &[access_key]).await?;
            Lookup::Token(row.as_ref().map(token_of))
        }
        LookupKey::Session(session_id) => {
            let ids = vec![session_id.clone()];
            let rows = client.query(SESSION_QUERY, &[&ids]).await?;
            Lookup::Session(rows.first().map(|r| session_of(r).1))
        }
        LookupKey::Admin(id) => {
            let ids: Vec<i32> = int4(*id).into_iter().collect();
            Lookup::Admin(!client.query(ADMIN_QUERY, &[&ids]).await?.is_empty())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn handshake_auth_never_degrades_to_public() {
        assert!(HandshakeAuth::from_json(None).unwrap().token.is_none());
        assert_eq!(
            HandshakeAuth::from_json(Some(json!({"token": 42}))).unwrap_err(),
            AuthError::InvalidToken
        );
        assert_eq!(
            HandshakeAuth::from_json(Some(json!("token"))).unwrap_err(),
            AuthError::InvalidToken
        );
        let auth =
            HandshakeAuth::from_json(Some(json!({"token": "t", "strategy": "api-token"}))).unwrap();
        assert_eq!(auth.strategy.as_deref(), Some("api-token"));
    }
}
