//! Payloads (spec §4) against what Strapi itself answered: the captured Strapi actions are
//! replayed through real logical replication and walcast's payload for each is compared,
//! field for field, with the REST response Strapi gave for the same entry
//! (`fixtures/strapi-5.54/captures/default-identity/*.http`). Also: secrets never leave
//! walcast in either format (payload tap and a real socket.io client), payloads differ per
//! recipient by what it may read, and populating a 500-article transaction takes a fixed
//! number of queries.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use walcast::assemble::{TransactionEvents, View};
use walcast::config::PayloadFormat;
use walcast::populate::plan::PayloadPlans;
use walcast::route::sanitize::Sanitizer;
use walcast::route::{PayloadRules, ReadableSet};
use walcast::service::{RoutedTransaction, Taps};

use crate::support::{JsClient, TestDatabase, Walcast, repo};

const AUTHENTICATED: &str = "io-role-authenticated";
const PUBLIC: &str = "io-role-public";

/// The golden tests' configuration (every type, every action, `populate = '*'`, both views)
/// in `format`.
fn config(db: &TestDatabase, format: PayloadFormat) -> walcast::config::Config {
    let mut config = crate::golden::golden_config(db, false);
    config.events.payload = format;
    config
}

/// A walcast with both taps, on a fresh database where (from action 06 on) the Authenticated
/// role may read every type an article relates to (as the full-access token of the captures
/// could) and Public only articles and comments.
struct Run {
    db: TestDatabase,
    walcast: Walcast,
    payloads: UnboundedReceiver<Arc<RoutedTransaction>>,
    transactions: UnboundedReceiver<Arc<TransactionEvents>>,
}

impl Run {
    async fn start(format: PayloadFormat) -> Self {
        let db = TestDatabase::new().await;
        let (payload_tx, payloads) = mpsc::unbounded_channel();
        let (transaction_tx, transactions) = mpsc::unbounded_channel();
        let taps = Taps {
            transactions: Some(transaction_tx),
            payloads: Some(payload_tx),
        };
        let walcast = Walcast::start_with_taps(config(&db, format), taps).await;
        Run {
            db,
            walcast,
            payloads,
            transactions,
        }
    }

    /// Applies SQL (a replay file, or any batch) and returns what walcast routed and folded of
    /// it, up to a marker transaction written after it.
    async fn apply(&mut self, sql: &str) -> Applied {
        self.db.client.batch_execute(sql).await.unwrap();
        let marker: String = self
            .db
            .client
            .query_one(
                "SELECT pg_logical_emit_message(true, 'walcast-payloads', 'marker')::text",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let marker: walcast::replication::Lsn = marker.parse().unwrap();
        let mut applied = Applied::default();
        loop {
            let routed = next(&mut self.payloads).await;
            if routed.commit_lsn >= marker {
                break;
            }
            applied.routed.push(routed);
        }
        loop {
            let tx = next(&mut self.transactions).await;
            if tx.commit_lsn >= marker {
                break;
            }
            applied.folded.push(tx);
        }
        applied
    }

    /// Replays one captured action. Right after action 06 (which inserts permission rows with
    /// fixed ids and moves the sequence past them), grants the test's permissions.
    async fn replay(&mut self, action: &str) -> Applied {
        let sql = std::fs::read_to_string(crate::support::replay_file(action)).unwrap();
        let applied = self.apply(&sql).await;
        if action == "06" {
            for action in [
                "api::article.article.find",
                "api::category.category.find",
                "api::tag.tag.find",
                "api::comment.comment.find",
                "plugin::users-permissions.user.find",
            ] {
                self.db.grant("authenticated", action).await;
            }
            self.db.grant("public", "api::article.article.find").await;
            self.db.grant("public", "api::comment.comment.find").await;
            self.apply("").await;
        }
        applied
    }

    async fn stop(self) {
        self.walcast.stop().await;
        self.db.drop_all().await;
    }
}

async fn next<T>(rx: &mut UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a transaction reached the tap within 30 s")
        .expect("tap open")
}

/// What walcast made of one applied batch.
#[derive(Default)]
struct Applied {
    routed: Vec<Arc<RoutedTransaction>>,
    folded: Vec<Arc<TransactionEvents>>,
}

impl Applied {
    /// The payload `room` received for the last `event` (published view).
    fn payload(&self, event: &str, room: &str) -> Value {
        self.routed
            .iter()
            .flat_map(|tx| &tx.deliveries)
            .rfind(|d| d.event_name == event && d.rooms.iter().any(|r| r == room))
            .map(|d| serde_json::from_str(d.payload.get()).unwrap())
            .unwrap_or_else(|| panic!("no {event} delivered to {room}"))
    }

