//! Client → server events, with the plugin's acks and error strings (spec §5,
//! `plugin-io.md` §5): `subscribe-entity`, `unsubscribe-entity`, `get-entity-subscriptions`,
//! `get-rooms`, `join-room`, `leave-room`, `private-message`.
//!
//! Every payload is validated before anything else happens; a bad one gets
//! `{success: false, error}` and changes nothing. A client that sends without an ack callback
//! gets no answer and does no harm. Rooms walcast routes by (`io-…` principal rooms, entity
//! rooms) cannot be joined as custom rooms, and content events reach a socket only for its own
//! principal whatever rooms it is in ([`super::fanout`]).

use std::sync::Arc;

use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::socket::Sid;
use tokio::sync::watch;
use tracing::debug;

use super::lookup::{EntityId, EntityLookup};
use super::presence::Presence;
use super::subscriptions::{SocketState, SubscribeError, Subscription};
use crate::assemble::Action;
use crate::config::{ClientsConfig, Config, PermissionMode};
use crate::route::permissions::Audience;
use crate::route::{Principal, Router};
use crate::security::{Admit, EventRate, Guard};

/// Longest `uid`, entity id and room name a client may send.
const MAX_UID_LEN: usize = 128;
const MAX_ID_LEN: usize = 64;
const MAX_ROOM_LEN: usize = 128;
/// Longest private message, in characters (the plugin's limit).
const MAX_MESSAGE_CHARS: usize = 10_000;
/// Custom rooms share the entity subscriptions' limit, under their own message.
const RESERVED_ROOM_PREFIX: &str = "io-";

/// Why a client event was refused; the message is the ack's `error`, the plugin's own
/// strings (walcast's few additions say so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("Invalid payload")]
    InvalidPayload,
    #[error("Invalid parameters: uid and id are required")]
    SubscribeParameters,
    #[error("Invalid content type uid format")]
    UidFormat,
    #[error("Invalid entity id")]
    EntityId,
    #[error("Content type not allowed for entity subscriptions")]
    NotAllowed,
    #[error("Maximum subscriptions ({0}) reached")]
    TooMany(usize),
    #[error("Content type not found")]
    ContentTypeNotFound,
    #[error("Permission denied: no access to this content type")]
    PermissionDenied,
    #[error("Entity not found")]
    EntityNotFound,
    #[error("Entity verification failed")]
    VerificationFailed,
    #[error("Invalid room name")]
    InvalidRoomName,
    #[error("Room name contains invalid characters")]
    RoomCharacters,
    #[error("Private rooms are disabled")]
    PrivateRoomsDisabled,
    /// walcast: principal rooms decide who may read what; they are not custom rooms.
    #[error("Room name is reserved")]
    RoomReserved,
    #[error("Private messages are disabled")]
    PrivateMessagesDisabled,
    #[error("Invalid parameters")]
    InvalidParameters,
    #[error("Invalid message length")]
    MessageLength,
    #[error("Target socket not found")]
    TargetNotFound,
    /// walcast: the target's send queue was full; it was disconnected.
    #[error("Message not delivered")]
    NotDelivered,
    /// walcast: the socket's connect handler has not run (cannot happen once connected).
    #[error("Socket not ready")]
    NotReady,
    /// More client events than `rate_limit.max_events_per_second`.
    #[error("Rate limit exceeded")]
    RateLimited,
    #[error("Authentication required for presence")]
    PresenceAuthRequired,
    #[error("uid and documentId are required")]
    PresenceParameters,
    #[error("Socket not registered for presence")]
    PresenceNotRegistered,
    #[error("Socket not registered")]
    PresenceSocketNotRegistered,
    /// walcast: typing about an entity the socket has not joined.
    #[error("Not editing this entity")]
    PresenceNotJoined,
    #[error("Too many editing sessions for this socket.")]
    PresenceTooMany,
}

/// What the client-event handlers need: settings, the live permission model, and the Strapi
/// model with a connection for existence checks.
#[derive(Debug, Clone)]
pub struct ClientEvents {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: ClientsConfig,
    permission_mode: PermissionMode,
    /// Content types listed in config (none: every one).
    content_types: Vec<String>,
    router: watch::Receiver<Router>,
    lookup: EntityLookup,
    guard: Guard,
    presence: Presence,
}

type Ack = Result<Value, ClientError>;

