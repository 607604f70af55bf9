//! What each content type's payload holds beyond its own columns, decided once per schema.
//!
//! A [`PayloadPlans`] turns every configured `populate` setting into a tree of [`Level`]s: a
//! model (content type, component or the upload plugin's file), the fields it shows, and the
//! attributes populated inside it, each with the link table, `_cmps` table or
//! `files_related_mph` rows that hold it. The populate stage runs one query per child of a
//! level; the router walks the same tree to drop relations a recipient may not read and to
//! reshape entries for the `plugin-io` format. Pure: no I/O.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::assemble::PopulateSettings;
use crate::strapi::schema::{AttributeKind, ContentType, ContentTypes};
use crate::strapi::{Nested, Populate, StrapiModel, naming};

/// The upload plugin's file type: what media attributes resolve to.
pub const FILE_UID: &str = "plugin::upload.file";

/// One level of a payload: a model's own fields plus its populated attributes.
#[derive(Debug, Clone)]
pub struct Level {
    pub model: Arc<ContentType>,
    /// The scalar attributes to keep (`id` and `documentId` always stay); `None`: every one.
    pub fields: Option<BTreeSet<String>>,
    /// The populated attributes, in the model's attribute order.
    pub children: Vec<Child>,
}

/// One populated attribute.
#[derive(Debug, Clone)]
pub struct Child {
    pub attribute: String,
    pub kind: ChildKind,
}

/// How a populated attribute is stored, and what it shows.
#[derive(Debug, Clone)]
pub enum ChildKind {
    /// A relation through a link table; `many`: an array, else one entry or `null`.
    Relation {
        link: LinkColumns,
        many: bool,
        target: Level,
    },
    /// `localizations`: the document's rows in the other locales (same view).
    Localizations { target: Level },
    /// Files through `files_related_mph`.
    Media { multiple: bool, target: Level },
    /// A component through the parent's `_cmps` table.
    Component { repeatable: bool, target: Level },
    /// A dynamic zone: components of several types through the parent's `_cmps` table, in
    /// one order, each with `__component`.
    DynamicZone { members: Vec<Level> },
}

/// The link-table columns of a relation as seen from the side being populated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkColumns {
    pub table: String,
    /// The column holding the populated row's id.
    pub parent_column: String,
    /// The column holding the related row's id.
    pub child_column: String,
    /// Orders the related rows of one parent, when the relation has such a column.
    pub order_column: Option<String>,
}

impl ChildKind {
    /// The content type this attribute relates to, for permission checks (`None` for media
    /// and components: Strapi checks neither).
    pub fn related_uid(&self) -> Option<&str> {
        match self {
            ChildKind::Relation { target, .. } | ChildKind::Localizations { target } => {
                Some(&target.model.uid)
            }
            _ => None,
        }
    }

    /// The levels below this attribute.
    pub fn targets(&self) -> Vec<&Level> {
        match self {
            ChildKind::Relation { target, .. }
            | ChildKind::Localizations { target }
            | ChildKind::Media { target, .. }
            | ChildKind::Component { target, .. } => vec![target],
            ChildKind::DynamicZone { members } => members.iter().collect(),
        }
    }
}

impl Level {
    /// Whether a scalar key is shown on this level.
    pub fn shows_field(&self, key: &str) -> bool {
        matches!(key, "id" | "documentId")
            || self
                .fields
                .as_ref()
                .is_none_or(|fields| fields.contains(key))
    }

    /// The child populating `attribute`, if any.
    pub fn child(&self, attribute: &str) -> Option<&Child> {
        self.children.iter().find(|c| c.attribute == attribute)
    }

    /// The dynamic-zone member level for component `uid`.
    pub fn member<'a>(members: &'a [Level], uid: &str) -> Option<&'a Level> {
        members.iter().find(|m| m.model.uid == uid)
    }

    fn collect_related(&self, out: &mut BTreeSet<Arc<str>>) {
        for child in &self.children {
            if let Some(uid) = child.kind.related_uid() {
                out.insert(Arc::from(uid));
            }
            for target in child.kind.targets() {
                target.collect_related(out);
            }
        }
    }
}

/// The payload plan of every content type with something to populate.
#[derive(Debug, Clone, Default)]
pub struct PayloadPlans {
    by_uid: HashMap<String, Arc<Level>>,
    /// The content types each plan's relations reach, at any depth, sorted.
    related: HashMap<String, Arc<[Arc<str>]>>,
}

