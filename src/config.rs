//! Configuration: `config.toml`, then the environment, then `validate()`.
//!
//! Sections mirror spec §11. Every key has a default where one is safe. Unknown keys are
//! errors (serde `deny_unknown_fields`); `validate()` collects every problem at once, each
//! naming the key, the value and what is allowed, so `main` can print them all and exit 2
//! before anything connects. Strapi's own environment names (`DATABASE_URL`,
//! `DATABASE_HOST`…, `JWT_SECRET`, `API_TOKEN_SALT`, `ADMIN_JWT_SECRET`) are accepted so a
//! user can point walcast at Strapi's `.env`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::tls::{self, SslMode, TlsSettings};

/// A secret string: never printed by `Debug`, so the effective config can be logged.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether a value was given.
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

/// The whole configuration (spec §11).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub replication: ReplicationConfig,
    pub server: ServerConfig,
    pub strapi: StrapiConfig,
    pub admin: AdminConfig,
    pub events: EventsConfig,
    pub content_types: Vec<ContentTypeConfig>,
    pub security: SecurityConfig,
    pub delivery: DeliveryConfig,
    pub clients: ClientsConfig,
    pub redis: RedisConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/dbname?sslmode=…`.
    pub url: Secret,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/strapi"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    pub slot: String,
    pub publication: String,
    pub lag_budget_bytes: u64,
    /// How often a standby status update is sent at the latest (the server's
    /// `wal_sender_timeout` defaults to 60 s; we stay well inside it).
    pub status_interval_ms: u64,
    /// Whether `walcast setup` sets `REPLICA IDENTITY FULL` on the content tables.
    pub replica_identity_full: bool,
    /// Row changes of one transaction kept in memory; beyond this they spill to a temp file,
    /// and a committed transaction is folded and emitted in windows of this many changes.
    pub max_buffered_changes: usize,
    /// Where spill files go; `None` is the OS temp dir. The files are anonymous (unlinked at
    /// creation), so nothing is left behind, even after a crash.
    pub spill_dir: Option<PathBuf>,
}

impl ReplicationConfig {
    /// Default of `replication.max_buffered_changes`.
    pub const DEFAULT_MAX_BUFFERED_CHANGES: usize = 10_000;
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            slot: "walcast".into(),
            publication: "walcast".into(),
            lag_budget_bytes: 1 << 30,
            status_interval_ms: 10_000,
            replica_identity_full: true,
            max_buffered_changes: Self::DEFAULT_MAX_BUFFERED_CHANGES,
            spill_dir: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub path: String,
    pub cors_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:1338".into(),
            path: "/socket.io".into(),
            cors_origins: vec!["http://localhost:3000".into()],
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrapiConfig {
    pub jwt_secret: Secret,
    pub api_token_salt: Secret,
    pub admin_jwt_secret: Secret,
    pub app_dir: Option<PathBuf>,
    /// Component UID → table, overriding what discovery finds (`"shared.seo" =
    /// "components_shared_seos"`).
    pub component_tables: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub api_key: Secret,
}

/// Payload format of content events (spec §4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum PayloadFormat {
    #[default]
    #[serde(rename = "strapi")]
    Strapi,
    #[serde(rename = "plugin-io")]
    PluginIo,
}

/// Which permission a principal needs to hear an event (spec §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum PermissionMode {
    #[default]
    #[serde(rename = "read")]
    Read,
    #[serde(rename = "action")]
    Action,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    pub payload: PayloadFormat,
    pub permissions: PermissionMode,
    pub sensitive_fields: Vec<String>,
    pub draft_roles: Vec<String>,
}

/// Which view(s) of a D&P content type are emitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum StatusViews {
    #[default]
    #[serde(rename = "published")]
    Published,
    #[serde(rename = "draft")]
    Draft,
    #[serde(rename = "both")]
    Both,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentTypeConfig {
    pub uid: String,
    #[serde(default = "default_actions")]
    pub actions: Vec<String>,
    #[serde(default)]
    pub populate: Option<toml::Value>,
    #[serde(default)]
    pub status: StatusViews,
}

