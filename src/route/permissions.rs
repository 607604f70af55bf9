//! `PermissionModel`: which principals may read which content types, from Strapi's tables.
//!
//! Built with one query over `up_roles`/`up_permissions`/`up_permissions_role_lnk` and
//! replaced whole when the WAL shows those tables changed; routing consults the in-memory
//! snapshot, never the database.

use std::collections::{BTreeMap, HashSet};

use tokio_postgres::Client;

use super::principal::role_room;
use crate::assemble::Action;
use crate::config::PermissionMode;

/// One users-permissions role and the actions it is granted.
#[derive(Debug, Clone, Default)]
pub struct RoleGrants {
    pub name: String,
    pub role_type: String,
    pub actions: HashSet<String>,
}

/// Every role's grants, keyed by room name.
#[derive(Debug, Clone, Default)]
pub struct PermissionModel {
    pub roles: BTreeMap<String, RoleGrants>,
}

impl PermissionModel {
    /// Loads every role with its permission actions.
    pub async fn load(client: &Client) -> Result<Self, tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT r.name, r.type, p.action
                   FROM up_roles r
                   LEFT JOIN up_permissions_role_lnk l ON l.role_id = r.id
                   LEFT JOIN up_permissions p ON p.id = l.permission_id",
                &[],
            )
            .await?;
        let mut model = PermissionModel::default();
        for row in rows {
            let name: String = row.get(0);
            let role_type: Option<String> = row.get(1);
            let action: Option<String> = row.get(2);
            let room = if role_type.as_deref() == Some("public") {
                role_room("public")
            } else {
                role_room(&name)
            };
            let grants = model.roles.entry(room).or_insert_with(|| RoleGrants {
                name: name.clone(),
                role_type: role_type.clone().unwrap_or_default(),
                actions: HashSet::new(),
            });
            if let Some(action) = action {
                grants.actions.insert(action);
            }
        }
        Ok(model)
    }

    /// Role rooms that may hear `action` on content type `uid`.
    pub fn rooms_for(&self, uid: &str, action: Action, mode: PermissionMode) -> Vec<String> {
        self.roles
            .iter()
            .filter(|(_, grants)| grants.allows(uid, action, mode))
            .map(|(room, _)| room.clone())
            .collect()
    }
}

impl RoleGrants {
    /// `read`: `<uid>.find` or `<uid>.findOne` lets a role hear every action of the type;
    /// `action`: the plugin's rule, `<uid>.<action>`.
    pub fn allows(&self, uid: &str, action: Action, mode: PermissionMode) -> bool {
        match mode {
            PermissionMode::Read => {
                self.actions.contains(&format!("{uid}.find"))
                    || self.actions.contains(&format!("{uid}.findOne"))
            }
            PermissionMode::Action => self.actions.contains(&format!("{uid}.{}", action.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(actions: &[&str]) -> RoleGrants {
        RoleGrants {
            name: "Public".into(),
            role_type: "public".into(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn read_mode_lets_find_hear_every_action() {
        let g = grants(&["api::tag.tag.find"]);
        for action in [Action::Create, Action::Update, Action::Delete] {
            assert!(g.allows("api::tag.tag", action, PermissionMode::Read));
        }
        assert!(!g.allows("api::article.article", Action::Create, PermissionMode::Read));
    }

    #[test]
    fn action_mode_reproduces_the_plugin() {
        let g = grants(&["api::tag.tag.find", "api::tag.tag.create"]);
        assert!(g.allows("api::tag.tag", Action::Create, PermissionMode::Action));
        assert!(!g.allows("api::tag.tag", Action::Delete, PermissionMode::Action));
    }
}
