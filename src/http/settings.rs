//! The runtime-tunable settings (`GET`/`PUT /io/settings`), in the plugin's settings shape.
//!
//! `GET` shows the effective settings: the plugin's defaults, overridden by walcast's
//! configuration and by what `PUT` changed; secrets are never shown. `PUT` accepts only the
//! runtime-tunable subset (`monitoring`, `security.rateLimiting`, `sensitiveFields`,
//! `contentTypes`, `presence`), validated strictly: an unknown key or a wrong type is refused
//! with 400. Accepted changes are applied at once (sensitive fields and per-type actions
//! reach the router before the next event) and persisted in walcast's own state folder
//! (`settings.json` in `delivery.state_dir`, by default next to the replay log's folder), never in Strapi's tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{Config, KNOWN_ACTIONS};

/// `monitoring` (the plugin's shape and names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    pub enable_connection_logging: bool,
    pub enable_event_logging: bool,
    pub max_event_log_size: usize,
}

impl Default for Monitoring {
    fn default() -> Self {
        // Event logging on by default (the plugin's is off): the dashboard shows the log.
        Monitoring {
            enable_connection_logging: true,
            enable_event_logging: true,
            max_event_log_size: 100,
        }
    }
}

/// `security.rateLimiting`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimiting {
    pub enabled: bool,
    pub max_events_per_second: u32,
}

/// `presence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    pub enabled: bool,
    pub heartbeat_interval: u64,
    pub stale_timeout: u64,
    pub show_avatars: bool,
    pub show_typing_indicator: bool,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            enabled: true,
            heartbeat_interval: 30_000,
            stale_timeout: 60_000,
            show_avatars: true,
            show_typing_indicator: true,
        }
    }
}

/// The actions emitted for one content type (`contentTypes[uid]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TypeActions {
    pub create: bool,
    pub update: bool,
    pub delete: bool,
    pub publish: bool,
    pub unpublish: bool,
}

impl TypeActions {
    fn from_list(actions: &[String]) -> Self {
        let has = |a: &str| actions.iter().any(|x| x == a);
        TypeActions {
            create: has("create"),
            update: has("update"),
            delete: has("delete"),
            publish: has("publish"),
            unpublish: has("unpublish"),
        }
    }

    /// The enabled actions, in [`KNOWN_ACTIONS`] order.
    pub fn to_list(&self) -> Vec<String> {
        let flags = [
            self.create,
            self.update,
            self.delete,
            self.publish,
            self.unpublish,
        ];
        KNOWN_ACTIONS
            .iter()
            .zip(flags)
            .filter(|(_, on)| *on)
            .map(|(a, _)| (*a).to_owned())
            .collect()
    }
}

/// The runtime-tunable settings in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tunable {
    pub monitoring: Monitoring,
    pub rate_limiting: RateLimiting,
    pub sensitive_fields: Vec<String>,
    pub content_types: BTreeMap<String, TypeActions>,
    pub presence: Presence,
}

impl Tunable {
    /// The values walcast's configuration gives.
    pub fn from_config(config: &Config) -> Self {
        Tunable {
            monitoring: Monitoring::default(),
            rate_limiting: RateLimiting {
                enabled: config.security.rate_limit.max_events_per_second > 0,
                max_events_per_second: config.security.rate_limit.max_events_per_second,
            },
            sensitive_fields: config.events.sensitive_fields.clone(),
            content_types: config
                .content_types
                .iter()
                .map(|ct| (ct.uid.clone(), TypeActions::from_list(&ct.actions)))
                .collect(),
            presence: Presence::default(),
        }
    }

    /// Applies a validated patch (deep merge: only the keys given change).
    pub fn apply(&mut self, patch: SettingsPatch) {
        if let Some(m) = patch.monitoring {
            set(
                &mut self.monitoring.enable_connection_logging,
                m.enable_connection_logging,
            );
            set(
                &mut self.monitoring.enable_event_logging,
                m.enable_event_logging,
            );
            set(
                &mut self.monitoring.max_event_log_size,
                m.max_event_log_size,
            );
        }
        if let Some(r) = patch.security.and_then(|s| s.rate_limiting) {
            set(&mut self.rate_limiting.enabled, r.enabled);
            set(
                &mut self.rate_limiting.max_events_per_second,
                r.max_events_per_second,
            );
        }
        set(&mut self.sensitive_fields, patch.sensitive_fields);
        if let Some(types) = patch.content_types {
            self.content_types.extend(types);
        }
        if let Some(p) = patch.presence {
            set(&mut self.presence.enabled, p.enabled);
            set(&mut self.presence.heartbeat_interval, p.heartbeat_interval);
            set(&mut self.presence.stale_timeout, p.stale_timeout);
            set(&mut self.presence.show_avatars, p.show_avatars);
            set(
                &mut self.presence.show_typing_indicator,
                p.show_typing_indicator,
            );
        }
    }

    /// The config with these settings in place (what the router is rebuilt from).
    pub fn apply_to(&self, config: &Config) -> Config {
        let mut config = config.clone();
        config.events.sensitive_fields = self.sensitive_fields.clone();
        for (uid, actions) in &self.content_types {
            match config.content_types.iter_mut().find(|ct| &ct.uid == uid) {
                Some(ct) => ct.actions = actions.to_list(),
                None => config.content_types.push(crate::config::ContentTypeConfig {
                    uid: uid.clone(),
                    actions: actions.to_list(),
                    populate: None,
                    status: Default::default(),
                }),
            }
        }
        config
    }

