//! The plugin's server helpers (`strapi.$io.*`, `plugin-io.md` §7) as HTTP calls for an
//! application's backend. JSON in, `{data: <what the helper returns>}` out; a helper that
//! returns nothing answers `{data: null}`. A body that is not the helper's arguments is 400.

use std::str::FromStr;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;

use super::monitor::MONITOR;
use super::{AdminApi, ApiError, Body};
use crate::assemble::Action;
use crate::config::PayloadFormat;
use crate::gateway::fanout::deliver_raw_anywhere;
use crate::gateway::subscriptions::{SocketState, Subscription};
use crate::route::payload::plugin_io_entry;
use crate::route::{Audience, entity::entity_room};

pub(super) fn routes<A: Adapter>() -> Router<AdminApi<A>> {
    Router::new()
        .route("/io/emit", post(emit))
        .route("/io/raw", post(raw))
        .route("/io/rooms/join", post(join_room))
        .route("/io/rooms/leave", post(leave_room))
        .route("/io/rooms/{room}/sockets", get(sockets_in_room))
        .route("/io/private-message", post(private_message))
        .route("/io/broadcast", post(broadcast))
        .route("/io/namespace-emit", post(emit_to_namespace))
        .route("/io/disconnect", post(disconnect))
        .route("/io/entities/subscribe", post(subscribe_entity))
        .route("/io/entities/unsubscribe", post(unsubscribe_entity))
        .route(
            "/io/sockets/{socket_id}/entity-subscriptions",
            get(entity_subscriptions),
        )
        .route("/io/entities/emit", post(emit_to_entity))
        .route("/io/entities/{uid}/{id}/sockets", get(entity_room_sockets))
}

fn data(value: Value) -> axum::Json<Value> {
    axum::Json(json!({ "data": value }))
}

fn socket<A: Adapter>(api: &AdminApi<A>, id: &str) -> Option<SocketRef<A>> {
    let sid = Sid::from_str(id).ok()?;
    api.inner.io.get_socket(sid)
}

fn check_event(event: &str) -> Result<(), ApiError> {
    if event.is_empty() || event.len() > 100 {
        return Err(ApiError::BadRequest(
            "event must be 1 to 100 characters".into(),
        ));
    }
    Ok(())
}