impl ClientEvents {
    pub fn new(
        config: &Config,
        router: watch::Receiver<Router>,
        lookup: EntityLookup,
        guard: Guard,
        presence: Presence,
    ) -> Self {
        ClientEvents {
            inner: Arc::new(Inner {
                settings: config.clients.clone(),
                permission_mode: config.events.permissions,
                content_types: config.content_types.iter().map(|c| c.uid.clone()).collect(),
                router,
                lookup,
                guard,
                presence,
            }),
        }
    }

    /// Gives a newly connected socket its delivery state and its client-event handlers.
    /// `delivery_rooms` are its principal's rooms; it joins them itself (or not, with
    /// `broadcast` off), and is marked live with [`super::subscriptions::set_live`].
    pub fn attach<A: Adapter>(
        &self,
        socket: &SocketRef<A>,
        principal: Principal,
        delivery_rooms: Vec<String>,
        broadcast: bool,
    ) -> Arc<SocketState> {
        let state = Arc::new(SocketState::new(principal, delivery_rooms, broadcast));
        socket.extensions.insert(Arc::clone(&state));
        self.on(socket, "subscribe-entity", |c, s, p| async move {
            c.subscribe_entity(&s, p).await
        });
        self.on(socket, "unsubscribe-entity", |c, s, p| async move {
            c.unsubscribe_entity(&s, &p)
        });
        self.on(socket, "get-entity-subscriptions", |c, s, _| async move {
            c.entity_subscriptions(&s)
        });
        self.on(
            socket,
            "get-rooms",
            |_, s, _| async move { Ok(get_rooms(&s)) },
        );
        self.on(
            socket,
            "join-room",
            |c, s, p| async move { c.join_room(&s, &p) },
        );
        self.on(socket, "leave-room", |c, s, p| async move {
            c.leave_room(&s, &p)
        });
        self.on(socket, "private-message", |c, s, p| async move {
            c.private_message(&s, &p)
        });
        self.on(socket, "presence:join", |c, s, p| async move {
            c.inner.presence.join(&s, &p).await
        });
        self.on(socket, "presence:leave", |c, s, p| async move {
            c.inner.presence.leave(&s, &p).await
        });
        self.on(socket, "presence:heartbeat", |c, s, _| async move {
            c.inner.presence.heartbeat(&s).await
        });
        self.on(socket, "presence:typing", |c, s, p| async move {
            c.inner.presence.typing(&s, &p).await
        });
        self.on(socket, "presence:check", |c, s, p| async move {
            c.inner.presence.check(&s, &p).await
        });
        self.inner.presence.register(socket);
        state
    }

