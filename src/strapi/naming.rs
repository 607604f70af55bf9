//! Strapi's naming rules for tables and columns, including the 55-character shortening.
//!
//! A port of `@strapi/database`'s `identifiers` (`getNameFromTokens`, SHAKE-256 hashes of 5
//! hex characters) and lodash `snakeCase`, checked against the real 5.54 outputs listed in
//! the reference (`strapi-v5-db.md` §2.5). Pure functions.

use sha3::Shake256;
use sha3::digest::{ExtendableOutput, Update, XofReader};

/// Longest identifier Strapi creates.
pub const IDENTIFIER_MAX_LENGTH: usize = 55;
const HASH_LENGTH: usize = 5;

/// One part of an identifier.
#[derive(Debug, Clone, Copy)]
pub struct Token<'a> {
    pub name: &'a str,
    /// Incompressible tokens keep their (short) name whole.
    pub compressible: bool,
    /// Always used in place of `name` when set (`links` → `lnk`).
    pub short_name: Option<&'a str>,
}

impl<'a> Token<'a> {
    pub fn compressible(name: &'a str) -> Self {
        Token {
            name,
            compressible: true,
            short_name: None,
        }
    }
    pub fn fixed(name: &'a str, short_name: &'a str) -> Self {
        Token {
            name,
            compressible: false,
            short_name: Some(short_name),
        }
    }
    fn text(&self) -> &'a str {
        self.short_name.unwrap_or(self.name)
    }
}

/// SHAKE-256 of `data`, lowercase hex, first `len` characters.
pub fn create_hash(data: &str, len: usize) -> String {
    let mut hasher = Shake256::default();
    hasher.update(data.as_bytes());
    let mut reader = hasher.finalize_xof();
    let mut out = vec![0u8; len.div_ceil(2)];
    reader.read(&mut out);
    let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
    hex[..len].to_owned()
}

