//! How the human at the master showed presence for a critical operation (PRODUCT.md §5): the
//! client sends it as the signed `presence=` query parameter, the server's audit records it.
//! Every method but `webauthn` is the client's word; `webauthn:<ceremony id>` names a ceremony
//! the server itself verified (K11), bound to that one request.

/// A presence method, as it appears on the wire and in the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceMethod {
    /// A WebAuthn assertion the server verified (a presence key, K11).
    Webauthn,
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
    pub const ALL: [Self; 7] =
        [Self::Webauthn, Self::Fprintd, Self::Polkit, Self::TouchId, Self::WindowsHello, Self::Prompt, Self::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webauthn => "webauthn",
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

/// What a request's `presence=` says: a method the client vouches for (`fprintd`, …), or
/// `webauthn:<ceremony id>`, a ceremony the server verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceClaim {
    Local(PresenceMethod),
    Ceremony(String),
}

impl PresenceClaim {
    /// Parses the parameter's value; `webauthn` always names a ceremony, the others never do.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            Some(("webauthn", id)) => crate::ids::is_ceremony_id(id).then(|| Self::Ceremony(id.to_owned())),
            Some(_) => None,
            None => PresenceMethod::parse(text).filter(|m| *m != PresenceMethod::Webauthn).map(Self::Local),
        }
    }

    /// The parameter's value.
    pub fn to_query_value(&self) -> String {
        match self {
            Self::Local(method) => method.as_str().to_owned(),
            Self::Ceremony(id) => format!("webauthn:{id}"),
        }
    }

    pub fn method(&self) -> PresenceMethod {
        match self {
            Self::Local(method) => *method,
            Self::Ceremony(_) => PresenceMethod::Webauthn,
        }
    }
}

/// How presence was shown, as the audit records it: the method, and for `webauthn` the presence
/// key that answered (`webauthn:pk_…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub method: PresenceMethod,
    pub key_id: Option<String>,
}

impl PresenceRecord {
    pub fn local(method: PresenceMethod) -> Self {
        Self { method, key_id: None }
    }

    pub fn to_text(&self) -> String {
        match &self.key_id {
            Some(key) => format!("{}:{key}", self.method.as_str()),
            None => self.method.as_str().to_owned(),
        }
    }

    /// Parses a stored value; `None` for anything [`Self::to_text`] does not make.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            Some(("webauthn", key)) if crate::ids::is_presence_key_id(key) => {
                Some(Self { method: PresenceMethod::Webauthn, key_id: Some(key.to_owned()) })
            }
            Some(_) => None,
            // Bare `webauthn`: claimed on a request the server refused, so no key answered.
            None => PresenceMethod::parse(text).map(Self::local),
        }
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

    #[test]
    fn claims_and_records_round_trip_and_refuse_the_rest() {
        let ceremony = format!("cer_{}", "A".repeat(22));
        for text in ["fprintd", "skipped", &format!("webauthn:{ceremony}")] {
            assert_eq!(PresenceClaim::parse(text).unwrap().to_query_value(), text);
        }
        for bad in ["webauthn", "webauthn:", "webauthn:cer_short", "fprintd:cer_x", "face"] {
            assert_eq!(PresenceClaim::parse(bad), None, "{bad}");
        }
        let key = format!("pk_{}", "0".repeat(20));
        for text in ["prompt", &format!("webauthn:{key}")] {
            assert_eq!(PresenceRecord::parse(text).unwrap().to_text(), text);
        }
        assert_eq!(PresenceRecord::parse("webauthn").unwrap().key_id, None);
        assert_eq!(PresenceRecord::parse("webauthn:pk_short"), None);
    }
}
