//! Column text + type OID → the JSON value Strapi's REST API would show.
//!
//! The walsender session is pinned to `DateStyle=ISO, TimeZone=UTC` (see `connection.rs`),
//! so timestamps arrive as `2026-11-25 16:45:58.684` (or `…+00`) and become
//! `2026-11-25T16:45:58.684Z`. Integers are numbers, bigints past 2^53 strings, json/jsonb
//! parsed, arrays decoded element by element. Unknown types stay strings. Pure; never panics.

use serde_json::{Number, Value};

/// Type OIDs walcast decodes specially (from `pg_type.dat`).
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const JSONB: u32 = 3802;
    pub const BOOL_ARRAY: u32 = 1000;
    pub const INT2_ARRAY: u32 = 1005;
    pub const INT4_ARRAY: u32 = 1007;
    pub const TEXT_ARRAY: u32 = 1009;
    pub const VARCHAR_ARRAY: u32 = 1015;
    pub const INT8_ARRAY: u32 = 1016;
    pub const FLOAT4_ARRAY: u32 = 1021;
    pub const FLOAT8_ARRAY: u32 = 1022;
    pub const TIMESTAMP_ARRAY: u32 = 1115;
    pub const DATE_ARRAY: u32 = 1182;
    pub const TIMESTAMPTZ_ARRAY: u32 = 1185;
    pub const NUMERIC_ARRAY: u32 = 1231;
    pub const JSON_ARRAY: u32 = 199;
    pub const JSONB_ARRAY: u32 = 3807;
}

/// The largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Decodes one column's text form.
pub fn decode_text(type_oid: u32, text: &str) -> Value {
    match type_oid {
        oid::BOOL => Value::Bool(text == "t"),
        oid::INT2 | oid::INT4 | oid::OID => text
            .parse::<i64>()
            .map(|n| Value::Number(n.into()))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        oid::INT8 => match text.parse::<i64>() {
            Ok(n) if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&n) => Value::Number(n.into()),
            _ => Value::String(text.to_owned()),
        },
        oid::FLOAT4 | oid::FLOAT8 | oid::NUMERIC => decode_float(text),
        oid::JSON | oid::JSONB => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        }
        oid::TIMESTAMP | oid::TIMESTAMPTZ => Value::String(iso_timestamp(text)),
        oid::TIME => Value::String(iso_time(text)),
        oid::DATE => Value::String(text.to_owned()),
        _ => match array_element_type(type_oid) {
            Some(element) => decode_array(element, text),
            None => Value::String(text.to_owned()),
        },
    }
}

fn decode_float(text: &str) -> Value {
    text.parse::<f64>()
        .ok()
        .and_then(|f| {
            if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER as f64 && !text.contains(['e', 'E'])
            {
                Some(Number::from(f as i64))
            } else {
                Number::from_f64(f)
            }
        })
        .map(Value::Number)
        // NaN, Infinity and numerics beyond f64 stay strings rather than lose meaning.
        .unwrap_or_else(|| Value::String(text.to_owned()))
}

/// `2026-11-25 16:45:58.684123[+00]` → `2026-11-25T16:45:58.684Z` (milliseconds, UTC).
pub fn iso_timestamp(text: &str) -> String {
    if text == "infinity" || text == "-infinity" {
        return text.to_owned();
    }
    let Some((date, rest)) = text.split_once(' ') else {
        return text.to_owned();
    };
    // Strip the zone: the session runs in UTC, so it is +00.
    let time = rest.split_once(['+', '-']).map(|(t, _)| t).unwrap_or(rest);
    let suffix_bc = if text.ends_with(" BC") { " BC" } else { "" };
    format!(
        "{date}T{}Z{suffix_bc}",
        millis(time.trim_end_matches(" BC"))
    )
}

/// `16:45:58.5` → `16:45:58.500`.
pub fn iso_time(text: &str) -> String {
    millis(text)
}

fn millis(time: &str) -> String {
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut ms: String = frac.chars().take(3).collect();
    while ms.len() < 3 {
        ms.push('0');
    }
    format!("{hms}.{ms}")
}

