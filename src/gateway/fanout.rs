//! Fan-out: every event to every socket that should get it, once, and never a silent drop.
//!
//! The sockets of a delivery are found with socketioxide's multi-room `to([...])`, over the
//! rooms the router chose (principal rooms that may read the event) and the document's entity
//! rooms; it yields each socket once even when it is in several of them. Each socket is then
//! checked ([`SocketState`]): it must be live (not still catching up from a resume) and its
//! principal must be one the event was routed to, which keeps an entity subscription from
//! outliving the permission it was granted under.
//!
//! **Slow consumers.** socketioxide queues at most `clients.socket_buffer_packets` packets per
//! socket and refuses more; its room broadcast reports how many sockets refused, but not
//! which. So walcast emits to each socket itself (`socket.emit`) and checks every result: a
//! socket whose queue is full misses the event, the miss is counted
//! (`walcast_dropped_deliveries_total`), the socket gets no further event, and it is
//! disconnected (`walcast_slow_consumer_disconnects_total`; see [`disconnect_slow`]). Its
//! client reconnects with `auth.offset`, which is before the event it missed, and the replay
//! log gives it everything from there (see [`super::resume`]). Waiting for a slow socket here
//! would hold every other socket back. The cost of emitting per socket is one copy of the
//! already serialized payload into each socket's packet (the payload itself is serialized
//! once, by the router); only sockets on this node are reached this way.

use std::time::Duration;

use serde::Serialize;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError, SocketIo};
use tracing::{debug, warn};

use super::subscriptions::SocketState;
use crate::route::Delivery;

/// What one fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanOut {
    /// Sockets the event was queued for.
    pub sent: usize,
    /// Sockets whose queue was full: disconnected.
    pub dropped: usize,
}

/// Emits one delivery to the live sockets that may receive it, each once.
pub fn deliver<A: Adapter>(io: &SocketIo<A>, delivery: &Delivery, args: &impl Serialize) -> FanOut {
    let mut fan = FanOut::default();
    if delivery.rooms.is_empty() {
        // Nobody may read it; and `to([])` would mean every socket.
        return fan;
    }
    // `io.to` panics once the server closed its namespace (shutdown): ask for it instead.
    let Some(ns) = io.of("/") else {
        return fan;
    };
    let mut rooms = delivery.rooms.clone();
    rooms.extend(delivery.entity_rooms.iter().cloned());
    for socket in ns.to(rooms).sockets() {
        let Some(state) = SocketState::of(&socket) else {
            continue;
        };
        if !state.is_live() || !state.may_receive(&delivery.rooms) {
            continue;
        }
        send(socket, &delivery.event_name, args, &mut fan);
    }
    fan
}

/// Emits a custom event to the members of `rooms` (every socket when empty), each once.
pub fn deliver_raw<A: Adapter>(
    io: &SocketIo<A>,
    rooms: &[String],
    event: &str,
    args: &impl Serialize,
) -> FanOut {
    let mut fan = FanOut::default();
    let Some(ns) = io.of("/") else {
        return fan; // shutting down
    };
    let sockets = if rooms.is_empty() {
        ns.sockets()
    } else {
        ns.to(rooms.to_vec()).sockets()
    };
    for socket in sockets {
        if SocketState::of(&socket).is_some_and(|s| s.is_live()) {
            send(socket, event, args, &mut fan);
        }
    }
    fan
}

/// [`deliver_raw`] on this node, or `clustered`: through the Socket.IO adapter to the members
/// of `rooms` (every socket when empty) on every node, each once. The other nodes' sockets are
/// not counted here (`sent` counts this node's only when not clustered).
pub async fn deliver_raw_anywhere<A: Adapter>(
    io: &SocketIo<A>,
    rooms: &[String],
    event: &str,
    args: &(impl Serialize + ?Sized),
    clustered: bool,
) -> FanOut {
    if !clustered {
        return deliver_raw(io, rooms, event, &args);
    }
    let Some(ns) = io.of("/") else {
        return FanOut::default(); // shutting down
    };
    let target = if rooms.is_empty() {
        ns
    } else {
        ns.to(rooms.to_vec())
    };
    if let Err(e) = target.emit(event, args).await {
        crate::metrics::EMIT_ERRORS.inc();
        warn!(event, error = %e, "an event did not reach every socket of the cluster");
    }
    FanOut::default()
}

/// Queues one event for one socket; a full queue disconnects the socket.
fn send<A: Adapter>(socket: SocketRef<A>, event: &str, args: &impl Serialize, fan: &mut FanOut) {
    match socket.emit(event, args) {
        Ok(()) => fan.sent += 1,
        Err(SendError::Socket(SocketError::InternalChannelFull)) => {
            fan.dropped += 1;
            crate::metrics::DROPPED_DELIVERIES.inc();
            disconnect_slow(socket, event);
        }
        // Disconnecting already: its client resumes from its last offset.
        Err(SendError::Socket(SocketError::Closed)) => {}
        Err(e) => {
            crate::metrics::EMIT_ERRORS.inc();
            warn!(sid = %socket.id, event, error = %e, "cannot encode an event for a socket");
        }
    }
}

/// How often disconnecting a slow socket is tried again while its queue is still full.
const DISCONNECT_RETRY: Duration = Duration::from_millis(50);

/// Disconnects a socket that let its queue fill up. It receives no further event from here
/// on, so that the offset it resumes from is before the one it missed. socketioxide
/// disconnects by queueing a DISCONNECT packet, which a full queue refuses: then it is tried
/// again as the client drains its queue, until it is gone (a client that reads nothing at all
/// is closed by the engine.io heartbeat).
pub fn disconnect_slow<A: Adapter>(socket: SocketRef<A>, event: &str) {
    if let Some(state) = SocketState::of(&socket)
        && !state.mark_closing()
    {
        return; // already being disconnected
    }
    crate::metrics::SLOW_CONSUMER_DISCONNECTS.inc();
    warn!(
        sid = %socket.id,
        event,
        "socket does not keep up (its send queue is full); disconnecting it: it can resume with auth.offset"
    );
    let retry = socket.clone();
    match socket.disconnect() {
        Ok(()) => {}
        Err(SocketError::InternalChannelFull) => {
            tokio::spawn(async move {
                let socket = retry;
                while socket.connected() {
                    tokio::time::sleep(DISCONNECT_RETRY).await;
                    match socket.clone().disconnect() {
                        Err(SocketError::InternalChannelFull) => continue,
                        Ok(()) | Err(SocketError::Closed) => break,
                    }
                }
                debug!(sid = %socket.id, "slow socket disconnected");
            });
        }
        Err(SocketError::Closed) => {}
    }
}
