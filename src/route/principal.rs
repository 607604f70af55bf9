//! Who is on the other end of a socket, and the room that principal's sockets share.

/// The identity a socket authenticated as (spec §5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// The users-permissions role with `type = 'public'`.
    Public,
    /// A users-permissions role, by its name.
    Role { name: String },
}

impl Principal {
    /// The room every socket of this principal joins.
    pub fn room(&self) -> String {
        match self {
            Principal::Public => role_room("public"),
            Principal::Role { name } => role_room(name),
        }
    }
}

/// `io-role-<lowercased role name, spaces as ->`, as the plugin names role rooms.
pub fn role_room(role_name: &str) -> String {
    format!("io-role-{}", role_name.to_lowercase().replace(' ', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_plugin() {
        assert_eq!(Principal::Public.room(), "io-role-public");
        assert_eq!(role_room("Content Editors"), "io-role-content-editors");
    }
}
