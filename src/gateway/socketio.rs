//! Socket.IO: handshake, rooms, and emitting deliveries.
//!
//! The handshake's `auth` is checked by [`crate::auth::Authenticator`] (spec §5): no token is
//! the users-permissions Public role (`io-role-public`); a JWT, API token or admin token that
//! does not verify is refused with `connect_error` and the plugin's message, never silently
//! downgraded to public. Each socket joins exactly one room: its principal's room, or that
//! room's `:draft` twin when it asked for (and may have) the draft view. A handshake with
//! `auth.offset` resumes: see [`super::resume`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use serde::Serialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{Extension, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide_core::adapter::DefinedAdapter;
use tracing::{debug, warn};

use super::client_events::ClientEvents;
use super::resume::{Resume, ResumeFrom, resume_socket};
use super::subscriptions::{ClientOptions, set_live};
use crate::assemble::EventOffset;
use crate::auth::live::{AuthGeneration, revalidate};
use crate::auth::{AuthError, Authenticator, HandshakeAuth};
use crate::route::{Access, Delivery};
use crate::security::{EventRate, Guard, GuardError, Slot};

/// Per-socket buffer, in packets, unless `clients.socket_buffer_packets` says otherwise.
/// socketioxide refuses packets beyond it; 128, its default, lost events in bursts here
/// (rust-stack-notes pitfall 12). A socket that fills it is disconnected (see
/// [`super::fanout`]).
pub const SOCKET_BUFFER_PACKETS: usize = 4096;

/// Why a handshake was refused; the message is what the client's `connect_error` shows.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("Invalid offset")]
    InvalidOffset,
}

/// Registers the default namespace with its auth middleware.
pub fn register<A: Adapter + DefinedAdapter>(
    io: &SocketIo<A>,
    auth: Authenticator,
    resume: Resume,
    clients: ClientEvents,
    guard: Guard,
) -> A::InitRes {
    let checker = auth.clone();
    let middleware = move |socket: SocketRef<A>, TryData(raw): TryData<Value>| {
        let auth = checker.clone();
        let guard = guard.clone();
        async move {
            let generation = auth.generation();
            let ip = client_ip(&guard, &socket);
            let result = async {
                guard.check_ip(ip)?;
                guard.check_lockout_anywhere(ip).await?;
                let slot = guard.acquire(ip)?;
                let handshake = HandshakeAuth::from_json(raw.ok())?;
                let access = match auth.authenticate(&handshake).await {
                    Ok(access) => access,
                    Err(e) => {
                        if e != AuthError::Unavailable {
                            guard.record_failure_anywhere(ip).await;
                        }
                        return Err(e.into());
                    }
                };
                let offset = resume_offset(&handshake)?;
                Ok::<_, HandshakeError>((access, offset, slot))
            }
            .await;
            match result {
                Ok((access, offset, slot)) => {
                    socket.extensions.insert(Arc::new(slot));
                    socket.extensions.insert(Arc::new(EventRate::default()));
                    socket.extensions.insert(access);
                    socket.extensions.insert(AuthGeneration(generation));
                    if let Some(offset) = offset {
                        socket.extensions.insert(ResumeFrom(offset));
                    }
                    Ok(())
                }
                Err(e) => {
                    crate::metrics::HANDSHAKE_REJECTIONS.inc();
                    if let HandshakeError::Guard(g) = &e {
                        crate::metrics::CONNECTIONS_REFUSED
                            .with_label_values(&[guard_reason(*g)])
                            .inc();
                    }
                    debug!(error = %e, %ip, "handshake refused");
                    Err(e)
                }
            }
        }
    };
    let on_connect = move |socket: SocketRef<A>,
                           Extension(access): Extension<Access>,
                           TryData(options): TryData<ClientOptions>| {
        let resume = resume.clone();
        let auth = auth.clone();
        let clients = clients.clone();
        async move {
            crate::metrics::CONNECTIONS.inc();
            let presence = clients.presence().clone();
            socket.on_disconnect(async move |s: SocketRef<A>| {
                crate::metrics::CONNECTIONS.dec();
                if let Some(slot) = s.extensions.get::<Arc<Slot>>() {
                    slot.release();
                }
                presence.unregister(&s).await;
            });
            let rooms = vec![access.room()];
            let broadcast = options.map(|o| o.broadcast()).unwrap_or(true);
            debug!(sid = %socket.id, rooms = ?rooms, broadcast, "socket connected");
            clients.attach(&socket, access.principal.clone(), rooms.clone(), broadcast);
            match socket.extensions.get::<ResumeFrom>() {
                // Without broadcast there is nothing to resume: subscriptions start empty.
                Some(ResumeFrom(from)) if broadcast => {
                    tokio::spawn(resume_socket(socket.clone(), access, from, rooms, resume));
                }
                _ => {
                    if broadcast {
                        socket.join(rooms);
                    }
                    set_live(&socket);
                }
            }
            // Permissions reloaded while this handshake was checked: check it again now that
            // the reloader's pass over live sockets may have missed it.
            let checked_at = socket.extensions.get::<AuthGeneration>().map(|g| g.0);
            if checked_at != Some(auth.generation()) {
                let model = auth.router().permissions;
                revalidate(&auth, &model, vec![socket]).await;
            }
        }
    };
    io.ns("/", on_connect.with(middleware))
}

