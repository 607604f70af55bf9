//! The network edge: one axum listener serving Socket.IO and HTTP.

pub mod client_events;
pub mod fanout;
pub mod http;
pub mod lookup;
pub mod resume;
pub mod socketio;
pub mod subscriptions;

use std::sync::Arc;

use socketioxide::SocketIo;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;
use crate::strapi::StrapiModel;

pub use http::Health;
pub use resume::Resume;

/// Builds the axum app and the socket.io handle; `auth` checks handshakes, `resume` serves
/// clients that reconnect with `auth.offset`; `model` (the Strapi model as last loaded)
/// answers `subscribe-entity`.
pub fn build(
    config: &Config,
    health: Arc<Health>,
    auth: crate::auth::Authenticator,
    resume: Resume,
    model: watch::Receiver<Arc<StrapiModel>>,
) -> (axum::Router, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .req_path(config.server.path.clone())
        .max_buffer_size(config.clients.socket_buffer_packets)
        .build_layer();
    let clients = client_events::ClientEvents::new(
        config,
        resume.router.clone(),
        lookup::EntityLookup::new(config, model),
    );
    socketio::register(&io, auth, resume, clients);
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
