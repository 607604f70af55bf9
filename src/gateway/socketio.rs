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

use super::resume::{Resume, ResumeFrom, resume_socket};
use crate::assemble::EventOffset;
use crate::route::{Delivery, Principal};

/// Per-socket buffer, in packets. socketioxide drops (and reports) packets beyond it; 128,
/// its default, lost events in bursts here (rust-stack-notes pitfall 12).
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
pub fn register(io: &SocketIo, require_authentication: bool, resume: Resume) {
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
    let on_connect = move |socket: SocketRef, Extension(principal): Extension<Principal>| {
        let resume = resume.clone();
        async move {
            crate::metrics::CONNECTIONS.inc();
            socket.on_disconnect(async || crate::metrics::CONNECTIONS.dec());
            let rooms = vec![principal.room()];
            debug!(sid = %socket.id, rooms = ?rooms, "socket connected");
            match socket.extensions.get::<ResumeFrom>() {
                Some(ResumeFrom(from)) => {
                    tokio::spawn(resume_socket(socket, principal, from, rooms, resume));
                }
                None => socket.join(rooms),
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

/// Emits one delivery to its rooms; counts what socket.io could not deliver.
pub async fn emit(io: &SocketIo, delivery: &Delivery) {
    let args = event_args(delivery);
    match io
        .to(delivery.rooms.clone())
        .emit(&delivery.event_name, &args)
        .await
    {
        Ok(()) => crate::metrics::DELIVERIES.inc(),
        Err(e) => {
            crate::metrics::EMIT_ERRORS.inc();
            warn!(event = %delivery.event_name, error = %e, "emit failed for some sockets");
        }
    }
}

/// Emits a custom event from SQL to its rooms, or to every socket.
pub async fn emit_custom(io: &SocketIo, event: &crate::route::custom::CustomEvent) {
    let result = if event.rooms.is_empty() {
        io.emit(&event.event, &event.data).await
    } else {
        io.to(event.rooms.clone())
            .emit(&event.event, &event.data)
            .await
    };
    match result {
        Ok(()) => crate::metrics::CUSTOM_EVENTS.inc(),
        Err(e) => {
            crate::metrics::EMIT_ERRORS.inc();
            warn!(event = %event.event, error = %e, "custom event emit failed for some sockets");
        }
    }
}