    /// The whole settings object in the plugin's shape; secrets are not included.
    pub fn plugin_shape(&self, config: &Config) -> Value {
        let content_types: BTreeMap<&String, &TypeActions> = self.content_types.iter().collect();
        json!({
            "enabled": true,
            "cors": { "origins": config.server.cors_origins },
            "connection": {
                "maxConnections": config.security.max_connections,
                "pingTimeout": 20000,
                "pingInterval": 25000,
                "connectionTimeout": 45000
            },
            "security": {
                "requireAuthentication": config.security.require_authentication,
                "rateLimiting": self.rate_limiting,
                "ipWhitelist": config.security.ip_allow,
                "ipBlacklist": config.security.ip_deny
            },
            "contentTypes": content_types,
            "events": {
                "customEventNames": false,
                "includeRelations": config.content_types.iter().any(|c| c.populate.is_some()),
                "excludeFields": [],
                "onlyPublished": false
            },
            "rooms": { "autoJoinByRole": {}, "enablePrivateRooms": config.clients.private_rooms },
            "entitySubscriptions": {
                "enabled": true,
                "maxSubscriptionsPerSocket": config.clients.max_subscriptions_per_socket,
                "requireVerification": true,
                "allowedContentTypes": [],
                "enableMetrics": true
            },
            "redis": {
                "enabled": config.redis.url.is_some(),
                "url": config.redis.url.as_ref().map(|_| "<redacted>"),
                "prefix": config.redis.url.as_ref().map(|_| config.redis.prefix_for(&config.replication.slot))
            },
            "namespaces": { "enabled": false, "list": {} },
            "middleware": { "enabled": false, "handlers": [] },
            "monitoring": self.monitoring,
            "presence": self.presence,
            "sensitiveFields": self.sensitive_fields
        })
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// The body `PUT /io/settings` accepts; anything else is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SettingsPatch {
    pub monitoring: Option<MonitoringPatch>,
    pub security: Option<SecurityPatch>,
    pub sensitive_fields: Option<Vec<String>>,
    pub content_types: Option<BTreeMap<String, TypeActions>>,
    pub presence: Option<PresencePatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MonitoringPatch {
    pub enable_connection_logging: Option<bool>,
    pub enable_event_logging: Option<bool>,
    pub max_event_log_size: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecurityPatch {
    pub rate_limiting: Option<RateLimitingPatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitingPatch {
    pub enabled: Option<bool>,
    pub max_events_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PresencePatch {
    pub enabled: Option<bool>,
    pub heartbeat_interval: Option<u64>,
    pub stale_timeout: Option<u64>,
    pub show_avatars: Option<bool>,
    pub show_typing_indicator: Option<bool>,
}

/// Why a settings change was refused or not saved.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid settings: {0}")]
    Invalid(String),
    #[error("saving the settings to {path}")]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SettingsPatch {
    /// Parses and checks a `PUT` body.
    pub fn parse(body: &[u8]) -> Result<Self, SettingsError> {
        let patch: SettingsPatch =
            serde_json::from_slice(body).map_err(|e| SettingsError::Invalid(e.to_string()))?;
        if let Some(types) = &patch.content_types {
            for uid in types.keys() {
                if !uid.contains("::") {
                    return Err(SettingsError::Invalid(format!(
                        "contentTypes: {uid:?} is not a content-type uid"
                    )));
                }
            }
        }
        if let Some(size) = patch.monitoring.as_ref().and_then(|m| m.max_event_log_size)
            && !(1..=10_000).contains(&size)
        {
            return Err(SettingsError::Invalid(
                "monitoring.maxEventLogSize must be 1 to 10000".into(),
            ));
        }
        Ok(patch)
    }
}

/// Where the settings are kept: `settings.json` in `delivery.state_dir`, by default the
/// folder that holds the replay log's.
pub fn state_file(config: &Config) -> PathBuf {
    if let Some(dir) = &config.delivery.state_dir {
        return dir.join("settings.json");
    }
    let replay = &config.delivery.replay_dir;
    let dir = replay
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join("settings.json")
}

/// The saved settings, if any and readable (a bad file is ignored with a warning).
pub fn load(path: &Path) -> Option<Tunable> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable saved settings");
            None
        }
    }
}

/// Saves the settings atomically (temporary file, then rename).
pub fn save(path: &Path, settings: &Tunable) -> Result<(), SettingsError> {
    let err = |source| SettingsError::Save {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(settings).unwrap_or_default();
    std::fs::write(&tmp, body).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_are_strict_and_merge_deeply() {
        assert!(SettingsPatch::parse(br#"{"nope":1}"#).is_err());
        assert!(SettingsPatch::parse(br#"{"monitoring":{"enableEventLogging":"yes"}}"#).is_err());
        assert!(SettingsPatch::parse(br#"{"monitoring":{"extra":true}}"#).is_err());
        let mut t = Tunable::from_config(&Config::default());
        let p = SettingsPatch::parse(
            br#"{"monitoring":{"maxEventLogSize":5},"sensitiveFields":["secretNote"],
                "contentTypes":{"api::tag.tag":{"create":true}}}"#,
        )
        .unwrap();
        t.apply(p);
        assert_eq!(t.monitoring.max_event_log_size, 5);
        assert!(t.monitoring.enable_event_logging);
        let config = t.apply_to(&Config::default());
        assert_eq!(
            config.events.sensitive_fields,
            vec!["secretNote".to_string()]
        );
        assert_eq!(config.content_types[0].actions, vec!["create".to_string()]);
    }
}