impl PayloadPlans {
    /// Builds the plans of the configured `populate` settings against the schema.
    pub fn build(model: &StrapiModel, settings: &PopulateSettings) -> Self {
        let mut plans = PayloadPlans::default();
        for (uid, populate) in settings {
            let Some(ct) = model.content_types.by_uid.get(uid) else {
                continue;
            };
            let level = build_level(
                &model.content_types,
                Arc::clone(ct),
                &Nested {
                    fields: None,
                    populate: populate.clone(),
                },
            );
            if level.children.is_empty() {
                continue;
            }
            let mut related = BTreeSet::new();
            level.collect_related(&mut related);
            plans
                .related
                .insert(uid.clone(), related.into_iter().collect());
            plans.by_uid.insert(uid.clone(), Arc::new(level));
        }
        plans
    }

    /// The plan of content type `uid`; `None` when nothing is populated for it.
    pub fn get(&self, uid: &str) -> Option<&Arc<Level>> {
        self.by_uid.get(uid)
    }

    /// The content types a payload of `uid` may contain relations to (at any depth).
    pub fn related_uids(&self, uid: &str) -> &[Arc<str>] {
        self.related.get(uid).map_or(&[], |r| r)
    }
}

/// The level of `model` with the `fields` and `populate` of `nested`.
fn build_level(types: &ContentTypes, model: Arc<ContentType>, nested: &Nested) -> Level {
    let mut children = Vec::new();
    for attribute in &model.attributes {
        // Private attributes never reach a payload, relations included (creator fields).
        if !attribute.is_exposed() {
            continue;
        }
        let Some(inner) = nested.populate.nested(&attribute.name) else {
            continue;
        };
        let kind = match &attribute.kind {
            AttributeKind::Scalar { .. } => continue,
            AttributeKind::Relation { target, .. }
                if attribute.name == "localizations" && *target == model.uid =>
            {
                if !model.localized {
                    continue;
                }
                ChildKind::Localizations {
                    target: build_level(
                        types,
                        Arc::clone(&model),
                        &Nested {
                            fields: inner.fields.clone(),
                            populate: Populate::Nothing,
                        },
                    ),
                }
            }
            AttributeKind::Relation {
                target,
                relation,
                mapped_by,
                join_table,
                ..
            } => {
                let Some(target_model) = types.models.get(target) else {
                    continue;
                };
                let link = match mapped_by {
                    Some(owner_attribute) => inverse_link(&model, target_model, owner_attribute),
                    None if *join_table => {
                        Some(owner_link(&model, target_model, relation, attribute))
                    }
                    None => None,
                };
                let Some(link) = link else { continue };
                ChildKind::Relation {
                    link,
                    many: matches!(relation.as_str(), "oneToMany" | "manyToMany"),
                    target: build_level(types, Arc::clone(target_model), &inner),
                }
            }
            AttributeKind::Media { multiple } => {
                let Some(file) = types.models.get(FILE_UID) else {
                    continue;
                };
                ChildKind::Media {
                    multiple: *multiple,
                    target: build_level(types, Arc::clone(file), &inner),
                }
            }
            AttributeKind::Component {
                component,
                repeatable,
            } => {
                let Some(component) = types.component_models.get(component) else {
                    continue;
                };
                ChildKind::Component {
                    repeatable: *repeatable,
                    target: build_level(types, Arc::clone(component), &inner),
                }
            }
            AttributeKind::DynamicZone { components } => ChildKind::DynamicZone {
                members: components
                    .iter()
                    .filter_map(|uid| types.component_models.get(uid))
                    .map(|c| build_level(types, Arc::clone(c), &inner))
                    .collect(),
            },
        };
        children.push(Child {
            attribute: attribute.name.clone(),
            kind,
        });
    }
    Level {
        model,
        fields: nested.fields.as_ref().map(|f| f.iter().cloned().collect()),
        children,
    }
}

/// The link table a relation attribute declares (`<table>_<attr>_lnk`), read from its owner.
fn owner_link(
    owner: &ContentType,
    target: &ContentType,
    relation: &str,
    attribute: &crate::strapi::Attribute,
) -> LinkColumns {
    let child_column = if target.uid == owner.uid {
        naming::inverse_join_column_name(&target.singular_name)
    } else {
        naming::join_column_name(&target.singular_name)
    };
    LinkColumns {
        table: naming::join_table_name(&owner.table, &attribute.name),
        parent_column: naming::join_column_name(&owner.singular_name),
        child_column,
        // `<target>_ord` exists for the *-to-many sides (Strapi's `hasOrderColumn`).
        order_column: matches!(relation, "oneToMany" | "manyToMany")
            .then(|| naming::order_column_name(&target.singular_name)),
    }
}

