//! How the human at the master showed presence for a critical operation (PRODUCT.md §5): the
//! client sends it as the signed `presence=` query parameter, the server's audit records it.

/// A presence method, as it appears on the wire and in the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceMethod {
    Fprintd,
    Polkit,
    TouchId,
    WindowsHello,
    /// The terminal: the session passphrase or a typed confirmation.
    Prompt,
    /// Presence was not asked for (`--no-biometric`, `AGENTKEYS_BIOMETRIC=off`).
    Skipped,
}

/// The query parameter that carries it.
pub const QUERY_PARAM: &str = "presence";

impl PresenceMethod {
    pub const ALL: [Self; 6] =
        [Self::Fprintd, Self::Polkit, Self::TouchId, Self::WindowsHello, Self::Prompt, Self::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fprintd => "fprintd",
            Self::Polkit => "polkit",
            Self::TouchId => "touchid",
            Self::WindowsHello => "windows-hello",
            Self::Prompt => "prompt",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for method in PresenceMethod::ALL {
            assert_eq!(PresenceMethod::parse(method.as_str()), Some(method));
        }
        assert_eq!(PresenceMethod::parse("face"), None);
    }
}
