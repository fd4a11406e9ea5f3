//! Where a credential lives: the account's vault, or one agent's private namespace. Stored and
//! sent as text (`vault`, `agent:<agent id>`); [`Namespace::parse`] refuses anything else, so an
//! unknown stored namespace is an error, never the vault.

/// The stored name of the account's own vault.
pub const VAULT_NAMESPACE: &str = "vault";

const AGENT_PREFIX: &str = "agent:";

/// A credential namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Namespace {
    /// The account's own vault.
    Vault,
    /// The private credentials of one agent (its overrides of the vault, or its own).
    Agent(String),
}

impl Namespace {
    /// The stored and wire form.
    pub fn as_stored(&self) -> String {
        match self {
            Namespace::Vault => VAULT_NAMESPACE.to_owned(),
            Namespace::Agent(agent_id) => format!("{AGENT_PREFIX}{agent_id}"),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        if text == VAULT_NAMESPACE {
            return Some(Namespace::Vault);
        }
        let agent_id = text.strip_prefix(AGENT_PREFIX)?;
        (agent_id.starts_with("ag_") && crate::names::validate_service_name(agent_id).is_ok())
            .then(|| Namespace::Agent(agent_id.to_owned()))
    }

    /// The agent that owns the namespace; `None` for the vault.
    pub fn agent_id(&self) -> Option<&str> {
        match self {
            Namespace::Vault => None,
            Namespace::Agent(agent_id) => Some(agent_id),
        }
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_stored())
    }
}

#[cfg(test)]
mod tests {
    use super::Namespace;

    #[test]
    fn round_trips_and_refuses_the_unknown() {
        for ns in [Namespace::Vault, Namespace::Agent("ag_3f2a9c1b".into())] {
            assert_eq!(Namespace::parse(&ns.as_stored()), Some(ns));
        }
        for text in ["", "Vault", "agent:", "agent:bot", "agent:ag_x/y", "other:ag_x"] {
            assert_eq!(Namespace::parse(text), None, "{text}");
        }
    }
}
