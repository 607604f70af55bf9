//! `PermissionModel`: which principals may read which content types, from Strapi's tables.
//!
//! Loaded whole with a few queries over the users-permissions roles, the content-api tokens,
//! the active admin users and the users-permissions advanced settings, and replaced whole when
//! the WAL shows those tables changed (see [`crate::auth::live`]); routing consults the
//! in-memory snapshot, never the database.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::Client;

use super::principal::{Principal, admin_room, draft_room, role_room, token_room};
use crate::assemble::Action;
use crate::config::PermissionMode;

/// The core-store key of the users-permissions advanced settings.
pub const ADVANCED_SETTINGS_KEY: &str = "plugin_users-permissions_advanced";

/// One users-permissions role and the actions it is granted.
#[derive(Debug, Clone, Default)]
pub struct RoleGrants {
    pub name: String,
    pub role_type: String,
    pub actions: HashSet<String>,
    /// Listed in `events.draft_roles` (by name or type, case-insensitively).
    pub draft: bool,
}

impl RoleGrants {
    /// The role's room (`io-role-public` for the role of type `public`).
    pub fn room(&self) -> String {
        if self.role_type == "public" {
            role_room("public")
        } else {
            role_room(&self.name)
        }
    }

    /// `read`: `<uid>.find` or `<uid>.findOne` lets a role hear every action of the type;
    /// `action`: the plugin's rule, `<uid>.<action>`.
    pub fn allows(&self, uid: &str, action: Action, mode: PermissionMode) -> bool {
        Grants::Actions(&self.actions).allows(uid, action, mode)
    }
}

/// An API token's type (`strapi_api_tokens.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    FullAccess,
    ReadOnly,
    Custom,
}

impl TokenType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full-access" => Some(TokenType::FullAccess),
            "read-only" => Some(TokenType::ReadOnly),
            "custom" => Some(TokenType::Custom),
            _ => None,
        }
    }
}

/// One content-api token and what it may do.
#[derive(Debug, Clone)]
pub struct TokenGrants {
    pub name: String,
    pub token_type: TokenType,
    /// `strapi_api_token_permissions.action` (custom tokens).
    pub actions: HashSet<String>,
    pub expires_at_ms: Option<i64>,
}

impl TokenGrants {
    pub fn grants(&self) -> Grants<'_> {
        match self.token_type {
            TokenType::FullAccess => Grants::All,
            TokenType::ReadOnly => Grants::ReadAll,
            TokenType::Custom => Grants::Actions(&self.actions),
        }
    }

    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// What a principal may hear.
#[derive(Debug, Clone, Copy)]
pub enum Grants<'a> {
    /// Admin users and full-access tokens: everything.
    All,
    /// Read-only tokens: every `find`/`findOne` scope, nothing else.
    ReadAll,
    /// Roles and custom tokens: these permission actions.
    Actions(&'a HashSet<String>),
}

impl Grants<'_> {
    /// Whether an event `action` on type `uid` may reach this principal.
    pub fn allows(&self, uid: &str, action: Action, mode: PermissionMode) -> bool {
        match (self, mode) {
            (Grants::All, _) => true,
            (_, PermissionMode::Read) => self.may_read(uid),
            // The plugin: a read-only token has no create/update/delete scope.
            (Grants::ReadAll, PermissionMode::Action) => false,
            (Grants::Actions(actions), PermissionMode::Action) => {
                actions.contains(&format!("{uid}.{}", action.as_str()))
            }
        }
    }

    /// `<uid>.find` or `<uid>.findOne`.
    pub fn may_read(&self, uid: &str) -> bool {
        match self {
            Grants::All | Grants::ReadAll => true,
            Grants::Actions(actions) => {
                actions.contains(&format!("{uid}.find"))
                    || actions.contains(&format!("{uid}.findOne"))
            }
        }
    }

    /// Whether it may read some content type at all.
    pub fn may_read_any(&self) -> bool {
        match self {
            Grants::All | Grants::ReadAll => true,
            Grants::Actions(actions) => actions
                .iter()
                .any(|a| a.ends_with(".find") || a.ends_with(".findOne")),
        }
    }
}

