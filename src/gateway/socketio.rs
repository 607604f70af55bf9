//! Socket.IO: handshake, rooms, and emitting deliveries.
//!
//! A socket that connects without a token is the users-permissions Public role and joins
//! `io-role-public`. Credentials walcast cannot verify yet are refused with `connect_error`,
//! never silently downgraded to public (spec §5). A handshake with `auth.offset` resumes:
//! see [`super::resume`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{Extension, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use tracing::{debug, warn};

use super::client_events::ClientEvents;
use super::resume::{Resume, ResumeFrom, resume_socket};
use super::subscriptions::{ClientOptions, set_live};
use crate::assemble::EventOffset;
use crate::route::{Delivery, Principal};

/// Per-socket buffer, in packets, unless `clients.socket_buffer_packets` says otherwise.
/// socketioxide refuses packets beyond it; 128, its default, lost events in bursts here
/// (rust-stack-notes pitfall 12). A socket that fills it is disconnected (see
/// [`super::fanout`]).
pub const SOCKET_BUFFER_PACKETS: usize = 4096;

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

/// Why a handshake was refused; the message is what the client's `connect_error` shows.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("Invalid token.")]
    InvalidToken,
    #[error("Draft access denied")]
    DraftDenied,
    #[error("Authentication required")]
    AuthenticationRequired,
    #[error("Invalid offset")]
    InvalidOffset,
}

/// Registers the default namespace with its auth middleware.
pub fn register(
    io: &SocketIo,
    require_authentication: bool,
    resume: Resume,
    clients: ClientEvents,
) {
    let middleware = move |socket: SocketRef, TryData(auth): TryData<HandshakeAuth>| async move {
        let auth = auth.unwrap_or_default();
        match authenticate(&auth, require_authentication)
            .and_then(|principal| resume_offset(&auth).map(|offset| (principal, offset)))
        {
            Ok((principal, offset)) => {
                socket.extensions.insert(principal);
                if let Some(offset) = offset {
                    socket.extensions.insert(ResumeFrom(offset));
                }
                Ok(())
            }
            Err(e) => {
                crate::metrics::HANDSHAKE_REJECTIONS.inc();
                debug!(error = %e, "handshake refused");
                Err(e)
            }
        }
    };
    let on_connect = move |socket: SocketRef,
                           Extension(principal): Extension<Principal>,
                           TryData(options): TryData<ClientOptions>| {
        let resume = resume.clone();
        let clients = clients.clone();
        async move {
            crate::metrics::CONNECTIONS.inc();
            socket.on_disconnect(async || crate::metrics::CONNECTIONS.dec());
            let rooms = vec![principal.room()];
            let broadcast = options.map(|o| o.broadcast()).unwrap_or(true);
            debug!(sid = %socket.id, rooms = ?rooms, broadcast, "socket connected");
            clients.attach(&socket, principal.clone(), rooms.clone(), broadcast);
            match socket.extensions.get::<ResumeFrom>() {
                // Without broadcast there is nothing to resume: subscriptions start empty.
                Some(ResumeFrom(from)) if broadcast => {
                    tokio::spawn(resume_socket(socket, principal, from, rooms, resume));
                }
                _ => {
                    if broadcast {
                        socket.join(rooms);
                    }
                    set_live(&socket);
                }
            }
        }
    };
    io.ns("/", on_connect.with(middleware));
}

/// The handshake's resume offset: absent, `null` or `""` for none; otherwise it must be an
/// offset walcast issued.
fn resume_offset(auth: &HandshakeAuth) -> Result<Option<EventOffset>, HandshakeError> {
    match &auth.offset {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| HandshakeError::InvalidOffset),
        Some(_) => Err(HandshakeError::InvalidOffset),
    }
}

fn authenticate(
    auth: &HandshakeAuth,
    require_authentication: bool,
) -> Result<Principal, HandshakeError> {
    if auth.status.as_deref() == Some("draft") {
        return Err(HandshakeError::DraftDenied);
    }
    match auth.token.as_deref() {
        None | Some("") if require_authentication => Err(HandshakeError::AuthenticationRequired),
        None | Some("") => Ok(Principal::Public),
        Some(_) => Err(HandshakeError::InvalidToken),
    }
}

/// The arguments of a delivery's event: the payload, then its offset (spec §4).
pub fn event_args(delivery: &Delivery) -> impl Serialize + '_ {
    (&*delivery.payload, delivery.offset.to_string())
}

/// Emits one delivery to the sockets that may receive it, through their rooms or their
/// entity subscriptions, once each; every socket's result is checked (see [`super::fanout`]).
pub async fn emit(io: &SocketIo, delivery: &Delivery) {
    let fan = super::fanout::deliver(io, delivery, &event_args(delivery));
    crate::metrics::DELIVERIES.inc();
    if fan.dropped > 0 {
        warn!(event = %delivery.event_name, offset = %delivery.offset, dropped = fan.dropped, "slow sockets missed an event and were disconnected");
    }
}

/// Emits a custom event from SQL to its rooms, or to every socket.
pub async fn emit_custom(io: &SocketIo, event: &crate::route::custom::CustomEvent) {
    let fan = super::fanout::deliver_raw(io, &event.rooms, &event.event, &event.data);
    crate::metrics::CUSTOM_EVENTS.inc();
    if fan.dropped > 0 {
        warn!(event = %event.event, dropped = fan.dropped, "slow sockets missed a custom event and were disconnected");
    }
}
