//! Which role each table plays: a content type's main table, an auth table that feeds the
//! permission model, the core store (schema reloads), or nothing walcast cares about.

use std::collections::HashMap;
use std::sync::Arc;

use super::schema::{ContentType, ContentTypes};

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

/// The role of one table.
#[derive(Debug, Clone)]
pub enum TableRole {
    /// The main table of a content type.
    Main(Arc<ContentType>),
    Auth(AuthTable),
    /// `strapi_core_store_settings`: holds the schema row.
    CoreStore,
}

/// Table name → role, for the tables walcast attributes.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_table: HashMap<String, TableRole>,
}

/// The core store's table.
pub const CORE_STORE_TABLE: &str = "strapi_core_store_settings";

impl Catalog {
    pub fn build(content_types: &ContentTypes) -> Self {
        let mut by_table = HashMap::new();
        for ct in content_types.by_uid.values() {
            by_table.insert(ct.table.clone(), TableRole::Main(Arc::clone(ct)));
        }
        for (auth, name) in AuthTable::ALL {
            by_table.insert((*name).to_owned(), TableRole::Auth(*auth));
        }
        by_table.insert(CORE_STORE_TABLE.to_owned(), TableRole::CoreStore);
        Catalog { by_table }
    }

    /// The role of a table, if walcast attributes it.
    pub fn role(&self, table: &str) -> Option<&TableRole> {
        self.by_table.get(table)
    }

    /// The tables whose rows belong to content documents (replica identity FULL candidates).
    pub fn content_tables(&self) -> Vec<&str> {
        let mut tables: Vec<&str> = self
            .by_table
            .iter()
            .filter(|(_, role)| matches!(role, TableRole::Main(_)))
            .map(|(t, _)| t.as_str())
            .collect();
        tables.sort_unstable();
        tables
    }

    /// Every table walcast watches, sorted.
    pub fn watched_tables(&self) -> Vec<&str> {
        let mut tables: Vec<&str> = self.by_table.keys().map(String::as_str).collect();
        tables.sort_unstable();
        tables
    }
}
