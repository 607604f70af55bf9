//! Read-only model of the Strapi app: content types, table roles, naming rules.
//!
//! Loaded from Strapi's own tables at start and replaced whole (an `Arc` snapshot) when the
//! WAL shows Strapi rewrote its schema row. Stages consult it; it never consumes events.

pub mod catalog;
pub mod naming;
pub mod populate;
pub mod schema;

use std::sync::Arc;

pub use catalog::{AuthTable, Catalog, LinkTable, RelationSide, TableRole};
pub use populate::{Nested, Populate};
pub use schema::{Attribute, AttributeKind, ContentType, ContentTypes, Kind, SchemaError};

/// Everything walcast knows about the app at one moment.
#[derive(Debug, Clone)]
pub struct StrapiModel {
    pub content_types: ContentTypes,
    pub catalog: Catalog,
}

impl StrapiModel {
    /// Builds the model from the discovered content types.
    pub fn new(content_types: ContentTypes) -> Self {
        let catalog = Catalog::build(&content_types);
        StrapiModel {
            content_types,
            catalog,
        }
    }

    /// Loads the schema from the database.
    pub async fn load(client: &tokio_postgres::Client) -> Result<Arc<Self>, SchemaError> {
        Ok(Arc::new(Self::new(ContentTypes::load(client).await?)))
    }

    /// Loads the schema from the database; with `strapi.app_dir`, the project's
    /// `src/components/**.json` name the component tables (they win over the database), and
    /// `strapi.component_tables` wins over both.
    pub async fn load_for(
        client: &tokio_postgres::Client,
        config: &crate::config::StrapiConfig,
    ) -> Result<Arc<Self>, SchemaError> {
        let mut types = ContentTypes::load(client).await?;
        if let Some(dir) = &config.app_dir {
            for (uid, model) in schema::component_models_from_app_dir(dir)? {
                types.components.insert(uid.clone(), model.table.clone());
                types.component_models.insert(uid, model);
            }
        }
        types.components.extend(
            config
                .component_tables
                .iter()
                .map(|(uid, table)| (uid.clone(), table.clone())),
        );
        Ok(Arc::new(Self::new(types)))
    }
}
