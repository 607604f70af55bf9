//! Strapi's content types as walcast sees them, discovered from the database.
//!
//! The source is the core-store row `strapi_content_types_schema`, which Strapi rewrites on
//! every boot: a JSON object keyed by UID with `collectionName`, `info.singularName`,
//! `options.draftAndPublish`, `pluginOptions.i18n.localized` and every attribute (including
//! the injected `createdAt`, `locale`, creator fields) with its `private` flag. Read-only;
//! consulted by the stages, never a stage itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::naming;

/// Collection or single type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Collection,
    Single,
}

/// What an attribute is, as far as row mapping needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeKind {
    /// Stored in a column of the main table.
    Scalar {
        column: String,
        password: bool,
    },
    /// A relation (link table, or a column for creator fields).
    Relation {
        target: String,
        relation: String,
        mapped_by: Option<String>,
        inversed_by: Option<String>,
        /// Whether the relation lives in a link table (`false` for the creator columns and
        /// morph relations).
        join_table: bool,
    },
    /// Media (`files_related_mph`).
    Media {
        multiple: bool,
    },
    Component {
        component: String,
        repeatable: bool,
    },
    DynamicZone {
        components: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub kind: AttributeKind,
    pub private: bool,
}

/// One content type.
#[derive(Debug, Clone)]
pub struct ContentType {
    pub uid: String,
    pub singular_name: String,
    /// The (already shortened) main table name.
    pub table: String,
    pub kind: Kind,
    pub draft_and_publish: bool,
    pub localized: bool,
    pub attributes: Vec<Attribute>,
    /// Column name → attribute name, for the scalar attributes that reach a payload.
    column_to_attribute: HashMap<String, String>,
}

/// Columns every content-type table has, and the key Strapi's REST API shows them under.
const SYSTEM_COLUMNS: &[(&str, &str)] = &[
    ("id", "id"),
    ("document_id", "documentId"),
    ("created_at", "createdAt"),
    ("updated_at", "updatedAt"),
    ("published_at", "publishedAt"),
];

impl ContentType {
    /// The key a column appears under in a payload, or `None` when the column must never
    /// leave walcast (private attributes, passwords, creator fields, unknown columns).
    pub fn public_key_of(&self, column: &str) -> Option<&str> {
        if let Some((_, key)) = SYSTEM_COLUMNS.iter().find(|(c, _)| *c == column) {
            return Some(key);
        }
        self.column_to_attribute.get(column).map(String::as_str)
    }

    /// Builds a content type from its core-store JSON entry.
    pub fn from_schema_json(uid: &str, json: &Value) -> Result<Self, SchemaError> {
        let bad = |what: &str| SchemaError::Malformed {
            uid: uid.to_owned(),
            what: what.to_owned(),
        };
        let singular_name = json
            .pointer("/info/singularName")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("info.singularName missing"))?
            .to_owned();
        let collection_name = json
            .get("collectionName")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| singular_name.clone());
        let kind = match json.get("kind").and_then(Value::as_str) {
            Some("singleType") => Kind::Single,
            _ => Kind::Collection,
        };
        let draft_and_publish = json
            .pointer("/options/draftAndPublish")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let localized = json
            .pointer("/pluginOptions/i18n/localized")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut attributes = Vec::new();
        if let Some(map) = json.get("attributes").and_then(Value::as_object) {
            for (name, attr) in map {
                if let Some(a) = parse_attribute(name, attr) {
                    attributes.push(a);
                }
            }
        }
        Ok(ContentType {
            uid: uid.to_owned(),
            singular_name,
            table: naming::table_name(&collection_name),
            kind,
            draft_and_publish,
            localized,
            column_to_attribute: public_columns(&attributes),
            attributes,
        })
    }

    /// A component (`shared.seo`) as a model: its table and attributes. Its singular name is
    /// the file basename (`seo`), which is what its link tables name their columns after.
    pub fn component(uid: &str, table: String, attributes: Vec<Attribute>) -> Self {
        ContentType {
            uid: uid.to_owned(),
            singular_name: uid.split_once('.').map_or(uid, |(_, name)| name).to_owned(),
            table,
            kind: Kind::Collection,
            draft_and_publish: false,
            localized: false,
            column_to_attribute: public_columns(&attributes),
            attributes,
        }
    }

    /// A component from its schema file (`src/components/<category>/<name>.json`).
    pub fn component_from_json(uid: &str, json: &Value) -> Option<Self> {
        let collection = json.get("collectionName").and_then(Value::as_str)?;
        let attributes = json
            .get("attributes")
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .filter_map(|(name, attr)| parse_attribute(name, attr))
                    .collect()
            })
            .unwrap_or_default();
        Some(Self::component(
            uid,
            naming::table_name(collection),
            attributes,
        ))
    }
}

