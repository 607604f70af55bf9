//! What never leaves walcast, and what one recipient may not see (spec §4, §8).
//!
//! Pure functions over an entry as the populate stage built it:
//!
//! - [`Attribute::is_exposed`]: an attribute reaches a payload only when it is neither
//!   `private` nor a `password` (Strapi's `defaultSanitizeOutput`); the schema and the
//!   populate plan apply it to every model at every depth, so such columns and relations are
//!   never even read into an entry.
//! - [`Sanitizer::strip`]: every key, at any depth (inside populated relations, components,
//!   media, and JSON attributes), whose lower-cased name contains one of
//!   [`SENSITIVE_NAMES`] or of the configured `events.sensitive_fields` is removed.
//! - [`remove_unreadable`]: populated relations to content types the recipient may not read
//!   are removed, at any depth, as Strapi's content API does for the requesting principal.
//!
//! Identity keys (`id`, `documentId`, `__component`) are never removed: without them a
//! client could not tell what an event is about.

use serde_json::{Map, Value};

use crate::populate::plan::{ChildKind, Level};
#[cfg(doc)]
use crate::strapi::Attribute;

/// Lower-case fragments that make a key sensitive wherever it appears (the plugin's list,
/// plus `salt` and `hash`).
pub const SENSITIVE_NAMES: &[&str] = &[
    "password",
    "salt",
    "hash",
    "resetpasswordtoken",
    "confirmationtoken",
    "refreshtoken",
    "accesstoken",
    "token",
    "secret",
    "apikey",
    "api_key",
    "privatekey",
    "private_key",
];

/// Keys that identify an entry and are kept whatever their name.
const IDENTITY_KEYS: &[&str] = &["id", "documentId", "__component"];

/// Removes sensitive keys, by name, at any depth.
#[derive(Debug, Clone, Default)]
pub struct Sanitizer {
    /// The configured `events.sensitive_fields`, lower-cased.
    extra: Vec<String>,
}

impl Sanitizer {
    /// A sanitizer for the built-in names plus `sensitive_fields` (matched the same way:
    /// case-insensitive substring).
    pub fn new(sensitive_fields: &[String]) -> Self {
        Sanitizer {
            extra: sensitive_fields
                .iter()
                .map(|f| f.to_lowercase())
                .filter(|f| !f.is_empty())
                .collect(),
        }
    }

    /// Whether a key must not leave walcast.
    pub fn is_sensitive(&self, key: &str) -> bool {
        if IDENTITY_KEYS.contains(&key) {
            return false;
        }
        let lower = key.to_lowercase();
        SENSITIVE_NAMES.iter().any(|s| lower.contains(s))
            || self.extra.iter().any(|s| lower.contains(s.as_str()))
    }

    /// Removes every sensitive key from `value`, at any depth.
    pub fn strip(&self, value: &mut Value) {
        match value {
            Value::Object(map) => self.strip_map(map),
            Value::Array(items) => items.iter_mut().for_each(|v| self.strip(v)),
            _ => {}
        }
    }

    /// [`Sanitizer::strip`] on an object.
    pub fn strip_map(&self, map: &mut Map<String, Value>) {
        map.retain(|key, _| !self.is_sensitive(key));
        for value in map.values_mut() {
            self.strip(value);
        }
    }
}

/// Removes from `entry` (shaped by `level`) every populated relation whose content type
/// `can_read` refuses, at any depth: inside related entries, components and dynamic zones.
pub fn remove_unreadable(
    entry: &mut Map<String, Value>,
    level: &Level,
    can_read: &dyn Fn(&str) -> bool,
) {
    for child in &level.children {
        if child.kind.related_uid().is_some_and(|uid| !can_read(uid)) {
            entry.remove(&child.attribute);
            continue;
        }
        let Some(value) = entry.get_mut(&child.attribute) else {
            continue;
        };
        match &child.kind {
            ChildKind::DynamicZone { members } => {
                for item in value.as_array_mut().into_iter().flatten() {
                    let uid = item
                        .get("__component")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    if let (Some(map), Some(member)) = (
                        item.as_object_mut(),
                        uid.and_then(|u| Level::member(members, &u)),
                    ) {
                        remove_unreadable(map, member, can_read);
                    }
                }
            }
            kind => {
                let Some(target) = kind.targets().into_iter().next() else {
                    continue;
                };
                for_each_entry(value, |map| remove_unreadable(map, target, can_read));
            }
        }
    }
}

