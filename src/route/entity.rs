//! Entity rooms: the rooms of sockets that subscribed to one document (`subscribe-entity`).
//!
//! Named as the plugin names them, `<uid>:<id>`, where the id is what the client gave: a
//! `documentId`, or a numeric row id. An event of a document goes to the room of its
//! `documentId` and to the room of the row it is about (the plugin's rooms were by row id; in
//! Strapi v5 a row id changes on every publish, so a `documentId` subscription is the one that
//! follows a document).

use crate::assemble::DocumentEvent;

/// `<uid>:<id>`.
pub fn entity_room(uid: &str, id: &str) -> String {
    format!("{uid}:{id}")
}

/// The entity rooms an event of this document goes to.
pub fn entity_rooms_of(event: &DocumentEvent) -> Vec<String> {
    let uid = &*event.key.uid;
    let mut rooms = vec![entity_room(uid, &event.key.document_id)];
    if let Some(id) = event.row_id.or(event.deleted_id) {
        rooms.push(entity_room(uid, &id.to_string()));
    }
    rooms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_follow_the_plugin_naming() {
        assert_eq!(
            entity_room("api::article.article", "abc123"),
            "api::article.article:abc123"
        );
    }
}
