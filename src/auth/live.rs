//! Permission changes on live sockets (spec §5): reload the model when Strapi's auth tables
//! change, then move or disconnect the sockets it no longer admits, within a second.
//!
//! The pipeline only signals that an auth table changed ([`Reloader<A>::notifier`]); a role edit
//! arrives as many small transactions, so the reloader settles them: it waits
//! [`SETTLE`] after the first signal (signals meanwhile join the same reload) and then loads the
//! model, so reloads are at least [`SETTLE`] apart and happen within about that long of the
//! change. After publishing the new model it checks every local socket against fresh rows
//! (a few queries per reload, none per event):
//! - blocked, deleted or (when confirmation is required) unconfirmed user, deleted or expired
//!   token, revoked session, inactive admin, or a draft view no longer allowed: disconnected;
//! - a user whose role changed, or a token or role renamed: moved to the new room;
//! - entity rooms (`<uid>:<id>`) of types the principal may no longer read: left.
//!
//! Token expiry needs no WAL change: a one-second tick disconnects sockets of tokens whose
//! `expires_at` passed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    ADMIN_QUERY, Authenticator, SESSION_QUERY, SessionRow, TOKEN_COLUMNS, TokenRow, USER_QUERY,
    UserRow, session_of, token_of, user_of,
};
use crate::config::Config;
use crate::route::permissions::now_ms;
use crate::route::{Access, PermissionModel, Principal, Router};

/// Quiet time gathered into one reload.
pub const SETTLE: Duration = Duration::from_millis(200);
/// How often token expiry is checked.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// Reloads the permission model when told, and applies it to live sockets.
pub struct Reloader<A: Adapter> {
    pub config: Config,
    pub auth: Authenticator,
    pub router: watch::Sender<Router>,
    pub io: SocketIo<A>,
    pub changed: Arc<Notify>,
}

/// The socket's reload generation at handshake; a reload in between means the socket is
/// checked again once connected.
#[derive(Debug, Clone, Copy)]
pub struct AuthGeneration(pub u64);

impl<A: Adapter> Reloader<A> {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = now_ms();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = self.changed.notified() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(SETTLE) => {}
                    }
                    self.reload().await;
                }
                _ = tick.tick() => {
                    let now = now_ms();
                    let expired = self.router.borrow().permissions.tokens.values().any(|t| {
                        t.expires_at_ms.is_some_and(|at| at > last_tick && at <= now)
                    });
                    last_tick = now;
                    if expired {
                        let model = Arc::clone(&self.router.borrow().permissions);
                        revalidate(&self.auth, &model, local_sockets(&self.io)).await;
                    }
                }
            }
        }
    }

    async fn reload(&self) {
        let loaded = match self.auth.db().client().await {
            Ok(client) => PermissionModel::load(&client, &self.config.events.draft_roles)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let model = match loaded {
            Ok(m) => Arc::new(m),
            Err(e) => {
                warn!(error = %e, "permission reload failed; keeping the previous model");
                // Try again after the settle time.
                self.changed.notify_one();
                return;
            }
        };
        let router = self.router.borrow().with_permissions(Arc::clone(&model));
        self.router.send_replace(router);
        self.auth.reloaded();
        crate::metrics::PERMISSION_RELOADS.inc();
        debug!(
            roles = model.roles.len(),
            tokens = model.tokens.len(),
            "permission model reloaded"
        );
        revalidate(&self.auth, &model, local_sockets(&self.io)).await;
    }
}

/// This node's sockets (none once the server is closing).
fn local_sockets<A: Adapter>(io: &SocketIo<A>) -> Vec<SocketRef<A>> {
    io.of("/").map(|ns| ns.sockets()).unwrap_or_default()
}

/// What the database says now about the principals of some sockets.
#[derive(Debug, Default)]
struct Facts {
    users: HashMap<i64, UserRow>,
    tokens: HashMap<i64, TokenRow>,
    sessions: HashMap<String, SessionRow>,
    admins: HashSet<i64>,
}

/// What becomes of one socket.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Same room, updated principal (e.g. a new expiry).
    Update(Access),
    /// Another room.
    Move(Access),
    Disconnect(&'static str),
}