/// Actions emitted when a content type lists none: the plugin's defaults.
pub fn default_actions() -> Vec<String> {
    vec!["create".into(), "update".into(), "delete".into()]
}

/// Every action walcast can emit for a content type.
pub const KNOWN_ACTIONS: &[&str] = &["create", "update", "delete", "publish", "unpublish"];

/// `[security]` (spec §8). CIDR lists take `"10.0.0.0/8"`, `"::1/128"` or a bare address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub require_authentication: bool,
    pub max_connections: usize,
    pub rate_limit: RateLimitConfig,
    pub ip_allow: Vec<String>,
    pub ip_deny: Vec<String>,
    /// Whom to believe about X-Forwarded-For: `false` (default: nobody, the TCP peer is the
    /// client), `true` (any peer) or a list of proxy CIDRs.
    pub trust_proxy: TrustProxy,
    /// Failed handshakes from one IP within `lockout_window_secs` before that IP is refused
    /// (`Too many authentication attempts. Try again later.`) until the window ends.
    pub lockout_max_failures: u32,
    pub lockout_window_secs: u64,
    /// Largest Engine.IO payload (a polling body, a websocket message), in bytes.
    pub max_payload_bytes: u64,
    /// Admin session tokens from `POST /io/presence/session`.
    pub session_ttl_secs: u64,
    pub session_max_uses: u32,
    pub session_cooldown_ms: u64,
    /// Presence registrations not seen (join, heartbeat, typing) for this long are removed.
    pub presence_stale_secs: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            require_authentication: false,
            max_connections: 100_000,
            rate_limit: RateLimitConfig::default(),
            ip_allow: Vec::new(),
            ip_deny: Vec::new(),
            trust_proxy: TrustProxy::default(),
            lockout_max_failures: 20,
            lockout_window_secs: 60,
            max_payload_bytes: 100_000,
            session_ttl_secs: 600,
            session_max_uses: 10,
            session_cooldown_ms: 3_000,
            presence_stale_secs: 60,
        }
    }
}

/// `trust_proxy = false | true | ["10.0.0.0/8", …]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TrustProxy {
    All(bool),
    Proxies(Vec<String>),
}

impl Default for TrustProxy {
    fn default() -> Self {
        TrustProxy::All(false)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Client events a socket may send per second; more are refused (`Rate limit exceeded`).
    pub max_events_per_second: u32,
    pub max_connections_per_ip: u32,
    /// Refused events after which the socket is disconnected.
    pub disconnect_after_refused: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            max_events_per_second: 10,
            max_connections_per_ip: 50,
            disconnect_after_refused: 50,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// The replay log keeps at most this many events (oldest dropped first).
    pub replay_max_events: usize,
    /// ...and none older than this.
    pub replay_max_age_secs: u64,
    /// Where the replay log's segment files live (`WALCAST_REPLAY_DIR`); created if missing.
    pub replay_dir: PathBuf,
    /// Where walcast keeps its own state (`settings.json` of `PUT /io/settings`); by default
    /// the folder that holds `replay_dir`.
    pub state_dir: Option<PathBuf>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            replay_max_events: 100_000,
            replay_max_age_secs: 300,
            replay_dir: PathBuf::from("./.walcast/replay"),
            state_dir: None,
        }
    }
}

/// What connected clients may ask for, and how much walcast buffers for each (spec §5, §6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsConfig {
    /// `subscribe-entity` refuses a socket's subscription beyond this many.
    pub max_subscriptions_per_socket: usize,
    /// `join-room`/`leave-room` of custom rooms; off as in the plugin.
    pub private_rooms: bool,
    /// `private-message` between sockets; off as in the plugin.
    pub private_messages: bool,
    /// Packets queued per socket before an emit fails; a socket whose queue is full is
    /// disconnected (it resumes with its offset) instead of losing events silently.
    pub socket_buffer_packets: usize,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        Self {
            max_subscriptions_per_socket: 100,
            private_rooms: false,
            private_messages: false,
            socket_buffer_packets: crate::gateway::socketio::SOCKET_BUFFER_PACKETS,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Enables clustering: `redis://host:port/?protocol=resp3` (RESP3 is required).
    pub url: Option<String>,
    /// The prefix of every key and channel walcast uses; default `walcast:<slot>`, so
    /// clusters on other slots (and Node socket.io servers) can share the Redis.
    pub prefix: Option<String>,
}

