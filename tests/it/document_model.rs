//! The document model beyond the captures: Strapi's schema row rewritten while walcast runs
//! (hot reload, publication extended), a single type, and deletes under the default replica
//! identity that carry documentId and locale.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use walcast::assemble::{Action, TransactionEvents, View};

use crate::support::{TestDatabase, Walcast};

async fn next_with_events(
    tap: &mut mpsc::UnboundedReceiver<Arc<TransactionEvents>>,
) -> Arc<TransactionEvents> {
    loop {
        let tx = tokio::time::timeout(Duration::from_secs(30), tap.recv())
            .await
            .expect("a transaction within 30 s")
            .expect("tap open");
        if !tx.events.is_empty() || tx.schema_changed {
            return tx;
        }
    }
}

fn summary(tx: &TransactionEvents) -> Vec<(String, View, Action)> {
    let mut v: Vec<_> = tx
        .events
        .iter()
        .map(|e| (e.event_name(), e.view, e.action))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_single_type_is_picked_up_without_a_restart() {
    let db = TestDatabase::new().await;
    let (tap_tx, mut tap) = mpsc::unbounded_channel();
    let walcast = Walcast::start_with_tap(db.config(), Some(tap_tx)).await;

    // What Strapi does when it boots with a new single type: create the table, then rewrite
    // the schema row.
    db.client
        .batch_execute(
            "CREATE TABLE homepages (id serial PRIMARY KEY, document_id varchar(255),
                 headline varchar(255), created_at timestamp(6), updated_at timestamp(6),
                 published_at timestamp(6), created_by_id integer, updated_by_id integer,
                 locale varchar(255));
             UPDATE strapi_core_store_settings
                SET value = (value::jsonb || jsonb_build_object('api::homepage.homepage', jsonb_build_object(
                    'kind', 'singleType', 'collectionName', 'homepages',
                    'info', jsonb_build_object('singularName', 'homepage', 'pluralName', 'homepages'),
                    'options', jsonb_build_object('draftAndPublish', true),
                    'attributes', jsonb_build_object('headline', jsonb_build_object('type', 'string')))))::text
              WHERE key = 'strapi_content_types_schema';",
        )
        .await
        .unwrap();
    let reload = next_with_events(&mut tap).await;
    assert!(reload.schema_changed, "the schema row rewrite is seen");
    let published: Vec<String> = db
        .client
        .query(
            "SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1 AND tablename = 'homepages'",
            &[&db.name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        published,
        ["homepages"],
        "the publication now covers the new table"
    );

    // Saved as a draft, then published: the single type's events, by its singular name.
    db.client
        .batch_execute(
            "INSERT INTO homepages (document_id, headline, created_at, updated_at)
             VALUES ('hpdoc', 'Welcome', now(), now())",
        )
        .await
        .unwrap();
    let draft = next_with_events(&mut tap).await;
    assert_eq!(
        summary(&draft),
        [("homepage:create".to_owned(), View::Draft, Action::Create)]
    );
    db.client
        .batch_execute(
            "BEGIN;
             UPDATE homepages SET updated_at = now() WHERE document_id = 'hpdoc';
             INSERT INTO homepages (document_id, headline, created_at, updated_at, published_at)
             VALUES ('hpdoc', 'Welcome', now(), now(), now());
             COMMIT;",
        )
        .await
        .unwrap();
    let publish = next_with_events(&mut tap).await;
    assert_eq!(
        summary(&publish),
        [
            (
                "homepage:create".to_owned(),
                View::Published,
                Action::Create
            ),
            (
                "homepage:publish".to_owned(),
                View::Published,
                Action::Publish
            ),
            ("homepage:publish".to_owned(), View::Draft, Action::Publish),
        ]
    );
    let entry = publish
        .events
        .iter()
        .find(|e| e.view == View::Published && e.action == Action::Create)
        .and_then(|e| e.entry.clone())
        .expect("the published entry");
    assert_eq!(entry["headline"], "Welcome");
    assert_eq!(entry["documentId"], "hpdoc");

    walcast.stop().await;
    db.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_identity_deletes_name_their_document_and_locale() {
    let db = TestDatabase::new().await;
    // Rows that exist before walcast starts reach the index through the snapshot.
    db.replay_range(1, 12).await;
    let mut config = db.config();
    config.replication.replica_identity_full = false;
    let (tap_tx, mut tap) = mpsc::unbounded_channel();
    let walcast = Walcast::start_with_tap(config, Some(tap_tx)).await;
    let identity: String = db
        .client
        .query_one(
            "SELECT relreplident::text FROM pg_class WHERE relname = 'articles'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        identity, "d",
        "Strapi's default identity: a DELETE carries only the id"
    );

    db.client
        .batch_execute("DELETE FROM articles WHERE document_id = 'dcwju77j680kjwyypp5f9onc'")
        .await
        .unwrap();
    let deleted = next_with_events(&mut tap).await;
    let event = &deleted.events[0];
    assert_eq!(deleted.events.len(), 1, "{:?}", summary(&deleted));
    assert_eq!(event.event_name(), "article:delete");
    assert_eq!(event.view, View::Draft);
    assert_eq!(event.key.document_id, "dcwju77j680kjwyypp5f9onc");
    assert_eq!(event.key.locale.as_deref(), Some("en"));
    assert_eq!(event.deleted_id, Some(1));

    walcast.stop().await;
    db.drop_all().await;
}

/// Rows written while walcast was down are in the start-up snapshot *and* resent by the slot:
/// their "before" is rebuilt from the transaction itself, so they still read as creates,
/// updates and deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_walcast_was_down_keep_their_actions() {
    let db = TestDatabase::new().await;
    db.replay_range(1, 10).await;
    let walcast = Walcast::start(db.config()).await;
    walcast.stop().await;
    db.client
        .batch_execute(
            "INSERT INTO tags (document_id, name, created_at, updated_at, published_at)
                 VALUES ('down-1', 'offline', now(), now(), now());
             UPDATE categories SET name = 'News (renamed)' WHERE id = 1;
             DELETE FROM tags WHERE id = 1;",
        )
        .await
        .unwrap();
    let (tap_tx, mut tap) = mpsc::unbounded_channel();
    let walcast = Walcast::start_with_tap(db.config(), Some(tap_tx)).await;
    // One implicit transaction: three statements, three events.
    let tx = next_with_events(&mut tap).await;
    assert_eq!(
        summary(&tx),
        [
            (
                "category:update".to_owned(),
                View::Published,
                Action::Update
            ),
            ("tag:create".to_owned(), View::Published, Action::Create),
            ("tag:delete".to_owned(), View::Published, Action::Delete),
        ]
    );
    walcast.stop().await;
    db.drop_all().await;
}
