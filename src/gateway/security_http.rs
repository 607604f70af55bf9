//! The security routes (`plugin-io.md` §6.4, spec §7): `POST /io/presence/session`,
//! `GET /io/security/sessions`, `POST /io/security/invalidate/:userId`.
//!
//! All need `Authorization: Bearer <Strapi admin access JWT>` (checked like an `admin-jwt`
//! handshake: live admin session, active admin); the two `/io/security` routes also take the
//! configured `admin.api_key`. Errors use Strapi's error body. Tokens are never logged.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;

use crate::auth::Authenticator;
use crate::config::{Config, Secret};
use crate::route::{Access, Principal};
use crate::security::sessions::SessionError;

/// The security routes take no body; anything larger than this is refused.
const MAX_BODY_BYTES: usize = 4 * 1024;
const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

#[derive(Clone)]
struct Ctx<A: Adapter> {
    auth: Authenticator,
    io: SocketIo<A>,
    api_key: Secret,
    ws_path: String,
}

/// The routes, to merge into the listener's router.
pub fn routes<A: Adapter>(config: &Config, auth: Authenticator, io: SocketIo<A>) -> Router {
    let ctx = Arc::new(Ctx {
        auth,
        io,
        api_key: config.admin.api_key.clone(),
        ws_path: config.server.path.clone(),
    });
    Router::new()
        .route("/io/presence/session", post(session))
        .route("/io/security/sessions", get(sessions))
        .route("/io/security/invalidate/{user_id}", post(invalidate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(ctx)
}

fn error(status: StatusCode, name: &str, message: &str) -> Response {
    let body = json!({
        "data": null,
        "error": {"status": status.as_u16(), "name": name, "message": message, "details": {}},
    });
    (status, axum::Json(body)).into_response()
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "UnauthorizedError",
        "Admin authentication required",
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?;
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// The admin behind the request's admin JWT.
async fn admin<A: Adapter>(ctx: &Ctx<A>, headers: &HeaderMap) -> Option<(i64, String)> {
    match ctx.auth.admin_jwt(bearer(headers)?).await {
        Ok(Principal::Admin { id, session }) => Some((id, session)),
        _ => None,
    }
}

/// An admin JWT or the admin API key (compared as SHA-256 digests).
async fn admin_or_key<A: Adapter>(ctx: &Ctx<A>, headers: &HeaderMap) -> bool {
    let Some(token) = bearer(headers) else {
        return false;
    };
    if ctx.api_key.is_set()
        && Sha256::digest(token.as_bytes()) == Sha256::digest(ctx.api_key.expose().as_bytes())
    {
        return true;
    }
    admin(ctx, headers).await.is_some()
}

async fn session<A: Adapter>(State(ctx): State<Arc<Ctx<A>>>, headers: HeaderMap) -> Response {
    let Some((user_id, session)) = admin(&ctx, &headers).await else {
        return unauthorized();
    };
    match ctx.auth.sessions().issue(user_id, session).await {
        Ok(issued) => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| h.len() <= 255)
                .unwrap_or("localhost");
            axum::Json(json!({
                "token": issued.token,
                "expiresAt": issued.expires_at_ms,
                "refreshAfter": issued.refresh_after_ms,
                "wsPath": ctx.ws_path,
                "wsUrl": format!("http://{host}"),
            }))
            .into_response()
        }
        Err(e @ SessionError::Cooldown(_)) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsError",
            &e.to_string(),
        ),
        Err(e @ (SessionError::Full | SessionError::Unavailable)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableError",
            &e.to_string(),
        ),
    }
}

async fn sessions<A: Adapter>(State(ctx): State<Arc<Ctx<A>>>, headers: HeaderMap) -> Response {
    if !admin_or_key(&ctx, &headers).await {
        return unauthorized();
    }
    let tokens = ctx.auth.sessions();
    let stats = match tokens.stats().await {
        Ok(stats) => stats,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableError",
                &e.to_string(),
            );
        }
    };
    // Every node's sockets when clustered (the adapter asks the others).
    let connections = match ctx.io.fetch_sockets().await {
        Ok(sockets) => sockets.len(),
        Err(_) => ctx.io.sockets().len(),
    };
    axum::Json(json!({"data": {
        "activeSessions": stats.active,
        "expiringSoon": stats.expiring_soon,
        "activeSocketConnections": connections,
        "sessionTTL": u64::try_from(tokens.ttl.as_millis()).unwrap_or(u64::MAX),
        "refreshCooldown": u64::try_from(tokens.cooldown.as_millis()).unwrap_or(u64::MAX),
    }}))
    .into_response()
}

async fn invalidate<A: Adapter>(
    State(ctx): State<Arc<Ctx<A>>>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !admin_or_key(&ctx, &headers).await {
        return unauthorized();
    }
    if user_id.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "User ID is required",
        );
    }
    let Some(id) = user_id
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0 && user_id.len() <= 19)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "Invalid user ID",
        );
    };
    let invalidated = match ctx.auth.sessions().invalidate_user(id).await {
        Ok(n) => n,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableError",
                &e.to_string(),
            );
        }
    };
    let mut disconnected = 0;
    for socket in ctx.io.sockets() {
        let is_user = socket.extensions.get::<Access>().is_some_and(
            |a| matches!(a.principal, Principal::Admin { id: admin, .. } if admin == id),
        );
        if is_user && socket.disconnect().is_ok() {
            disconnected += 1;
        }
    }
    // The admin's sockets on other nodes (clustered), found by their principal rooms.
    let room = crate::route::principal::admin_room(id);
    if let Ok(remote) = ctx
        .io
        .to([room.clone(), format!("{room}:draft")])
        .fetch_sockets()
        .await
    {
        for socket in remote {
            if socket.disconnect().await.is_ok() {
                disconnected += 1;
            }
        }
    }
    let body: Value = json!({"data": {
        "userId": id,
        "invalidatedSessions": invalidated,
        "disconnectedSockets": disconnected,
        "message": format!("Successfully invalidated {invalidated} session(s)"),
    }});
    axum::Json(body).into_response()
}
