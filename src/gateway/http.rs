//! HTTP routes on the Socket.IO listener: health, readiness, metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;

/// Shared flags the HTTP routes report.
#[derive(Debug, Default)]
pub struct Health {
    /// Set while the replication stream is connected.
    pub replicating: AtomicBool,
    /// Set while another node leads (consumes the slot) and this one serves its sockets.
    pub following: AtomicBool,
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn routes<A: Adapter>(health: Arc<Health>, io: SocketIo<A>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state((health, io))
}

async fn readyz<A: Adapter>(
    State((health, _)): State<(Arc<Health>, SocketIo<A>)>,
) -> impl IntoResponse {
    if health.replicating.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else if health.following.load(Ordering::Relaxed) {
        (StatusCode::OK, "following")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "replication not streaming")
    }
}

async fn metrics<A: Adapter>(
    State((_, io)): State<(Arc<Health>, SocketIo<A>)>,
) -> impl IntoResponse {
    crate::metrics::ROOMS.set(crate::http::admin::rooms(&io).len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}