    /// Registers one handler: the first argument as JSON (`null` when absent or not JSON),
    /// the answer as its ack, counted by outcome.
    fn on<A: Adapter, F, Fut>(&self, socket: &SocketRef<A>, event: &'static str, handler: F)
    where
        F: Fn(ClientEvents, SocketRef<A>, Value) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Ack> + Send + 'static,
    {
        let this = self.clone();
        socket.on(
            event,
            move |s: SocketRef<A>, TryData(payload): TryData<Value>, ack: AckSender<A>| {
                let this = this.clone();
                let handler = handler.clone();
                async move {
                    let payload = payload.unwrap_or(Value::Null);
                    let answer = match this.admit(&s) {
                        Ok(()) => handler(this, s, payload).await,
                        Err(e) => Err(e),
                    };
                    let outcome = if answer.is_ok() { "ok" } else { "error" };
                    crate::metrics::CLIENT_EVENTS
                        .with_label_values(&[event, outcome])
                        .inc();
                    let body = match answer {
                        Ok(body) => body,
                        Err(error) => json!({ "success": false, "error": error.to_string() }),
                    };
                    // No callback: nothing to answer (the result says so; it is not an error).
                    if let Err(e) = ack.send(&body) {
                        debug!(event, error = %e, "cannot send an ack");
                    }
                }
            },
        );
    }

    /// The socket's event rate: over it, the event is refused; refused too often, the socket
    /// is disconnected.
    fn admit<A: Adapter>(&self, socket: &SocketRef<A>) -> Result<(), ClientError> {
        let Some(rate) = socket.extensions.get::<Arc<EventRate>>() else {
            return Ok(());
        };
        match self.inner.guard.admit(&rate) {
            Admit::Yes => Ok(()),
            Admit::Refused => {
                crate::metrics::RATE_LIMITED_EVENTS.inc();
                Err(ClientError::RateLimited)
            }
            Admit::Disconnect => {
                crate::metrics::RATE_LIMITED_EVENTS.inc();
                crate::metrics::RATE_LIMIT_DISCONNECTS.inc();
                debug!(sid = %socket.id, "disconnecting a socket over its event rate");
                let socket = socket.clone();
                tokio::spawn(async move { socket.disconnect().ok() });
                Err(ClientError::RateLimited)
            }
        }
    }

    /// Presence, for the connect and disconnect handlers.
    pub fn presence(&self) -> &Presence {
        &self.inner.presence
    }

    async fn subscribe_entity<A: Adapter>(&self, socket: &SocketRef<A>, payload: Value) -> Ack {
        let (subscription, id_value, id) = parse_entity(&payload)?;
        let state = SocketState::of(socket).ok_or(ClientError::NotReady)?;
        let settings = &self.inner.settings;
        if !self.inner.content_types.is_empty()
            && !self.inner.content_types.contains(&subscription.uid)
        {
            return Err(ClientError::NotAllowed);
        }
        if state.is_full(&subscription, settings.max_subscriptions_per_socket) {
            return Err(self.too_many());
        }
        let table = self
            .inner
            .lookup
            .table_of(&subscription.uid)
            .ok_or(ClientError::ContentTypeNotFound)?;
        if !self.may_read(&state, &subscription.uid) {
            return Err(ClientError::PermissionDenied);
        }
        match self.inner.lookup.exists(&table, &id).await {
            Ok(true) => {}
            Ok(false) => return Err(ClientError::EntityNotFound),
            Err(e) => {
                debug!(error = %e, uid = %subscription.uid, "entity verification failed");
                return Err(ClientError::VerificationFailed);
            }
        }
        let room = subscription.room();
        let uid = subscription.uid.clone();
        match state.subscribe(subscription, settings.max_subscriptions_per_socket) {
            Ok(_) => {}
            Err(SubscribeError::Full) => return Err(self.too_many()),
        }
        socket.join(room.clone());
        Ok(json!({ "success": true, "room": room, "uid": uid, "id": id_value }))
    }

    fn unsubscribe_entity<A: Adapter>(&self, socket: &SocketRef<A>, payload: &Value) -> Ack {
        let (subscription, id_value, _) = parse_entity(payload)?;
        let state = SocketState::of(socket).ok_or(ClientError::NotReady)?;
        let room = subscription.room();
        state.unsubscribe_room(&room);
        socket.leave(room.clone());
        Ok(json!({ "success": true, "room": room, "uid": subscription.uid, "id": id_value }))
    }

    fn entity_subscriptions<A: Adapter>(&self, socket: &SocketRef<A>) -> Ack {
        let state = SocketState::of(socket).ok_or(ClientError::NotReady)?;
        let subscriptions: Vec<Value> = state
            .subscriptions()
            .into_iter()
            .map(|s| json!({ "uid": s.uid, "id": s.id, "room": s.room() }))
            .collect();
        Ok(json!({ "success": true, "subscriptions": subscriptions }))
    }

    fn join_room<A: Adapter>(&self, socket: &SocketRef<A>, payload: &Value) -> Ack {
        let room = room_name(payload, |c| {
            c.is_ascii_alphanumeric() || c == '-' || c == '_'
        })?;
        if !self.inner.settings.private_rooms {
            return Err(ClientError::PrivateRoomsDisabled);
        }
        if is_reserved(room) {
            return Err(ClientError::RoomReserved);
        }
        let state = SocketState::of(socket).ok_or(ClientError::NotReady)?;
        let custom = socket
            .rooms()
            .iter()
            .filter(|r| is_custom_room(r, &state, socket.id))
            .count();
        let already = socket.rooms().iter().any(|r| r == room);
        if !already && custom >= self.inner.settings.max_subscriptions_per_socket {
            return Err(self.too_many());
        }
        socket.join(room.to_owned());
        Ok(json!({ "success": true, "room": room }))
    }

    fn leave_room<A: Adapter>(&self, socket: &SocketRef<A>, payload: &Value) -> Ack {
        let room = room_name(payload, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.')
        })?;
        if is_reserved(room) {
            return Err(ClientError::RoomReserved);
        }
        if let Some(state) = SocketState::of(socket) {
            state.unsubscribe_room(room);
        }
        socket.leave(room.to_owned());
        Ok(json!({ "success": true, "room": room }))
    }

