//! What walcast keeps per socket for delivery: whose events it may receive, whether it listens
//! to its role room at all, whether it is live yet, and its entity subscriptions.
//!
//! A socket hears an event through its principal's room or through an entity room it
//! subscribed to; either way it receives it only if its principal may read it (the event was
//! routed to one of [`SocketState::delivery_rooms`]), and at most once (see [`super::fanout`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use crate::route::Principal;
use crate::route::entity::entity_room;

/// The handshake options this module reads from the `auth` object (next to `token`,
/// `strategy`, `offset`…, which the handshake reads).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClientOptions {
    /// `false`: the socket receives only what it subscribed to. Any other value (or none)
    /// keeps the default, everything its principal may read.
    pub broadcast: Option<Value>,
}

impl ClientOptions {
    /// Whether the socket listens to its principal's room.
    pub fn broadcast(&self) -> bool {
        !matches!(self.broadcast, Some(Value::Bool(false)))
    }
}

/// One entity subscription: the content type and the id as the client gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub uid: String,
    pub id: String,
}

impl Subscription {
    /// `<uid>:<id>`, the plugin's entity room name.
    pub fn room(&self) -> String {
        entity_room(&self.uid, &self.id)
    }
}

/// Per-socket delivery state, kept in the socket's extensions.
#[derive(Debug)]
pub struct SocketState {
    pub principal: Principal,
    /// The rooms whose events this socket may receive: its principal's room(s), whether it
    /// joined them or not (`auth.broadcast = false`).
    pub delivery_rooms: Vec<String>,
    /// Whether the socket joined `delivery_rooms`.
    pub broadcast: bool,
    /// When the socket connected, in milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    /// Set once the socket receives live events: at once, or after a resume caught up.
    live: AtomicBool,
    /// Set when the socket missed an event (its queue was full): it gets nothing more, so
    /// the offset it resumes from is before what it missed.
    closing: AtomicBool,
    subscriptions: Mutex<Vec<Subscription>>,
}

/// Why a subscription was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("the socket has the maximum number of subscriptions")]
    Full,
}

impl SocketState {
    pub fn new(principal: Principal, delivery_rooms: Vec<String>, broadcast: bool) -> Self {
        SocketState {
            principal,
            delivery_rooms,
            broadcast,
            connected_at_ms: crate::http::monitor::now_ms(),
            live: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            subscriptions: Mutex::new(Vec::new()),
        }
    }

    /// The state of a connected socket (every socket of the default namespace has one once
    /// its connect handler ran).
    pub fn of<A: Adapter>(socket: &SocketRef<A>) -> Option<Arc<SocketState>> {
        socket.extensions.get::<Arc<SocketState>>()
    }

    /// Whether events go to the socket now: it is live and not being disconnected.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire) && !self.closing.load(Ordering::Acquire)
    }

    /// Whether the socket is being disconnected for not keeping up.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Stops all further events to the socket; returns whether it was not stopped yet.
    pub fn mark_closing(&self) -> bool {
        !self.closing.swap(true, Ordering::AcqRel)
    }

    /// Whether an event routed to `rooms` may reach this socket.
    pub fn may_receive(&self, rooms: &[String]) -> bool {
        self.delivery_rooms.iter().any(|r| rooms.contains(r))
    }

    /// The socket's subscriptions, oldest first.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.lock().clone()
    }

    /// Adds a subscription unless present; refuses one beyond `max`. Returns whether it was
    /// new.
    pub fn subscribe(
        &self,
        subscription: Subscription,
        max: usize,
    ) -> Result<bool, SubscribeError> {
        let mut subs = self.lock();
        if subs.contains(&subscription) {
            return Ok(false);
        }
        if subs.len() >= max {
            return Err(SubscribeError::Full);
        }
        subs.push(subscription);
        crate::metrics::ENTITY_SUBSCRIPTIONS.inc();
        Ok(true)
    }

    /// Whether one more subscription (not yet held) would pass `max`.
    pub fn is_full(&self, subscription: &Subscription, max: usize) -> bool {
        let subs = self.lock();
        !subs.contains(subscription) && subs.len() >= max
    }

    /// Removes the subscription whose room is `room`; returns whether there was one.
    pub fn unsubscribe_room(&self, room: &str) -> bool {
        let mut subs = self.lock();
        let before = subs.len();
        subs.retain(|s| s.room() != room);
        let removed = before - subs.len();
        crate::metrics::ENTITY_SUBSCRIPTIONS.sub(removed as i64);
        removed > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscription>> {
        // A panic while holding it cannot leave the list half-changed; go on with it.
        self.subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for SocketState {
    fn drop(&mut self) {
        // The socket is gone, and its subscriptions with it.
        crate::metrics::ENTITY_SUBSCRIPTIONS.sub(self.lock().len() as i64);
    }
}

/// Marks the socket live: from now on events reach it through its rooms and subscriptions.
/// Called once it joined its rooms (or, with `auth.broadcast = false`, at connection).
pub fn set_live<A: Adapter>(socket: &SocketRef<A>) {
    if let Some(state) = SocketState::of(socket) {
        state.live.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str) -> Subscription {
        Subscription {
            uid: "api::tag.tag".into(),
            id: id.into(),
        }
    }

    #[test]
    fn subscriptions_are_counted_once_and_capped() {
        let state = SocketState::new(Principal::Public, vec!["io-role-public".into()], true);
        assert_eq!(state.subscribe(sub("a"), 2), Ok(true));
        assert_eq!(state.subscribe(sub("a"), 2), Ok(false));
        assert_eq!(state.subscribe(sub("b"), 2), Ok(true));
        assert!(state.is_full(&sub("c"), 2));
        assert!(!state.is_full(&sub("b"), 2));
        assert_eq!(state.subscribe(sub("c"), 2), Err(SubscribeError::Full));
        assert!(state.unsubscribe_room("api::tag.tag:a"));
        assert!(!state.unsubscribe_room("api::tag.tag:a"));
        assert_eq!(state.subscriptions(), vec![sub("b")]);
    }

    #[test]
    fn only_an_explicit_false_turns_broadcast_off() {
        let opts = |v: Value| ClientOptions { broadcast: Some(v) };
        assert!(!opts(Value::Bool(false)).broadcast());
        assert!(opts(Value::Bool(true)).broadcast());
        assert!(opts(Value::String("false".into())).broadcast());
        assert!(ClientOptions::default().broadcast());
    }

    #[test]
    fn a_socket_receives_what_was_routed_to_its_rooms() {
        let state = SocketState::new(Principal::Public, vec!["io-role-public".into()], false);
        assert!(state.may_receive(&["io-role-editor".into(), "io-role-public".into()]));
        assert!(!state.may_receive(&["io-role-editor".into()]));
    }
}