impl Attribute {
    /// Whether the attribute may appear in a payload at all: neither `private` nor a
    /// `password` (Strapi's `defaultSanitizeOutput`).
    pub fn is_exposed(&self) -> bool {
        !self.private && !matches!(self.kind, AttributeKind::Scalar { password: true, .. })
    }
}

/// Column name → attribute name of the scalar attributes that may reach a payload.
fn public_columns(attributes: &[Attribute]) -> HashMap<String, String> {
    attributes
        .iter()
        .filter(|attribute| attribute.is_exposed())
        .filter_map(|attribute| match &attribute.kind {
            AttributeKind::Scalar { column, .. } => Some((column.clone(), attribute.name.clone())),
            _ => None,
        })
        .collect()
}

fn parse_attribute(name: &str, attr: &Value) -> Option<Attribute> {
    let get_str = |k: &str| attr.get(k).and_then(Value::as_str).map(str::to_owned);
    let private = attr
        .get("private")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let kind = match attr.get("type").and_then(Value::as_str)? {
        "relation" => {
            let relation = get_str("relation").unwrap_or_default();
            AttributeKind::Relation {
                target: get_str("target").unwrap_or_default(),
                join_table: attr.get("useJoinTable").and_then(Value::as_bool) != Some(false)
                    && !relation.starts_with("morph"),
                relation,
                mapped_by: get_str("mappedBy"),
                inversed_by: get_str("inversedBy"),
            }
        }
        "media" => AttributeKind::Media {
            multiple: attr
                .get("multiple")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        "component" => AttributeKind::Component {
            component: get_str("component").unwrap_or_default(),
            repeatable: attr
                .get("repeatable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        "dynamiczone" => AttributeKind::DynamicZone {
            components: attr
                .get("components")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        },
        // Standard columns are mapped by `SYSTEM_COLUMNS`.
        "datetime" if matches!(name, "createdAt" | "updatedAt" | "publishedAt") => return None,
        other => AttributeKind::Scalar {
            column: naming::column_name(name),
            password: other == "password",
        },
    };
    Some(Attribute {
        name: name.to_owned(),
        kind,
        private,
    })
}

/// Why the schema could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("strapi.app_dir: cannot read {path}: {error}")]
    AppDir { path: String, error: String },
    #[error("content type {uid}: {what}")]
    Malformed { uid: String, what: String },
    #[error("the core-store row strapi_content_types_schema is not valid JSON")]
    NotJson(#[source] serde_json::Error),
    #[error(
        "no Strapi schema found: the table strapi_core_store_settings has no row strapi_content_types_schema (has Strapi booted on this database?)"
    )]
    Missing,
    #[error("reading the Strapi schema")]
    Query(#[source] tokio_postgres::Error),
}

/// Every content type of the app, by UID.
#[derive(Debug, Clone, Default)]
pub struct ContentTypes {
    pub by_uid: BTreeMap<String, Arc<ContentType>>,
    /// `info.singularName` of every model in the schema (plugin and admin ones too): link
    /// tables name their columns after it.
    pub singular_names: BTreeMap<String, String>,
    /// Component UID → table (`shared.seo` → `components_shared_seos`).
    pub components: BTreeMap<String, String>,
    /// Every model of the schema by UID, plugin and admin types included: the targets of
    /// populated relations and media (`plugin::users-permissions.user`, `plugin::upload.file`).
    pub models: BTreeMap<String, Arc<ContentType>>,
    /// Component UID → the component as a model (its attributes), for populating components.
    /// From the project's component files when `strapi.app_dir` is set; otherwise from the
    /// content manager's configuration and the table's columns, which name only the scalar
    /// attributes (relations, media and components nested in components need `app_dir`).
    pub component_models: BTreeMap<String, Arc<ContentType>>,
}

impl ContentTypes {
    /// Parses the core-store value. Only `api::` types are kept: they are what clients
    /// subscribe to (plugin and admin types are auth or infrastructure).
    pub fn from_core_store(value: &str) -> Result<Self, SchemaError> {
        let json: Value = serde_json::from_str(value).map_err(SchemaError::NotJson)?;
        let mut by_uid = BTreeMap::new();
        let mut singular_names = BTreeMap::new();
        let mut models = BTreeMap::new();
        if let Some(map) = json.as_object() {
            for (uid, entry) in map {
                if let Some(name) = entry.pointer("/info/singularName").and_then(Value::as_str) {
                    singular_names.insert(uid.clone(), name.to_owned());
                }
                if !uid.starts_with("api::") {
                    // Only a populate target: one that does not parse is simply not populated.
                    if let Ok(model) = ContentType::from_schema_json(uid, entry) {
                        models.insert(uid.clone(), Arc::new(model));
                    }
                    continue;
                }
                let ct = Arc::new(ContentType::from_schema_json(uid, entry)?);
                models.insert(uid.clone(), Arc::clone(&ct));
                by_uid.insert(uid.clone(), ct);
            }
        }
        Ok(ContentTypes {
            by_uid,
            singular_names,
            components: BTreeMap::new(),
            models,
            component_models: BTreeMap::new(),
        })
    }

    /// Reads the core-store row through an ordinary connection.
    pub async fn load(client: &tokio_postgres::Client) -> Result<Self, SchemaError> {
        let row = client
            .query_opt(
                "SELECT value FROM strapi_core_store_settings WHERE key = 'strapi_content_types_schema'",
                &[],
            )
            .await
            .map_err(SchemaError::Query)?
            .ok_or(SchemaError::Missing)?;
        let value: String = row.get(0);
        let mut types = Self::from_core_store(&value)?;
        let (components, component_models) = load_components(client).await?;
        types.components = components;
        types.component_models = component_models;
        Ok(types)
    }
}

/// Component UIDs from the content manager's configuration rows, mapped to their tables
/// through `strapi_database_schema` (Strapi names a component's table
/// `components_<category>_<pluralized name>`; the database schema says which table exists).
///
/// Their scalar attributes come from the same rows (`metadatas` names every attribute) kept
/// where the table has the attribute's column.
async fn load_components(
    client: &tokio_postgres::Client,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, Arc<ContentType>>), SchemaError> {
    const PREFIX: &str = "plugin_content_manager_configuration_components::";
    let configurations: Vec<(String, String)> = client
        .query(
            "SELECT substr(key, length($1) + 1), value FROM strapi_core_store_settings WHERE key LIKE $1 || '%'",
            &[&PREFIX],
        )
        .await
        .map_err(SchemaError::Query)?
        .iter()
        .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
        .collect();
    let uids: Vec<&String> = configurations.iter().map(|(uid, _)| uid).collect();
    // The database schema row; fall back to the catalog when Strapi did not write one.
    let tables: Vec<String> = match client
        .query_opt("SELECT schema::text FROM strapi_database_schema ORDER BY id DESC LIMIT 1", &[])
        .await
    {
        Ok(Some(row)) => {
            let schema: String = row.get(0);
            serde_json::from_str::<Value>(&schema)
                .ok()
                .and_then(|v| v.get("tables").and_then(Value::as_array).cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        }
        _ => client
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_name LIKE 'components\\_%'",
                &[],
            )
            .await
            .map_err(SchemaError::Query)?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    };
    let tables: BTreeMap<String, String> = uids
        .iter()
        .filter_map(|uid| component_table(uid, &tables).map(|t| ((*uid).clone(), t)))
        .collect();
    let table_names: Vec<&str> = tables.values().map(String::as_str).collect();
    let mut columns: HashMap<String, Vec<String>> = HashMap::new();
    for row in client
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
              WHERE table_schema = current_schema() AND table_name = ANY($1)",
            &[&table_names],
        )
        .await
        .map_err(SchemaError::Query)?
    {
        columns.entry(row.get(0)).or_default().push(row.get(1));
    }
    let models = configurations
        .iter()
        .filter_map(|(uid, configuration)| {
            let table = tables.get(uid)?;
            let json: Value = serde_json::from_str(configuration).ok()?;
            let present = columns.get(table)?;
            let attributes = json
                .get("metadatas")
                .and_then(Value::as_object)?
                .keys()
                .filter(|name| !matches!(name.as_str(), "id" | "documentId"))
                .filter_map(|name| {
                    let column = naming::column_name(name);
                    present.contains(&column).then(|| Attribute {
                        name: name.clone(),
                        kind: AttributeKind::Scalar {
                            column,
                            password: false,
                        },
                        private: false,
                    })
                })
                .collect();
            Some((
                uid.clone(),
                Arc::new(ContentType::component(uid, table.clone(), attributes)),
            ))
        })
        .collect();
    Ok((tables, models))
}

