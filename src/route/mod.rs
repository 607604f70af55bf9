//! Routing: who receives each document event, and exactly what they see (spec §4–5).
//!
//! Turns `TransactionEvents` into `Delivery`s: event name, target rooms, payload, offset.
//! Consults the `PermissionModel` snapshot; never calls socket.io itself.
//!
//! Payload variants: an event's rooms are grouped by what their principals may read among
//! the content types the event's populated relations reach ([`Router::room_reads`]); each
//! group gets one [`Delivery`] with one payload, serialized once per transaction
//! ([`payload::PayloadVariants`]). So one event can make several deliveries, with the same
//! offset and disjoint rooms. A new kind of room (API token, admin user) only needs
//! [`Router::room_reads`] to answer for it; everything else follows.

pub mod custom;
pub mod payload;
pub mod permissions;
pub mod principal;
pub mod sanitize;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::assemble::{Action, DocumentEvent, EventOffset, TransactionEvents, View};
use crate::config::{Config, PermissionMode};
use crate::populate::plan::PayloadPlans;

pub use payload::{PayloadRules, PayloadVariants, ReadableSet, SharedPayload};
pub use permissions::PermissionModel;
pub use principal::Principal;

/// One emission: an event to a set of rooms, in one payload variant.
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
}

/// Routes document events to rooms.
#[derive(Debug, Clone)]
pub struct Router {
    pub permissions: PermissionModel,
    config: RouterConfig,
    payloads: PayloadRules,
}

#[derive(Debug, Clone)]
struct RouterConfig {
    permissions: crate::config::PermissionMode,
    content_types: Vec<crate::config::ContentTypeConfig>,
}

impl Router {
    pub fn new(config: &Config, permissions: PermissionModel) -> Self {
        Router {
            permissions,
            config: RouterConfig {
                permissions: config.events.permissions,
                content_types: config.content_types.clone(),
            },
            payloads: PayloadRules {
                format: config.events.payload,
                sanitizer: sanitize::Sanitizer::new(&config.events.sensitive_fields),
                plans: Arc::default(),
            },
        }
    }

    /// Uses the populate plans of the current schema (at start and after a schema reload).
    pub fn set_plans(&mut self, plans: Arc<PayloadPlans>) {
        self.payloads.plans = plans;
    }

    /// Whether the principals of `room` may read content type `uid`: the users-permissions
    /// rule `<uid>.find` or `<uid>.findOne`. Decides which populated relations their payloads
    /// keep, whatever `events.permissions` says about hearing the event at all.
    pub fn room_reads(&self, room: &str, uid: &str) -> bool {
        self.permissions
            .roles
            .get(room)
            .is_some_and(|grants| grants.allows(uid, Action::Update, PermissionMode::Read))
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

    /// The deliveries of one transaction, in event order: per event, one per payload variant
    /// (rooms grouped by what they may read of the event's related types).
    pub fn route(&self, tx: &TransactionEvents) -> Vec<Delivery> {
        let mut variants = PayloadVariants::new(&self.payloads);
        let mut out = Vec::new();
        for event in &tx.events {
            if !self.enabled(event) || event.view != View::Published {
                continue;
            }
            let rooms =
                self.permissions
                    .rooms_for(&event.key.uid, event.action, self.config.permissions);
            let related = self.payloads.related_uids(event);
            let mut groups: BTreeMap<ReadableSet, Vec<String>> = BTreeMap::new();
            for room in rooms {
                let readable = ReadableSet::of(related, |uid| self.room_reads(&room, uid));
                groups.entry(readable).or_default().push(room);
            }
            for (readable, rooms) in groups {
                out.push(Delivery {
                    event_name: event.event_name(),
                    rooms,
                    payload: variants.payload_for(event, &readable),
                    offset: event.offset,
                    uid: Arc::clone(&event.key.uid),
                    action: event.action,
                });
            }
        }
        out
    }
}
