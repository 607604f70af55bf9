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
use crate::config::{Config, StatusViews};
use crate::strapi::StrapiModel;

pub use payload::SharedPayload;
pub use permissions::{Audience, PermissionModel};
pub use principal::{Access, Principal};

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

/// Routes document events to rooms. Cheap to clone (shared snapshots).
#[derive(Debug, Clone)]
pub struct Router {
    pub permissions: Arc<PermissionModel>,
    config: Arc<RouterConfig>,
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
            permissions: Arc::new(permissions),
            config: Arc::new(RouterConfig {
                payload: config.events.payload,
                permissions: config.events.permissions,
                content_types: config.content_types.clone(),
            }),
        }
    }

    /// The same rules over another permission snapshot.
    pub fn with_permissions(&self, permissions: Arc<PermissionModel>) -> Self {
        Router {
            permissions,
            config: Arc::clone(&self.config),
        }
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

    /// The deliveries of one transaction, in event order.
    pub fn route(&self, tx: &TransactionEvents, model: &StrapiModel) -> Vec<Delivery> {
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
