//! Memory of the document index per row, measured with a counting allocator.
//!
//! `cargo bench --bench index_memory`: fills a `DocumentIndex` for the fixture app with
//! 100,000 article rows (draft + published pairs, two locales), 100,000 tag links and
//! 50,000 component links, and prints the heap bytes per row of each kind.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use walcast::assemble::DocumentIndex;
use walcast::assemble::index::{Cell, Column, RowSource};
use walcast::strapi::{StrapiModel, TableRole};

mod support;

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Row(Vec<(&'static str, Option<String>)>);

impl RowSource for Row {
    fn text(&self, column: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(c, _)| *c == column)
            .and_then(|(_, v)| v.as_deref())
    }
    fn cells(&self) -> Vec<Column<'_>> {
        self.0
            .iter()
            .map(|(c, v)| {
                let cell = v
                    .as_deref()
                    .map_or(Cell::Null, |v| Cell::Value(v.as_bytes()));
                Column {
                    name: c,
                    type_oid: type_of(c),
                    cell,
                }
            })
            .collect()
    }
}

/// The column types of the fixture's tables (text, varchar, int, timestamp), as the
/// snapshot and the WAL report them.
fn type_of(column: &str) -> u32 {
    match column {
        "body" => 25,
        "title" | "slug" | "secret_note" | "document_id" | "locale" | "component_type"
        | "field" => 1043,
        "created_at" | "updated_at" | "published_at" => 1114,
        "order" | "tag_ord" => 701,
        _ => 23,
    }
}

fn fixture_model() -> std::sync::Arc<StrapiModel> {
    let mut types = support::fixture_types();
    types
        .components
        .insert("shared.seo".into(), "components_shared_seos".into());
    std::sync::Arc::new(StrapiModel::new(types))
}

fn measure(label: &str, rows: usize, fill: impl FnOnce()) {
    let before = ALLOCATED.load(Ordering::Relaxed);
    fill();
    let after = ALLOCATED.load(Ordering::Relaxed);
    let per_row = (after - before) as f64 / rows as f64;
    println!("index memory: {label:<28} {rows:>7} rows  {per_row:>6.0} bytes/row");
}

fn main() {
    let model = fixture_model();
    let mut index = DocumentIndex::new(&model.catalog);
    let n = 100_000usize;
    measure("articles (main rows)", n, || {
        for i in 0..n {
            let doc = format!("{:024x}", i / 4);
            let row = Row(vec![
                ("id", Some(i.to_string())),
                ("document_id", Some(doc)),
                ("title", Some(format!("Article number {i}"))),
                ("slug", Some(format!("article-number-{i}"))),
                ("body", Some("lorem ipsum ".repeat(40))),
                ("views", Some((i % 1000).to_string())),
                ("secret_note", None),
                ("created_at", Some("2026-11-25 16:37:05.181".into())),
                ("updated_at", Some("2026-11-25 16:37:05.181".into())),
                (
                    "published_at",
                    (i % 2 == 1).then(|| "2026-11-25 16:37:05.181".into()),
                ),
                ("created_by_id", Some("1".into())),
                ("updated_by_id", Some("1".into())),
                (
                    "locale",
                    Some(if (i / 2) % 2 == 0 { "en" } else { "fr" }.into()),
                ),
            ]);
            index.upsert("articles", &row);
        }
    });
    let Some(TableRole::Link(tags)) = model.catalog.role("articles_tags_lnk") else {
        panic!("articles_tags_lnk is a link table")
    };
    let tags = std::sync::Arc::clone(tags);
    measure("articles_tags_lnk (links)", n, || {
        for i in 0..n {
            let row = Row(vec![
                ("id", Some(i.to_string())),
                ("article_id", Some(i.to_string())),
                ("tag_id", Some((i % 50).to_string())),
                ("tag_ord", Some("1".into())),
            ]);
            index.upsert_link("articles_tags_lnk", &tags, &row);
        }
    });
    measure("articles_cmps (components)", n / 2, || {
        for i in 0..n / 2 {
            let row = Row(vec![
                ("id", Some(i.to_string())),
                ("entity_id", Some(i.to_string())),
                ("cmp_id", Some(i.to_string())),
                ("component_type", Some("shared.seo".into())),
                ("field", Some("seo".into())),
                ("order", Some("1".into())),
            ]);
            index.upsert("articles_cmps", &row);
        }
    });
    println!("index rows in total: {}", index.len());
}
