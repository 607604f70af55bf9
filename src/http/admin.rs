//! The plugin's admin routes (`plugin-io.md` §8) with its response shapes.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::monitor::{MONITOR, iso, iso_now, now_ms};
use super::settings::SettingsPatch;
use super::{AdminApi, ApiError, Body};
use crate::gateway::subscriptions::SocketState;
use crate::route::Principal;

/// Largest `limit` of `GET /io/event-log`.
const MAX_LOG_LIMIT: usize = 10_000;
/// The plugin's test-event data limit.
const MAX_TEST_DATA_BYTES: usize = 32 * 1024;

pub(super) fn routes<A: Adapter>() -> Router<AdminApi<A>> {
    Router::new()
        .route("/io/settings", get(get_settings).put(put_settings))
        .route("/io/content-types", get(content_types))
        .route("/io/stats", get(stats))
        .route("/io/monitoring/stats", get(monitoring_stats))
        .route("/io/event-log", get(event_log))
        .route("/io/test-event", post(test_event))
        .route("/io/reset-stats", post(reset_stats))
        .route("/io/roles", get(roles))
        .route("/io/online-users", get(online_users))
}

async fn get_settings<A: Adapter>(State(api): State<AdminApi<A>>) -> axum::Json<Value> {
    let settings = api.settings();
    axum::Json(json!({ "data": settings.plugin_shape(&api.inner.config) }))
}

