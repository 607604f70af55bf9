//! What the benches share: the fixture app's Strapi model.

use walcast::strapi::{ContentTypes, StrapiModel};

/// The fixture app's content types, from the core-store row of `00-boot.sql`.
pub fn fixture_types() -> ContentTypes {
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

/// The fixture app's model.
#[allow(dead_code)]
pub fn fixture_model() -> StrapiModel {
    StrapiModel::new(fixture_types())
}
