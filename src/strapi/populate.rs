//! A content type's `populate` setting, in Strapi's syntaxes: `'*'`/`true`, a list of
//! attribute names, or the object syntax (`{ author = { fields = [...] }, items = { populate
//! = [...] } }`).
//!
//! The document model asks which attributes are populated (a relation-only change is an
//! `update` only for those); the populate stage walks the nested settings, `fields`
//! included.

use std::collections::BTreeMap;

/// What to populate on one level.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Populate {
    /// Nothing (the default): only the entry's own columns.
    #[default]
    Nothing,
    /// `'*'` or `true`: every relation, media, component and dynamic zone, plus
    /// `localizations`, one level deep.
    All,
    /// Named attributes, each with its nested settings.
    Attributes(BTreeMap<String, Nested>),
}

/// What to show of one populated attribute: Strapi's `{ fields = [...], populate = ... }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nested {
    /// The scalar attributes to keep (`id` and `documentId` are always kept); `None`: all.
    pub fields: Option<Vec<String>>,
    /// What to populate inside the related entries, components or media.
    pub populate: Populate,
}

impl From<Populate> for Nested {
    fn from(populate: Populate) -> Self {
        Nested {
            fields: None,
            populate,
        }
    }
}

impl Populate {
    /// Parses a config value; the error says what is allowed.
    pub fn parse(value: Option<&toml::Value>) -> Result<Self, String> {
        use toml::Value as V;
        Ok(match value {
            None | Some(V::Boolean(false)) => Populate::Nothing,
            Some(V::Boolean(true)) => Populate::All,
            Some(V::String(s)) if s == "*" => Populate::All,
            Some(V::String(s)) if is_attribute_name(s) => {
                Populate::Attributes(BTreeMap::from([(s.clone(), Nested::default())]))
            }
            Some(V::Array(items)) => {
                let mut map = BTreeMap::new();
                for item in items {
                    match item {
                        V::String(s) if is_attribute_name(s) => {
                            map.insert(s.clone(), Nested::default());
                        }
                        other => return Err(format!("{other} is not an attribute name")),
                    }
                }
                Populate::Attributes(map)
            }
            Some(V::Table(table)) => {
                let mut map = BTreeMap::new();
                for (name, nested) in table {
                    if !is_attribute_name(name) {
                        return Err(format!("{name:?} is not an attribute name"));
                    }
                    let inner = match nested {
                        V::Boolean(true) => Nested::default(),
                        V::Table(t) => {
                            for key in t.keys() {
                                if !matches!(key.as_str(), "fields" | "populate") {
                                    return Err(format!(
                                        "{name}.{key}: only `fields` and `populate` are allowed"
                                    ));
                                }
                            }
                            Nested {
                                fields: parse_fields(name, t.get("fields"))?,
                                populate: Populate::parse(t.get("populate"))?,
                            }
                        }
                        other => {
                            return Err(format!(
                                "{name} = {other}: expected true or a table with fields/populate"
                            ));
                        }
                    };
                    map.insert(name.clone(), inner);
                }
                Populate::Attributes(map)
            }
            Some(other) => {
                return Err(format!(
                    "{other}: expected '*', true, a list of attribute names or a table"
                ));
            }
        })
    }

    /// Whether attribute `name` is populated on this level.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Populate::Nothing => false,
            Populate::All => true,
            Populate::Attributes(map) => map.contains_key(name),
        }
    }

    /// The settings of populated attribute `name` (`'*'` populates each attribute one level
    /// deep, with all its fields); `None` when it is not populated.
    pub fn nested(&self, name: &str) -> Option<Nested> {
        match self {
            Populate::Nothing => None,
            Populate::All => Some(Nested::default()),
            Populate::Attributes(map) => map.get(name).cloned(),
        }
    }
}

/// `fields = ['title', 'slug']` (or one name).
fn parse_fields(
    attribute: &str,
    value: Option<&toml::Value>,
) -> Result<Option<Vec<String>>, String> {
    use toml::Value as V;
    let names = match value {
        None => return Ok(None),
        Some(V::String(s)) => vec![s.clone()],
        Some(V::Array(items)) => items
            .iter()
            .map(|item| match item {
                V::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "{attribute}.fields: {other} is not an attribute name"
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "{attribute}.fields = {other}: expected a list of attribute names"
            ));
        }
    };
    match names.iter().find(|n| !is_attribute_name(n)) {
        Some(bad) => Err(format!(
            "{attribute}.fields: {bad:?} is not an attribute name"
        )),
        None => Ok(Some(names)),
    }
}

fn is_attribute_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Populate, String> {
        let v: toml::Table = toml::from_str(src).unwrap();
        Populate::parse(v.get("populate"))
    }

    #[test]
    fn strapi_syntaxes() {
        assert_eq!(parse("populate = '*'").unwrap(), Populate::All);
        assert_eq!(parse("populate = true").unwrap(), Populate::All);
        assert_eq!(parse("").unwrap(), Populate::Nothing);
        let list = parse("populate = ['author', 'tags']").unwrap();
        assert!(list.includes("tags") && !list.includes("cover"));
        let object =
            parse("populate = { author = { fields = ['username'] }, blocks = { populate = '*' } }")
                .unwrap();
        assert!(object.includes("author") && object.includes("blocks"));
        let Populate::Attributes(map) = object else {
            panic!()
        };
        assert_eq!(map["blocks"].populate, Populate::All);
        assert_eq!(
            map["author"].fields.as_deref(),
            Some(&["username".to_owned()][..])
        );
        assert_eq!(map["author"].populate, Populate::Nothing);
        assert_eq!(
            object_nested(&parse("populate = '*'").unwrap()),
            Some(Nested::default())
        );
    }

    fn object_nested(p: &Populate) -> Option<Nested> {
        p.nested("anything")
    }

    #[test]
    fn bad_values_say_what_is_allowed() {
        assert!(parse("populate = 3").unwrap_err().contains("expected"));
        assert!(parse("populate = ['a b']").is_err());
        assert!(
            parse("populate = { author = { where = 1 } }")
                .unwrap_err()
                .contains("fields")
        );
        assert!(parse("populate = { author = { fields = [1] } }").is_err());
        assert!(parse("populate = { author = { fields = 'a b' } }").is_err());
    }
}
