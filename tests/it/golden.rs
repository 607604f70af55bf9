//! The document model against hand-written expectations: every captured Strapi action is
//! replayed through real logical replication and walcast's events (name, uid, documentId,
//! locale, view, action) per transaction are compared with `fixtures/expected/NN-*.json`.
//! Once with Strapi's default replica identity (deletes carry only the id: the document
//! index answers) and once with `REPLICA IDENTITY FULL`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use walcast::assemble::TransactionEvents;
use walcast::config::{ContentTypeConfig, StatusViews};

use crate::support::{TestDatabase, Walcast, repo};

/// (event, uid, documentId, locale, view, action)
type EventKey = (String, String, String, Option<String>, String, String);

fn expected_actions() -> Vec<(String, Value)> {
    let dir = repo().join("fixtures/expected");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let json: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, json)
        })
        .collect()
}

/// The non-empty event sets of one action's transactions, as the fixture states them.
fn expected_sets(json: &Value) -> Vec<BTreeSet<EventKey>> {
    let Some(transactions) = json["transactions"].as_array() else {
        return vec![]; // "all-empty"
    };
    transactions
        .iter()
        .map(|tx| {
            tx["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap().to_owned();
                    (
                        s("event"),
                        s("uid"),
                        s("documentId"),
                        e["locale"].as_str().map(str::to_owned),
                        s("view"),
                        s("action"),
                    )
                })
                .collect::<BTreeSet<_>>()
        })
        .filter(|set| !set.is_empty())
        .collect()
}

fn actual_set(tx: &TransactionEvents) -> BTreeSet<EventKey> {
    tx.events
        .iter()
        .map(|e| {
            (
                e.event_name(),
                e.key.uid.to_string(),
                e.key.document_id.clone(),
                e.key.locale.clone(),
                e.view.as_str().to_owned(),
                e.action.as_str().to_owned(),
            )
        })
        .collect()
}

pub(crate) fn golden_config(db: &TestDatabase, full_identity: bool) -> walcast::config::Config {
    let mut config = db.config();
    config.replication.replica_identity_full = full_identity;
    config.content_types = [
        "api::article.article",
        "api::category.category",
        "api::comment.comment",
        "api::tag.tag",
    ]
    .iter()
    .map(|uid| ContentTypeConfig {
        uid: (*uid).to_owned(),
        actions: ["create", "update", "delete", "publish", "unpublish"]
            .map(String::from)
            .to_vec(),
        populate: Some(toml::Value::String("*".into())),
        status: StatusViews::Both,
    })
    .collect();
    config
}

/// Replays actions 01..50 (the database starts with 00-boot applied) and returns every
/// mismatch, as readable lines.
async fn run_golden(full_identity: bool) -> Vec<String> {
    let db = TestDatabase::new().await;
    let (tap_tx, mut tap) = mpsc::unbounded_channel::<Arc<TransactionEvents>>();
    let walcast = Walcast::start_with_tap(golden_config(&db, full_identity), Some(tap_tx)).await;
    let identities: Vec<String> = db
        .client
        .query(
            "SELECT DISTINCT relreplident::text FROM pg_class WHERE relname IN ('articles', 'articles_tags_lnk', 'articles_cmps', 'files_related_mph', 'components_shared_seos')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        identities,
        [if full_identity { "f" } else { "d" }],
        "replica identity of the content tables"
    );

    let mut problems = Vec::new();
    for (name, json) in expected_actions() {
        if name == "00-boot" {
            continue; // already applied by the template: walcast needs Strapi's schema row
        }
        let number = &name[..2];
        db.replay(number).await;
        // A marker transaction after the action: everything tapped before it is the action's.
        let marker: String = db
            .client
            .query_one(
                "SELECT pg_logical_emit_message(true, 'walcast-golden', $1)::text",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        let marker: walcast::replication::Lsn = marker.parse().unwrap();
        let mut actual = Vec::new();
        loop {
            let tx = tokio::time::timeout(Duration::from_secs(30), tap.recv())
                .await
                .unwrap_or_else(|_| panic!("{name}: no transaction reached the tap"))
                .expect("tap open");
            if tx.commit_lsn >= marker {
                break;
            }
            let set = actual_set(&tx);
            if !set.is_empty() {
                actual.push(set);
            }
        }
        let expected = expected_sets(&json);
        if actual != expected {
            problems.push(format!(
                "{name}: expected {} transaction(s) with events, got {}",
                expected.len(),
                actual.len()
            ));
            for i in 0..expected.len().max(actual.len()) {
                let e = expected.get(i).cloned().unwrap_or_default();
                let a = actual.get(i).cloned().unwrap_or_default();
                for missing in e.difference(&a) {
                    problems.push(format!("  tx {i} missing:    {missing:?}"));
                }
                for extra in a.difference(&e) {
                    problems.push(format!("  tx {i} unexpected: {extra:?}"));
                }
            }
        }
    }
    walcast.stop().await;
    db.drop_all().await;
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_events_with_the_default_replica_identity() {
    let problems = run_golden(false).await;
    assert!(
        problems.is_empty(),
        "events differ from fixtures/expected:\n{}",
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_events_with_replica_identity_full() {
    let problems = run_golden(true).await;
    assert!(
        problems.is_empty(),
        "events differ from fixtures/expected:\n{}",
        problems.join("\n")
    );
}