impl RedisConfig {
    /// The key prefix in effect for `slot`.
    pub fn prefix_for(&self, slot: &str) -> String {
        self.prefix
            .clone()
            .unwrap_or_else(|| format!("walcast:{slot}"))
    }
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("config file {path}: {reason}")]
    Syntax { path: PathBuf, reason: String },
    #[error("invalid value for `{key}`: {value:?}; allowed: {allowed}")]
    InvalidValue {
        key: String,
        value: String,
        allowed: String,
    },
}

/// Environment variables read by walcast, in the order they are applied.
pub const ENVIRONMENT_KEYS: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_HOST",
    "DATABASE_PORT",
    "DATABASE_NAME",
    "DATABASE_USERNAME",
    "DATABASE_PASSWORD",
    "DATABASE_SSL",
    "DATABASE_SSL_REJECT_UNAUTHORIZED",
    "DATABASE_SSL_CA",
    "WALCAST_SLOT",
    "WALCAST_PUBLICATION",
    "WALCAST_LISTEN",
    "JWT_SECRET",
    "API_TOKEN_SALT",
    "ADMIN_JWT_SECRET",
    "WALCAST_ADMIN_API_KEY",
    "WALCAST_REPLAY_DIR",
    "WALCAST_REDIS_URL",
];

impl Config {
    /// Loads `path` (if given), overlays the process environment and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, Vec<ConfigError>> {
        let env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| ENVIRONMENT_KEYS.contains(&k.as_str()))
            .collect();
        Self::load_with_env(path, &env)
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    vec![ConfigError::Unreadable {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    }]
                })?;
                Self::from_toml(&text).map_err(|reason| {
                    vec![ConfigError::Syntax {
                        path: path.to_owned(),
                        reason,
                    }]
                })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; unknown keys are errors whose message names the key and the
    /// keys that are allowed there.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Overlays environment variables: `DATABASE_URL` wins over Strapi's split
    /// `DATABASE_HOST`… names, which win over the file.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), Vec<ConfigError>> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        if let Some(url) = get("DATABASE_URL") {
            self.database.url = Secret::new(url);
        } else if [
            "DATABASE_HOST",
            "DATABASE_PORT",
            "DATABASE_NAME",
            "DATABASE_USERNAME",
        ]
        .iter()
        .any(|k| get(k).is_some())
        {
            let file_url = tls::split_url(self.database.url.expose()).ok();
            let base: tokio_postgres::Config = file_url
                .as_ref()
                .and_then(|split| split.rest.parse().ok())
                .unwrap_or_default();
            let host = get("DATABASE_HOST").unwrap_or_else(|| first_host(&base));
            let port = get("DATABASE_PORT").unwrap_or_else(|| {
                base.get_ports()
                    .first()
                    .copied()
                    .unwrap_or(5432)
                    .to_string()
            });
            let name = get("DATABASE_NAME")
                .unwrap_or_else(|| base.get_dbname().unwrap_or("strapi").to_owned());
            let user = get("DATABASE_USERNAME")
                .unwrap_or_else(|| base.get_user().unwrap_or("postgres").to_owned());
            let password = get("DATABASE_PASSWORD");
            let auth = match password {
                Some(p) => format!("{}:{}", encode_userinfo(&user), encode_userinfo(&p)),
                None => encode_userinfo(&user),
            };
            let mut url = format!("postgres://{auth}@{host}:{port}/{name}");
            // The file's TLS settings still apply to the host named by the environment.
            if let Some(split) = file_url {
                let mut query = Vec::new();
                if split.names_sslmode {
                    query.push(format!("sslmode={}", split.tls.mode));
                }
                match split.tls.root_cert {
                    Some(tls::RootCerts::File(path)) => query.push(format!(
                        "sslrootcert={}",
                        encode_userinfo(&path.to_string_lossy())
                    )),
                    Some(tls::RootCerts::System) => query.push("sslrootcert=system".into()),
                    None => {}
                }
                if !query.is_empty() {
                    url = format!("{url}?{}", query.join("&"));
                }
            }
            self.database.url = Secret::new(url);
        }
        self.apply_strapi_ssl(&get)?;
        if let Some(v) = get("WALCAST_SLOT") {
            self.replication.slot = v;
        }
        if let Some(v) = get("WALCAST_PUBLICATION") {
            self.replication.publication = v;
        }
        if let Some(v) = get("WALCAST_LISTEN") {
            self.server.listen = v;
        }
        if let Some(v) = get("JWT_SECRET") {
            self.strapi.jwt_secret = Secret::new(v);
        }
        if let Some(v) = get("API_TOKEN_SALT") {
            self.strapi.api_token_salt = Secret::new(v);
        }
        if let Some(v) = get("ADMIN_JWT_SECRET") {
            self.strapi.admin_jwt_secret = Secret::new(v);
        }
        if let Some(v) = get("WALCAST_ADMIN_API_KEY") {
            self.admin.api_key = Secret::new(v);
        }
        if let Some(v) = get("WALCAST_REPLAY_DIR") {
            self.delivery.replay_dir = PathBuf::from(v);
        }
        if let Some(v) = get("WALCAST_REDIS_URL") {
            self.redis.url = Some(v);
        }
        Ok(())
    }

    /// Strapi's `DATABASE_SSL` (with `DATABASE_SSL_REJECT_UNAUTHORIZED` and
    /// `DATABASE_SSL_CA`) as `sslmode`/`sslrootcert`, for a database URL that names no
    /// `sslmode` itself. Strapi hands these to node-postgres, which verifies the certificate
    /// and the host name unless `rejectUnauthorized` is false: so `true` is `verify-full`,
    /// `true` with `DATABASE_SSL_REJECT_UNAUTHORIZED=false` is `require`, `false` is `disable`.
    fn apply_strapi_ssl(
        &mut self,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), Vec<ConfigError>> {
        let Some(ssl) = get("DATABASE_SSL") else {
            return Ok(());
        };
        let flag = |key: &str, value: &str| match value {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(vec![ConfigError::InvalidValue {
                key: key.into(),
                value: other.into(),
                allowed: "true or false".into(),
            }]),
        };
        let mode = if !flag("DATABASE_SSL", &ssl)? {
            SslMode::Disable
        } else {
            match get("DATABASE_SSL_REJECT_UNAUTHORIZED") {
                Some(v) if !flag("DATABASE_SSL_REJECT_UNAUTHORIZED", &v)? => SslMode::Require,
                _ => SslMode::VerifyFull,
            }
        };
        let ca = get("DATABASE_SSL_CA").filter(|_| mode != SslMode::Disable);
        if let Some(ca) = &ca
            && ca.contains("-----BEGIN")
        {
            return Err(vec![ConfigError::InvalidValue {
                key: "DATABASE_SSL_CA".into(),
                value: "<PEM text>".into(),
                allowed: "the path of a PEM file with the CA certificate(s)".into(),
            }]);
        }
        let url = self.database.url.expose();
        if tls::split_url(url).is_ok_and(|split| split.names_sslmode) {
            return Ok(());
        }
        let url = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut url = format!(
                "{url}{}sslmode={mode}",
                if url.contains('?') { '&' } else { '?' }
            );
            if let Some(ca) = ca {
                url.push_str(&format!("&sslrootcert={}", encode_userinfo(&ca)));
            }
            url
        } else {
            let mut url = format!("{url} sslmode={mode}");
            if let Some(ca) = ca {
                url.push_str(&format!(" sslrootcert={ca}"));
            }
            url
        };
        self.database.url = Secret::new(url);
        Ok(())
    }

    /// Checks every value; returns all problems at once.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut invalid = |key: &str, value: &str, allowed: &str| {
            errors.push(ConfigError::InvalidValue {
                key: key.into(),
                value: value.into(),
                allowed: allowed.into(),
            })
        };
        let split = tls::split_url(self.database.url.expose());
        match &split {
            Err(e) => invalid(
                "database.url",
                &redact_url(self.database.url.expose()),
                &format!(
                    "{e}; e.g. postgres://user@db:5432/strapi?sslmode=verify-full&sslrootcert=/path/to/ca.pem"
                ),
            ),
            Ok(split) => {
                if let Some(tls::RootCerts::File(path)) = &split.tls.root_cert
                    && !path.is_file()
                {
                    invalid(
                        "database.url sslrootcert",
                        &path.display().to_string(),
                        "a readable PEM file with the CA certificate(s) that signed the server's certificate, or `system`",
                    );
                }
            }
        }
        match split
            .as_ref()
            .map(|s| s.rest.as_str())
            .unwrap_or(self.database.url.expose())
            .parse::<tokio_postgres::Config>()
        {
            Ok(pg) => {
                if pg.get_hosts().is_empty() {
                    invalid(
                        "database.url",
                        &redact_url(self.database.url.expose()),
                        "a URL naming a host, e.g. postgres://user@127.0.0.1:5432/strapi",
                    );
                }
            }
            Err(_) => invalid(
                "database.url",
                &redact_url(self.database.url.expose()),
                "a postgres:// URL, e.g. postgres://user:password@127.0.0.1:5432/strapi",
            ),
        }
        for (key, value) in [
            ("replication.slot", &self.replication.slot),
            ("replication.publication", &self.replication.publication),
        ] {
            if !is_identifier(value) {
                invalid(
                    key,
                    value,
                    "a Postgres identifier: lowercase letters, digits and _, starting with a letter or _, at most 63 characters",
                );
            }
        }
        if !(1_000..=600_000).contains(&self.replication.status_interval_ms) {
            invalid(
                "replication.status_interval_ms",
                &self.replication.status_interval_ms.to_string(),
                "1000 to 600000",
            );
        }
        if self.replication.max_buffered_changes == 0 {
            invalid("replication.max_buffered_changes", "0", "1 or more");
        }
        if let Some(dir) = &self.replication.spill_dir
            && !dir.is_dir()
        {
            invalid(
                "replication.spill_dir",
                &dir.display().to_string(),
                "an existing directory (leave it out for the OS temp dir)",
            );
        }
        if self.server.listen.parse::<SocketAddr>().is_err() {
            invalid(
                "server.listen",
                &self.server.listen,
                "an address with port, e.g. 127.0.0.1:1338 or [::]:1338",
            );
        }
        if !self.server.path.starts_with('/') || self.server.path.len() < 2 {
            invalid(
                "server.path",
                &self.server.path,
                "an absolute path such as /socket.io",
            );
        }
        for (i, ct) in self.content_types.iter().enumerate() {
            if !is_content_type_uid(&ct.uid) {
                invalid(
                    &format!("content_types[{i}].uid"),
                    &ct.uid,
                    "a content-type UID such as api::article.article",
                );
            }
            for action in &ct.actions {
                if !KNOWN_ACTIONS.contains(&action.as_str()) {
                    invalid(
                        &format!("content_types[{i}].actions"),
                        action,
                        &KNOWN_ACTIONS.join(", "),
                    );
                }
            }
            if let Err(why) = crate::strapi::Populate::parse(ct.populate.as_ref()) {
                invalid(
                    &format!("content_types[{i}].populate"),
                    &ct.populate
                        .as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    &format!(
                        "'*', true, a list of attribute names or a table in Strapi's object syntax ({why})"
                    ),
                );
            }
        }
        if self.delivery.replay_max_events == 0 {
            invalid("delivery.replay_max_events", "0", "1 or more");
        }
        if self.delivery.replay_max_age_secs == 0 {
            invalid("delivery.replay_max_age_secs", "0", "1 or more");
        }
        if self.delivery.replay_dir.as_os_str().is_empty() {
            invalid(
                "delivery.replay_dir",
                "",
                "a directory walcast may create and write, e.g. ./.walcast/replay",
            );
        }
        for (uid, table) in &self.strapi.component_tables {
            if uid
                .split_once('.')
                .is_none_or(|(c, n)| c.is_empty() || n.is_empty())
            {
                invalid(
                    "strapi.component_tables",
                    uid,
                    "component UIDs such as shared.seo",
                );
            }
            if !is_identifier(table) {
                invalid(
                    &format!("strapi.component_tables.{uid:?}"),
                    table,
                    "a table name (letters, digits, underscores)",
                );
            }
        }
        if !(1..=10_000).contains(&self.clients.max_subscriptions_per_socket) {
            invalid(
                "clients.max_subscriptions_per_socket",
                &self.clients.max_subscriptions_per_socket.to_string(),
                "1 to 10000",
            );
        }
        if !(8..=1_048_576).contains(&self.clients.socket_buffer_packets) {
            invalid(
                "clients.socket_buffer_packets",
                &self.clients.socket_buffer_packets.to_string(),
                "8 to 1048576",
            );
        }
        if self.security.max_connections == 0 {
            invalid("security.max_connections", "0", "1 or more");
        }
        let mut cidrs: Vec<(&str, &String)> = Vec::new();
        cidrs.extend(
            self.security
                .ip_allow
                .iter()
                .map(|c| ("security.ip_allow", c)),
        );
        cidrs.extend(
            self.security
                .ip_deny
                .iter()
                .map(|c| ("security.ip_deny", c)),
        );
        if let TrustProxy::Proxies(list) = &self.security.trust_proxy {
            cidrs.extend(list.iter().map(|c| ("security.trust_proxy", c)));
        }
        for (key, cidr) in cidrs {
            if crate::security::parse_net(cidr).is_none() {
                invalid(
                    key,
                    cidr,
                    "an IPv4 or IPv6 address or CIDR (\"10.0.0.0/8\", \"::1/128\")",
                );
            }
        }
        for (key, value) in [
            (
                "security.rate_limit.max_events_per_second",
                u64::from(self.security.rate_limit.max_events_per_second),
            ),
            (
                "security.rate_limit.max_connections_per_ip",
                u64::from(self.security.rate_limit.max_connections_per_ip),
            ),
            (
                "security.rate_limit.disconnect_after_refused",
                u64::from(self.security.rate_limit.disconnect_after_refused),
            ),
            (
                "security.lockout_max_failures",
                u64::from(self.security.lockout_max_failures),
            ),
            (
                "security.lockout_window_secs",
                self.security.lockout_window_secs,
            ),
            ("security.session_ttl_secs", self.security.session_ttl_secs),
            (
                "security.session_max_uses",
                u64::from(self.security.session_max_uses),
            ),
            (
                "security.presence_stale_secs",
                self.security.presence_stale_secs,
            ),
        ] {
            if value == 0 {
                invalid(key, "0", "1 or more");
            }
        }
        if !(1_024..=104_857_600).contains(&self.security.max_payload_bytes) {
            invalid(
                "security.max_payload_bytes",
                &self.security.max_payload_bytes.to_string(),
                "1024 to 104857600",
            );
        }
        if let Some(url) = &self.redis.url
            && (!url.starts_with("redis://")
                || !url.to_ascii_lowercase().contains("protocol=resp3"))
        {
            invalid(
                "redis.url",
                url,
                "redis://host:port/?protocol=resp3 (RESP3 is required by the Socket.IO adapter)",
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The parsed database URL (valid after `validate`), with the `sslmode` tokio-postgres
    /// understands; the rest of TLS is [`Config::tls`].
    pub fn postgres(&self) -> tokio_postgres::Config {
        let split = tls::split_url(self.database.url.expose()).expect("database.url was validated");
        let mut pg: tokio_postgres::Config =
            split.rest.parse().expect("database.url was validated");
        // Postgres offers no TLS on Unix sockets; libpq does not ask there either.
        let unix_only = pg
            .get_hosts()
            .iter()
            .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
        pg.ssl_mode(if unix_only {
            tokio_postgres::config::SslMode::Disable
        } else {
            split.tls.mode.for_tokio_postgres()
        });
        pg
    }

    /// `sslmode` and `sslrootcert` of the database URL (valid after `validate`).
    pub fn tls(&self) -> TlsSettings {
        tls::split_url(self.database.url.expose())
            .expect("database.url was validated")
            .tls
    }

    /// The listen address (valid after `validate`).
    pub fn listen_addr(&self) -> SocketAddr {
        self.server
            .listen
            .parse()
            .expect("server.listen was validated")
    }
}

fn first_host(config: &tokio_postgres::Config) -> String {
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    }
}

