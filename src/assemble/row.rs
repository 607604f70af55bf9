//! Read access to one row image of a change: columns by name, decoded as Strapi shows them.

use serde_json::Value;

use super::event::Entry;
use crate::replication::value::decode_text;
use crate::replication::{Datum, Relation, TupleData};
use crate::strapi::ContentType;

/// One tuple with its relation.
#[derive(Clone, Copy)]
pub struct RowImage<'a> {
    pub relation: &'a Relation,
    pub tuple: &'a TupleData,
}

impl<'a> RowImage<'a> {
    pub fn new(relation: &'a Relation, tuple: &'a TupleData) -> Self {
        RowImage { relation, tuple }
    }

    /// The raw datum of a column; `None` when the relation has no such column.
    pub fn datum(&self, column: &str) -> Option<&'a Datum> {
        let i = self.relation.column_index(column)?;
        self.tuple.get(i)
    }

    /// The text of a column, when it is present and not NULL.
    pub fn text(&self, column: &str) -> Option<&'a str> {
        match self.datum(column)? {
            Datum::Text(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Whether a column is NULL (present in the image and null).
    pub fn is_null(&self, column: &str) -> bool {
        matches!(self.datum(column), Some(Datum::Null))
    }

    pub fn int(&self, column: &str) -> Option<i64> {
        self.text(column)?.parse().ok()
    }

    /// The row's public columns as a Strapi REST entry (private and unknown columns left out).
    pub fn entry(&self, content_type: &ContentType) -> Entry {
        let mut entry = Entry::new();
        for (column, datum) in self.relation.columns.iter().zip(self.tuple.iter()) {
            let Some(key) = content_type.public_key_of(&column.name) else {
                continue;
            };
            let value = match datum {
                Datum::Null => Value::Null,
                Datum::Text(b) => decode_text(column.type_oid, &String::from_utf8_lossy(b)),
                // Filled from the old image by the caller; never emitted missing.
                Datum::UnchangedToast | Datum::Binary(_) => continue,
            };
            entry.insert(key.to_owned(), value);
        }
        entry
    }
}