/// The link table of the other side's attribute `owner_attribute` (this one is `mappedBy`),
/// read from the target's side.
fn inverse_link(
    model: &ContentType,
    owner: &ContentType,
    owner_attribute: &str,
) -> Option<LinkColumns> {
    let owner_relation = owner.attributes.iter().find_map(|a| match &a.kind {
        AttributeKind::Relation {
            relation,
            join_table: true,
            ..
        } if a.name == owner_attribute => Some(relation.as_str()),
        _ => None,
    })?;
    let this_column = if model.uid == owner.uid {
        naming::inverse_join_column_name(&model.singular_name)
    } else {
        naming::join_column_name(&model.singular_name)
    };
    Some(LinkColumns {
        table: naming::join_table_name(&owner.table, owner_attribute),
        parent_column: this_column,
        child_column: naming::join_column_name(&owner.singular_name),
        // `<owner>_ord` exists for bidirectional many-to-* owners (`hasInverseOrderColumn`).
        order_column: matches!(owner_relation, "manyToOne" | "manyToMany")
            .then(|| naming::order_column_name(&owner.singular_name)),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn fixture_model() -> StrapiModel {
        let mut types = crate::strapi::schema::tests::fixture_schema();
        let app = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/strapi-5.54/app"
        ));
        for (uid, model) in crate::strapi::schema::component_models_from_app_dir(app).unwrap() {
            types.components.insert(uid.clone(), model.table.clone());
            types.component_models.insert(uid, model);
        }
        StrapiModel::new(types)
    }

    fn settings(uid: &str, populate: &str) -> PopulateSettings {
        let v: toml::Table = toml::from_str(&format!("populate = {populate}")).unwrap();
        PopulateSettings::from([(uid.to_owned(), Populate::parse(v.get("populate")).unwrap())])
    }

    fn link(level: &Level, attribute: &str) -> LinkColumns {
        match &level.child(attribute).unwrap().kind {
            ChildKind::Relation { link, .. } => link.clone(),
            other => panic!("{attribute}: {other:?}"),
        }
    }

    #[test]
    fn star_populates_every_public_relation_media_component_and_zone_one_level_deep() {
        let model = fixture_model();
        let plans = PayloadPlans::build(&model, &settings("api::article.article", "'*'"));
        let article = plans.get("api::article.article").unwrap();
        let names: Vec<&str> = article.children.iter().map(|c| &*c.attribute).collect();
        assert_eq!(
            names,
            [
                "author",
                "category",
                "tags",
                "cover",
                "seo",
                "blocks",
                "localizations"
            ],
            "creator fields are private; secretNote is a scalar"
        );
        for child in &article.children {
            for target in child.kind.targets() {
                assert!(
                    target.children.is_empty(),
                    "{} is one level",
                    child.attribute
                );
            }
        }
        assert_eq!(
            plans
                .related_uids("api::article.article")
                .iter()
                .map(|u| &**u)
                .collect::<Vec<_>>(),
            [
                "api::article.article",
                "api::category.category",
                "api::tag.tag",
                "plugin::users-permissions.user"
            ]
        );
        assert_eq!(
            link(article, "tags"),
            LinkColumns {
                table: "articles_tags_lnk".into(),
                parent_column: "article_id".into(),
                child_column: "tag_id".into(),
                order_column: Some("tag_ord".into()),
            }
        );
        assert_eq!(link(article, "author").order_column, None);
        let ChildKind::DynamicZone { members } = &article.child("blocks").unwrap().kind else {
            panic!()
        };
        assert_eq!(members.len(), 2);
    }

    #[test]
    fn the_inverse_side_reads_the_owners_link_table() {
        let model = fixture_model();
        let plans = PayloadPlans::build(&model, &settings("api::category.category", "'*'"));
        let category = plans.get("api::category.category").unwrap();
        assert_eq!(
            link(category, "articles"),
            LinkColumns {
                table: "articles_category_lnk".into(),
                parent_column: "category_id".into(),
                child_column: "article_id".into(),
                order_column: Some("article_ord".into()),
            }
        );
        // Tags have nothing to populate: no plan, no related types.
        let plans = PayloadPlans::build(&model, &settings("api::tag.tag", "'*'"));
        assert!(plans.get("api::tag.tag").is_none());
        assert!(plans.related_uids("api::tag.tag").is_empty());
    }

    #[test]
    fn object_syntax_selects_fields_and_nests() {
        let model = fixture_model();
        let plans = PayloadPlans::build(
            &model,
            &settings(
                "api::article.article",
                "{ author = { fields = ['username'], populate = ['role'] }, seo = true }",
            ),
        );
        let article = plans.get("api::article.article").unwrap();
        assert_eq!(article.children.len(), 2);
        let ChildKind::Relation { target: author, .. } = &article.child("author").unwrap().kind
        else {
            panic!()
        };
        assert!(author.shows_field("username") && author.shows_field("documentId"));
        assert!(!author.shows_field("email"));
        assert_eq!(
            link(author, "role"),
            LinkColumns {
                table: "up_users_role_lnk".into(),
                parent_column: "user_id".into(),
                child_column: "role_id".into(),
                order_column: None,
            }
        );
        assert!(
            plans
                .related_uids("api::article.article")
                .iter()
                .any(|u| &**u == "plugin::users-permissions.role")
        );
    }
}