/// `getNameFromTokens`: joins with `_`, shortening compressible tokens to fit 55.
pub fn name_from_tokens(tokens: &[Token<'_>]) -> String {
    let full: Vec<&str> = tokens.iter().map(Token::text).collect();
    let joined = full.join("_");
    if joined.len() <= IDENTIFIER_MAX_LENGTH {
        return joined;
    }
    let fixed_len: usize = tokens
        .iter()
        .filter(|t| !t.compressible)
        .map(|t| t.text().len())
        .sum();
    let compressible: Vec<usize> = (0..tokens.len())
        .filter(|&i| tokens[i].compressible)
        .collect();
    if compressible.is_empty() {
        return joined;
    }
    let available = IDENTIFIER_MAX_LENGTH
        .saturating_sub(fixed_len)
        .saturating_sub(tokens.len() - 1);
    let per_token = available / compressible.len();
    let mut surplus = available % compressible.len();
    let mut allocation = vec![0usize; tokens.len()];
    for &i in &compressible {
        let len = tokens[i].name.len();
        if len < per_token {
            allocation[i] = len;
            surplus += per_token - len;
        } else {
            allocation[i] = per_token;
        }
    }
    while surplus > 0 {
        let mut gave = false;
        for &i in &compressible {
            if surplus > 0 && allocation[i] < tokens[i].name.len() {
                allocation[i] += 1;
                surplus -= 1;
                gave = true;
            }
        }
        if !gave {
            break;
        }
    }
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.compressible && t.name.len() > allocation[i] {
                let keep = allocation[i].saturating_sub(HASH_LENGTH);
                format!("{}{}", &t.name[..keep], create_hash(t.name, HASH_LENGTH))
            } else {
                t.text().to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// The table of a content type or component with this `collectionName`.
pub fn table_name(collection_name: &str) -> String {
    name_from_tokens(&[Token::compressible(collection_name)])
}

/// The column of a scalar attribute.
pub fn column_name(attribute: &str) -> String {
    name_from_tokens(&[Token::compressible(&snake_case(attribute))])
}

/// The link table of relation `attribute` owned by `table`: `<table>_<attr>_lnk`.
pub fn join_table_name(table: &str, attribute: &str) -> String {
    name_from_tokens(&[
        Token::compressible(&snake_case(table)),
        Token::compressible(&snake_case(attribute)),
        Token::fixed("links", "lnk"),
    ])
}

/// The `_cmps` table of a content type or component table.
pub fn component_join_table_name(table: &str) -> String {
    name_from_tokens(&[
        Token::compressible(table),
        Token::fixed("components", "cmps"),
    ])
}

/// `<singular>_id` column of a link table.
pub fn join_column_name(singular_name: &str) -> String {
    name_from_tokens(&[
        Token::compressible(&snake_case(singular_name)),
        Token::fixed("id", "id"),
    ])
}

/// `inv_<singular>_id`, the target column of a self relation.
pub fn inverse_join_column_name(singular_name: &str) -> String {
    name_from_tokens(&[
        Token::fixed("inv", "inv"),
        Token::compressible(&snake_case(singular_name)),
        Token::fixed("id", "id"),
    ])
}

/// `<singular>_ord` order column.
pub fn order_column_name(singular_name: &str) -> String {
    name_from_tokens(&[
        Token::compressible(&snake_case(singular_name)),
        Token::fixed("order", "ord"),
    ])
}

/// lodash `snakeCase`: words split at case changes, digits and separators, lowercased.
pub fn snake_case(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        if let Some(&prev) = current.chars().last().as_ref() {
            let next = chars.get(i + 1).copied();
            let boundary = (prev.is_lowercase() && c.is_uppercase())
                || (prev.is_alphabetic() && c.is_numeric())
                || (prev.is_numeric() && c.is_alphabetic())
                || (prev.is_uppercase()
                    && c.is_uppercase()
                    && next.is_some_and(char::is_lowercase));
            if boundary {
                words.push(std::mem::take(&mut current));
            }
        }
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
        .iter()
        .map(|w| w.to_lowercase())
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_strapi() {
        assert_eq!(
            create_hash("very_long_content_type_name_examples", 5),
            "39152"
        );
        assert_eq!(
            create_hash("some_very_long_relation_attribute_name", 5),
            "af9ac"
        );
        assert_eq!(create_hash("myData", 5), "93da1");
    }

    #[test]
    fn shortening_matches_strapi_5_54_outputs() {
        assert_eq!(
            join_table_name(
                "very_long_content_type_name_examples",
                "some_very_long_relation_attribute_name"
            ),
            "very_long_content_ty39152_some_very_long_relataf9ac_lnk"
        );
        assert_eq!(
            join_table_name(
                "components_shared_very_long_component_names",
                "another_long_attribute_name"
            ),
            "components_shared_ved2f2f_another_long_attribu3ef8d_lnk"
        );
        assert_eq!(
            component_join_table_name(
                "components_shared_some_extremely_long_component_collection_names"
            ),
            "components_shared_some_extremely_long_compone2b6cc_cmps"
        );
        assert_eq!(
            column_name("a_very_long_attribute_name_that_goes_beyond_fifty_five_chars_total"),
            "a_very_long_attribute_name_that_goes_beyond_fifty_87094"
        );
        assert_eq!(
            order_column_name("very_long_singular_name_for_some_content_type_with_many_words"),
            "very_long_singular_name_for_some_content_type_1391c_ord"
        );
    }

    #[test]
    fn short_names_are_always_used() {
        assert_eq!(join_table_name("articles", "tags"), "articles_tags_lnk");
        assert_eq!(join_column_name("article"), "article_id");
        assert_eq!(inverse_join_column_name("article"), "inv_article_id");
        assert_eq!(order_column_name("tag"), "tag_ord");
        assert_eq!(component_join_table_name("articles"), "articles_cmps");
        assert_eq!(join_column_name("api-token"), "api_token_id");
    }

    #[test]
    fn snake_case_like_lodash() {
        assert_eq!(snake_case("secretNote"), "secret_note");
        assert_eq!(snake_case("isFeatured"), "is_featured");
        assert_eq!(snake_case("status2"), "status_2");
        assert_eq!(snake_case("apiKey"), "api_key");
        assert_eq!(snake_case("meta_title"), "meta_title");
        assert_eq!(snake_case("XMLHttpRequest"), "xml_http_request");
        assert_eq!(snake_case("users-permissions"), "users_permissions");
    }
}