    fn private_message<A: Adapter>(&self, socket: &SocketRef<A>, payload: &Value) -> Ack {
        if !self.inner.settings.private_messages {
            return Err(ClientError::PrivateMessagesDisabled);
        }
        let object = payload.as_object().ok_or(ClientError::InvalidPayload)?;
        let (Some(Value::String(to)), Some(Value::String(message))) =
            (object.get("to"), object.get("message"))
        else {
            return Err(ClientError::InvalidParameters);
        };
        let chars = message.chars().count();
        if chars == 0 || chars > MAX_MESSAGE_CHARS {
            return Err(ClientError::MessageLength);
        }
        let target = to
            .parse::<Sid>()
            .ok()
            .and_then(|sid| {
                if sid == socket.id {
                    Some(socket.clone())
                } else {
                    socket.broadcast().get_socket(sid)
                }
            })
            .filter(|t| SocketState::of(t).is_some_and(|s| !s.is_closing()))
            .ok_or(ClientError::TargetNotFound)?;
        let from_user = SocketState::of(socket)
            .and_then(|s| user_name(&s.principal))
            .unwrap_or_else(|| "anonymous".to_owned());
        let body = json!({
            "from": socket.id.to_string(),
            "fromUser": from_user,
            "message": message,
            "timestamp": now_ms(),
        });
        match target.emit("private-message", &body) {
            Ok(()) => Ok(json!({ "success": true })),
            Err(socketioxide::SendError::Socket(
                socketioxide::SocketError::InternalChannelFull,
            )) => {
                crate::metrics::DROPPED_DELIVERIES.inc();
                super::fanout::disconnect_slow(target, "private-message");
                Err(ClientError::NotDelivered)
            }
            Err(_) => Err(ClientError::TargetNotFound),
        }
    }

    /// Whether the socket's principal may read `uid`: events of it would be routed to one of
    /// its rooms (the rule the router applies, for any action).
    fn may_read(&self, state: &SocketState, uid: &str) -> bool {
        let router = self.inner.router.borrow();
        [Action::Create, Action::Update, Action::Delete]
            .into_iter()
            .any(|action| {
                router
                    .permissions
                    .rooms_for(uid, action, Audience::Both, self.inner.permission_mode)
                    .iter()
                    .any(|room| state.delivery_rooms.contains(room))
            })
    }

    fn too_many(&self) -> ClientError {
        ClientError::TooMany(self.inner.settings.max_subscriptions_per_socket)
    }
}

/// `{uid, id}` checked in the plugin's order; the subscription, the id as given, and the id
/// resolved.
fn parse_entity(payload: &Value) -> Result<(Subscription, Value, EntityId), ClientError> {
    let object = payload.as_object().ok_or(ClientError::InvalidPayload)?;
    let present = |v: Option<&Value>| match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    if !present(object.get("uid")) || !present(object.get("id")) {
        return Err(ClientError::SubscribeParameters);
    }
    let uid = match object.get("uid") {
        Some(Value::String(uid)) if is_uid(uid) => uid.clone(),
        _ => return Err(ClientError::UidFormat),
    };
    let id_value = object.get("id").cloned().unwrap_or(Value::Null);
    let id = entity_id(&id_value).ok_or(ClientError::EntityId)?;
    Ok((
        Subscription {
            uid,
            id: id.to_string(),
        },
        id_value,
        id,
    ))
}

/// `^(api|plugin)::[a-z0-9-]+\.[a-z0-9-]+$`, as the plugin checks it.
fn is_uid(uid: &str) -> bool {
    let Some((namespace, rest)) = uid.split_once("::") else {
        return false;
    };
    let Some((api, model)) = rest.split_once('.') else {
        return false;
    };
    let part = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    uid.len() <= MAX_UID_LEN && matches!(namespace, "api" | "plugin") && part(api) && part(model)
}

/// A positive integer (number or digits) is a row id; otherwise a `documentId` of letters,
/// digits, `-` and `_`.
fn entity_id(value: &Value) -> Option<EntityId> {
    match value {
        Value::Number(n) => n.as_i64().filter(|id| *id > 0).map(EntityId::Row),
        Value::String(s) if s.len() > MAX_ID_LEN => None,
        Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(EntityId::Row),
        Value::String(s)
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Some(EntityId::Document(s.clone()))
        }
        _ => None,
    }
}

/// A room name of allowed characters.
fn room_name(payload: &Value, allowed: impl Fn(char) -> bool) -> Result<&str, ClientError> {
    match payload {
        Value::String(room) if !room.is_empty() && room.len() <= MAX_ROOM_LEN => {
            if room.chars().all(allowed) {
                Ok(room)
            } else {
                Err(ClientError::RoomCharacters)
            }
        }
        _ => Err(ClientError::InvalidRoomName),
    }
}

