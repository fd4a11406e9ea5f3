//! What a rule can name: the actions the server enforces rules for, and the effects a rule has.
//! Only actions the server really checks exist here, so a rule can never name one it ignores.

use std::fmt;

/// An action a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// An agent reads a credential's value (MCP `get_credential`, fd delivery).
    Read,
    /// An agent reads a value to run a command with it. The server cannot tell this read from
    /// [`Action::Read`] (the daemon makes both), so a rule naming either matches both.
    Run,
    /// An agent lists the credential names it may see.
    List,
    /// An agent asks for access to a service or a higher tier.
    Request,
}

impl Action {
    /// The actions a rule may name: those the server enforces rules for today. `list` and
    /// `request` are known but refused until their ops consult the policy, so that no rule
    /// silently does nothing.
    pub const ALL: [Action; 2] = [Action::Read, Action::Run];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Run => "run",
            Action::List => "list",
            Action::Request => "request",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == text)
    }

    /// Whether an agent does it (rather than the account's owner).
    pub fn by_agent(self) -> bool {
        true
    }

    /// Whether the request is about one service (a rule's `services` can match it).
    pub fn has_service(self) -> bool {
        !matches!(self, Action::List)
    }

    /// Whether a rule naming `self` matches a request for `requested`.
    pub(crate) fn covers(self, requested: Action) -> bool {
        self == requested || matches!((self, requested), (Action::Read, Action::Run) | (Action::Run, Action::Read))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    /// Nothing beyond what scope and tier give (never more): a rule that documents.
    Allow,
    /// The owner approves each use, as for a high-value credential (agent reads only).
    RequireApproval,
    /// The operation is critical: the owner's presence is needed (master operations only).
    RequirePresence,
    /// Refused, naming the rule.
    Deny,
}

impl Effect {
    pub const ALL: [Effect; 4] = [Effect::Allow, Effect::RequireApproval, Effect::RequirePresence, Effect::Deny];

    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::RequireApproval => "require_approval",
            Effect::RequirePresence => "require_presence",
            Effect::Deny => "deny",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|effect| effect.as_str() == text)
    }

    /// Whether it restricts (a change that drops or loosens such a rule weakens the policy).
    pub fn restricts(self) -> bool {
        self != Effect::Allow
    }

    /// Whether the effect can apply to `action`: approval is per use of a value, presence is the
    /// owner's, the others apply to everything.
    pub fn applies_to(self, action: Action) -> bool {
        match self {
            Effect::Allow | Effect::Deny => true,
            Effect::RequireApproval => matches!(action, Action::Read | Action::Run),
            Effect::RequirePresence => !action.by_agent(),
        }
    }

    /// The order of precedence among matches: the highest wins.
    pub(crate) fn rank(self) -> u8 {
        match self {
            Effect::Allow => 0,
            Effect::RequireApproval => 1,
            Effect::RequirePresence => 2,
            Effect::Deny => 3,
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