    /// Every serialized payload routed.
    fn serialized(&self) -> Vec<String> {
        self.routed
            .iter()
            .flat_map(|tx| &tx.deliveries)
            .map(|d| d.payload.get().to_owned())
            .collect()
    }

    /// The draft-view payload of `event` as a recipient that reads everything gets it (draft
    /// sockets are not routed yet; this is the same builder the router uses).
    fn draft_payload(&self, event: &str, rules: &PayloadRules) -> Value {
        let event = self
            .folded
            .iter()
            .flat_map(|tx| &tx.events)
            .rfind(|e| e.event_name() == event && e.view == View::Draft)
            .unwrap_or_else(|| panic!("no draft {event}"));
        let readable = ReadableSet::of(rules.related_uids(event), |_| true);
        serde_json::from_str(rules.build(event, &readable).get()).unwrap()
    }
}

/// The `data` of Strapi's response to the request whose line starts with `request`, in a
/// capture file.
fn rest_data(capture: &str, request: &str) -> Value {
    let dir = repo().join("fixtures/strapi-5.54/captures/default-identity");
    let path = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{capture}-")) && n.ends_with(".http"))
        })
        .unwrap_or_else(|| panic!("capture {capture}"));
    let text = std::fs::read_to_string(&path).unwrap();
    for block in text.split("\n###\n").skip(1) {
        if !block.trim_start().starts_with(request) {
            continue;
        }
        let (_, response) = block.split_once("\n--> HTTP").expect("a response");
        let json = &response[response.find('\n').unwrap()..];
        let body: Value =
            serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return body["data"].clone();
    }
    panic!("{}: no request {request}", path.display());
}

/// Every difference between Strapi's entry and walcast's, by path.
fn differences(path: &str, rest: &Value, ours: &Value, out: &mut Vec<String>) {
    match (rest, ours) {
        (Value::Object(r), Value::Object(o)) => {
            for (k, rv) in r {
                let p = format!("{path}.{k}");
                match o.get(k) {
                    Some(ov) => differences(&p, rv, ov, out),
                    None => out.push(format!("{p} missing")),
                }
            }
            for k in o.keys().filter(|k| !r.contains_key(*k)) {
                out.push(format!("{path}.{k} extra"));
            }
        }
        (Value::Array(r), Value::Array(o)) if r.len() == o.len() => {
            for (i, (rv, ov)) in r.iter().zip(o).enumerate() {
                differences(&format!("{path}[{i}]"), rv, ov, out);
            }
        }
        _ if rest == ours => {}
        _ => out.push(format!("{path}: Strapi {rest} walcast {ours}")),
    }
}

/// Differences that are walcast's by design: the sensitive-name rule of spec §4 removes every
/// key containing `hash` (the media file's `hash`, also inside `formats`) and `apiKey`.
fn by_design(difference: &str) -> bool {
    (difference.starts_with("$.cover.") && difference.ends_with(".hash missing"))
        || difference == "$.apiKey missing"
}

