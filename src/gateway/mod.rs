//! The network edge: one axum listener serving Socket.IO and HTTP.

pub mod client_events;
pub mod fanout;
pub mod http;
pub mod lookup;
pub mod presence;
pub mod resume;
pub mod security_http;
pub mod socketio;
pub mod subscriptions;

use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::{SocketIo, SocketIoBuilder};
use socketioxide_core::adapter::DefinedAdapter;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;
use crate::strapi::StrapiModel;

pub use http::Health;
pub use resume::Resume;

/// What the gateway serves from: `auth` checks handshakes, `resume` serves clients that
/// reconnect with `auth.offset`, `model` (the Strapi model as last loaded) answers
/// `subscribe-entity`, `router` is where the admin API's runtime settings go, `shared`
/// (clustered) holds lockout counters and presence editors in Redis.
pub struct Parts {
    pub health: Arc<Health>,
    pub auth: crate::auth::Authenticator,
    pub resume: Resume,
    pub model: watch::Receiver<Arc<StrapiModel>>,
    pub router: watch::Sender<crate::route::Router>,
    pub shared: Option<crate::cluster::SharedState>,
}

/// Builds the axum app and the socket.io handle on `builder` (local, or with the Redis
/// adapter), and the namespace's initialisation (a subscription to await, with Redis).
pub fn build<A: Adapter + DefinedAdapter>(
    builder: SocketIoBuilder<A>,
    config: &Config,
    parts: Parts,
) -> (axum::Router, SocketIo<A>, A::InitRes) {
    let Parts {
        health,
        auth,
        resume,
        model,
        router,
        shared,
    } = parts;
    let max_payload = config.security.max_payload_bytes;
    let (layer, io) = builder
        .req_path(config.server.path.clone())
        .max_buffer_size(config.clients.socket_buffer_packets)
        .max_payload(max_payload)
        .ws_max_message_size(usize::try_from(max_payload).unwrap_or(usize::MAX))
        .ws_max_frame_size(usize::try_from(max_payload).unwrap_or(usize::MAX))
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .build_layer();
    let guard = crate::security::Guard::new(&config.security).with_shared(shared.clone());
    let presence = presence::Presence::new(
        std::time::Duration::from_secs(config.security.presence_stale_secs),
        Arc::clone(auth.db()),
    )
    .with_shared(shared);
    let clients = client_events::ClientEvents::new(
        config,
        resume.router.clone(),
        lookup::EntityLookup::new(config, model.clone()),
        guard.clone(),
        presence,
    );
    let security_routes = security_http::routes(config, auth.clone(), io.clone());
    let init = socketio::register(&io, auth.clone(), resume, clients, guard);
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
        .merge(security_routes)
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::http::MAX_BODY_BYTES,
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            crate::http::MAX_BODY_BYTES,
        ))
        .layer(layer)
        .layer(axum::middleware::map_request(detach_request_parts))
        .layer(cors);
    (app, io, init)
}

/// Each websocket's read buffer, allocated (and zeroed) when it connects; it grows for a
/// larger message. Clients send little (subscriptions, acks): socketioxide's 4 KiB default
/// was an eighth of an idle socket's memory.
const WS_READ_BUFFER_BYTES: usize = 1024;

/// Copies the request's URI (also the one axum filed as `OriginalUri`) and header values out
/// of hyper's read buffer. They are slices of that buffer (8 KiB or more), and socket.io
/// keeps the handshake request's parts, extensions included, as long as the socket lives:
/// without the copy every idle socket pins a whole read buffer.
async fn detach_request_parts(mut request: axum::extract::Request) -> axum::extract::Request {
    let headers = std::mem::take(request.headers_mut());
    let mut copied = axum::http::HeaderMap::with_capacity(headers.len());
    let mut name = None;
    for (next, value) in headers {
        // `None`: another value of the previous name.
        if let Some(next) = next {
            name =
                Some(axum::http::HeaderName::from_bytes(next.as_str().as_bytes()).unwrap_or(next));
        }
        let Some(name) = &name else { continue };
        let value = match axum::http::HeaderValue::from_bytes(value.as_bytes()) {
            Ok(mut copy) => {
                copy.set_sensitive(value.is_sensitive());
                copy
            }
            Err(_) => value,
        };
        copied.append(name.clone(), value);
    }
    *request.headers_mut() = copied;
    if let Ok(uri) = request.uri().to_string().parse() {
        *request.uri_mut() = uri;
    }
    // axum's router files a clone of the URI before any layer runs: a slice of the same
    // buffer (it alone kept a 16 KiB read buffer alive per socket, measured with jemalloc's
    // statistics: 15,000 live 16 KiB extents for 15,000 idle sockets).
    let original = request.extensions().get::<axum::extract::OriginalUri>();
    if let Some(copy) = original.and_then(|o| o.0.to_string().parse().ok()) {
        request
            .extensions_mut()
            .insert(axum::extract::OriginalUri(copy));
    }
    request
}

#[cfg(test)]
mod tests {
    use axum::extract::OriginalUri;
    use axum::http::{HeaderValue, Uri};
    use bytes::Bytes;

    /// Whether `part` lies inside `buffer` (is a slice of it rather than a copy).
    fn inside(buffer: &Bytes, part: &[u8]) -> bool {
        let range = buffer.as_ptr_range();
        range.contains(&part.as_ptr())
    }

    #[tokio::test]
    async fn nothing_of_the_request_points_into_the_read_buffer_afterwards() {
        // As hyper hands it over: URI and header values are slices of one read buffer, and
        // axum's router has filed a clone of the URI as `OriginalUri`.
        let buffer =
            Bytes::from(b"/socket.io/?EIO=4&transport=websocket|dGhlIHNhbXBsZSBub25jZQ==".to_vec());
        let uri = Uri::from_maybe_shared(buffer.slice(..37)).unwrap();
        let key = HeaderValue::from_maybe_shared(buffer.slice(38..)).unwrap();
        assert!(inside(&buffer, uri.path().as_bytes()));
        assert!(inside(&buffer, key.as_bytes()));
        let mut request = axum::extract::Request::new(axum::body::Body::empty());
        *request.uri_mut() = uri.clone();
        request.headers_mut().insert("sec-websocket-key", key);
        request.extensions_mut().insert(OriginalUri(uri));

        let request = super::detach_request_parts(request).await;

        assert_eq!(
            request.uri().to_string(),
            "/socket.io/?EIO=4&transport=websocket"
        );
        assert!(!inside(&buffer, request.uri().path().as_bytes()));
        let original = &request.extensions().get::<OriginalUri>().unwrap().0;
        assert_eq!(
            original.to_string(),
            "/socket.io/?EIO=4&transport=websocket"
        );
        assert!(!inside(&buffer, original.path().as_bytes()));
        let key = &request.headers()["sec-websocket-key"];
        assert_eq!(key.as_bytes(), b"dGhlIHNhbXBsZSBub25jZQ==");
        assert!(!inside(&buffer, key.as_bytes()));
    }
}