fn array_element_type(type_oid: u32) -> Option<u32> {
    Some(match type_oid {
        oid::BOOL_ARRAY => oid::BOOL,
        oid::INT2_ARRAY => oid::INT2,
        oid::INT4_ARRAY => oid::INT4,
        oid::INT8_ARRAY => oid::INT8,
        oid::TEXT_ARRAY | oid::VARCHAR_ARRAY => 25,
        oid::FLOAT4_ARRAY => oid::FLOAT4,
        oid::FLOAT8_ARRAY => oid::FLOAT8,
        oid::NUMERIC_ARRAY => oid::NUMERIC,
        oid::TIMESTAMP_ARRAY => oid::TIMESTAMP,
        oid::TIMESTAMPTZ_ARRAY => oid::TIMESTAMPTZ,
        oid::DATE_ARRAY => oid::DATE,
        oid::JSON_ARRAY => oid::JSON,
        oid::JSONB_ARRAY => oid::JSONB,
        _ => return None,
    })
}

/// Decodes a Postgres array literal (`{1,2,NULL}`, `{"a b","c\"d"}`, `{{1,2},{3,4}}`).
fn decode_array(element: u32, text: &str) -> Value {
    // An optional dimension prefix `[1:2]=` precedes arrays with non-default bounds.
    let body = match text.find('=') {
        Some(i) if text.starts_with('[') => &text[i + 1..],
        _ => text,
    };
    let mut chars = body.chars().peekable();
    match parse_array(element, &mut chars, 0) {
        Some(v) if chars.next().is_none() => v,
        _ => Value::String(text.to_owned()),
    }
}