/// Calls `f` on the object, or on each object of the array.
pub fn for_each_entry(value: &mut Value, mut f: impl FnMut(&mut Map<String, Value>)) {
    match value {
        Value::Object(map) => f(map),
        Value::Array(items) => {
            for item in items {
                if let Value::Object(map) = item {
                    f(map);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::populate::plan::PayloadPlans;
    use crate::strapi::Populate;
    use serde_json::json;

    #[test]
    fn sensitive_names_match_case_insensitive_substrings() {
        let s = Sanitizer::new(&["InternalNote".into()]);
        for key in [
            "password",
            "passwordHash",
            "resetPasswordToken",
            "confirmationToken",
            "refreshToken",
            "accessToken",
            "apiKey",
            "api_key",
            "privateKey",
            "private_key",
            "clientSecret",
            "salt",
            "hash",
            "tokenCount",
            "internalnote",
            "myInternalNoteField",
        ] {
            assert!(s.is_sensitive(key), "{key}");
        }
        for key in [
            "id",
            "documentId",
            "__component",
            "title",
            "email",
            "username",
        ] {
            assert!(!s.is_sensitive(key), "{key}");
        }
        assert!(!Sanitizer::default().is_sensitive("internalNote"));
    }

    #[test]
    fn strip_reaches_every_depth() {
        let mut v = json!({
            "id": 1, "title": "t", "apiKey": "k",
            "author": {"id": 2, "username": "u", "password": "p", "resetPasswordToken": "r"},
            "tags": [{"id": 3, "secret": "s", "name": "n"}],
            "cover": {"formats": {"small": {"hash": "h", "url": "/u"}}, "hash": "h"},
            "blocks": [{"__component": "shared.quote", "token": "x", "text": "q"}]
        });
        Sanitizer::default().strip(&mut v);
        assert_eq!(
            v,
            json!({
                "id": 1, "title": "t",
                "author": {"id": 2, "username": "u"},
                "tags": [{"id": 3, "name": "n"}],
                "cover": {"formats": {"small": {"url": "/u"}}},
                "blocks": [{"__component": "shared.quote", "text": "q"}]
            })
        );
    }

    #[test]
    fn private_and_password_attributes_are_not_exposed() {
        use crate::strapi::{Attribute, AttributeKind};
        let scalar = |private, password| Attribute {
            name: "x".into(),
            kind: AttributeKind::Scalar {
                column: "x".into(),
                password,
            },
            private,
        };
        assert!(scalar(false, false).is_exposed());
        assert!(!scalar(true, false).is_exposed());
        assert!(!scalar(false, true).is_exposed());
        let model = crate::populate::plan::tests::fixture_model();
        let user = &model.content_types.models["plugin::users-permissions.user"];
        for column in ["password", "reset_password_token", "confirmation_token"] {
            assert_eq!(user.public_key_of(column), None, "{column}");
        }
        assert_eq!(
            model.content_types.by_uid["api::article.article"].public_key_of("secret_note"),
            None
        );
    }

    #[test]
    fn unreadable_relations_are_removed_at_any_depth() {
        let model = crate::populate::plan::tests::fixture_model();
        let v: toml::Table = toml::from_str(
            "populate = { author = { populate = ['role'] }, tags = true, seo = true }",
        )
        .unwrap();
        let settings = crate::assemble::PopulateSettings::from([(
            "api::article.article".to_owned(),
            Populate::parse(v.get("populate")).unwrap(),
        )]);
        let plans = PayloadPlans::build(&model, &settings);
        let level = plans.get("api::article.article").unwrap();
        let entry = json!({
            "id": 1, "title": "t",
            "author": {"id": 2, "username": "u", "role": {"id": 1, "name": "Authenticated"}},
            "tags": [{"id": 3, "name": "n"}],
            "seo": {"id": 4, "metaTitle": "m"}
        });
        let run = |readable: &[&str]| {
            let mut e = entry.as_object().unwrap().clone();
            remove_unreadable(&mut e, level, &|uid| readable.contains(&uid));
            Value::Object(e)
        };
        assert_eq!(
            run(&["api::tag.tag"]),
            json!({"id": 1, "title": "t", "tags": [{"id": 3, "name": "n"}], "seo": {"id": 4, "metaTitle": "m"}}),
            "components are not relations: they stay"
        );
        assert_eq!(
            run(&["plugin::users-permissions.user"]),
            json!({"id": 1, "title": "t", "author": {"id": 2, "username": "u"}, "seo": {"id": 4, "metaTitle": "m"}}),
            "the nested role goes with its own permission"
        );
        assert_eq!(
            run(&[
                "plugin::users-permissions.user",
                "plugin::users-permissions.role",
                "api::tag.tag"
            ]),
            entry
        );
    }
}
