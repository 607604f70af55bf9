//! Serializes an event's payload once per variant, to shared bytes.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::assemble::{Action, DocumentEvent};
use crate::config::PayloadFormat;

/// A serialized payload shared by every recipient.
pub type SharedPayload = Arc<RawValue>;

/// The plugin's `{data: {id, attributes}, meta: {}}` shape, borrowing the entry.
#[derive(Serialize)]
struct PluginIoEntry<'a> {
    data: PluginIoData<'a>,
    meta: Map<String, Value>,
}

#[derive(Serialize)]
struct PluginIoData<'a> {
    id: &'a Value,
    attributes: PluginIoAttributes<'a>,
}

/// Every key of the entry except `id`, serialized in place (no copy of the entry).
struct PluginIoAttributes<'a>(&'a Map<String, Value>);

impl Serialize for PluginIoAttributes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in self.0.iter().filter(|(k, _)| k.as_str() != "id") {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The payload of a content event in the configured format (spec §4), serialized once.
pub fn payload_of(event: &DocumentEvent, format: PayloadFormat) -> SharedPayload {
    let text = match (format, event.action, &event.entry) {
        (PayloadFormat::Strapi, Action::Delete, _) | (PayloadFormat::Strapi, _, None) => json!({
            "id": event.deleted_id.or(event.row_id),
            "documentId": event.key.document_id,
            "locale": event.key.locale,
        })
        .to_string(),
        (PayloadFormat::Strapi, _, Some(entry)) => {
            serde_json::to_string(&**entry).expect("JSON maps always serialize")
        }
        (PayloadFormat::PluginIo, Action::Delete, _) | (PayloadFormat::PluginIo, _, None) => {
            json!({ "data": { "id": event.deleted_id.or(event.row_id), "documentId": event.key.document_id } })
                .to_string()
        }
        (PayloadFormat::PluginIo, _, Some(entry)) => serde_json::to_string(&PluginIoEntry {
            data: PluginIoData {
                id: entry.get("id").unwrap_or(&Value::Null),
                attributes: PluginIoAttributes(entry),
            },
            meta: Map::new(),
        })
        .expect("JSON maps always serialize"),
    };
    Arc::from(RawValue::from_string(text).expect("serde_json output is valid JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::{DocumentKey, EventOffset, View};
    use crate::replication::Lsn;

    fn event(action: Action) -> DocumentEvent {
        let mut entry = Map::new();
        entry.insert("id".into(), json!(7));
        entry.insert("documentId".into(), json!("abc"));
        entry.insert("name".into(), json!("rust"));
        DocumentEvent {
            key: DocumentKey {
                uid: Arc::from("api::tag.tag"),
                document_id: "abc".into(),
                locale: None,
            },
            singular_name: Arc::from("tag"),
            view: View::Published,
            action,
            entry: (action != Action::Delete).then(|| Arc::new(entry)),
            row_id: (action != Action::Delete).then_some(7),
            deleted_id: (action == Action::Delete).then_some(7),
            offset: EventOffset {
                commit_lsn: Lsn(1),
                sequence: 0,
            },
        }
    }

    fn parsed(p: SharedPayload) -> Value {
        serde_json::from_str(p.get()).unwrap()
    }

    #[test]
    fn strapi_format_is_the_rest_entry() {
        assert_eq!(
            parsed(payload_of(&event(Action::Create), PayloadFormat::Strapi)),
            json!({"id": 7, "documentId": "abc", "name": "rust"})
        );
        assert_eq!(
            parsed(payload_of(&event(Action::Delete), PayloadFormat::Strapi)),
            json!({"id": 7, "documentId": "abc", "locale": null})
        );
    }

    #[test]
    fn plugin_io_format_is_the_plugins_shape() {
        assert_eq!(
            parsed(payload_of(&event(Action::Update), PayloadFormat::PluginIo)),
            json!({"data": {"id": 7, "attributes": {"documentId": "abc", "name": "rust"}}, "meta": {}})
        );
        assert_eq!(
            parsed(payload_of(&event(Action::Delete), PayloadFormat::PluginIo)),
            json!({"data": {"id": 7, "documentId": "abc"}})
        );
    }
}