fn parse_array(
    element: u32,
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    depth: usize,
) -> Option<Value> {
    if depth > 6 || chars.next()? != '{' {
        return None;
    }
    let mut items = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(Value::Array(items));
    }
    loop {
        match chars.peek()? {
            '{' => items.push(parse_array(element, chars, depth + 1)?),
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '\\' => s.push(chars.next()?),
                        '"' => break,
                        c => s.push(c),
                    }
                }
                items.push(decode_text(element, &s));
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                items.push(if s == "NULL" {
                    Value::Null
                } else {
                    decode_text(element, &s)
                });
            }
        }
        match chars.next()? {
            ',' => continue,
            '}' => return Some(Value::Array(items)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_as_strapi_shows_them() {
        assert_eq!(decode_text(oid::BOOL, "t"), json!(true));
        assert_eq!(decode_text(oid::BOOL, "f"), json!(false));
        assert_eq!(decode_text(oid::INT4, "42"), json!(42));
        assert_eq!(
            decode_text(oid::INT8, "9007199254740991"),
            json!(9007199254740991i64)
        );
        assert_eq!(
            decode_text(oid::INT8, "9007199254740993"),
            json!("9007199254740993")
        );
        assert_eq!(decode_text(oid::FLOAT8, "1.5"), json!(1.5));
        assert_eq!(decode_text(oid::NUMERIC, "10.25"), json!(10.25));
        assert_eq!(decode_text(oid::NUMERIC, "3"), json!(3));
        assert_eq!(decode_text(oid::FLOAT8, "NaN"), json!("NaN"));
        assert_eq!(decode_text(25, "hello"), json!("hello"));
        assert_eq!(
            decode_text(oid::JSONB, r#"{"x": [1, 2]}"#),
            json!({"x": [1, 2]})
        );
    }

    #[test]
    fn timestamps_are_iso_utc_with_milliseconds() {
        assert_eq!(
            decode_text(oid::TIMESTAMP, "2026-11-25 16:45:58.684"),
            json!("2026-11-25T16:45:58.684Z")
        );
        assert_eq!(
            decode_text(oid::TIMESTAMP, "2026-11-25 16:45:58"),
            json!("2026-11-25T16:45:58.000Z")
        );
        assert_eq!(
            decode_text(oid::TIMESTAMPTZ, "2026-11-25 16:30:20.904604+00"),
            json!("2026-11-25T16:30:20.904Z")
        );
        assert_eq!(decode_text(oid::TIME, "09:05:00"), json!("09:05:00.000"));
        assert_eq!(decode_text(oid::DATE, "2026-11-25"), json!("2026-11-25"));
    }

    #[test]
    fn arrays() {
        assert_eq!(
            decode_text(oid::INT4_ARRAY, "{1,2,NULL}"),
            json!([1, 2, null])
        );
        assert_eq!(
            decode_text(oid::TEXT_ARRAY, r#"{"a b","c\"d",e}"#),
            json!(["a b", "c\"d", "e"])
        );
        assert_eq!(
            decode_text(oid::INT4_ARRAY, "{{1,2},{3,4}}"),
            json!([[1, 2], [3, 4]])
        );
        assert_eq!(decode_text(oid::INT4_ARRAY, "{}"), json!([]));
        assert_eq!(decode_text(oid::INT4_ARRAY, "{1,2"), json!("{1,2"));
    }

    /// Property tests: no text of any type panics, and the shapes walcast relies on
    /// (integers, arrays) round-trip.
    mod properties {
        use super::super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::sample::select;
        use serde_json::json;

        const TYPES: &[u32] = &[
            oid::BOOL,
            oid::INT8,
            oid::INT2,
            oid::INT4,
            oid::OID,
            oid::JSON,
            oid::FLOAT4,
            oid::FLOAT8,
            oid::DATE,
            oid::TIME,
            oid::TIMESTAMP,
            oid::TIMESTAMPTZ,
            oid::NUMERIC,
            oid::JSONB,
            oid::BOOL_ARRAY,
            oid::INT2_ARRAY,
            oid::INT4_ARRAY,
            oid::TEXT_ARRAY,
            oid::VARCHAR_ARRAY,
            oid::INT8_ARRAY,
            oid::FLOAT4_ARRAY,
            oid::FLOAT8_ARRAY,
            oid::TIMESTAMP_ARRAY,
            oid::DATE_ARRAY,
            oid::TIMESTAMPTZ_ARRAY,
            oid::NUMERIC_ARRAY,
            oid::JSON_ARRAY,
            oid::JSONB_ARRAY,
            25,
            1043,
        ];

        fn any_type() -> impl Strategy<Value = u32> {
            prop_oneof![select(TYPES), any::<u32>()]
        }

        /// Text made of the characters that steer the array, number and time parsers.
        fn tricky_text() -> impl Strategy<Value = String> {
            r#"(\[1:2\]=)?[{}",\\ NULLtfe.:+0-9a-zA-Z\[\]=-]{0,48}"#
        }

        /// A quoted array element, with `\` and `"` escaped.
        fn quoted(s: &str) -> String {
            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        }

        proptest! {
            #[test]
            fn any_text_of_any_type_decodes(type_oid in any_type(), text in any::<String>()) {
                let _ = decode_text(type_oid, &text);
                let _ = iso_timestamp(&text);
                let _ = iso_time(&text);
            }

            #[test]
            fn tricky_text_of_any_type_decodes(type_oid in any_type(), text in tricky_text()) {
                let _ = decode_text(type_oid, &text);
                let _ = iso_timestamp(&text);
                let _ = iso_time(&text);
            }

            #[test]
            fn deep_or_unbalanced_arrays_stay_strings(depth in 0usize..40, close in 0usize..40) {
                let text = format!("{}1{}", "{".repeat(depth), "}".repeat(close));
                let value = decode_text(oid::INT4_ARRAY, &text);
                if depth != close || depth == 0 || depth > 7 {
                    prop_assert_eq!(value, json!(text));
                }
            }

            #[test]
            fn bigints_are_numbers_up_to_2_pow_53_then_strings(n in any::<i64>()) {
                let expected = if (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&n) {
                    json!(n)
                } else {
                    json!(n.to_string())
                };
                prop_assert_eq!(decode_text(oid::INT8, &n.to_string()), expected);
            }

            #[test]
            fn int_arrays_round_trip(items in vec(proptest::option::of(any::<i32>()), 0..8)) {
                let text = format!(
                    "{{{}}}",
                    items
                        .iter()
                        .map(|i| i.map_or("NULL".to_owned(), |n| n.to_string()))
                        .collect::<Vec<_>>()
                        .join(",")
                );
                prop_assert_eq!(decode_text(oid::INT4_ARRAY, &text), json!(items));
            }

            #[test]
            fn quoted_text_arrays_round_trip(items in vec(any::<String>(), 0..6)) {
                let text = format!(
                    "{{{}}}",
                    items.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(",")
                );
                prop_assert_eq!(decode_text(oid::TEXT_ARRAY, &text), json!(items));
            }
        }
    }
}