/// Component UID → table from a Strapi project's `src/components/<category>/<name>.json`.
pub fn components_from_app_dir(
    app_dir: &std::path::Path,
) -> Result<BTreeMap<String, String>, SchemaError> {
    Ok(component_models_from_app_dir(app_dir)?
        .into_iter()
        .map(|(uid, model)| (uid, model.table.clone()))
        .collect())
}

/// Every component of a Strapi project (`src/components/<category>/<name>.json`) as a model.
pub fn component_models_from_app_dir(
    app_dir: &std::path::Path,
) -> Result<BTreeMap<String, Arc<ContentType>>, SchemaError> {
    let root = app_dir.join("src/components");
    let unreadable = |e: std::io::Error| SchemaError::AppDir {
        path: root.display().to_string(),
        error: e.to_string(),
    };
    let mut out = BTreeMap::new();
    for category in std::fs::read_dir(&root).map_err(unreadable)? {
        let category = category.map_err(unreadable)?;
        if !category.file_type().map_err(unreadable)?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(category.path()).map_err(unreadable)? {
            let path = file.map_err(unreadable)?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(unreadable)?;
            let json: Value = serde_json::from_str(&text).map_err(|e| SchemaError::AppDir {
                path: path.display().to_string(),
                error: e.to_string(),
            })?;
            let (Some(cat), Some(name)) = (
                category.file_name().to_str().map(str::to_owned),
                path.file_stem().and_then(|s| s.to_str()).map(str::to_owned),
            ) else {
                continue;
            };
            let uid = format!("{cat}.{name}");
            if let Some(model) = ContentType::component_from_json(&uid, &json) {
                out.insert(uid, Arc::new(model));
            }
        }
    }
    Ok(out)
}

