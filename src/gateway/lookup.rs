//! Answers for `subscribe-entity`: is the content type known, and does the entity exist.
//!
//! One SQL query per subscribe request, on a connection of its own opened at the first
//! request (and again after it breaks); never on the event path.

use std::sync::Arc;

use tokio::sync::{Mutex, watch};
use tracing::warn;

use crate::config::Config;
use crate::strapi::StrapiModel;

/// An entity id as a client gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityId {
    /// A `documentId`.
    Document(String),
    /// A numeric row id.
    Row(i64),
}

impl std::fmt::Display for EntityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntityId::Document(d) => f.write_str(d),
            EntityId::Row(id) => write!(f, "{id}"),
        }
    }
}

/// Why an entity could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("connecting to the database: {0}")]
    Connect(#[source] anyhow::Error),
    #[error("querying the database: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// The Strapi model as the pipeline last loaded it, and a connection for existence checks.
#[derive(Debug, Clone)]
pub struct EntityLookup {
    config: Arc<Config>,
    model: watch::Receiver<Arc<StrapiModel>>,
    client: Arc<Mutex<Option<Arc<tokio_postgres::Client>>>>,
}

impl EntityLookup {
    pub fn new(config: &Config, model: watch::Receiver<Arc<StrapiModel>>) -> Self {
        EntityLookup {
            config: Arc::new(config.clone()),
            model,
            client: Arc::new(Mutex::new(None)),
        }
    }

    /// The table of a content type, if the app has it.
    pub fn table_of(&self, uid: &str) -> Option<String> {
        self.model
            .borrow()
            .content_types
            .by_uid
            .get(uid)
            .map(|ct| ct.table.clone())
    }

    /// Whether a row of `table` has this id (any locale, any view).
    pub async fn exists(&self, table: &str, id: &EntityId) -> Result<bool, LookupError> {
        let client = self.client().await?;
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let result =
            match id {
                EntityId::Document(document_id) => client
                    .query_one(
                        &format!(
                            "SELECT EXISTS (SELECT 1 FROM {quoted} WHERE document_id = $1::text)"
                        ),
                        &[document_id],
                    )
                    .await,
                EntityId::Row(row) => {
                    client
                        .query_one(
                            &format!("SELECT EXISTS (SELECT 1 FROM {quoted} WHERE id = $1::int8)"),
                            &[row],
                        )
                        .await
                }
            };
        match result {
            Ok(row) => Ok(row.get(0)),
            Err(e) => {
                if client.is_closed() {
                    *self.client.lock().await = None;
                }
                Err(e.into())
            }
        }
    }

    async fn client(&self) -> Result<Arc<tokio_postgres::Client>, LookupError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(
            crate::service::connect_sql(&self.config)
                .await
                .inspect_err(|e| warn!(error = %e, "cannot connect to check entity subscriptions"))
                .map_err(LookupError::Connect)?,
        );
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }
}