/// Compares walcast's payload with Strapi's entry. `rest_populate`: the attributes the REST
/// call populated, when narrower than walcast's `populate = '*'` (the others are extra by
/// nature: the client did not ask Strapi for them).
fn compare(
    what: &str,
    rest: &Value,
    ours: &Value,
    rest_populate: Option<&[&str]>,
    problems: &mut Vec<String>,
    designed: &mut Vec<String>,
) {
    let mut found = Vec::new();
    differences("$", rest, ours, &mut found);
    let populated = [
        "author",
        "category",
        "tags",
        "cover",
        "seo",
        "blocks",
        "localizations",
        "articles",
        "article",
    ];
    for d in found {
        let unasked = rest_populate.is_some_and(|asked| {
            populated
                .iter()
                .any(|a| !asked.contains(a) && d == format!("$.{a} extra"))
        });
        if by_design(&d) {
            designed.push(format!("{what}: {d}"));
        } else if !unasked {
            problems.push(format!("{what}: {d}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_equal_strapis_rest_responses() {
    let mut run = Run::start(PayloadFormat::Strapi).await;
    let model = walcast::strapi::StrapiModel::load(&run.db.client)
        .await
        .unwrap();
    let rules = PayloadRules {
        format: PayloadFormat::Strapi,
        sanitizer: Sanitizer::default(),
        plans: Arc::new(PayloadPlans::build(
            &model,
            &walcast::service::populate_settings(&config(&run.db, PayloadFormat::Strapi)),
        )),
    };
    let mut problems = Vec::new();
    let mut designed = Vec::new();
    for n in 1..=41 {
        let action = format!("{n:02}");
        let applied = run.replay(&action).await;
        let mut check = |event: &str, rest: Value, populate: Option<&[&str]>| {
            let ours = applied.payload(event, AUTHENTICATED);
            compare(
                &format!("{action} {event}"),
                &rest,
                &ours,
                populate,
                &mut problems,
                &mut designed,
            );
        };
        match n {
            7 => check("category:create", rest_data("07", "POST"), Some(&[])),
            9 => check("tag:create", rest_data("09", "POST"), Some(&[])),
            // PUT ?status=published&populate=*: the published row, created and published.
            14 => {
                let rest = rest_data("14", "PUT");
                check("article:create", rest.clone(), None);
                check("article:publish", rest, None);
            }
            // The GET of action 16 (no writes) reads the entry action 15 re-published.
            15 => check("article:update", rest_data("16", "GET"), None),
            24 => check("article:update", rest_data("24", "PUT"), Some(&["tags"])),
            26 => check(
                "article:update",
                rest_data("26", "PUT"),
                Some(&["category"]),
            ),
            30 => check("article:update", rest_data("30", "PUT"), Some(&["blocks"])),
            31 => check("article:update", rest_data("31", "PUT"), Some(&["cover"])),
            32 => check("comment:create", rest_data("32", "POST"), Some(&[])),
            35 => check("comment:create", rest_data("35", "POST"), Some(&[])),
            41 => check("article:create", rest_data("41", "POST"), None),
            _ => {}
        }
        if n == 15 {
            // Public may read articles, not users, tags or categories: its variant of the same
            // event lacks those relations; one serialization each.
            let public = applied.payload("article:update", PUBLIC);
            let full = applied.payload("article:update", AUTHENTICATED);
            for gone in ["author", "category", "tags"] {
                assert!(
                    public.get(gone).is_none() && full.get(gone).is_some(),
                    "{gone}"
                );
            }
            assert_eq!(public["seo"], full["seo"]);
            let variants = applied
                .routed
                .iter()
                .flat_map(|tx| &tx.deliveries)
                .filter(|d| d.event_name == "article:update")
                // The draft view goes to the `:draft` rooms as its own delivery.
                .filter(|d| d.rooms.iter().all(|r| !r.ends_with(":draft")))
                .count();
            assert_eq!(
                variants, 2,
                "one delivery per variant, not per room or socket"
            );
        }
        // Draft-view answers (REST `status=draft`): the draft rows, draft relations.
        match n {
            12 => compare(
                "12 draft article:create",
                &rest_data("12", "POST"),
                &applied.draft_payload("article:create", &rules),
                None,
                &mut problems,
                &mut designed,
            ),
            28 => compare(
                "28 draft article:update",
                &rest_data("28", "PUT"),
                &applied.draft_payload("article:update", &rules),
                Some(&["seo"]),
                &mut problems,
                &mut designed,
            ),
            _ => {}
        }
    }
    run.stop().await;
    eprintln!("differences by design:\n{}", designed.join("\n"));
    for expected in [
        "14 article:create: $.cover.hash missing",
        "14 article:create: $.cover.formats.small.hash missing",
        "32 comment:create: $.apiKey missing",
    ] {
        assert!(designed.iter().any(|d| d == expected), "{expected}");
    }
    assert!(
        problems.is_empty(),
        "payloads differ from Strapi's REST responses:\n{}",
        problems.join("\n")
    );
}

/// Text that must never appear in anything walcast sends: the private `secretNote` (and its
/// value), the comment's `apiKey` (and its value), users' password fields and hashes.
const SECRETS: &[&str] = &[
    "secretNote",
    "do-not-leak",
    "apiKey",
    "sk_live_should_be_stripped",
    "password",
    "Password",
    "resetPasswordToken",
    "confirmationToken",
    "$2a$",
    "$2b$",
];

fn assert_no_secrets(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} contains {secret:?}: {text}");
    }
}

async fn secrets_never_leave(format: PayloadFormat) -> (Vec<Value>, Run) {
    let mut run = Run::start(format).await;
    let mut client = JsClient::connect(&run.walcast.url(), json!({})).await;
    let mut routed = Vec::new();
    for n in 1..=46 {
        let applied = run.replay(&format!("{n:02}")).await;
        for text in applied.serialized() {
            assert_no_secrets("a routed payload", &text);
            routed.push(text);
        }
    }
    // A custom event after everything: once public hears it, it heard all before it.
    run.db
        .client
        .batch_execute(
            "SELECT pg_logical_emit_message(true, 'walcast', '{\"event\":\"test:done\",\"data\":{},\"rooms\":[\"io-role-public\"]}')",
        )
        .await
        .unwrap();
    client.event("test:done", Duration::from_secs(20)).await;
    let mut received = Vec::new();
    for line in &client.seen {
        assert_no_secrets("an event a socket received", &line.to_string());
        if line["type"] == "event" {
            received.push(line.clone());
        }
    }
    assert!(
        received.iter().any(|l| l["name"] == "comment:create"),
        "the public socket heard the comments"
    );
    assert!(routed.len() > 20, "payloads were routed: {}", routed.len());
    client.close().await;
    (received, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leave_walcast_in_the_strapi_format() {
    let (received, run) = secrets_never_leave(PayloadFormat::Strapi).await;
    // Public may read articles but not users, tags or categories: its payloads keep the
    // article's own fields, components, media and localizations, nothing it may not read.
    let update = received
        .iter()
        .rev()
        .find(|l| l["name"] == "article:update" && l["args"][0]["seo"].is_object())
        .expect("an article update with its seo component");
    let article = &update["args"][0];
    for gone in ["author", "category", "tags"] {
        assert!(
            article.get(gone).is_none(),
            "{gone} reached public: {article}"
        );
    }
    assert!(article["documentId"].is_string() && article["localizations"].is_array());
    assert!(
        update["args"][1].is_string(),
        "the offset trails the payload"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_io_format_is_the_plugins_documented_shape() {
    let (received, run) = secrets_never_leave(PayloadFormat::PluginIo).await;
    let update = received
        .iter()
        .rev()
        .find(|l| {
            l["name"] == "article:update" && l["args"][0]["data"]["attributes"]["cover"].is_object()
        })
        .expect("an article update");
    let payload = &update["args"][0];
    assert_eq!(payload["meta"], json!({}));
    let data = payload["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["id", "attributes"]);
    assert!(data["id"].is_i64());
    let attributes = &data["attributes"];
    assert!(attributes["documentId"].is_string() && attributes.get("id").is_none());
    // Media and relations as `{data: {id, attributes}}`, components as `{id, ...}`.
    let cover = &attributes["cover"]["data"];
    assert!(
        cover["id"].is_i64() && cover["attributes"]["url"].is_string(),
        "{cover}"
    );
    assert!(attributes["localizations"]["data"].is_array());
    assert!(attributes["seo"]["id"].is_i64() && attributes["seo"]["metaTitle"].is_string());
    let delete = received
        .iter()
        .rev()
        .find(|l| l["name"] == "article:delete")
        .unwrap();
    let data = delete["args"][0]["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["id", "documentId"]);
    assert_eq!(delete["args"][0].as_object().unwrap().len(), 1);
    run.stop().await;
}

/// One transaction inserting `count` published articles, each with an author, a category, a
/// tag, a cover, an seo component and a quote block.
fn bulk_articles(prefix: &str, count: u32) -> String {
    format!(
        "DO $$ DECLARE a int; s int; q int; BEGIN
           FOR g IN 1..{count} LOOP
             INSERT INTO articles (document_id, title, slug, views, created_at, updated_at, published_at, locale)
               VALUES ('{prefix}' || g, 'Bulk ' || g, '{prefix}-' || g, g, now(), now(), now(), 'en') RETURNING id INTO a;
             INSERT INTO articles_author_lnk (article_id, user_id) VALUES (a, 1);
             INSERT INTO articles_category_lnk (article_id, category_id, article_ord) VALUES (a, 2, 1);
             INSERT INTO articles_tags_lnk (article_id, tag_id, tag_ord) VALUES (a, 1, 1);
             INSERT INTO files_related_mph (file_id, related_id, related_type, field, \"order\")
               VALUES (2, a, 'api::article.article', 'cover', 1);
             INSERT INTO components_shared_seos (meta_title) VALUES ('seo ' || g) RETURNING id INTO s;
             INSERT INTO components_shared_quotes (text) VALUES ('quote ' || g) RETURNING id INTO q;
             INSERT INTO articles_cmps (entity_id, cmp_id, component_type, field, \"order\")
               VALUES (a, s, 'shared.seo', 'seo', NULL), (a, q, 'shared.quote', 'blocks', 1);
           END LOOP; END $$;"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn populating_500_articles_takes_as_many_queries_as_populating_2() {
    let mut run = Run::start(PayloadFormat::Strapi).await;
    for n in 1..=36 {
        run.replay(&format!("{n:02}")).await;
    }
    let mut measured = Vec::new();
    for (prefix, count) in [("warm", 2), ("two", 2), ("bulk", 500)] {
        let applied = run.apply(&bulk_articles(prefix, count)).await;
        let tx = applied
            .routed
            .iter()
            .find(|tx| {
                tx.deliveries
                    .iter()
                    .any(|d| d.event_name == "article:create")
            })
            .expect("the bulk transaction was routed");
        let creates: Vec<Value> = tx
            .deliveries
            .iter()
            .filter(|d| {
                d.event_name == "article:create" && d.rooms.iter().any(|r| r == AUTHENTICATED)
            })
            .map(|d| serde_json::from_str(d.payload.get()).unwrap())
            .collect();
        assert_eq!(creates.len(), count as usize);
        for article in &creates {
            assert_eq!(article["author"]["username"], "reader1", "{article}");
            assert_eq!(article["category"]["name"], "Opinion");
            assert_eq!(article["tags"][0]["name"], "rust");
            assert_eq!(article["cover"]["name"], "cover-blue.png");
            assert!(
                article["seo"]["metaTitle"]
                    .as_str()
                    .unwrap()
                    .starts_with("seo ")
            );
            assert_eq!(article["blocks"][0]["__component"], "shared.quote");
            assert_eq!(article["localizations"], json!([]));
        }
        measured.push((count, tx.populate));
    }
    let (_, warm) = measured[0];
    let (_, two) = measured[1];
    let (_, bulk) = measured[2];
    eprintln!("populate stats: warm-up {warm:?}, 2 articles {two:?}, 500 articles {bulk:?}");
    // Articles: author, category, tags, cover, seo, the two block types, localizations (8);
    // category 2, whose `articles` changed without its row being written: its row and its
    // articles (2).
    assert_eq!(
        bulk.queries, 10,
        "one query per populated attribute per type"
    );
    assert_eq!(
        bulk.queries, two.queries,
        "independent of the number of articles"
    );
    assert_eq!(bulk.prepares, 0, "statements are prepared once and reused");
    run.stop().await;
}