/// The table of component `uid` among `tables`: `components_<category>_<name>` followed by
/// the plural ending, the shortest such name that is not a link or `_cmps` table.
pub fn component_table(uid: &str, tables: &[String]) -> Option<String> {
    let (category, name) = uid.split_once('.')?;
    let stem = format!(
        "components_{}_{}",
        naming::snake_case(category),
        naming::snake_case(name)
    );
    let short = naming::table_name(&stem);
    tables
        .iter()
        .filter(|t| {
            (t.starts_with(&stem) || t.starts_with(&short))
                && !t.ends_with("_cmps")
                && !t.ends_with("_lnk")
                && t.len() <= stem.len() + 3
        })
        .min_by_key(|t| t.len())
        .cloned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The fixture app's schema, from the core-store row of `00-boot.sql`.
    pub(crate) fn fixture_schema() -> ContentTypes {
        let boot = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/strapi-5.54/replay/00-boot.sql"
        ))
        .unwrap();
        let line = boot
            .lines()
            .find(|l| l.contains("'strapi_content_types_schema'"))
            .unwrap();
        let start = line.find("'strapi_content_types_schema', '").unwrap()
            + "'strapi_content_types_schema', '".len();
        let end = line.rfind("', 'object'").unwrap();
        ContentTypes::from_core_store(&line[start..end].replace("''", "'")).unwrap()
    }

    #[test]
    fn components_from_the_projects_json_files() {
        let app = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/strapi-5.54/app");
        let components = components_from_app_dir(std::path::Path::new(app)).unwrap();
        assert_eq!(components["shared.seo"], "components_shared_seos");
        assert_eq!(
            components["shared.rich-text"],
            "components_shared_rich_texts"
        );
        assert_eq!(components.len(), 3);
        assert!(components_from_app_dir(std::path::Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn component_tables_follow_the_plural_rule() {
        let tables: Vec<String> = [
            "components_shared_seos",
            "components_shared_seos_cmps",
            "components_shared_quotes",
            "components_shared_rich_texts",
            "components_shared_seo_extras",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            component_table("shared.seo", &tables).as_deref(),
            Some("components_shared_seos")
        );
        assert_eq!(
            component_table("shared.rich-text", &tables).as_deref(),
            Some("components_shared_rich_texts")
        );
        assert_eq!(component_table("shared.missing", &tables), None);
    }

    #[test]
    fn discovers_the_fixture_app() {
        let cts = fixture_schema();
        let uids: Vec<&str> = cts.by_uid.keys().map(String::as_str).collect();
        assert_eq!(
            uids,
            [
                "api::article.article",
                "api::category.category",
                "api::comment.comment",
                "api::tag.tag"
            ]
        );
        let article = &cts.by_uid["api::article.article"];
        assert_eq!(article.table, "articles");
        assert_eq!(article.singular_name, "article");
        assert!(article.draft_and_publish && article.localized);
        let tag = &cts.by_uid["api::tag.tag"];
        assert!(!tag.draft_and_publish && !tag.localized);
    }

    #[test]
    fn private_columns_never_map_to_a_payload_key() {
        let cts = fixture_schema();
        let article = &cts.by_uid["api::article.article"];
        assert_eq!(article.public_key_of("title"), Some("title"));
        assert_eq!(article.public_key_of("document_id"), Some("documentId"));
        assert_eq!(article.public_key_of("locale"), Some("locale"));
        assert_eq!(article.public_key_of("secret_note"), None);
        assert_eq!(article.public_key_of("created_by_id"), None);
        // The locale of a non-localized type is private.
        assert_eq!(cts.by_uid["api::tag.tag"].public_key_of("locale"), None);
        assert_eq!(
            cts.by_uid["api::comment.comment"].public_key_of("api_key"),
            Some("apiKey"),
            "apiKey is not private in the schema; the sensitive-name filter removes it"
        );
    }
}
