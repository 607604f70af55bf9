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
/// answers `subscribe-entity`; `router` is where the admin API's runtime settings go.
pub fn build(
    config: &Config,
    health: Arc<Health>,
    auth: crate::auth::Authenticator,
    resume: Resume,
    model: watch::Receiver<Arc<StrapiModel>>,
    router: watch::Sender<crate::route::Router>,
) -> (axum::Router, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .req_path(config.server.path.clone())
        .max_buffer_size(config.clients.socket_buffer_packets)
        .build_layer();
    let clients = client_events::ClientEvents::new(
        config,
        resume.router.clone(),
        lookup::EntityLookup::new(config, model.clone()),
    );
    socketio::register(&io, auth.clone(), resume, clients);
    let admin = crate::http::AdminApi::new(config, io.clone(), auth, router, model);
    let origins: Vec<_> = config
        .server
        .cors_origins
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::PUT,
        ])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
        ]);
    // Every HTTP route has a body limit; socket.io (outside it) has its own buffer limit.
    let app = http::routes(health, io.clone())
        .merge(admin.router())
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::http::MAX_BODY_BYTES,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            crate::http::MAX_BODY_BYTES,
        ))
        .layer(layer)
        .layer(cors);
    (app, io)
}