fn encode_userinfo(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The URL with its password replaced, for error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Whether `s` is a plain lowercase Postgres identifier, safe to splice into SQL.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

fn is_content_type_uid(s: &str) -> bool {
    let Some((namespace, rest)) = s.split_once("::") else {
        return false;
    };
    matches!(namespace, "api" | "plugin" | "admin")
        && !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_repository_example_config_parses_and_validates() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
            .expect("config.toml at the repository root");
        let mut config = Config::from_toml(&text).expect("config.toml parses");
        config.apply_env(&HashMap::new()).unwrap();
        config.validate().expect("config.toml validates");
    }

    #[test]
    fn an_unknown_key_is_named_in_the_error() {
        let err = Config::from_toml("[replication]\nslott = \"x\"\n").unwrap_err();
        assert!(err.contains("slott"), "{err}");
        assert!(err.contains("slot"), "{err}");
    }

    #[test]
    fn a_bad_value_names_key_value_and_what_is_allowed() {
        let mut config = Config::from_toml("[server]\nlisten = \"nowhere\"\n").unwrap();
        config.replication.slot = "Bad-Slot".into();
        let errors = config.validate().unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|t| t.contains("server.listen")
                && t.contains("nowhere")
                && t.contains("port")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("replication.slot") && t.contains("Bad-Slot")),
            "{text:?}"
        );
    }

    #[test]
    fn strapi_split_database_variables_build_the_url() {
        let mut config = Config::default();
        config
            .apply_env(&env(&[
                ("DATABASE_HOST", "db.internal"),
                ("DATABASE_PORT", "6543"),
                ("DATABASE_NAME", "cms"),
                ("DATABASE_USERNAME", "strapi"),
                ("DATABASE_PASSWORD", "p@ss word"),
            ]))
            .unwrap();
        config.validate().unwrap();
        let pg = config.postgres();
        assert_eq!(pg.get_dbname(), Some("cms"));
        assert_eq!(pg.get_user(), Some("strapi"));
        assert_eq!(pg.get_password(), Some(&b"p@ss word"[..]));
        assert_eq!(pg.get_ports(), &[6543]);
    }

    #[test]
    fn database_url_wins_and_secrets_come_from_strapi_names() {
        let mut config = Config::default();
        config
            .apply_env(&env(&[
                ("DATABASE_URL", "postgres://u@h:1/d"),
                ("DATABASE_HOST", "ignored"),
                ("JWT_SECRET", "s1"),
                ("API_TOKEN_SALT", "s2"),
                ("ADMIN_JWT_SECRET", "s3"),
            ]))
            .unwrap();
        assert_eq!(config.database.url.expose(), "postgres://u@h:1/d");
        assert_eq!(config.strapi.jwt_secret.expose(), "s1");
        assert_eq!(config.strapi.api_token_salt.expose(), "s2");
        assert_eq!(config.strapi.admin_jwt_secret.expose(), "s3");
        assert!(!format!("{config:?}").contains("s1"));
    }

    #[test]
    fn strapi_database_ssl_maps_to_sslmode() {
        let tls_of = |pairs: &[(&str, &str)]| {
            let mut config = Config::default();
            config.apply_env(&env(pairs))?;
            config.validate()?;
            Ok::<_, Vec<ConfigError>>((config.tls(), config.postgres()))
        };
        let split = [("DATABASE_HOST", "db.internal")];
        // Strapi (node-postgres) verifies the certificate and host unless told otherwise.
        let (tls, pg) = tls_of(&[split[0], ("DATABASE_SSL", "true")]).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let (tls, _) = tls_of(&[
            split[0],
            ("DATABASE_SSL", "true"),
            ("DATABASE_SSL_REJECT_UNAUTHORIZED", "false"),
        ])
        .unwrap();
        assert_eq!(tls.mode, SslMode::Require);
        let (tls, pg) = tls_of(&[split[0], ("DATABASE_SSL", "false")]).unwrap();
        assert_eq!(tls.mode, SslMode::Disable);
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
        let (tls, _) = tls_of(&[split[0]]).unwrap();
        assert_eq!(tls.mode, SslMode::Prefer);
        // With DATABASE_URL too, unless the URL names its own sslmode.
        let ca = std::env::temp_dir().join("walcast-config-test-ca.pem");
        std::fs::write(&ca, "not checked here").unwrap();
        let (tls, _) = tls_of(&[
            ("DATABASE_URL", "postgres://u@h:1/d"),
            ("DATABASE_SSL", "true"),
            ("DATABASE_SSL_CA", ca.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(tls::RootCerts::File(ca.clone())));
        let (tls, _) = tls_of(&[
            ("DATABASE_URL", "postgres://u@h:1/d?sslmode=disable"),
            ("DATABASE_SSL", "true"),
        ])
        .unwrap();
        assert_eq!(tls.mode, SslMode::Disable);
        let errors = tls_of(&[split[0], ("DATABASE_SSL", "yes")]).unwrap_err();
        assert!(errors[0].to_string().contains("DATABASE_SSL"), "{errors:?}");
    }

    #[test]
    fn sslmode_and_sslrootcert_in_the_url_are_validated() {
        let mut config = Config::default();
        config.database.url = Secret::new("postgres://u@h/d?sslmode=verify");
        let text = config.validate().unwrap_err()[0].to_string();
        assert!(
            text.contains("database.url") && text.contains("verify-full"),
            "{text}"
        );
        config.database.url =
            Secret::new("postgres://u@h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        let text = config.validate().unwrap_err()[0].to_string();
        assert!(
            text.contains("sslrootcert") && text.contains("/nonexistent/ca.pem"),
            "{text}"
        );
        config.database.url = Secret::new("postgres://u@h/d?sslmode=verify-ca&sslrootcert=system");
        config.validate().unwrap();
        assert_eq!(config.tls().mode, SslMode::VerifyCa);
        assert_eq!(
            config.postgres().get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn buffer_size_and_spill_dir_are_checked() {
        let config = Config::from_toml(
            "[replication]\nmax_buffered_changes = 0\nspill_dir = \"/nonexistent/walcast-spill\"\n",
        )
        .unwrap();
        let text: Vec<String> = config
            .validate()
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            text.iter()
                .any(|t| t.contains("replication.max_buffered_changes") && t.contains("1 or more")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("replication.spill_dir")),
            "{text:?}"
        );
        assert_eq!(
            Config::default().replication.max_buffered_changes,
            ReplicationConfig::DEFAULT_MAX_BUFFERED_CHANGES
        );
    }

    #[test]
    fn component_table_overrides_are_checked() {
        let ok = Config::from_toml(
            "[strapi]\ncomponent_tables = { \"shared.seo\" = \"components_shared_seos\" }\n",
        )
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(
            ok.strapi.component_tables["shared.seo"],
            "components_shared_seos"
        );
        let bad = Config::from_toml("[strapi]\ncomponent_tables = { \"seo\" = \"drop table\" }\n")
            .unwrap();
        let text: Vec<String> = bad
            .validate()
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text.iter().all(|t| t.contains("strapi.component_tables")));
    }

    #[test]
    fn client_limits_are_validated() {
        let config = Config::from_toml(
            "[clients]\nmax_subscriptions_per_socket = 0\nsocket_buffer_packets = 2\n",
        )
        .unwrap();
        let text: Vec<String> = config
            .validate()
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            text.iter()
                .any(|t| t.contains("clients.max_subscriptions_per_socket")
                    && t.contains("1 to 10000")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("clients.socket_buffer_packets") && t.contains("\"2\"")),
            "{text:?}"
        );
        let defaults = Config::default().clients;
        assert_eq!(defaults.max_subscriptions_per_socket, 100);
        assert!(!defaults.private_rooms && !defaults.private_messages);
    }

    #[test]
    fn unknown_action_is_rejected() {
        let config = Config::from_toml(
            "[[content_types]]\nuid = \"api::tag.tag\"\nactions = [\"explode\"]\n",
        )
        .unwrap();
        let errors = config.validate().unwrap_err();
        assert!(errors[0].to_string().contains("explode"));
        assert!(errors[0].to_string().contains("content_types[0].actions"));
    }
}