fn check_room(room: &str) -> Result<(), ApiError> {
    if room.is_empty() || room.len() > 200 {
        return Err(ApiError::BadRequest(
            "room must be 1 to 200 characters".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Schema {
    singular_name: String,
    uid: String,
    #[serde(default)]
    #[allow(dead_code)]
    attributes: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitBody {
    event: String,
    schema: Schema,
    #[serde(default)]
    data: Value,
}

/// Clustered: the socket `id` on whichever node holds it (every socket is in its id's room),
/// or 404.
async fn socket_on_any_node<A: Adapter>(
    api: &AdminApi<A>,
    id: &str,
) -> Result<(Sid, socketioxide::socket::RemoteSocket<A>), ApiError> {
    let not_found = || ApiError::NotFound("Socket not found".into());
    let sid = Sid::from_str(id).map_err(|_| not_found())?;
    let found = api
        .inner
        .io
        .to(sid)
        .fetch_sockets()
        .await
        .unwrap_or_default();
    let socket = found.into_iter().next().ok_or_else(not_found)?;
    Ok((sid, socket))
}

/// `emit({event, schema, data})`: `<singularName>:<event>` to the rooms whose principals may
/// hear that action on that type, with `data` (sensitive fields removed) shaped as walcast's
/// own content events (`events.payload`: the entry itself, or the plugin's
/// `{data:{id, attributes}, meta}`).
async fn emit<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Body(body): Body<EmitBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_event(&body.event)?;
    let action = Action::parse(&body.event).ok_or_else(|| {
        ApiError::BadRequest("event must be create, update, delete, publish or unpublish".into())
    })?;
    let mode = api.inner.config.events.permissions;
    let router = api.inner.router.borrow().clone();
    let rooms = router
        .permissions
        .rooms_for(&body.schema.uid, action, Audience::Both, mode);
    let settings = api.settings();
    let sanitizer = crate::route::sanitize::Sanitizer::new(&settings.sensitive_fields);
    let mut entry = body.data;
    sanitizer.strip(&mut entry);
    // The shape of walcast's own content events in the configured payload format.
    let payload = match (api.inner.config.events.payload, entry) {
        (PayloadFormat::Strapi, entry) => entry,
        (PayloadFormat::PluginIo, Value::Object(map)) => {
            json!({ "data": plugin_io_entry(map, None), "meta": {} })
        }
        (PayloadFormat::PluginIo, other) => json!({ "data": other, "meta": {} }),
    };
    let name = format!("{}:{}", body.schema.singular_name, body.event);
    if !rooms.is_empty() {
        let fan =
            deliver_raw_anywhere(&api.inner.io, &rooms, &name, &payload, api.clustered()).await;
        MONITOR.record(
            &name,
            json!({ "uid": body.schema.uid, "recipients": fan.sent }),
        );
    }
    Ok(data(Value::Null))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBody {
    event: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

/// `raw({event, data, rooms?})`: `{data}` to the rooms, or to every socket.
async fn raw<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Body(body): Body<RawBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_event(&body.event)?;
    let rooms = body.rooms.unwrap_or_default();
    for room in &rooms {
        check_room(room)?;
    }
    let fan = deliver_raw_anywhere(
        &api.inner.io,
        &rooms,
        &body.event,
        &json!({ "data": body.data }),
        api.clustered(),
    )
    .await;
    MONITOR.record(
        &body.event,
        json!({ "rooms": rooms, "recipients": fan.sent }),
    );
    Ok(data(Value::Null))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RoomBody {
    socket_id: String,
    room: String,
}

/// `joinRoom(socketId, room)` → boolean.
async fn join_room<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Body(body): Body<RoomBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_room(&body.room)?;
    Ok(data(json!(match socket(&api, &body.socket_id) {
        Some(s) => {
            s.join(body.room);
            true
        }
        None => false,
    })))
}

/// `leaveRoom(socketId, room)` → boolean.
async fn leave_room<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Body(body): Body<RoomBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_room(&body.room)?;
    Ok(data(json!(match socket(&api, &body.socket_id) {
        Some(s) => {
            s.leave(body.room);
            true
        }
        None => false,
    })))
}

/// The members of `room` on every node (the adapter asks the others when clustered).
async fn members<A: Adapter>(api: &AdminApi<A>, room: String) -> Value {
    let sockets: Vec<Value> = match api.inner.io.to(room.clone()).fetch_sockets().await {
        Ok(sockets) => sockets
            .iter()
            .map(|s| json!({ "id": s.data().id.to_string(), "user": null }))
            .collect(),
        Err(_) => api
            .inner
            .io
            .to(room)
            .sockets()
            .iter()
            .map(|s| json!({ "id": s.id.to_string(), "user": null }))
            .collect(),
    };
    json!(sockets)
}

/// `getSocketsInRoom(room)` → `[{id, user: null}]`.
async fn sockets_in_room<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Path(room): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    check_room(&room)?;
    Ok(data(members(&api, room).await))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SocketEventBody {
    socket_id: String,
    event: String,
    #[serde(default)]
    data: Value,
}

/// `sendPrivateMessage(socketId, event, data)`: `data` to that socket.
async fn private_message<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Body(body): Body<SocketEventBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_event(&body.event)?;
    match socket(&api, &body.socket_id) {
        Some(to) => {
            if to.emit(&body.event, &body.data).is_err() {
                crate::metrics::EMIT_ERRORS.inc();
            }
        }
        // Clustered: the socket may be on another node (every socket is in its id's room).
        None if api.clustered() => {
            let (_, to) = socket_on_any_node(&api, &body.socket_id).await?;
            if to.emit(&body.event, &body.data).await.is_err() {
                crate::metrics::EMIT_ERRORS.inc();
            }
        }
        None => return Err(ApiError::NotFound("Socket not found".into())),
    }
    MONITOR.record(&body.event, json!({ "socketId": body.socket_id }));
    Ok(data(Value::Null))
}

/// `broadcast(socketId, event, data)`: `data` to every socket but that one.
async fn broadcast<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Body(body): Body<SocketEventBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_event(&body.event)?;
    if api.clustered() {
        // Every node's sockets but that one (which may be on any node).
        let (sid, _) = socket_on_any_node(&api, &body.socket_id).await?;
        if let Err(e) = api.inner.io.except(sid).emit(&body.event, &body.data).await {
            crate::metrics::EMIT_ERRORS.inc();
            tracing::warn!(error = %e, "broadcast did not reach every socket of the cluster");
        }
        MONITOR.record(&body.event, json!({ "from": body.socket_id }));
        return Ok(data(Value::Null));
    }
    let from = socket(&api, &body.socket_id)
        .ok_or_else(|| ApiError::NotFound("Socket not found".into()))?;
    for s in api.inner.io.sockets() {
        if s.id != from.id && SocketState::of(&s).is_some_and(|st| st.is_live()) {
            let _ = s.emit(&body.event, &body.data);
        }
    }
    MONITOR.record(&body.event, json!({ "from": body.socket_id }));
    Ok(data(Value::Null))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceBody {
    namespace: String,
    event: String,
    #[serde(default)]
    data: Value,
}

/// `emitToNamespace(ns, event, data)`; walcast serves only `/`, any other is 404.
async fn emit_to_namespace<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Body(body): Body<NamespaceBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_event(&body.event)?;
    let path = if body.namespace.starts_with('/') {
        body.namespace.clone()
    } else {
        format!("/{}", body.namespace)
    };
    let ns = api
        .inner
        .io
        .of(&path)
        .ok_or_else(|| ApiError::NotFound(format!("Namespace {path} not found")))?;
    if api.clustered() {
        if let Err(e) = ns.emit(&body.event, &body.data).await {
            crate::metrics::EMIT_ERRORS.inc();
            tracing::warn!(error = %e, "namespace emit did not reach every socket of the cluster");
        }
    } else {
        for s in ns.sockets() {
            let _ = s.emit(&body.event, &body.data);
        }
    }
    MONITOR.record(&body.event, json!({ "namespace": path }));
    Ok(data(Value::Null))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DisconnectBody {
    socket_id: String,
    #[serde(default)]
    #[allow(dead_code)]
    reason: Option<String>,
}

/// `disconnectSocket(socketId, reason?)` → boolean (`reason` ignored, as in the plugin).
async fn disconnect<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Body(body): Body<DisconnectBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let done = socket(&api, &body.socket_id).is_some_and(|s| s.disconnect().is_ok());
    Ok(data(json!(done)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EntityBody {
    socket_id: String,
    uid: String,
    id: Value,
}

fn id_text(id: &Value) -> Result<String, ApiError> {
    match id {
        Value::String(s) if !s.is_empty() && s.len() <= 100 => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(ApiError::BadRequest(
            "id must be a number or a non-empty string".into(),
        )),
    }
}

/// `subscribeToEntity(socketId, uid, id)` →
/// `{success, room, uid, id}` or `{success:false, error}`.
async fn subscribe_entity<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Body(body): Body<EntityBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = id_text(&body.id)?;
    let Some(s) = socket(&api, &body.socket_id) else {
        return Ok(data(
            json!({ "success": false, "error": "Socket not found" }),
        ));
    };
    let known = api
        .inner
        .model
        .borrow()
        .content_types
        .by_uid
        .contains_key(&body.uid);
    if !known {
        return Ok(data(
            json!({ "success": false, "error": "Content type not found" }),
        ));
    }
    let sub = Subscription {
        uid: body.uid.clone(),
        id,
    };
    let room = sub.room();
    if let Some(state) = SocketState::of(&s) {
        let max = api.inner.config.clients.max_subscriptions_per_socket;
        if state.subscribe(sub, max).is_err() {
            return Ok(data(json!({
                "success": false,
                "error": format!("Maximum subscriptions ({max}) reached")
            })));
        }
    }
    s.join(room.clone());
    Ok(data(
        json!({ "success": true, "room": room, "uid": body.uid, "id": body.id }),
    ))
}

/// `unsubscribeFromEntity(socketId, uid, id)`, same shape.
async fn unsubscribe_entity<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Body(body): Body<EntityBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = id_text(&body.id)?;
    let Some(s) = socket(&api, &body.socket_id) else {
        return Ok(data(
            json!({ "success": false, "error": "Socket not found" }),
        ));
    };
    let room = entity_room(&body.uid, &id);
    if let Some(state) = SocketState::of(&s) {
        state.unsubscribe_room(&room);
    }
    s.leave(room.clone());
    Ok(data(
        json!({ "success": true, "room": room, "uid": body.uid, "id": body.id }),
    ))
}

/// `getEntitySubscriptions(socketId)` → `{success, subscriptions:[{uid,id,room}]}`.
async fn entity_subscriptions<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Path(socket_id): Path<String>,
) -> axum::Json<Value> {
    let Some(s) = socket(&api, &socket_id) else {
        return data(json!({ "success": false, "error": "Socket not found" }));
    };
    let subs: Vec<Value> = SocketState::of(&s)
        .map(|st| st.subscriptions())
        .unwrap_or_default()
        .into_iter()
        .map(|sub| json!({ "uid": sub.uid, "id": sub.id, "room": sub.room() }))
        .collect();
    data(json!({ "success": true, "subscriptions": subs }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityEmitBody {
    uid: String,
    id: Value,
    event: String,
    #[serde(default)]
    data: Value,
}

/// `emitToEntity(uid, id, event, data)`: raw `data` to the entity room `uid:id`.
async fn emit_to_entity<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Body(body): Body<EntityEmitBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_event(&body.event)?;
    let room = entity_room(&body.uid, &id_text(&body.id)?);
    deliver_raw_anywhere(
        &api.inner.io,
        std::slice::from_ref(&room),
        &body.event,
        &body.data,
        api.clustered(),
    )
    .await;
    MONITOR.record(&body.event, json!({ "room": room }));
    Ok(data(Value::Null))
}

/// `getEntityRoomSockets(uid, id)` → `[{id, user: null}]`.
async fn entity_room_sockets<A: Adapter>(
    State(api): State<AdminApi<A>>,
    Path((uid, id)): Path<(String, String)>,
) -> axum::Json<Value> {
    data(members(&api, entity_room(&uid, &id)).await)
}