/// Which view(s) of the principals an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The published view of a D&P type: sockets that did not ask for drafts.
    Published,
    /// The draft view of a D&P type: sockets that asked for and may have drafts.
    Draft,
    /// A type without D&P: every socket that may read it.
    Both,
}

/// Everything routing and authentication need to know about Strapi's permissions.
#[derive(Debug, Clone, Default)]
pub struct PermissionModel {
    /// users-permissions roles by id.
    pub roles: BTreeMap<i64, RoleGrants>,
    /// The role with `type = 'public'`.
    pub public_role: Option<i64>,
    /// content-api tokens by id.
    pub tokens: BTreeMap<i64, TokenGrants>,
    /// Active, unblocked admin users.
    pub admins: BTreeSet<i64>,
    /// users-permissions advanced setting `email_confirmation`: unconfirmed users are refused.
    pub email_confirmation: bool,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl PermissionModel {
    /// Loads roles, tokens, admins and the advanced settings. `draft_roles` are the role names
    /// or types (any case) allowed the draft view.
    pub async fn load(
        client: &Client,
        draft_roles: &[String],
    ) -> Result<Self, tokio_postgres::Error> {
        let mut model = PermissionModel::default();
        let draft_roles: Vec<String> = draft_roles.iter().map(|r| r.to_lowercase()).collect();
        let rows = client
            .query(
                "SELECT r.id, r.name, r.type, p.action
                   FROM up_roles r
                   LEFT JOIN up_permissions_role_lnk l ON l.role_id = r.id
                   LEFT JOIN up_permissions p ON p.id = l.permission_id",
                &[],
            )
            .await?;
        for row in rows {
            let id = i64::from(row.get::<_, i32>(0));
            let grants = model.roles.entry(id).or_insert_with(|| {
                let name: Option<String> = row.get(1);
                let role_type: Option<String> = row.get(2);
                let name = name.unwrap_or_default();
                let role_type = role_type.unwrap_or_default();
                let draft = draft_roles
                    .iter()
                    .any(|d| *d == name.to_lowercase() || *d == role_type.to_lowercase());
                RoleGrants {
                    name,
                    role_type,
                    actions: HashSet::new(),
                    draft,
                }
            });
            if let Some(action) = row.get::<_, Option<String>>(3) {
                grants.actions.insert(action);
            }
        }
        model.public_role = model
            .roles
            .iter()
            .find(|(_, r)| r.role_type == "public")
            .map(|(id, _)| *id);

        // `kind` exists since Strapi 5.46; a NULL or missing kind is a content-api token.
        let rows = client
            .query(
                "SELECT t.id, t.name, t.type,
                        (extract(epoch FROM t.expires_at) * 1000)::bigint, p.action
                   FROM strapi_api_tokens t
                   LEFT JOIN strapi_api_token_permissions_token_lnk l ON l.api_token_id = t.id
                   LEFT JOIN strapi_api_token_permissions p ON p.id = l.api_token_permission_id
                  WHERE coalesce(to_jsonb(t) ->> 'kind', 'content-api') = 'content-api'",
                &[],
            )
            .await?;
        for row in rows {
            let id = i64::from(row.get::<_, i32>(0));
            let Some(token_type) = row
                .get::<_, Option<String>>(2)
                .as_deref()
                .and_then(TokenType::parse)
            else {
                continue;
            };
            let grants = model.tokens.entry(id).or_insert_with(|| TokenGrants {
                name: row.get::<_, Option<String>>(1).unwrap_or_default(),
                token_type,
                actions: HashSet::new(),
                expires_at_ms: row.get(3),
            });
            if let Some(action) = row.get::<_, Option<String>>(4) {
                grants.actions.insert(action);
            }
        }

        let rows = client
            .query(
                "SELECT id FROM admin_users WHERE is_active IS TRUE AND blocked IS NOT TRUE",
                &[],
            )
            .await?;
        model.admins = rows.iter().map(|r| i64::from(r.get::<_, i32>(0))).collect();

        let row = client
            .query_opt(
                "SELECT value FROM strapi_core_store_settings WHERE key = $1",
                &[&ADVANCED_SETTINGS_KEY],
            )
            .await?;
        model.email_confirmation = row
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
            .and_then(|v| v.get("email_confirmation").and_then(|b| b.as_bool()))
            .unwrap_or(false);
        Ok(model)
    }

    /// What `principal` may hear now; `None`: nothing (unknown role or token, expired token,
    /// inactive admin).
    pub fn grants(&self, principal: &Principal) -> Option<Grants<'_>> {
        match principal {
            Principal::Public => self
                .public_role
                .and_then(|id| self.roles.get(&id))
                .map(|r| Grants::Actions(&r.actions)),
            Principal::User { role_id, .. } => {
                self.roles.get(role_id).map(|r| Grants::Actions(&r.actions))
            }
            Principal::ApiToken { id, .. } => self
                .tokens
                .get(id)
                .filter(|t| !t.expired(now_ms()))
                .map(TokenGrants::grants),
            Principal::Admin { id, .. } => self.admins.contains(id).then_some(Grants::All),
        }
    }

