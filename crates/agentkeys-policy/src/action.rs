//! What a rule can name: the actions the server enforces rules for (an agent's, and the owner's
//! own operations), and the effects a rule has. Only actions the server really checks are in
//! [`Action::ALL`], so a rule can never name one it ignores.

use std::fmt;

/// An action a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// An agent reads a credential's value (MCP `get_credential`, fd delivery).
    Read,
    /// An agent reads a value to run a command with it. The server cannot tell this read from
    /// [`Action::Read`] (the daemon makes both), so a rule naming either matches both.
    Run,
    /// An agent lists the credential names it may see (about no service).
    List,
    /// An agent asks for access to a service (about that service) or a higher tier (none).
    Request,
    /// The owner approves a request (pairing, access, tier, release, device, recovery); its
    /// agent and service are the request's.
    Approve,
    /// The owner adds services to an agent's scope (one decision per service added).
    ScopeAdd,
    /// The owner stores a credential (in the vault, or an agent's private namespace: that agent).
    Store,
    /// The owner removes a credential.
    Rm,
    /// The owner changes a server-side setting (`config set require-presence`, `recovery-delay`).
    ConfigSet,
    /// The owner creates an agent (mints its link code).
    AgentCreate,
    /// The owner changes an agent's tier.
    AgentUpgrade,
    /// The owner revokes an agent.
    Revoke,
    /// The owner tears an agent down.
    Teardown,
    /// The owner sets a new policy version (decided by the policy in force, not the new one).
    PolicySet,
}

impl Action {
    /// The actions a rule may name: every one the server consults the policy for.
    pub const ALL: [Action; 14] = [
        Action::Read,
        Action::Run,
        Action::List,
        Action::Request,
        Action::Approve,
        Action::ScopeAdd,
        Action::Store,
        Action::Rm,
        Action::ConfigSet,
        Action::AgentCreate,
        Action::AgentUpgrade,
        Action::Revoke,
        Action::Teardown,
        Action::PolicySet,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Run => "run",
            Action::List => "list",
            Action::Request => "request",
            Action::Approve => "approve",
            Action::ScopeAdd => "scope.add",
            Action::Store => "store",
            Action::Rm => "rm",
            Action::ConfigSet => "config.set",
            Action::AgentCreate => "agent.create",
            Action::AgentUpgrade => "agent.upgrade",
            Action::Revoke => "revoke",
            Action::Teardown => "teardown",
            Action::PolicySet => "policy.set",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == text)
    }

    /// Whether an agent does it (rather than the account's owner).
    pub fn by_agent(self) -> bool {
        matches!(self, Action::Read | Action::Run | Action::List | Action::Request)
    }

    /// Whether a rate can count it: the server counts an agent's reads of a service.
    pub fn counted(self) -> bool {
        matches!(self, Action::Read | Action::Run)
    }

    /// Whether the request can be about a service (a rule's `services` can match it; an
    /// agent's `request` for a tier is about none).
    pub fn has_service(self) -> bool {
        matches!(
            self,
            Action::Read
                | Action::Run
                | Action::Request
                | Action::Approve
                | Action::ScopeAdd
                | Action::Store
                | Action::Rm
                | Action::AgentCreate
        )
    }

    /// Whether the request can concern an agent (a rule's `agents` can match it).
    pub fn has_agent(self) -> bool {
        !matches!(self, Action::ConfigSet | Action::PolicySet)
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
    /// The operation is critical, and its presence cannot be skipped (owner's operations only).
    RequirePresence,
    /// Refused, naming the rule (agent actions only: a rule that refused the owner could lock
    /// the owner out of `policy.set` itself).
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
    /// owner's, a denial an agent's; `allow` documents anything.
    pub fn applies_to(self, action: Action) -> bool {
        match self {
            Effect::Allow => true,
            Effect::Deny => action.by_agent(),
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
