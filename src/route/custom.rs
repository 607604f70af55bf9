//! Custom events from SQL: `pg_logical_emit_message(…, 'walcast', '{"event":…,"data":…,"rooms":[…]}')`.
//!
//! Only messages with the prefix `walcast` are read; bad JSON is an error for the caller to
//! count and log, never fatal (spec §3).

use serde::Deserialize;
use serde_json::Value;

/// The prefix walcast listens to.
pub const MESSAGE_PREFIX: &str = "walcast";

/// A custom event requested from SQL.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomEvent {
    pub event: String,
    #[serde(default)]
    pub data: Value,
    /// Target rooms; none means every socket.
    #[serde(default)]
    pub rooms: Vec<String>,
}

/// Why a message could not be turned into an event.
#[derive(Debug, thiserror::Error)]
pub enum CustomEventError {
    #[error(
        "custom event message is not valid JSON of the form {{\"event\":…,\"data\":…,\"rooms\":[…]}}"
    )]
    Json(#[source] serde_json::Error),
    #[error("custom event name must be 1 to 100 characters")]
    BadName,
}

/// Parses a message body.
pub fn parse_custom_event(content: &[u8]) -> Result<CustomEvent, CustomEventError> {
    let event: CustomEvent = serde_json::from_slice(content).map_err(CustomEventError::Json)?;
    if event.event.is_empty() || event.event.len() > 100 {
        return Err(CustomEventError::BadName);
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let e = parse_custom_event(br#"{"event":"hello","data":{"x":1},"rooms":["a"]}"#).unwrap();
        assert_eq!(e.event, "hello");
        assert_eq!(e.rooms, vec!["a".to_string()]);
        assert!(parse_custom_event(b"{not json").is_err());
        assert!(parse_custom_event(br#"{"event":""}"#).is_err());
        assert!(parse_custom_event(br#"{"event":"x","extra":1}"#).is_err());
    }
}