async fn put_settings<A: Adapter>(
    State(api): State<AdminApi<A>>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let patch = SettingsPatch::parse(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let updated = {
        let mut current = api
            .inner
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = current.clone();
        next.apply(patch);
        super::settings::save(&api.inner.state_file, &next).map_err(|e| {
            tracing::warn!(error = %format!("{:#}", anyhow::Error::from(e)), "settings not saved");
            ApiError::Internal
        })?;
        *current = next.clone();
        next
    };
    api.apply(&updated);
    tracing::info!("runtime settings changed through PUT /io/settings");
    Ok(axum::Json(json!({
        "data": updated.plugin_shape(&api.inner.config),
        "reloaded": true
    })))
}

async fn content_types<A: Adapter>(State(api): State<AdminApi<A>>) -> axum::Json<Value> {
    let model = api.inner.model.borrow().clone();
    let data: Vec<Value> = model
        .content_types
        .by_uid
        .values()
        .filter(|ct| ct.uid.starts_with("api::"))
        .map(|ct| {
            json!({
                "uid": ct.uid,
                "displayName": display_name(&ct.singular_name),
                "singularName": ct.singular_name,
                "pluralName": ct.table,
            })
        })
        .collect();
    axum::Json(json!({ "data": data }))
}

/// `article` → `Article`, `blog-post` → `Blog Post`.
fn display_name(singular: &str) -> String {
    singular
        .split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The rooms with at least one member: `[{name, members, isEntityRoom}]`.
pub(crate) fn rooms<A: Adapter>(io: &socketioxide::SocketIo<A>) -> Vec<Value> {
    let mut members: BTreeMap<String, usize> = BTreeMap::new();
    for socket in io.sockets() {
        for room in socket.rooms() {
            *members.entry(room.to_string()).or_default() += 1;
        }
    }
    members
        .into_iter()
        .map(|(name, n)| {
            let entity = is_entity_room(&name);
            json!({ "name": name, "members": n, "isEntityRoom": entity })
        })
        .collect()
}

fn is_entity_room(room: &str) -> bool {
    room.split_once("::")
        .and_then(|(_, rest)| rest.split_once(':'))
        .is_some()
}

fn user_of(principal: &Principal) -> Value {
    match principal {
        Principal::Public => Value::Null,
        Principal::User { id, role, .. } => json!({ "id": id, "role": role, "isAdmin": false }),
        Principal::ApiToken { id, name, .. } => {
            json!({ "id": id, "apiToken": name, "isAdmin": false })
        }
        Principal::Admin { id, .. } => json!({ "id": id, "isAdmin": true }),
    }
}

fn socket_info<A: Adapter>(socket: &SocketRef<A>) -> Value {
    let state = SocketState::of(socket);
    let subs: Vec<Value> = state
        .as_ref()
        .map(|s| s.subscriptions())
        .unwrap_or_default()
        .into_iter()
        .map(|s| json!({ "uid": s.uid, "id": s.id, "room": s.room() }))
        .collect();
    let parts = socket.req_parts();
    let address = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let query: Map<String, Value> = parts
        .uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let rooms: Vec<String> = socket.rooms().into_iter().map(|r| r.to_string()).collect();
    json!({
        "id": socket.id.to_string(),
        "connected": socket.connected(),
        "rooms": rooms,
        "entitySubscriptions": subs,
        "handshake": {
            "address": address,
            "time": state.as_ref().map(|s| iso(s.connected_at_ms)),
            "query": query,
        },
        "user": state.as_ref().map(|s| user_of(&s.principal)).unwrap_or(Value::Null),
    })
}

/// `getConnectionStats()`.
fn connection_stats<A: Adapter>(io: &socketioxide::SocketIo<A>) -> Value {
    let sockets: Vec<Value> = io.sockets().iter().map(socket_info).collect();
    let rooms = rooms(io);
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for socket in io.sockets() {
        if let Some(state) = SocketState::of(&socket) {
            for sub in state.subscriptions() {
                total += 1;
                *by_type.entry(sub.uid).or_default() += 1;
            }
        }
    }
    let entity_rooms: Vec<&Value> = rooms.iter().filter(|r| r["isEntityRoom"] == true).collect();
    json!({
        "connected": sockets.len(),
        "rooms": rooms,
        "sockets": sockets,
        "entitySubscriptions": { "total": total, "byContentType": by_type, "rooms": entity_rooms },
    })
}

async fn stats<A: Adapter>(State(api): State<AdminApi<A>>) -> axum::Json<Value> {
    axum::Json(json!({ "data": {
        "connections": connection_stats(&api.inner.io),
        "events": MONITOR.event_stats(),
    }}))
}

async fn monitoring_stats<A: Adapter>(State(api): State<AdminApi<A>>) -> axum::Json<Value> {
    let io = &api.inner.io;
    let events = MONITOR.event_stats();
    axum::Json(json!({ "data": {
        "connections": { "connected": io.sockets().len(), "rooms": rooms(io) },
        "events": {
            "totalEvents": events["totalEvents"],
            "eventsPerSecond": events["eventsPerSecond"],
            "eventsByType": events["eventsByType"],
        },
        "timestamp": iso_now(),
        "replication": {
            "streaming": crate::metrics::REPLICATION_STREAMING.get() == 1,
            "slotLagBytes": crate::metrics::SLOT_LAG_BYTES.get(),
            "slotLagSeconds": crate::metrics::SLOT_LAG_SECONDS.get(),
        },
    }}))
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    limit: Option<String>,
}

async fn event_log(Query(q): Query<LogQuery>) -> Result<axum::Json<Value>, ApiError> {
    let limit = match q.limit.as_deref() {
        None | Some("") => 50,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LOG_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit must be an integer from 1 to {MAX_LOG_LIMIT}"
                ))
            })?,
    };
    Ok(axum::Json(json!({ "data": MONITOR.event_log(limit) })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TestEvent {
    event_name: Option<String>,
    data: Option<Map<String, Value>>,
}

/// The plugin's (5.8) event-name rule for test events.
fn valid_event_name(name: &str) -> bool {
    (1..=99).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-'))
}

async fn test_event<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Body(body): Body<TestEvent>,
) -> Result<axum::Json<Value>, ApiError> {
    let name = body.event_name.unwrap_or_else(|| "test".into());
    if !valid_event_name(&name) {
        return Err(ApiError::BadRequest(
            "eventName must match [a-zA-Z0-9:._-]{1,99}".into(),
        ));
    }
    let mut data = body.data.unwrap_or_default();
    if serde_json::to_vec(&data).map(|v| v.len()).unwrap_or(0) > MAX_TEST_DATA_BYTES {
        return Err(ApiError::BadRequest("data must be at most 32 KB".into()));
    }
    data.insert("timestamp".into(), json!(now_ms()));
    data.insert("test".into(), json!(true));
    let data = Value::Object(data);
    let fan = crate::gateway::fanout::deliver_raw(&api.inner.io, &[], &name, &data);
    MONITOR.record("test", json!({ "eventName": name, "recipients": fan.sent }));
    Ok(axum::Json(json!({ "data": {
        "success": true,
        "eventName": name,
        "data": data,
        "recipients": fan.sent,
    }})))
}

async fn reset_stats() -> axum::Json<Value> {
    MONITOR.reset();
    axum::Json(json!({ "data": { "success": true } }))
}

const ROLES_QUERY: &str = "SELECT id, name, type, description FROM up_roles ORDER BY id";

async fn roles<A: Adapter>(State(api): State<AdminApi<A>>) -> Result<axum::Json<Value>, ApiError> {
    let client = api
        .inner
        .auth
        .db()
        .client()
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let rows = client.query(ROLES_QUERY, &[]).await.map_err(|e| {
        tracing::warn!(error = %e, "reading up_roles failed");
        ApiError::Unavailable
    })?;
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, i32>(0),
                "name": r.get::<_, Option<String>>(1),
                "type": r.get::<_, Option<String>>(2),
                "description": r.get::<_, Option<String>>(3),
            })
        })
        .collect();
    Ok(axum::Json(json!({ "data": data })))
}

async fn online_users<A: Adapter>(State(api): State<AdminApi<A>>) -> axum::Json<Value> {
    let now = now_ms();
    let mut users = Vec::new();
    let (mut admins, mut plain) = (0, 0);
    for socket in api.inner.io.sockets() {
        let Some(state) = SocketState::of(&socket) else {
            continue;
        };
        let user = user_of(&state.principal);
        match &state.principal {
            Principal::Admin { .. } => admins += 1,
            Principal::User { .. } => plain += 1,
            _ => continue,
        }
        users.push(json!({
            "socketId": socket.id.to_string(),
            "user": user,
            "connectedAt": iso(state.connected_at_ms),
            "lastSeen": iso(now),
            "onlineFor": now.saturating_sub(state.connected_at_ms),
            "editingEntities": [],
            "isEditing": false,
        }));
    }
    axum::Json(json!({ "data": {
        "users": users,
        "counts": { "total": admins + plain, "admins": admins, "users": plain, "editing": 0 },
        "timestamp": iso(now),
    }}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_rooms() {
        assert!(valid_event_name("walcast:test.1"));
        assert!(!valid_event_name("bad name"));
        assert!(!valid_event_name(""));
        assert_eq!(display_name("blog-post"), "Blog Post");
        assert!(is_entity_room("api::article.article:12"));
        assert!(!is_entity_room("io-role-public"));
    }
}
