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
pub mod entity;
pub mod payload;
pub mod permissions;
pub mod principal;
pub mod sanitize;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::assemble::{Action, DocumentEvent, EventOffset, TransactionEvents, View};
use crate::config::{Config, PermissionMode, StatusViews};
use crate::populate::plan::PayloadPlans;
use crate::strapi::StrapiModel;

pub use payload::{PayloadRules, PayloadVariants, ReadableSet, SharedPayload};
pub use permissions::{Audience, PermissionModel};
pub use principal::{Access, Principal};

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
    /// The entity rooms of the document ([`entity::entity_rooms_of`]): subscribers there whose
    /// principal may read it (one of `rooms`) receive it too, once. Live emission only; not
    /// kept in the replay log.
    pub entity_rooms: Vec<String>,
}

/// Routes document events to rooms. Cheap to clone (shared snapshots).
#[derive(Debug, Clone)]
pub struct Router {
    pub permissions: Arc<PermissionModel>,
    config: Arc<RouterConfig>,
    payloads: PayloadRules,
}

#[derive(Debug, Clone)]
struct RouterConfig {
    permissions: crate::config::PermissionMode,
    content_types: Vec<crate::config::ContentTypeConfig>,
}

impl Router {
    pub fn new(config: &Config, permissions: PermissionModel) -> Self {
        Self::build(config, Arc::new(permissions), Arc::default())
    }

    fn build(config: &Config, permissions: Arc<PermissionModel>, plans: Arc<PayloadPlans>) -> Self {
        Router {
            permissions,
            config: Arc::new(RouterConfig {
                permissions: config.events.permissions,
                content_types: config.content_types.clone(),
            }),
            payloads: PayloadRules {
                format: config.events.payload,
                sanitizer: sanitize::Sanitizer::new(&config.events.sensitive_fields),
                plans,
            },
        }
    }

    /// The same rules over another permission snapshot.
    pub fn with_permissions(&self, permissions: Arc<PermissionModel>) -> Self {
        Router {
            permissions,
            config: Arc::clone(&self.config),
            payloads: self.payloads.clone(),
        }
    }

    /// The same permission snapshot and populate plans under another configuration's
    /// content types, actions and sensitive fields (runtime settings, `PUT /io/settings`).
    pub fn with_config(&self, config: &Config) -> Self {
        Self::build(
            config,
            Arc::clone(&self.permissions),
            Arc::clone(&self.payloads.plans),
        )
    }

    /// Which sockets an event of this view goes to, or `None` when the type's `status` does
    /// not emit that view: a type without D&P has one view that every socket hears; a D&P
    /// type's published view goes to published-view sockets, its draft view to draft-view
    /// sockets.
    fn audience(&self, event: &DocumentEvent, draft_and_publish: bool) -> Option<Audience> {
        if !draft_and_publish {
            return (event.view == View::Published).then_some(Audience::Both);
        }
        let status = self
            .config
            .content_types
            .iter()
            .find(|ct| *ct.uid == *event.key.uid)
            .map(|ct| ct.status)
            .unwrap_or_default();
        match (event.view, status) {
            (View::Published, StatusViews::Published | StatusViews::Both) => {
                Some(Audience::Published)
            }
            (View::Draft, StatusViews::Draft | StatusViews::Both) => Some(Audience::Draft),
            _ => None,
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
        let room = room.strip_suffix(":draft").unwrap_or(room);
        self.permissions.room_reads(room, uid, PermissionMode::Read)
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

    /// Whether a socket with `access` may receive `delivery` now: it was routed to the
    /// socket's room (so to its view), and the current permission model still lets the
    /// principal hear it (the rule [`Router::route`] applied). Used when events are replayed
    /// to a resuming socket.
    pub fn admits(&self, access: &Access, delivery: &Delivery) -> bool {
        delivery.rooms.contains(&access.room())
            && (!access.draft || self.permissions.may_use_drafts(&access.principal))
            && self
                .permissions
                .grants(&access.principal)
                .is_some_and(|g| g.allows(&delivery.uid, delivery.action, self.config.permissions))
    }

    /// The deliveries of one transaction, in event order: per event, one per payload variant
    /// (rooms grouped by what they may read of the event's related types).
    pub fn route(&self, tx: &TransactionEvents, model: &StrapiModel) -> Vec<Delivery> {
        let mut variants = PayloadVariants::new(&self.payloads);
        let mut out = Vec::new();
        for event in &tx.events {
            if !self.enabled(event) {
                continue;
            }
            let draft_and_publish = model
                .content_types
                .by_uid
                .get(&*event.key.uid)
                .is_some_and(|ct| ct.draft_and_publish);
            let Some(audience) = self.audience(event, draft_and_publish) else {
                continue;
            };
            let rooms = self.permissions.rooms_for(
                &event.key.uid,
                event.action,
                audience,
                self.config.permissions,
            );
            let related = self.payloads.related_uids(event);
            let mut groups: BTreeMap<ReadableSet, Vec<String>> = BTreeMap::new();
            for room in rooms {
                let readable = ReadableSet::of(related, |uid| self.room_reads(&room, uid));
                groups.entry(readable).or_default().push(room);
            }
            let entity_rooms = entity::entity_rooms_of(event);
            for (readable, rooms) in groups {
                out.push(Delivery {
                    event_name: event.event_name(),
                    rooms,
                    payload: variants.payload_for(event, &readable),
                    offset: event.offset,
                    uid: Arc::clone(&event.key.uid),
                    action: event.action,
                    entity_rooms: entity_rooms.clone(),
                });
            }
        }
        out
    }
}