/// Checks `sockets` against fresh rows and `model`; moves or disconnects those it no longer
/// admits as they are.
pub async fn revalidate<A: Adapter>(
    auth: &Authenticator,
    model: &PermissionModel,
    sockets: Vec<SocketRef<A>>,
) {
    let sockets: Vec<(SocketRef<A>, Access)> = sockets
        .into_iter()
        .filter_map(|s| s.extensions.get::<Access>().map(|a| (s, a)))
        .collect();
    if sockets.is_empty() {
        return;
    }
    let facts = match facts(auth, &sockets).await {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "cannot check live sockets after a permission change");
            return;
        }
    };
    let router = auth.router();
    for (socket, access) in sockets {
        let current = match verdict(&access, &facts, model) {
            Verdict::Keep => access,
            Verdict::Update(next) => {
                socket.extensions.insert(next.clone());
                next
            }
            Verdict::Move(next) => {
                info!(sid = %socket.id, from = %access.room(), to = %next.room(), "socket moved after a permission change");
                crate::metrics::SOCKETS_MOVED.inc();
                socket.leave(access.room());
                socket.extensions.insert(next.clone());
                socket.join(next.room());
                next
            }
            Verdict::Disconnect(why) => {
                info!(sid = %socket.id, room = %access.room(), reason = why, "disconnecting a socket whose credentials were revoked");
                crate::metrics::SOCKETS_REVOKED.inc();
                let _ = socket.disconnect();
                continue;
            }
        };
        leave_unreadable_entity_rooms(&socket, &current, &router);
    }
}

/// Leaves `<uid>:<id>` rooms of content types the principal may no longer read.
fn leave_unreadable_entity_rooms<A: Adapter>(
    socket: &SocketRef<A>,
    access: &Access,
    router: &Router,
) {
    let grants = router.permissions.grants(&access.principal);
    let unreadable: Vec<String> = socket
        .rooms()
        .into_iter()
        .filter_map(|room| {
            let uid = entity_room_uid(&room)?;
            (!grants.is_some_and(|g| g.may_read(uid))).then(|| room.to_string())
        })
        .collect();
    if !unreadable.is_empty() {
        debug!(sid = %socket.id, rooms = ?unreadable, "leaving entity rooms no longer readable");
        socket.leave(unreadable);
    }
}

/// The content type of an entity room `api::x.y:<id>` / `plugin::x.y:<id>`.
fn entity_room_uid(room: &str) -> Option<&str> {
    if !(room.starts_with("api::") || room.starts_with("plugin::")) {
        return None;
    }
    let (uid, id) = room.rsplit_once(':')?;
    (!id.is_empty() && uid.contains('.') && !uid.ends_with(':')).then_some(uid)
}

async fn facts<A: Adapter>(
    auth: &Authenticator,
    sockets: &[(SocketRef<A>, Access)],
) -> Result<Facts, Box<dyn std::error::Error + Send + Sync>> {
    let mut users = Vec::new();
    let mut tokens = Vec::new();
    let mut admins = Vec::new();
    let mut sessions = Vec::new();
    for (_, access) in sockets {
        match &access.principal {
            Principal::Public => {}
            Principal::User { id, session, .. } => {
                users.extend(i32::try_from(*id).ok());
                sessions.extend(session.clone());
            }
            Principal::ApiToken { id, .. } => tokens.extend(i32::try_from(*id).ok()),
            Principal::Admin { id, session } => {
                admins.extend(i32::try_from(*id).ok());
                sessions.push(session.clone());
            }
        }
    }
    let mut facts = Facts::default();
    if users.is_empty() && tokens.is_empty() && admins.is_empty() {
        return Ok(facts);
    }
    let client = auth.db().client().await?;
    if !users.is_empty() {
        for row in client.query(USER_QUERY, &[&users]).await? {
            let (id, user) = user_of(&row);
            facts.users.insert(id, user);
        }
    }
    if !tokens.is_empty() {
        let sql = format!("{TOKEN_COLUMNS} WHERE t.id = ANY($1)");
        for row in client.query(&sql, &[&tokens]).await? {
            let token = token_of(&row);
            facts.tokens.insert(token.id, token);
        }
    }
    if !sessions.is_empty() {
        for row in client.query(SESSION_QUERY, &[&sessions]).await? {
            let (id, session) = session_of(&row);
            facts.sessions.insert(id, session);
        }
    }
    if !admins.is_empty() {
        for row in client.query(ADMIN_QUERY, &[&admins]).await? {
            facts.admins.insert(i64::from(row.get::<_, i32>(0)));
        }
    }
    Ok(facts)
}

/// A session still stands for `user_id` of `origin`. Its expiry is checked at handshake only:
/// an access token outlives a rotated session row, and the socket outlives the access token,
/// as with the plugin; deleting or revoking the row is what ends it.
fn session_stands(facts: &Facts, session: &str, origin: &str, user_id: i64) -> bool {
    facts
        .sessions
        .get(session)
        .is_some_and(|s| s.origin == origin && s.user_id == user_id.to_string() && !s.revoked)
}

