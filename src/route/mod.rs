//! Routing: who receives each document event, and exactly what they see (spec §4–5).
//!
//! Turns `TransactionEvents` into `Delivery`s: event name, target rooms, payload serialized
//! once, offset. Consults the `PermissionModel` snapshot; never calls socket.io itself.

pub mod custom;
pub mod entity;
pub mod payload;
pub mod permissions;
pub mod principal;

use std::sync::Arc;

use crate::assemble::{Action, DocumentEvent, EventOffset, TransactionEvents, View};
use crate::config::Config;

pub use payload::SharedPayload;
pub use permissions::PermissionModel;
pub use principal::Principal;

/// One emission: an event to a set of rooms.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_name: String,
    pub rooms: Vec<String>,
    pub payload: SharedPayload,
    pub offset: EventOffset,
    /// The content type and action the rooms were chosen for, so the decision can be checked
    /// again later for one principal ([`Router::admits`]).
    pub uid: Arc<str>,
    pub action: Action,
    /// The entity rooms of the document ([`entity::entity_rooms_of`]): subscribers there whose
    /// principal may read it (one of `rooms`) receive it too, once. Live emission only; not
    /// kept in the replay log.
    pub entity_rooms: Vec<String>,
}

/// Routes document events to rooms.
#[derive(Debug, Clone)]
pub struct Router {
    pub permissions: PermissionModel,
    config: RouterConfig,
}

#[derive(Debug, Clone)]
struct RouterConfig {
    payload: crate::config::PayloadFormat,
    permissions: crate::config::PermissionMode,
    content_types: Vec<crate::config::ContentTypeConfig>,
}

impl Router {
    pub fn new(config: &Config, permissions: PermissionModel) -> Self {
        Router {
            permissions,
            config: RouterConfig {
                payload: config.events.payload,
                permissions: config.events.permissions,
                content_types: config.content_types.clone(),
            },
        }
    }

    /// Whether the configuration lets this event out at all (type listed, action enabled).
    fn enabled(&self, event: &DocumentEvent) -> bool {
        if self.config.content_types.is_empty() {
            return crate::config::default_actions()
                .iter()
                .any(|a| a == event.action.as_str());
        }
        self.config
            .content_types
            .iter()
            .find(|ct| *ct.uid == *event.key.uid)
            .is_some_and(|ct| ct.actions.iter().any(|a| a == event.action.as_str()))
    }

    /// Whether a socket of `principal` may receive `delivery` now: it was routed to the
    /// principal's room, and the current permission model still lets that room read it (the
    /// rule [`Router::route`] applied). Used when events are replayed to a resuming socket.
    pub fn admits(&self, principal: &Principal, delivery: &Delivery) -> bool {
        let room = principal.room();
        delivery.rooms.contains(&room)
            && self.permissions.roles.get(&room).is_some_and(|grants| {
                grants.allows(&delivery.uid, delivery.action, self.config.permissions)
            })
    }

    /// The deliveries of one transaction, in event order.
    pub fn route(&self, tx: &TransactionEvents) -> Vec<Delivery> {
        let mut out = Vec::new();
        for event in &tx.events {
            if !self.enabled(event) || event.view != View::Published {
                continue;
            }
            let rooms =
                self.permissions
                    .rooms_for(&event.key.uid, event.action, self.config.permissions);
            if rooms.is_empty() {
                continue;
            }
            out.push(Delivery {
                event_name: event.event_name(),
                rooms,
                payload: payload::payload_of(event, self.config.payload),
                offset: event.offset,
                uid: Arc::clone(&event.key.uid),
                action: event.action,
                entity_rooms: entity::entity_rooms_of(event),
            });
        }
        out
    }
}
