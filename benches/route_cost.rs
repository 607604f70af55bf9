//! Permission check + sanitize cost per change (issue 10, item 4).
//!
//! `cargo bench --bench route_cost`: a `Router` over a permission model of 10 users-permissions
//! roles (5 may read articles, 5 may not) routes one `api::article.article` update: which role
//! rooms hear it, then the payload is sanitized (private fields out) and serialized once per
//! variant. No database client exists in this process, so the path makes zero DB queries by
//! construction. Subscribers join role rooms, so the per-change routing cost does not depend on
//! how many there are (10,000 here, 1,000 per role); delivering to them is socketioxide's
//! fan-out, measured by `make bench`'s fan-out table, not here.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use serde_json::{Value, json};
use walcast::assemble::{Action, DocumentEvent, DocumentKey, EventOffset, TransactionEvents, View};
use walcast::config::Config;
use walcast::replication::Lsn;
use walcast::route::permissions::RoleGrants;
use walcast::route::{PermissionModel, Router};

mod support;
use support::fixture_model;

const ROLES: i64 = 10;
const SUBSCRIBERS: usize = 10_000;

fn permissions() -> PermissionModel {
    let mut roles = BTreeMap::new();
    for id in 1..=ROLES {
        let mut actions: HashSet<String> = HashSet::new();
        if id % 2 == 0 {
            actions.insert("api::article.article.find".into());
            actions.insert("api::article.article.findOne".into());
        }
        actions.insert("api::category.category.find".into());
        roles.insert(
            id,
            RoleGrants {
                name: format!("role{id}"),
                role_type: if id == 1 {
                    "public".into()
                } else {
                    format!("role{id}")
                },
                actions,
                draft: false,
            },
        );
    }
    PermissionModel {
        roles,
        public_role: Some(1),
        ..PermissionModel::default()
    }
}

fn change(sequence: u32) -> TransactionEvents {
    let entry = json!({
        "id": 1000 + sequence,
        "documentId": "abcdefghijklmnopqrstuvwx",
        "title": "Article 1000",
        "slug": "article-1000",
        "body": "Lorem ipsum dolor sit amet. ".repeat(8),
        "views": 42,
        "secretNote": "secret 1000",
        "createdAt": "2026-11-25T20:00:00.000Z",
        "updatedAt": "2026-11-25T20:00:00.000Z",
        "publishedAt": "2026-11-25T20:00:00.000Z",
        "locale": "en",
    });
    let Value::Object(entry) = entry else {
        unreachable!()
    };
    TransactionEvents {
        commit_lsn: Lsn(0x1000),
        end_lsn: Lsn(0x1010),
        events: vec![DocumentEvent {
            key: DocumentKey {
                uid: Arc::from("api::article.article"),
                document_id: "abcdefghijklmnopqrstuvwx".into(),
                locale: Some("en".into()),
            },
            singular_name: Arc::from("article"),
            view: View::Published,
            action: Action::Update,
            entry: Some(Arc::new(entry)),
            row_id: Some(1000),
            deleted_id: None,
            offset: EventOffset {
                commit_lsn: Lsn(0x1000),
                sequence,
            },
        }],
        ..TransactionEvents::default()
    }
}

fn route_cost(c: &mut Criterion) {
    let model = fixture_model();
    let router = Router::new(&Config::default(), permissions());
    let tx = change(0);
    let deliveries = router.route(&tx, &model);
    let rooms: usize = deliveries.iter().map(|d| d.rooms.len()).sum();
    assert!(
        rooms > 0 && rooms < ROLES as usize,
        "some roles hear it, some do not"
    );
    eprintln!(
        "route_cost: {ROLES} roles ({SUBSCRIBERS} subscribers in their rooms), {} deliveries to {rooms} rooms per change",
        deliveries.len()
    );
    c.bench_function("route + sanitize + serialize, one change, 10 roles", |b| {
        b.iter(|| black_box(router.route(black_box(&tx), &model)))
    });
}

criterion_group!(benches, route_cost);
criterion_main!(benches);
