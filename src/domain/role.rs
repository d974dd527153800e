//! API key roles, with their stored strings.

/// What a key may do. An admin key may do everything an LMS key may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The LMS backend: workspaces, launch links, heartbeats, events.
    Lms,
    /// Operators: also export, migrate, metrics and keys.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Lms => "lms",
            Role::Admin => "admin",
        }
    }

    /// Whether a key of this role may call a route that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lms" => Ok(Role::Lms),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}; use lms or admin")),
        }
    }
}

// `pad`, not `write_str`: the key list prints roles in a fixed-width column.
impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}
