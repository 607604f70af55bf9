//! Live presence, the plugin's V5b protocol (`plugin-io.md` §6.1): `presence:join`,
//! `presence:leave`, `presence:heartbeat`, `presence:typing`, `presence:check`, and
//! `presence:update` broadcasts to the room `presence:<uid>:<documentId>`.
//!
//! Only authenticated sockets (users and admins; not Public, not API tokens) take part;
//! `presence:check` is open to all. Typing goes to the room's other members only, and only
//! from a member. Registrations not seen for `presence_stale_secs` are swept (with their
//! editing entries and broadcasts) whenever presence is used; a disconnect removes the socket
//! at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tracing::debug;

use super::client_events::{ClientError, now_ms};
use super::subscriptions::SocketState;
use crate::auth::Db;
use crate::cluster::SharedState;
use crate::route::Principal;

const MAX_UID_LEN: usize = 128;
const MAX_DOCUMENT_ID_LEN: usize = 64;
const MAX_FIELD_NAME_CHARS: usize = 200;
/// Entities one socket may be editing at once (V5c's limit).
const MAX_ENTITIES_PER_SOCKET: usize = 50;

#[derive(Debug)]
struct Registration {
    last_seen: Instant,
    last_seen_ms: i64,
    /// `{id, username, email, firstname, lastname}`, loaded at the first join.
    user: Option<Value>,
    entities: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct Editor {
    sid: Sid,
    user: Value,
    joined_at: i64,
}

#[derive(Debug, Default)]
struct State {
    sockets: HashMap<Sid, Registration>,
    entities: HashMap<String, Vec<Editor>>,
    last_sweep: Option<Instant>,
}

/// Presence registry for this node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Presence {
    state: Arc<Mutex<State>>,
    stale: Duration,
    db: Arc<Db>,
    /// Clustered: the editors of every entity are kept in Redis, so every node lists the
    /// editors connected to any node (updates reach other nodes' rooms through the adapter).
    shared: Option<SharedState>,
}

/// A validated `{uid, documentId}`.
struct Entity {
    uid: String,
    document_id: String,
}

impl Entity {
    fn key(&self) -> String {
        format!("{}:{}", self.uid, self.document_id)
    }
    fn room(&self) -> String {
        format!("presence:{}", self.key())
    }
}

fn parse_entity(payload: &Value) -> Result<Entity, ClientError> {
    let object = payload.as_object().ok_or(ClientError::InvalidPayload)?;
    let text = |name: &str| match object.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let (Some(uid), Some(document_id)) = (text("uid"), text("documentId")) else {
        return Err(ClientError::PresenceParameters);
    };
    let uid_ok = uid.len() <= MAX_UID_LEN
        && uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-'));
    let id_ok = document_id.len() <= MAX_DOCUMENT_ID_LEN
        && document_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if !uid_ok || !id_ok {
        return Err(ClientError::PresenceParameters);
    }
    Ok(Entity { uid, document_id })
}

fn editor_json(e: &Editor) -> Value {
    json!({"socketId": e.sid.to_string(), "user": e.user, "joinedAt": e.joined_at})
}

fn editors_json(editors: &[Editor]) -> Vec<Value> {
    editors.iter().map(editor_json).collect()
}

/// Whether the socket's principal may take part in presence.
fn authenticated<A: Adapter>(socket: &SocketRef<A>) -> Option<Principal> {
    SocketState::of(socket)
        .map(|s| s.principal.clone())
        .filter(|p| matches!(p, Principal::User { .. } | Principal::Admin { .. }))
}

impl Presence {
    pub fn new(stale: Duration, db: Arc<Db>) -> Self {
        Presence {
            state: Arc::default(),
            stale,
            db,
            shared: None,
        }
    }

    /// Keeps the editors in the cluster's Redis.
    pub fn with_shared(mut self, shared: Option<SharedState>) -> Self {
        self.shared = shared;
        self
    }

    /// How long Redis keeps an entity's editors after their last write.
    fn keep(&self) -> Duration {
        self.stale * 2
    }