    /// Whether `principal` may ask for the draft view: admin users, API tokens that may read,
    /// roles listed in `events.draft_roles`.
    pub fn may_use_drafts(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Public => self
                .public_role
                .and_then(|id| self.roles.get(&id))
                .is_some_and(|r| r.draft),
            Principal::User { role_id, .. } => self.roles.get(role_id).is_some_and(|r| r.draft),
            Principal::ApiToken { .. } => self.grants(principal).is_some_and(|g| g.may_read_any()),
            Principal::Admin { id, .. } => self.admins.contains(id),
        }
    }

    /// Whether every principal behind `room` (a plain room, without `:draft`) may read `uid`:
    /// decides which populated relations a payload variant for that room keeps.
    pub fn room_reads(&self, room: &str, uid: &str, mode: PermissionMode) -> bool {
        let now = now_ms();
        let mut found = false;
        for role in self.roles.values().filter(|r| r.room() == room) {
            found = true;
            if !role.allows(uid, Action::Update, mode) {
                return false;
            }
        }
        for token in self.tokens.values().filter(|t| token_room(&t.name) == room) {
            found = true;
            if token.expired(now) || !token.grants().allows(uid, Action::Update, mode) {
                return false;
            }
        }
        found || self.admins.iter().any(|id| admin_room(*id) == room)
    }

    /// Every room that may hear `action` on content type `uid` in `audience`. A room shared by
    /// several principals (two roles or tokens with the same name) gets the event only if all
    /// of them may hear it.
    pub fn rooms_for(
        &self,
        uid: &str,
        action: Action,
        audience: Audience,
        mode: PermissionMode,
    ) -> Vec<String> {
        let now = now_ms();
        // room → (allowed by every principal sharing it, draft room allowed too)
        let mut rooms: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        let mut add = |room: String, allowed: bool, draft: bool| {
            let entry = rooms.entry(room).or_insert((true, true));
            entry.0 &= allowed;
            entry.1 &= draft;
        };
        for role in self.roles.values() {
            add(role.room(), role.allows(uid, action, mode), role.draft);
        }
        for token in self.tokens.values() {
            let allowed = !token.expired(now) && token.grants().allows(uid, action, mode);
            add(token_room(&token.name), allowed, true);
        }
        for id in &self.admins {
            add(admin_room(*id), true, true);
        }
        let mut out = Vec::new();
        for (room, (allowed, draft)) in rooms {
            if !allowed {
                continue;
            }
            if audience != Audience::Draft {
                out.push(room.clone());
            }
            if audience != Audience::Published && draft {
                out.push(draft_room(&room));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(actions: &[&str]) -> RoleGrants {
        RoleGrants {
            name: "Public".into(),
            role_type: "public".into(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
            draft: false,
        }
    }

    #[test]
    fn read_mode_lets_find_hear_every_action() {
        let g = grants(&["api::tag.tag.find"]);
        for action in [Action::Create, Action::Update, Action::Delete] {
            assert!(g.allows("api::tag.tag", action, PermissionMode::Read));
        }
        assert!(!g.allows("api::article.article", Action::Create, PermissionMode::Read));
    }

    #[test]
    fn action_mode_reproduces_the_plugin() {
        let g = grants(&["api::tag.tag.find", "api::tag.tag.create"]);
        assert!(g.allows("api::tag.tag", Action::Create, PermissionMode::Action));
        assert!(!g.allows("api::tag.tag", Action::Delete, PermissionMode::Action));
    }

    fn model() -> PermissionModel {
        let mut m = PermissionModel::default();
        m.roles.insert(2, grants(&["api::tag.tag.find"]));
        m.public_role = Some(2);
        m.roles.insert(
            3,
            RoleGrants {
                name: "Editor".into(),
                role_type: "editor".into(),
                actions: ["api::article.article.findOne".to_owned()].into(),
                draft: true,
            },
        );
        m.tokens.insert(
            1,
            TokenGrants {
                name: "Read Only".into(),
                token_type: TokenType::ReadOnly,
                actions: HashSet::new(),
                expires_at_ms: None,
            },
        );
        m.tokens.insert(
            2,
            TokenGrants {
                name: "old".into(),
                token_type: TokenType::FullAccess,
                actions: HashSet::new(),
                expires_at_ms: Some(1),
            },
        );
        m.tokens.insert(
            3,
            TokenGrants {
                name: "writer".into(),
                token_type: TokenType::Custom,
                actions: ["api::tag.tag.create".to_owned()].into(),
                expires_at_ms: None,
            },
        );
        m.admins.insert(1);
        m
    }

    #[test]
    fn rooms_follow_read_permissions_and_views() {
        let m = model();
        let read = PermissionMode::Read;
        assert_eq!(
            m.rooms_for("api::tag.tag", Action::Delete, Audience::Published, read),
            ["io-admin-user-1", "io-role-public", "io-token-read-only"]
        );
        assert_eq!(
            m.rooms_for(
                "api::article.article",
                Action::Update,
                Audience::Draft,
                read
            ),
            [
                "io-admin-user-1:draft",
                "io-role-editor:draft",
                "io-token-read-only:draft"
            ]
        );
        assert_eq!(
            m.rooms_for("api::article.article", Action::Create, Audience::Both, read),
            [
                "io-admin-user-1",
                "io-admin-user-1:draft",
                "io-role-editor",
                "io-role-editor:draft",
                "io-token-read-only",
                "io-token-read-only:draft"
            ]
        );
        // Action mode: the custom token's create scope, never the read-only token.
        assert_eq!(
            m.rooms_for(
                "api::tag.tag",
                Action::Create,
                Audience::Published,
                PermissionMode::Action
            ),
            ["io-admin-user-1", "io-token-writer"]
        );
    }

    #[test]
    fn draft_view_is_for_admins_readers_and_listed_roles() {
        let m = model();
        assert!(!m.may_use_drafts(&Principal::Public));
        let editor = Principal::User {
            id: 1,
            role_id: 3,
            role: "Editor".into(),
            session: None,
        };
        assert!(m.may_use_drafts(&editor));
        let token = |id| Principal::ApiToken {
            id,
            name: String::new(),
            expires_at_ms: None,
        };
        assert!(m.may_use_drafts(&token(1)));
        assert!(!m.may_use_drafts(&token(2)), "expired");
        assert!(!m.may_use_drafts(&token(3)), "cannot read");
    }
}
