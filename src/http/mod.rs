//! The admin HTTP API under `/io` (spec §7): the plugin's admin routes, its server helpers
//! as HTTP calls, the OpenAPI document and the dashboard page.
//!
//! Every route but the dashboard page and the OpenAPI document needs `Authorization: Bearer`
//! with a Strapi admin access JWT (the `admin-jwt` handshake's checks) or `admin.api_key`;
//! anything else is 401. Bodies are limited to [`MAX_BODY_BYTES`]. [`AdminApi<A>::router`] is
//! the router other modules can merge routes into (see [`AdminApi<A>::protect`]).

pub mod admin;
pub mod helpers;
pub mod monitor;
pub mod settings;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio::sync::watch;

use crate::auth::{AuthError, Authenticator, HandshakeAuth};
use crate::config::{Config, Secret};
use crate::route::{Principal, Router as EventRouter};
use crate::strapi::StrapiModel;

/// Largest request body any route accepts (the plugin's test-event data limit is 32 KB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The OpenAPI 3 document of every route on the listener.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");
/// The dashboard page.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// What the admin routes share. Cheap to clone.
pub struct AdminApi<A: Adapter> {
    inner: Arc<Inner<A>>,
}

impl<A: Adapter> Clone for AdminApi<A> {
    fn clone(&self) -> Self {
        AdminApi {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<A: Adapter> {
    config: Config,
    io: SocketIo<A>,
    auth: Authenticator,
    router: watch::Sender<EventRouter>,
    model: watch::Receiver<Arc<StrapiModel>>,
    /// Serialises `PUT /io/settings`; `published` is what readers see.
    settings: Mutex<settings::Tunable>,
    published: watch::Sender<settings::Tunable>,
    state_file: std::path::PathBuf,
}

/// An error answered as Strapi does: `{data:null, error:{status, name, message}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Missing or invalid credentials")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("authentication is unavailable, try again")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "UnauthorizedError"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "ValidationError"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFoundError"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailableError"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "ApplicationError"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, name) = self.status();
        let outcome = match status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => "bad_request",
            _ => "error",
        };
        crate::metrics::HTTP_ADMIN_REQUESTS
            .with_label_values(&[outcome])
            .inc();
        let body = json!({
            "data": null,
            "error": { "status": status.as_u16(), "name": name, "message": self.to_string(), "details": {} }
        });
        (status, axum::Json(body)).into_response()
    }
}

impl<A: Adapter> AdminApi<A> {
    /// The admin API over the running service; loads the saved settings and applies them.
    pub fn new(
        config: &Config,
        io: SocketIo<A>,
        auth: Authenticator,
        router: watch::Sender<EventRouter>,
        model: watch::Receiver<Arc<StrapiModel>>,
    ) -> Self {
        let state_file = settings::state_file(config);
        let tunable =
            settings::load(&state_file).unwrap_or_else(|| settings::Tunable::from_config(config));
        let api = AdminApi {
            inner: Arc::new(Inner {
                config: config.clone(),
                io,
                auth,
                router,
                model,
                settings: Mutex::new(tunable.clone()),
                published: watch::Sender::new(tunable.clone()),
                state_file,
            }),
        };
        api.apply(&tunable);
        api
    }

    /// The runtime settings in force, updated by every accepted `PUT /io/settings`: for the
    /// features that read `security.rateLimiting` and `presence` live.
    pub fn settings_watch(&self) -> watch::Receiver<settings::Tunable> {
        self.inner.published.subscribe()
    }

    /// Puts runtime settings in force: the router's types, actions and sensitive fields, the
    /// monitor's log, and [`AdminApi<A>::settings_watch`].
    fn apply(&self, tunable: &settings::Tunable) {
        self.inner.published.send_replace(tunable.clone());
        let effective = tunable.apply_to(&self.inner.config);
        self.inner
            .router
            .send_modify(|r| *r = r.with_config(&effective));
        monitor::MONITOR.configure(
            tunable.monitoring.enable_event_logging,
            tunable.monitoring.max_event_log_size,
        );
    }

    fn settings(&self) -> settings::Tunable {
        self.inner
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every `/io` route: the authenticated ones behind [`AdminApi<A>::protect`], plus the
    /// dashboard page and the OpenAPI document.
    pub fn router(&self) -> Router {
        let protected = self.protect(
            admin::routes()
                .merge(helpers::routes())
                .with_state(self.clone()),
        );
        Router::new()
            .route("/io/openapi.json", axum::routing::get(openapi))
            .route("/io/dashboard", axum::routing::get(dashboard))
            .merge(protected)
    }

    /// `routes` behind the admin authentication (for other modules' admin routes too).
    pub fn protect(&self, routes: Router) -> Router {
        routes.layer(axum::middleware::from_fn_with_state(
            self.clone(),
            require_admin::<A>,
        ))
    }

    /// Whether several nodes share sockets through Redis (`redis.url`).
    pub fn clustered(&self) -> bool {
        self.inner.config.redis.url.is_some()
    }

    /// Whether `bearer` is the API key or a live admin's access JWT.
    pub async fn authenticate(&self, bearer: &str) -> Result<(), ApiError> {
        let key: &Secret = &self.inner.config.admin.api_key;
        if key.is_set() && constant_time_eq(key.expose().as_bytes(), bearer.as_bytes()) {
            return Ok(());
        }
        let handshake = HandshakeAuth {
            token: Some(bearer.to_owned()),
            strategy: Some("admin-jwt".into()),
            status: None,
            offset: None,
        };
        match self.inner.auth.authenticate(&handshake).await {
            Ok(access) if matches!(access.principal, Principal::Admin { .. }) => Ok(()),
            Ok(_) => Err(ApiError::Unauthorized),
            Err(AuthError::Unavailable) => Err(ApiError::Unavailable),
            Err(_) => Err(ApiError::Unauthorized),
        }
    }
}

async fn require_admin<A: Adapter>(
    State(api): State<AdminApi<A>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    api.authenticate(bearer).await?;
    crate::metrics::HTTP_ADMIN_REQUESTS
        .with_label_values(&["ok"])
        .inc();
    Ok(next.run(request).await)
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

async fn dashboard() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD_HTML,
    )
}

/// A JSON body, or 400 with serde's message (never axum's 415/422).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
        let bytes = if bytes.is_empty() {
            axum::body::Bytes::from_static(b"{}")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}
