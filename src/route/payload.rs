//! Serializes an event's payload once per variant, to shared bytes (spec §4).
//!
//! A *variant* is what one group of recipients sees of one event: the populated entry with the
//! relations they may not read removed, then sanitized and put in the configured format.
//! Recipients whose principals may read the same subset of the event's related content types
//! ([`ReadableSet`]) share one serialization; [`PayloadVariants`] caches them for one
//! transaction, keyed by (event, readable set), so nothing is serialized per socket.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::sanitize::{Sanitizer, for_each_entry, remove_unreadable};
use crate::assemble::{Action, DocumentEvent, EventOffset};
use crate::config::PayloadFormat;
use crate::populate::plan::{ChildKind, Level, PayloadPlans};

/// A serialized payload shared by every recipient of one variant.
pub type SharedPayload = Arc<RawValue>;

/// The content types, among those an event's payload relates to
/// ([`PayloadPlans::related_uids`]), that one recipient may read. Recipients with equal sets
/// get the same payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadableSet(BTreeSet<Arc<str>>);

impl ReadableSet {
    /// The subset of `related` that `can_read` allows.
    pub fn of(related: &[Arc<str>], can_read: impl Fn(&str) -> bool) -> Self {
        ReadableSet(
            related
                .iter()
                .filter(|uid| can_read(uid))
                .map(Arc::clone)
                .collect(),
        )
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.0.contains(uid)
    }
}

/// How payloads are built: format, sensitive names, and each content type's populate plan.
#[derive(Debug, Clone, Default)]
pub struct PayloadRules {
    pub format: PayloadFormat,
    pub sanitizer: Sanitizer,
    pub plans: Arc<PayloadPlans>,
}

impl PayloadRules {
    /// The content types an event of `uid` can relate to: what recipients are grouped by.
    pub fn related_uids(&self, event: &DocumentEvent) -> &[Arc<str>] {
        if event.action == Action::Delete || event.entry.is_none() {
            return &[];
        }
        self.plans.related_uids(&event.key.uid)
    }

    /// The payload of `event` for recipients that may read `readable`, serialized now.
    pub fn build(&self, event: &DocumentEvent, readable: &ReadableSet) -> SharedPayload {
        let text = match (&event.entry, event.action) {
            (Some(entry), action) if action != Action::Delete => {
                let mut entry = (**entry).clone();
                let level = self.plans.get(&event.key.uid);
                if let Some(level) = level {
                    remove_unreadable(&mut entry, level, &|uid| readable.contains(uid));
                }
                self.sanitizer.strip_map(&mut entry);
                match self.format {
                    PayloadFormat::Strapi => Value::Object(entry).to_string(),
                    PayloadFormat::PluginIo => json!({
                        "data": plugin_io_entry(entry, level.map(|l| &**l)),
                        "meta": {},
                    })
                    .to_string(),
                }
            }
            // A delete, or an entry that could not be read: the document's identity.
            _ => {
                let id = event.deleted_id.or(event.row_id);
                match self.format {
                    PayloadFormat::Strapi => json!({
                        "id": id,
                        "documentId": event.key.document_id,
                        "locale": event.key.locale,
                    }),
                    PayloadFormat::PluginIo => {
                        json!({ "data": { "id": id, "documentId": event.key.document_id } })
                    }
                }
                .to_string()
            }
        };
        Arc::from(RawValue::from_string(text).expect("serde_json output is valid JSON"))
    }
}

/// The variants of one transaction's events, each serialized once.
#[derive(Debug)]
pub struct PayloadVariants<'a> {
    rules: &'a PayloadRules,
    cache: HashMap<(EventOffset, ReadableSet), SharedPayload>,
}

impl<'a> PayloadVariants<'a> {
    pub fn new(rules: &'a PayloadRules) -> Self {
        PayloadVariants {
            rules,
            cache: HashMap::new(),
        }
    }

    /// The payload of `event` for recipients that may read `readable` (a subset of
    /// [`PayloadRules::related_uids`]); built on first use, shared after.
    pub fn payload_for(&mut self, event: &DocumentEvent, readable: &ReadableSet) -> SharedPayload {
        let rules = self.rules;
        Arc::clone(
            self.cache
                .entry((event.offset, readable.clone()))
                .or_insert_with(|| rules.build(event, readable)),
        )
    }

