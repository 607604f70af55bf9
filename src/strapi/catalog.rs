//! Which role each table plays: a content type's main table, one of the tables whose rows
//! belong to documents (relation links, component links, components, media links), an auth
//! table that feeds the permission model, the core store (schema reloads), or nothing walcast
//! cares about.

use std::collections::HashMap;
use std::sync::Arc;

use super::naming;
use super::schema::{AttributeKind, ContentType, ContentTypes};

/// Tables of the users-permissions plugin and the admin that decide who may read what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthTable {
    UpRoles,
    UpPermissions,
    UpPermissionsRoleLink,
    UpUsers,
    UpUsersRoleLink,
    ApiTokens,
    ApiTokenPermissions,
    ApiTokenPermissionsTokenLink,
    Sessions,
    AdminUsers,
}

impl AuthTable {
    /// Every auth table with its Strapi table name.
    pub const ALL: &[(AuthTable, &str)] = &[
        (AuthTable::UpRoles, "up_roles"),
        (AuthTable::UpPermissions, "up_permissions"),
        (AuthTable::UpPermissionsRoleLink, "up_permissions_role_lnk"),
        (AuthTable::UpUsers, "up_users"),
        (AuthTable::UpUsersRoleLink, "up_users_role_lnk"),
        (AuthTable::ApiTokens, "strapi_api_tokens"),
        (
            AuthTable::ApiTokenPermissions,
            "strapi_api_token_permissions",
        ),
        (
            AuthTable::ApiTokenPermissionsTokenLink,
            "strapi_api_token_permissions_token_lnk",
        ),
        (AuthTable::Sessions, "strapi_sessions"),
        (AuthTable::AdminUsers, "admin_users"),
    ];
}

/// The link table of one relation attribute (`<table>_<attribute>_lnk`), seen from both of
/// its sides.
#[derive(Debug, Clone)]
pub struct LinkTable {
    pub table: String,
    /// The content type that declares the relation (owns the link table).
    pub owner: Arc<ContentType>,
    pub attribute: String,
    /// `<owner singular>_id`.
    pub owner_column: String,
    /// `<target singular>_id` (`inv_…` for a relation to the owner's own type).
    pub target_column: String,
    pub target_uid: String,
    /// Orders the targets of one owner row: `<target singular>_ord`.
    pub order_column: String,
    /// Orders the owners of one target row: `<owner singular>_ord`.
    pub inverse_order_column: String,
    /// The target type's attribute for the other side (`mappedBy`/`inversedBy`), if any.
    pub inverse_attribute: Option<String>,
}

/// The media link table: `files_related_mph`.
pub const MEDIA_LINK_TABLE: &str = "files_related_mph";

/// The role of one table.
#[derive(Debug, Clone)]
pub enum TableRole {
    /// The main table of a content type.
    Main(Arc<ContentType>),
    /// A relation's link table.
    Link(Arc<LinkTable>),
    /// `<table>_cmps`: the components and dynamic-zone entries of a content type's rows.
    ComponentLinks(Arc<ContentType>),
    /// A component's table, by component UID.
    Component(Arc<str>),
    /// `files_related_mph`: media attached to rows.
    MediaLinks,
    Auth(AuthTable),
    /// `strapi_core_store_settings`: holds the schema row.
    CoreStore,
}

/// Where the values of a relation attribute come from.
#[derive(Debug, Clone)]
pub enum RelationSide {
    /// The attribute declares the relation: its link table's owner column is this type.
    Owner(Arc<LinkTable>),
    /// The attribute is the other side (`mappedBy`) of another type's link table.
    Inverse(Arc<LinkTable>),
}

/// Table name → role, for the tables walcast attributes.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_table: HashMap<String, TableRole>,
    /// (content type uid, attribute) → the link table behind the relation attribute.
    relations: HashMap<(String, String), RelationSide>,
}

/// The core store's table.
pub const CORE_STORE_TABLE: &str = "strapi_core_store_settings";