fn verdict(access: &Access, facts: &Facts, model: &PermissionModel) -> Verdict {
    let next = match &access.principal {
        Principal::Public => Principal::Public,
        Principal::User {
            id,
            role_id,
            role,
            session,
        } => {
            let Some(user) = facts.users.get(id) else {
                return Verdict::Disconnect("user deleted");
            };
            if user.blocked {
                return Verdict::Disconnect("user blocked");
            }
            if model.email_confirmation && !user.confirmed {
                return Verdict::Disconnect("user not confirmed");
            }
            if let Some(s) = session
                && !session_stands(facts, s, "users-permissions", *id)
            {
                return Verdict::Disconnect("session revoked");
            }
            let Some(new_role_id) = user.role_id else {
                return Verdict::Disconnect("user has no role");
            };
            match model.roles.get(&new_role_id) {
                Some(r) => Principal::User {
                    id: *id,
                    role_id: new_role_id,
                    role: r.name.clone(),
                    session: session.clone(),
                },
                // A role newer than the model: the next reload knows it.
                None => Principal::User {
                    id: *id,
                    role_id: *role_id,
                    role: role.clone(),
                    session: session.clone(),
                },
            }
        }
        Principal::ApiToken { id, .. } => {
            let Some(token) = facts.tokens.get(id) else {
                return Verdict::Disconnect("token deleted");
            };
            if !token.content_api || token.token_type.is_none() {
                return Verdict::Disconnect("token no longer a content-api token");
            }
            if token.expires_at_ms.is_some_and(|at| at <= now_ms()) {
                return Verdict::Disconnect("token expired");
            }
            Principal::ApiToken {
                id: *id,
                name: token.name.clone(),
                expires_at_ms: token.expires_at_ms,
            }
        }
        Principal::Admin { id, session } => {
            if !facts.admins.contains(id) {
                return Verdict::Disconnect("admin user inactive");
            }
            if !session_stands(facts, session, "admin", *id) {
                return Verdict::Disconnect("session revoked");
            }
            access.principal.clone()
        }
    };
    if access.draft && !model.may_use_drafts(&next) {
        return Verdict::Disconnect("draft view no longer allowed");
    }
    let next = Access {
        principal: next,
        draft: access.draft,
    };
    if next == *access {
        Verdict::Keep
    } else if next.room() == access.room() {
        Verdict::Update(next)
    } else {
        Verdict::Move(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::permissions::RoleGrants;

    fn model() -> PermissionModel {
        let mut m = PermissionModel::default();
        for (id, name) in [(1, "Authenticated"), (3, "Editor")] {
            m.roles.insert(
                id,
                RoleGrants {
                    name: name.into(),
                    role_type: name.to_lowercase(),
                    actions: HashSet::new(),
                    draft: false,
                },
            );
        }
        m
    }

    fn user_access() -> Access {
        Access::published(Principal::User {
            id: 5,
            role_id: 1,
            role: "Authenticated".into(),
            session: None,
        })
    }

    fn facts(blocked: bool, role_id: i64) -> Facts {
        let mut f = Facts::default();
        f.users.insert(
            5,
            UserRow {
                blocked,
                confirmed: true,
                role_id: Some(role_id),
            },
        );
        f
    }

    #[test]
    fn users_are_kept_moved_or_disconnected() {
        let m = model();
        assert_eq!(verdict(&user_access(), &facts(false, 1), &m), Verdict::Keep);
        assert_eq!(
            verdict(&user_access(), &facts(true, 1), &m),
            Verdict::Disconnect("user blocked")
        );
        assert_eq!(
            verdict(&user_access(), &Facts::default(), &m),
            Verdict::Disconnect("user deleted")
        );
        match verdict(&user_access(), &facts(false, 3), &m) {
            Verdict::Move(next) => assert_eq!(next.room(), "io-role-editor"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn revoked_sessions_and_deleted_tokens_disconnect() {
        let m = model();
        let admin = Access::published(Principal::Admin {
            id: 1,
            session: "s1".into(),
        });
        let mut f = Facts::default();
        f.admins.insert(1);
        assert_eq!(
            verdict(&admin, &f, &m),
            Verdict::Disconnect("session revoked")
        );
        f.sessions.insert(
            "s1".into(),
            SessionRow {
                user_id: "1".into(),
                origin: "admin".into(),
                expires_at_ms: None,
                revoked: false,
            },
        );
        assert_eq!(verdict(&admin, &f, &m), Verdict::Keep);
        let token = Access::published(Principal::ApiToken {
            id: 9,
            name: "t".into(),
            expires_at_ms: None,
        });
        assert_eq!(
            verdict(&token, &f, &m),
            Verdict::Disconnect("token deleted")
        );
    }

    #[test]
    fn entity_rooms_are_recognised() {
        assert_eq!(
            entity_room_uid("api::article.article:abc"),
            Some("api::article.article")
        );
        assert_eq!(
            entity_room_uid("api::article.article:12"),
            Some("api::article.article")
        );
        assert_eq!(entity_room_uid("io-role-public"), None);
        assert_eq!(entity_room_uid("presence:api::a.a:x"), None);
    }
}