/// The client's address: the peer (from axum's `ConnectInfo`), or who a trusted proxy says.
fn client_ip<A: Adapter>(guard: &Guard, socket: &SocketRef<A>) -> IpAddr {
    let parts = socket.req_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    guard.client_ip(peer, &parts.headers)
}

fn guard_reason(e: GuardError) -> &'static str {
    match e {
        GuardError::NotAllowed => "ip_not_allowed",
        GuardError::Denied => "ip_denied",
        GuardError::MaxConnections => "max_connections",
        GuardError::PerIp => "max_connections_per_ip",
        GuardError::LockedOut => "locked_out",
    }
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

/// The arguments of a delivery's event: the payload, then its offset (spec §4).
pub fn event_args(delivery: &Delivery) -> impl Serialize + '_ {
    (&*delivery.payload, delivery.offset.to_string())
}

/// Emits one delivery to the sockets that may receive it, through their rooms or their
/// entity subscriptions, once each; every socket's result is checked (see [`super::fanout`]).
pub async fn emit<A: Adapter>(io: &SocketIo<A>, delivery: &Delivery) {
    let fan = super::fanout::deliver(io, delivery, &event_args(delivery));
    crate::metrics::DELIVERIES.inc();
    crate::http::monitor::MONITOR.record(
        &delivery.event_name,
        serde_json::json!({ "uid": &*delivery.uid, "offset": delivery.offset.to_string(), "recipients": fan.sent }),
    );
    if fan.dropped > 0 {
        warn!(event = %delivery.event_name, offset = %delivery.offset, dropped = fan.dropped, "slow sockets missed an event and were disconnected");
    }
}

/// Emits a transaction's `deliveries` in order, letting the sockets' writers run after every
/// `batch` of them ([`emit_batch`]).
///
/// An emit only queues packets (`try_send`) and wakes each socket's writer task into this
/// worker's LIFO slot, which no other worker steals: without a yield, a burst queues
/// everything before any writer runs, and a socket whose buffer fills is dropped (4,096 of
/// 200,000 got through in a test before the yields). Yielding after every delivery instead
/// makes each writer flush one frame at a time: one `write` and, with TCP_NODELAY, one TCP
/// segment per event per socket. A writer flushes only once its queue is empty, so a batch
/// becomes one write of up to `batch` frames per socket.
pub async fn emit_all<A: Adapter>(io: &SocketIo<A>, deliveries: &[Delivery], batch: usize) {
    for chunk in deliveries.chunks(batch.max(1)) {
        for delivery in chunk {
            emit(io, delivery).await;
        }
        tokio::task::yield_now().await;
    }
}

/// Deliveries emitted between two yields to the sockets' writers: at most 32, and at most
/// half a socket's buffer, so one batch can never fill a buffer that the writer had emptied.
pub fn emit_batch(socket_buffer_packets: usize) -> usize {
    (socket_buffer_packets / 2).clamp(1, 32)
}

/// Emits a custom event from SQL to its rooms, or to every socket.
/// Clustered, it goes through the Socket.IO adapter to the sockets of every node (custom
/// events are not in the replay log).
pub async fn emit_custom<A: Adapter>(
    io: &SocketIo<A>,
    event: &crate::route::custom::CustomEvent,
    clustered: bool,
) {
    let fan =
        super::fanout::deliver_raw_anywhere(io, &event.rooms, &event.event, &event.data, clustered)
            .await;
    crate::metrics::CUSTOM_EVENTS.inc();
    crate::http::monitor::MONITOR.record(
        &event.event,
        serde_json::json!({ "custom": true, "rooms": &event.rooms, "recipients": fan.sent }),
    );
    if fan.dropped > 0 {
        warn!(event = %event.event, dropped = fan.dropped, "slow sockets missed a custom event and were disconnected");
    }
}