    /// Serializations made so far.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

/// The plugin's Strapi-v4 shape of one entry: `{id, attributes: {…}}`, relations and media
/// as `{data: …}`, components as `{id, …}`, dynamic zones as arrays of components
/// (`server/services/transform.js` in the plugin).
pub(crate) fn plugin_io_entry(mut entry: Map<String, Value>, level: Option<&Level>) -> Value {
    let id = entry.remove("id").unwrap_or(Value::Null);
    json!({ "id": id, "attributes": plugin_io_attributes(entry, level) })
}

fn plugin_io_attributes(mut entry: Map<String, Value>, level: Option<&Level>) -> Value {
    for child in level.map(|l| &l.children[..]).unwrap_or_default() {
        let Some(value) = entry.get_mut(&child.attribute) else {
            continue;
        };
        match &child.kind {
            ChildKind::Relation { target, .. }
            | ChildKind::Localizations { target }
            | ChildKind::Media { target, .. } => {
                let data = match value.take() {
                    Value::Array(items) => Value::Array(
                        items
                            .into_iter()
                            .map(|item| as_plugin_io_entry(item, target))
                            .collect(),
                    ),
                    Value::Null => Value::Null,
                    item => as_plugin_io_entry(item, target),
                };
                *value = json!({ "data": data });
            }
            ChildKind::Component { target, .. } => {
                for_each_entry(value, |map| plugin_io_component(map, target));
            }
            ChildKind::DynamicZone { members } => {
                for_each_entry(value, |map| {
                    let member = map
                        .get("__component")
                        .and_then(Value::as_str)
                        .and_then(|uid| Level::member(members, uid));
                    if let Some(member) = member {
                        plugin_io_component(map, member);
                    }
                });
            }
        }
    }
    Value::Object(entry)
}

fn as_plugin_io_entry(item: Value, level: &Level) -> Value {
    match item {
        Value::Object(map) => plugin_io_entry(map, Some(level)),
        other => other,
    }
}

/// A component keeps `{id, …}`; what it populates is transformed inside.
fn plugin_io_component(map: &mut Map<String, Value>, level: &Level) {
    if let Value::Object(transformed) = plugin_io_attributes(std::mem::take(map), Some(level)) {
        *map = transformed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::{DocumentKey, View};
    use crate::replication::Lsn;
    use crate::strapi::Populate;

    fn event(uid: &str, action: Action, entry: Value) -> DocumentEvent {
        DocumentEvent {
            key: DocumentKey {
                uid: Arc::from(uid),
                document_id: entry["documentId"].as_str().unwrap_or("abc").into(),
                locale: entry["locale"].as_str().map(str::to_owned),
            },
            singular_name: Arc::from(uid.rsplit('.').next().unwrap()),
            view: View::Published,
            action,
            entry: (action != Action::Delete).then(|| Arc::new(entry.as_object().unwrap().clone())),
            row_id: (action != Action::Delete).then_some(7),
            deleted_id: (action == Action::Delete).then_some(7),
            offset: EventOffset {
                commit_lsn: Lsn(1),
                sequence: 0,
            },
        }
    }

    fn tag(action: Action) -> DocumentEvent {
        event(
            "api::tag.tag",
            action,
            json!({"id": 7, "documentId": "abc", "name": "rust"}),
        )
    }

    fn rules(format: PayloadFormat, populate: &str) -> PayloadRules {
        let model = crate::populate::plan::tests::fixture_model();
        let v: toml::Table = toml::from_str(&format!("populate = {populate}")).unwrap();
        let settings = crate::assemble::PopulateSettings::from([(
            "api::article.article".to_owned(),
            Populate::parse(v.get("populate")).unwrap(),
        )]);
        PayloadRules {
            format,
            sanitizer: Sanitizer::default(),
            plans: Arc::new(PayloadPlans::build(&model, &settings)),
        }
    }

    fn article() -> DocumentEvent {
        event(
            "api::article.article",
            Action::Update,
            json!({
                "id": 3, "documentId": "d", "title": "t", "locale": "en",
                "author": {"id": 1, "documentId": "u", "username": "reader1"},
                "category": null,
                "tags": [{"id": 1, "documentId": "g", "name": "rust"}],
                "cover": {"id": 1, "documentId": "f", "url": "/u.png", "hash": "h",
                          "formats": {"small": {"url": "/s.png", "hash": "s"}}},
                "seo": {"id": 3, "metaTitle": "m"},
                "blocks": [{"id": 3, "text": "q", "__component": "shared.quote"}],
                "localizations": []
            }),
        )
    }

    fn parsed(p: SharedPayload) -> Value {
        serde_json::from_str(p.get()).unwrap()
    }

    #[test]
    fn strapi_format_is_the_rest_entry() {
        let rules = rules(PayloadFormat::Strapi, "'*'");
        let all = ReadableSet::default();
        assert_eq!(
            parsed(rules.build(&tag(Action::Create), &all)),
            json!({"id": 7, "documentId": "abc", "name": "rust"})
        );
        assert_eq!(
            parsed(rules.build(&tag(Action::Delete), &all)),
            json!({"id": 7, "documentId": "abc", "locale": null})
        );
    }

    #[test]
    fn plugin_io_format_is_the_plugins_shape() {
        let rules = rules(PayloadFormat::PluginIo, "'*'");
        let none = ReadableSet::default();
        assert_eq!(
            parsed(rules.build(&tag(Action::Update), &none)),
            json!({"data": {"id": 7, "attributes": {"documentId": "abc", "name": "rust"}}, "meta": {}})
        );
        assert_eq!(
            parsed(rules.build(&tag(Action::Delete), &none)),
            json!({"data": {"id": 7, "documentId": "abc"}})
        );
        let event = article();
        let readable = ReadableSet::of(rules.related_uids(&event), |_| true);
        assert_eq!(
            parsed(rules.build(&event, &readable)),
            json!({"data": {"id": 3, "attributes": {
                "documentId": "d", "title": "t", "locale": "en",
                "author": {"data": {"id": 1, "attributes": {"documentId": "u", "username": "reader1"}}},
                "category": {"data": null},
                "tags": {"data": [{"id": 1, "attributes": {"documentId": "g", "name": "rust"}}]},
                "cover": {"data": {"id": 1, "attributes": {"documentId": "f", "url": "/u.png",
                          "formats": {"small": {"url": "/s.png"}}}}},
                "seo": {"id": 3, "metaTitle": "m"},
                "blocks": [{"id": 3, "text": "q", "__component": "shared.quote"}],
                "localizations": {"data": []}
            }}, "meta": {}})
        );
    }

    #[test]
    fn variants_follow_what_the_recipient_may_read() {
        let rules = rules(PayloadFormat::Strapi, "'*'");
        let event = article();
        let related = rules.related_uids(&event).to_vec();
        let everything = ReadableSet::of(&related, |_| true);
        let tags_only = ReadableSet::of(&related, |uid| uid == "api::tag.tag");
        let full = parsed(rules.build(&event, &everything));
        assert!(full.get("author").is_some() && full.get("tags").is_some());
        assert!(
            full["cover"].get("hash").is_none(),
            "sensitive names go at any depth"
        );
        let partial = parsed(rules.build(&event, &tags_only));
        for gone in ["author", "category", "localizations"] {
            assert!(partial.get(gone).is_none(), "{gone}");
        }
        for kept in ["tags", "cover", "seo", "blocks"] {
            assert!(partial.get(kept).is_some(), "{kept}");
        }

        let mut variants = PayloadVariants::new(&rules);
        let a = variants.payload_for(&event, &everything);
        let b = variants.payload_for(&event, &ReadableSet::of(&related, |_| true));
        assert!(
            Arc::ptr_eq(&a, &b),
            "equal readable sets share one serialization"
        );
        let c = variants.payload_for(&event, &tags_only);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(variants.len(), 2);
        // A delete names only the document: it relates to nothing, one variant for all.
        assert!(rules.related_uids(&tag(Action::Delete)).is_empty());
    }
}