impl Catalog {
    pub fn build(content_types: &ContentTypes) -> Self {
        let mut by_table = HashMap::new();
        let mut relations = HashMap::new();
        for ct in content_types.by_uid.values() {
            by_table.insert(ct.table.clone(), TableRole::Main(Arc::clone(ct)));
            for link in link_tables(ct, content_types) {
                let link = Arc::new(link);
                relations.insert(
                    (ct.uid.clone(), link.attribute.clone()),
                    RelationSide::Owner(Arc::clone(&link)),
                );
                if let Some(inverse) = &link.inverse_attribute {
                    relations.insert(
                        (link.target_uid.clone(), inverse.clone()),
                        RelationSide::Inverse(Arc::clone(&link)),
                    );
                }
                by_table.insert(link.table.clone(), TableRole::Link(link));
            }
            let has_components = ct.attributes.iter().any(|a| {
                matches!(
                    a.kind,
                    AttributeKind::Component { .. } | AttributeKind::DynamicZone { .. }
                )
            });
            if has_components {
                by_table.insert(
                    naming::component_join_table_name(&ct.table),
                    TableRole::ComponentLinks(Arc::clone(ct)),
                );
            }
        }
        for (uid, table) in &content_types.components {
            by_table.insert(table.clone(), TableRole::Component(Arc::from(uid.as_str())));
        }
        let has_media = content_types.by_uid.values().any(|ct| {
            ct.attributes
                .iter()
                .any(|a| matches!(a.kind, AttributeKind::Media { .. }))
        });
        if has_media {
            by_table.insert(MEDIA_LINK_TABLE.to_owned(), TableRole::MediaLinks);
        }
        for (auth, name) in AuthTable::ALL {
            by_table.insert((*name).to_owned(), TableRole::Auth(*auth));
        }
        by_table.insert(CORE_STORE_TABLE.to_owned(), TableRole::CoreStore);
        Catalog {
            by_table,
            relations,
        }
    }

    /// The role of a table, if walcast attributes it.
    pub fn role(&self, table: &str) -> Option<&TableRole> {
        self.by_table.get(table)
    }

    /// The tables whose rows belong to content documents: main, link, `_cmps`, component and
    /// media-link tables (replica identity FULL candidates).
    pub fn content_tables(&self) -> Vec<&str> {
        let mut tables: Vec<&str> = self
            .by_table
            .iter()
            .filter(|(_, role)| !matches!(role, TableRole::Auth(_) | TableRole::CoreStore))
            .map(|(t, _)| t.as_str())
            .collect();
        tables.sort_unstable();
        tables
    }

    /// The link table behind relation attribute `attribute` of type `uid`.
    pub fn relation(&self, uid: &str, attribute: &str) -> Option<&RelationSide> {
        self.relations.get(&(uid.to_owned(), attribute.to_owned()))
    }

    /// Every (table, role) pair.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TableRole)> {
        self.by_table.iter().map(|(t, r)| (t.as_str(), r))
    }

    /// Every table walcast watches, sorted.
    pub fn watched_tables(&self) -> Vec<&str> {
        let mut tables: Vec<&str> = self.by_table.keys().map(String::as_str).collect();
        tables.sort_unstable();
        tables
    }
}

/// The link tables a content type owns: one per relation attribute that declares the relation
/// (not `mappedBy`) and is stored in a link table.
fn link_tables(ct: &Arc<ContentType>, types: &ContentTypes) -> Vec<LinkTable> {
    let mut out = Vec::new();
    for attribute in &ct.attributes {
        let AttributeKind::Relation {
            target,
            mapped_by: None,
            inversed_by,
            join_table: true,
            ..
        } = &attribute.kind
        else {
            continue;
        };
        let Some(target_singular) = types.singular_names.get(target) else {
            continue;
        };
        let target_column = if target == &ct.uid {
            naming::inverse_join_column_name(target_singular)
        } else {
            naming::join_column_name(target_singular)
        };
        // The other side: named by `inversedBy`, or a target attribute `mappedBy` this one.
        let inverse_attribute = inversed_by.clone().or_else(|| {
            types.by_uid.get(target).and_then(|t| {
                t.attributes.iter().find_map(|a| match &a.kind {
                    AttributeKind::Relation {
                        target: back,
                        mapped_by: Some(m),
                        ..
                    } if back == &ct.uid && m == &attribute.name => Some(a.name.clone()),
                    _ => None,
                })
            })
        });
        out.push(LinkTable {
            table: naming::join_table_name(&ct.table, &attribute.name),
            owner: Arc::clone(ct),
            attribute: attribute.name.clone(),
            owner_column: naming::join_column_name(&ct.singular_name),
            target_column,
            target_uid: target.clone(),
            order_column: naming::order_column_name(target_singular),
            inverse_order_column: naming::order_column_name(&ct.singular_name),
            inverse_attribute,
        });
    }
    out
}
