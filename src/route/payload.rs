//! Serializes an event's payload once per variant, to shared bytes.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::assemble::{Action, DocumentEvent};
use crate::config::PayloadFormat;

/// A serialized payload shared by every recipient.
pub type SharedPayload = Arc<RawValue>;

/// The payload of a content event in the configured format (spec §4).
pub fn payload_of(event: &DocumentEvent, format: PayloadFormat) -> SharedPayload {
    let value = match (format, event.action, &event.entry) {
        (PayloadFormat::Strapi, Action::Delete, _) | (PayloadFormat::Strapi, _, None) => json!({
            "id": event.deleted_id,
            "documentId": event.key.document_id,
            "locale": event.key.locale,
        }),
        (PayloadFormat::Strapi, _, Some(entry)) => Value::Object((**entry).clone()),
        (PayloadFormat::PluginIo, Action::Delete, _) | (PayloadFormat::PluginIo, _, None) => {
            json!({ "data": { "id": event.deleted_id, "documentId": event.key.document_id } })
        }
        (PayloadFormat::PluginIo, _, Some(entry)) => {
            let mut attributes = (**entry).clone();
            let id = attributes.remove("id").unwrap_or(Value::Null);
            json!({ "data": { "id": id, "attributes": attributes }, "meta": {} })
        }
    };
    let text = serde_json::to_string(&value).expect("JSON values always serialize");
    Arc::from(RawValue::from_string(text).expect("serde_json output is valid JSON"))
}