    /// The editors of `key` as every node knows them (clustered), else this node's `local`.
    async fn editors(&self, key: &str, local: &[Editor]) -> Vec<Value> {
        if let Some(shared) = &self.shared {
            match shared.presence_editors(key, self.stale).await {
                Ok(editors) => return editors,
                Err(e) => {
                    debug!(error = %e, "presence: Redis unavailable; this node's editors only")
                }
            }
        }
        editors_json(local)
    }

    /// After editors left (`removed`: entity, socket, this node's editors left): clears them
    /// in Redis and tells each entity's room.
    async fn announce_removals<A: Adapter>(&self, socket: &SocketRef<A>, removed: Vec<Removal>) {
        let mut updates = Vec::with_capacity(removed.len());
        for Removal { key, sid, left } in removed {
            if let Some(shared) = &self.shared
                && let Err(e) = shared.presence_remove(&key, &sid.to_string()).await
            {
                debug!(error = %e, "presence: removal not recorded in Redis");
            }
            let editors = self.editors(&key, &left).await;
            updates.push((key, editors));
        }
        broadcast_updates(socket, updates).await;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a newly connected socket if it is authenticated.
    pub fn register<A: Adapter>(&self, socket: &SocketRef<A>) {
        if authenticated(socket).is_none() {
            return;
        }
        self.state().sockets.insert(
            socket.id,
            Registration {
                last_seen: Instant::now(),
                last_seen_ms: now_ms(),
                user: None,
                entities: BTreeSet::new(),
            },
        );
    }

    /// Removes a socket (disconnect): leaves its entities, with broadcasts.
    pub async fn unregister<A: Adapter>(&self, socket: &SocketRef<A>) {
        let removed = {
            let mut state = self.state();
            match state.sockets.remove(&socket.id) {
                Some(reg) => remove_editor(&mut state, socket.id, reg.entities),
                None => Vec::new(),
            }
        };
        self.announce_removals(socket, removed).await;
    }

    /// Removes registrations not seen for the stale timeout, at most once a second.
    async fn sweep<A: Adapter>(&self, socket: &SocketRef<A>) {
        let removed = {
            let mut state = self.state();
            let now = Instant::now();
            if state
                .last_sweep
                .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
            {
                return;
            }
            state.last_sweep = Some(now);
            let stale: Vec<Sid> = state
                .sockets
                .iter()
                .filter(|(_, r)| now.duration_since(r.last_seen) >= self.stale)
                .map(|(sid, _)| *sid)
                .collect();
            let mut updates = Vec::new();
            for sid in stale {
                if let Some(reg) = state.sockets.remove(&sid) {
                    debug!(%sid, "presence registration went stale");
                    updates.extend(remove_editor(&mut state, sid, reg.entities));
                }
            }
            updates
        };
        self.announce_removals(socket, removed).await;
    }

    /// The socket's registration touched now; the plugin's errors when there is none.
    fn touch<A: Adapter>(
        &self,
        socket: &SocketRef<A>,
        missing: ClientError,
    ) -> Result<i64, ClientError> {
        if authenticated(socket).is_none() {
            return Err(ClientError::PresenceAuthRequired);
        }
        let mut state = self.state();
        let reg = state.sockets.get_mut(&socket.id).ok_or(missing)?;
        reg.last_seen = Instant::now();
        reg.last_seen_ms = now_ms();
        Ok(reg.last_seen_ms)
    }

    async fn user_of(&self, principal: &Principal) -> Value {
        let fallback = |id: i64| json!({"id": id, "username": null, "email": null, "firstname": null, "lastname": null});
        let (sql, id) = match principal {
            Principal::Admin { id, .. } => (
                "SELECT username, email, firstname, lastname FROM admin_users WHERE id = $1",
                *id,
            ),
            Principal::User { id, .. } => (
                "SELECT username, email, NULL::text, NULL::text FROM up_users WHERE id = $1",
                *id,
            ),
            _ => return Value::Null,
        };
        let Ok(id4) = i32::try_from(id) else {
            return fallback(id);
        };
        let Ok(client) = self.db.client().await else {
            return fallback(id);
        };
        match client.query_opt(sql, &[&id4]).await {
            Ok(Some(row)) => json!({
                "id": id,
                "username": row.get::<_, Option<String>>(0),
                "email": row.get::<_, Option<String>>(1),
                "firstname": row.get::<_, Option<String>>(2),
                "lastname": row.get::<_, Option<String>>(3),
            }),
            Ok(None) => fallback(id),
            Err(e) => {
                debug!(error = %e, "presence user lookup failed");
                fallback(id)
            }
        }
    }

    pub async fn join<A: Adapter>(
        &self,
        socket: &SocketRef<A>,
        payload: &Value,
    ) -> Result<Value, ClientError> {
        self.sweep(socket).await;
        let principal = authenticated(socket).ok_or(ClientError::PresenceAuthRequired)?;
        let entity = parse_entity(payload)?;
        self.touch(socket, ClientError::PresenceNotRegistered)?;
        let cached = self
            .state()
            .sockets
            .get(&socket.id)
            .and_then(|r| r.user.clone());
        let user = match cached {
            Some(user) => user,
            None => self.user_of(&principal).await,
        };
        let key = entity.key();
        let editors = {
            let mut state = self.state();
            let reg = state
                .sockets
                .get_mut(&socket.id)
                .ok_or(ClientError::PresenceNotRegistered)?;
            reg.user = Some(user.clone());
            if !reg.entities.contains(&key) && reg.entities.len() >= MAX_ENTITIES_PER_SOCKET {
                return Err(ClientError::PresenceTooMany);
            }
            reg.entities.insert(key.clone());
            let editors = state.entities.entry(key.clone()).or_default();
            if !editors.iter().any(|e| e.sid == socket.id) {
                editors.push(Editor {
                    sid: socket.id,
                    user,
                    joined_at: now_ms(),
                });
            }
            editors.clone()
        };
        if let Some(shared) = &self.shared
            && let Some(me) = editors.iter().find(|e| e.sid == socket.id)
            && let Err(e) = shared
                .presence_put(&key, &socket.id.to_string(), &editor_json(me), self.keep())
                .await
        {
            debug!(error = %e, "presence: join not recorded in Redis");
        }
        let editors = self.editors(&key, &editors).await;
        socket.join(entity.room());
        broadcast_updates(socket, vec![(key.clone(), editors.clone())]).await;
        Ok(json!({"success": true, "entityKey": key, "editors": editors}))
    }

    pub async fn leave<A: Adapter>(
        &self,
        socket: &SocketRef<A>,
        payload: &Value,
    ) -> Result<Value, ClientError> {
        authenticated(socket).ok_or(ClientError::PresenceAuthRequired)?;
        let entity = parse_entity(payload)?;
        let key = entity.key();
        let removed = {
            let mut state = self.state();
            let present = state
                .sockets
                .get_mut(&socket.id)
                .is_some_and(|r| r.entities.remove(&key));
            if present {
                remove_editor(&mut state, socket.id, [key.clone()].into())
            } else {
                Vec::new()
            }
        };
        socket.leave(entity.room());
        self.announce_removals(socket, removed).await;
        Ok(json!({"success": true, "entityKey": key}))
    }

    pub async fn heartbeat<A: Adapter>(&self, socket: &SocketRef<A>) -> Result<Value, ClientError> {
        self.sweep(socket).await;
        let last_seen = self.touch(socket, ClientError::PresenceSocketNotRegistered)?;
        if let Some(shared) = &self.shared {
            let entities: Vec<String> = self
                .state()
                .sockets
                .get(&socket.id)
                .map(|r| r.entities.iter().cloned().collect())
                .unwrap_or_default();
            if let Err(e) = shared
                .presence_touch(&entities, &socket.id.to_string(), self.keep())
                .await
            {
                debug!(error = %e, "presence: heartbeat not recorded in Redis");
            }
        }
        Ok(json!({"success": true, "lastSeen": last_seen}))
    }

    /// `presence:typing`: to the room's other members; silently ignored when not allowed.
    pub async fn typing<A: Adapter>(
        &self,
        socket: &SocketRef<A>,
        payload: &Value,
    ) -> Result<Value, ClientError> {
        let principal = authenticated(socket).ok_or(ClientError::PresenceAuthRequired)?;
        let entity = parse_entity(payload)?;
        let field = match payload.get("fieldName") {
            None | Some(Value::Null) => Value::Null,
            Some(Value::String(s)) if s.chars().count() <= MAX_FIELD_NAME_CHARS => {
                Value::String(s.clone())
            }
            Some(_) => return Err(ClientError::InvalidPayload),
        };
        let key = entity.key();
        let user = {
            let mut state = self.state();
            let reg = state
                .sockets
                .get_mut(&socket.id)
                .ok_or(ClientError::PresenceNotRegistered)?;
            if !reg.entities.contains(&key) {
                return Err(ClientError::PresenceNotJoined);
            }
            reg.last_seen = Instant::now();
            reg.last_seen_ms = now_ms();
            reg.user.clone().unwrap_or(Value::Null)
        };
        let id = match principal {
            Principal::Admin { id, .. } | Principal::User { id, .. } => id,
            _ => 0,
        };
        let body = json!({
            "uid": entity.uid,
            "documentId": entity.document_id,
            "user": {"id": id, "username": user.get("username").cloned().unwrap_or(Value::Null)},
            "fieldName": field,
            "timestamp": now_ms(),
        });
        if let Err(e) = socket
            .to(entity.room())
            .emit("presence:typing", &body)
            .await
        {
            debug!(error = %e, "presence:typing not delivered to every editor");
        }
        Ok(json!({"success": true}))
    }

    pub async fn check<A: Adapter>(
        &self,
        socket: &SocketRef<A>,
        payload: &Value,
    ) -> Result<Value, ClientError> {
        self.sweep(socket).await;
        let entity = parse_entity(payload)?;
        let local = self
            .state()
            .entities
            .get(&entity.key())
            .cloned()
            .unwrap_or_default();
        let editors = self.editors(&entity.key(), &local).await;
        let editing = !editors.is_empty();
        Ok(json!({
            "success": true,
            "editors": editors,
            "isBeingEdited": editing,
        }))
    }
}

/// An editor that left an entity: which, who, and this node's editors left there.
struct Removal {
    key: String,
    sid: Sid,
    left: Vec<Editor>,
}

/// Removes `sid` from `entities`; what to announce.
fn remove_editor(state: &mut State, sid: Sid, entities: BTreeSet<String>) -> Vec<Removal> {
    let mut removed = Vec::new();
    for key in entities {
        if let Some(editors) = state.entities.get_mut(&key) {
            editors.retain(|e| e.sid != sid);
            let left = editors.clone();
            if left.is_empty() {
                state.entities.remove(&key);
            }
            removed.push(Removal { key, sid, left });
        }
    }
    removed
}

/// `presence:update {uid, documentId, editors, count, timestamp}` to each entity's room.
async fn broadcast_updates<A: Adapter>(socket: &SocketRef<A>, updates: Vec<(String, Vec<Value>)>) {
    for (key, editors) in updates {
        let count = editors.len();
        let Some((uid, document_id)) = key.rsplit_once(':') else {
            continue;
        };
        let body = json!({
            "uid": uid,
            "documentId": document_id,
            "editors": editors,
            "count": count,
            "timestamp": now_ms(),
        });
        let room = format!("presence:{key}");
        if let Err(e) = socket.within(room).emit("presence:update", &body).await {
            debug!(error = %e, "presence:update not delivered to every editor");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_payloads_are_validated() {
        assert!(parse_entity(&json!({"uid": "api::a.a", "documentId": "abc_1-2"})).is_ok());
        assert_eq!(
            parse_entity(&json!("x")).err(),
            Some(ClientError::InvalidPayload)
        );
        for bad in [
            json!({}),
            json!({"uid": "api::a.a"}),
            json!({"uid": "api::a.a", "documentId": ""}),
            json!({"uid": "api::a.a", "documentId": "a b"}),
            json!({"uid": "api::a.a/../", "documentId": "a"}),
            json!({"uid": "x".repeat(129), "documentId": "a"}),
            json!({"uid": "api::a.a", "documentId": {"$ne": 1}}),
        ] {
            assert_eq!(
                parse_entity(&bad).err(),
                Some(ClientError::PresenceParameters),
                "{bad}"
            );
        }
    }
}