fn is_reserved(room: &str) -> bool {
    room.get(..RESERVED_ROOM_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_ROOM_PREFIX))
}

/// A room the client joined itself (not its principal's, not an entity room, not its id).
fn is_custom_room(room: &str, state: &SocketState, sid: Sid) -> bool {
    !room.contains(':') && !state.delivery_rooms.iter().any(|r| r == room) && room != sid.as_str()
}

/// `{success: true, rooms}`: the socket's rooms, its own id excluded.
fn get_rooms<A: Adapter>(socket: &SocketRef<A>) -> Value {
    let sid = socket.id.to_string();
    let rooms: Vec<String> = socket
        .rooms()
        .into_iter()
        .map(|r| r.to_string())
        .filter(|r| *r != sid)
        .collect();
    json!({ "success": true, "rooms": rooms })
}

/// The user name a private message is signed with; principals carry none yet (public and
/// role sockets are `anonymous`, as in the plugin).
fn user_name(_principal: &Principal) -> Option<String> {
    None
}

pub(super) fn now_ms() -> i64 {
    crate::route::permissions::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_payloads_are_checked_in_the_plugins_order() {
        let err = |v: Value| parse_entity(&v).unwrap_err();
        assert_eq!(err(Value::Null), ClientError::InvalidPayload);
        assert_eq!(err(json!("api::tag.tag")), ClientError::InvalidPayload);
        assert_eq!(err(json!(["api::tag.tag", 1])), ClientError::InvalidPayload);
        assert_eq!(err(json!({})), ClientError::SubscribeParameters);
        assert_eq!(
            err(json!({"uid": "api::tag.tag"})),
            ClientError::SubscribeParameters
        );
        assert_eq!(
            err(json!({"uid": "", "id": 1})),
            ClientError::SubscribeParameters
        );
        assert_eq!(err(json!({"uid": 5, "id": 1})), ClientError::UidFormat);
        assert_eq!(
            err(json!({"uid": "api::Tag.tag", "id": 1})),
            ClientError::UidFormat
        );
        assert_eq!(
            err(json!({"uid": "admin::user", "id": 1})),
            ClientError::UidFormat
        );
        assert_eq!(
            err(json!({"uid": "api::tag.tag:1", "id": 1})),
            ClientError::UidFormat
        );
        for bad in [
            json!(0),
            json!(-3),
            json!(1.5),
            json!(true),
            json!({}),
            json!("a b"),
            json!("x".repeat(65)),
            json!("a:b"),
        ] {
            assert_eq!(
                err(json!({"uid": "api::tag.tag", "id": bad})),
                ClientError::EntityId,
                "{bad}"
            );
        }
        let (sub, given, id) = parse_entity(&json!({"uid": "api::tag.tag", "id": "12"})).unwrap();
        assert_eq!(sub.room(), "api::tag.tag:12");
        assert_eq!(given, json!("12"));
        assert_eq!(id, EntityId::Row(12));
        let (sub, given, id) =
            parse_entity(&json!({"uid": "api::tag.tag", "id": "k3m0q9x8a7b6"})).unwrap();
        assert_eq!(sub.room(), "api::tag.tag:k3m0q9x8a7b6");
        assert_eq!(given, json!("k3m0q9x8a7b6"));
        assert_eq!(id, EntityId::Document("k3m0q9x8a7b6".into()));
        let (_, given, id) = parse_entity(&json!({"uid": "api::tag.tag", "id": 7})).unwrap();
        assert_eq!((given, id), (json!(7), EntityId::Row(7)));
    }

    #[test]
    fn room_names_are_checked() {
        let join = |v: Value| {
            room_name(&v, |c| c.is_ascii_alphanumeric() || c == '-' || c == '_').map(str::to_owned)
        };
        assert_eq!(join(Value::Null), Err(ClientError::InvalidRoomName));
        assert_eq!(join(json!("")), Err(ClientError::InvalidRoomName));
        assert_eq!(join(json!(["a"])), Err(ClientError::InvalidRoomName));
        assert_eq!(
            join(json!("x".repeat(129))),
            Err(ClientError::InvalidRoomName)
        );
        assert_eq!(join(json!("a b")), Err(ClientError::RoomCharacters));
        assert_eq!(
            join(json!("api::tag.tag:1")),
            Err(ClientError::RoomCharacters)
        );
        assert_eq!(join(json!("chat_1-a")), Ok("chat_1-a".to_owned()));
        assert!(is_reserved("io-role-authenticated") && is_reserved("IO-token-x"));
        assert!(!is_reserved("ionic"));
    }
}
