//! The network edge: one axum listener serving Socket.IO and HTTP.

pub mod http;
pub mod resume;
pub mod socketio;

use std::sync::Arc;

use socketioxide::SocketIo;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;

pub use http::Health;
pub use resume::Resume;

/// Builds the axum app and the socket.io handle; `auth` checks handshakes, `resume` serves
/// clients that reconnect with `auth.offset`.
pub fn build(
    config: &Config,
    health: Arc<Health>,
    auth: crate::auth::Authenticator,
    resume: Resume,
) -> (axum::Router, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .req_path(config.server.path.clone())
        .max_buffer_size(socketio::SOCKET_BUFFER_PACKETS)
        .build_layer();
    socketio::register(&io, auth, resume);
    let origins: Vec<_> = config
        .server
        .cors_origins
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST]);
    let app = http::routes(health).layer(layer).layer(cors);
    (app, io)
}
