//! Who is on the other end of a socket, and the room that principal's sockets share.

/// The identity a socket authenticated as (spec §5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// No token: the users-permissions role with `type = 'public'`.
    Public,
    /// A users-permissions user, heard through its role.
    User {
        id: i64,
        role_id: i64,
        /// The role's name, as its room spells it.
        role: String,
        /// The `strapi_sessions.session_id` of a refresh-mode access token.
        session: Option<String>,
    },
    /// A content-api token (`strapi_api_tokens`).
    ApiToken {
        id: i64,
        name: String,
        /// `expires_at`, in milliseconds since the Unix epoch.
        expires_at_ms: Option<i64>,
    },
    /// A Strapi admin user with a live admin session.
    Admin { id: i64, session: String },
}

impl Principal {
    /// The room every socket of this principal joins (the plugin's names).
    pub fn room(&self) -> String {
        match self {
            Principal::Public => role_room("public"),
            Principal::User { role, .. } => role_room(role),
            Principal::ApiToken { name, .. } => token_room(name),
            Principal::Admin { id, .. } => admin_room(*id),
        }
    }
}

/// A principal and the view of D&P content it chose at handshake (`auth.status`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    pub principal: Principal,
    /// `auth.status = 'draft'`, and allowed.
    pub draft: bool,
}

impl Access {
    pub fn published(principal: Principal) -> Self {
        Access {
            principal,
            draft: false,
        }
    }

    /// The one room this socket joins: the principal's room, or its draft room.
    pub fn room(&self) -> String {
        let room = self.principal.room();
        if self.draft { draft_room(&room) } else { room }
    }
}

/// Suffix of the room of a principal's sockets that chose the draft view.
pub const DRAFT_SUFFIX: &str = ":draft";

/// The draft-view room of a principal room.
pub fn draft_room(room: &str) -> String {
    format!("{room}{DRAFT_SUFFIX}")
}

/// Lower-cased, whitespace runs as `-` (the plugin's room names, V5b/V5c).
fn room_part(name: &str) -> String {
    name.to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
}

/// `io-role-<lowercased role name, spaces as ->`, as the plugin names role rooms.
pub fn role_room(role_name: &str) -> String {
    format!("io-role-{}", room_part(role_name))
}

/// `io-token-<lowercased token name, spaces as ->`.
pub fn token_room(token_name: &str) -> String {
    format!("io-token-{}", room_part(token_name))
}

/// `io-admin-user-<id>`.
pub fn admin_room(id: i64) -> String {
    format!("io-admin-user-{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_plugin() {
        assert_eq!(Principal::Public.room(), "io-role-public");
        assert_eq!(role_room("Content Editors"), "io-role-content-editors");
        assert_eq!(token_room("Read Only"), "io-token-read-only");
        assert_eq!(admin_room(3), "io-admin-user-3");
        let access = Access {
            principal: Principal::Admin {
                id: 1,
                session: "s".into(),
            },
            draft: true,
        };
        assert_eq!(access.room(), "io-admin-user-1:draft");
    }
}
