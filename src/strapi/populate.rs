//! A content type's `populate` setting, in Strapi's syntaxes: `'*'`/`true`, a list of
//! attribute names, or the object syntax (`{ author = { fields = [...] }, items = { populate
//! = [...] } }`).
//!
//! The document model asks which attributes are populated (a relation-only change is an
//! `update` only for those); the payload builder walks the nested settings.

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
    Attributes(BTreeMap<String, Populate>),
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
                Populate::Attributes(BTreeMap::from([(s.clone(), Populate::Nothing)]))
            }
            Some(V::Array(items)) => {
                let mut map = BTreeMap::new();
                for item in items {
                    match item {
                        V::String(s) if is_attribute_name(s) => {
                            map.insert(s.clone(), Populate::Nothing);
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
                        V::Boolean(true) => Populate::Nothing,
                        V::Table(t) => {
                            for key in t.keys() {
                                if !matches!(key.as_str(), "fields" | "populate") {
                                    return Err(format!(
                                        "{name}.{key}: only `fields` and `populate` are allowed"
                                    ));
                                }
                            }
                            Populate::parse(t.get("populate"))?
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
        assert_eq!(map["blocks"], Populate::All);
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
    }
}
