//! Verifying the credentials a handshake carries, without the database: users-permissions and
//! admin JWTs (HS256), and the API-token hash Strapi stores.

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha512;

/// What a verified JWT says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtSubject {
    /// Legacy users-permissions token: `{id}`.
    Legacy { id: i64 },
    /// Session-based access token: `{userId, sessionId, type: 'access'}`.
    Session { user_id: i64, session_id: String },
}

#[derive(Debug, Deserialize)]
struct Claims {
    id: Option<Value>,
    #[serde(rename = "userId")]
    user_id: Option<Value>,
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Why a JWT is not acceptable (the handshake says `Invalid token.` for all of them).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("signature, algorithm or expiry rejected: {0}")]
    Rejected(#[from] jsonwebtoken::errors::Error),
    #[error("claims name no user")]
    NoSubject,
    #[error("not an access token")]
    NotAccess,
}

/// Strapi signs with HS256 by default; `exp` is checked when present, without leeway (as
/// node's `jsonwebtoken` does).
fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v
}

/// An id claim: a number, or a string of digits (session tokens carry `userId` as a string).
fn id_of(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Verifies a JWT signed with `secret`; legacy `{id}` tokens are accepted only when
/// `allow_legacy` (users-permissions; Strapi's admin has issued session tokens since 5.24).
pub fn verify_jwt(token: &str, secret: &str, allow_legacy: bool) -> Result<JwtSubject, JwtError> {
    let key = DecodingKey::from_secret(secret.as_bytes());
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation())?.claims;
    if let Some(user_id) = &claims.user_id {
        if claims.kind.as_deref() != Some("access") {
            return Err(JwtError::NotAccess);
        }
        let user_id = id_of(user_id).ok_or(JwtError::NoSubject)?;
        let session_id = claims
            .session_id
            .filter(|s| !s.is_empty())
            .ok_or(JwtError::NoSubject)?;
        return Ok(JwtSubject::Session {
            user_id,
            session_id,
        });
    }
    match &claims.id {
        Some(id) if allow_legacy && claims.kind.is_none() => id_of(id)
            .map(|id| JwtSubject::Legacy { id })
            .ok_or(JwtError::NoSubject),
        _ => Err(JwtError::NoSubject),
    }
}

/// `strapi_api_tokens.access_key` of a plaintext token: HMAC-SHA512(salt, token), lowercase
/// hex, as Strapi's `apiToken.hash`.
pub fn api_token_hash(salt: &str, token: &str) -> String {
    let mut mac = Hmac::<Sha512>::new_from_slice(salt.as_bytes()).expect("HMAC takes any key");
    mac.update(token.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "test-users-permissions-jwt-secret-0123456789";

    fn sign(claims: Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> i64 {
        crate::route::permissions::now_ms() / 1000
    }

    #[test]
    fn legacy_and_session_tokens_verify() {
        let legacy = sign(json!({"id": 7, "iat": now(), "exp": now() + 60}), SECRET);
        assert_eq!(
            verify_jwt(&legacy, SECRET, true).unwrap(),
            JwtSubject::Legacy { id: 7 }
        );
        assert!(verify_jwt(&legacy, SECRET, false).is_err());
        let session = sign(
            json!({"userId": "7", "sessionId": "ab", "type": "access", "exp": now() + 60}),
            SECRET,
        );
        assert_eq!(
            verify_jwt(&session, SECRET, true).unwrap(),
            JwtSubject::Session {
                user_id: 7,
                session_id: "ab".into()
            }
        );
    }

    #[test]
    fn bad_tokens_are_refused() {
        let expired = sign(json!({"id": 7, "exp": now() - 1}), SECRET);
        assert!(verify_jwt(&expired, SECRET, true).is_err());
        let other = sign(json!({"id": 7}), "another secret");
        assert!(verify_jwt(&other, SECRET, true).is_err());
        let refresh = sign(
            json!({"userId": "7", "sessionId": "ab", "type": "refresh"}),
            SECRET,
        );
        assert!(matches!(
            verify_jwt(&refresh, SECRET, true),
            Err(JwtError::NotAccess)
        ));
        assert!(verify_jwt("forged", SECRET, true).is_err());
    }

    #[test]
    fn api_token_hash_is_strapis() {
        // node: crypto.createHmac('sha512', 'salt').update('token').digest('hex')
        assert_eq!(
            api_token_hash("salt", "token"),
            "979a0a65ea49e326693337176834b4d7f0664217a650b9658fe265e36aea3001\
             e4539816a34a4846f5366429e41328b8023959c714fc23737069350f6743f6b6"
        );
    }
}
