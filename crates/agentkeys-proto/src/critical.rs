//! The one list of critical operations (PRODUCT.md §5). The CLI refuses a bare `--yes` for each
//! of them and asks for the human's presence; the server requires that presence for each of them
//! when the account says so. Both sides name an operation from this list, never by a string of
//! their own, so the two cannot drift apart.

/// A master operation that needs the human's presence before it proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Critical {
    /// `approve` of any request (pairing, access, tier).
    Approve,
    /// `revoke <agent>`.
    Revoke,
    /// `teardown <agent>`.
    Teardown,
    /// `init --force`: replaces the session on this machine (the server is not asked).
    InitForce,
    /// `agent create`: mints a link code.
    AgentCreate,
    /// `agent upgrade`: any change of an agent's tier.
    AgentUpgrade,
    /// `scope --add`, or `--set` that adds a service.
    ScopeWiden,
    /// `config set` of a setting that weakens authentication (biometric policy, require-presence).
    ConfigWeaken,
    /// `presence enroll`: a new presence key.
    PresenceEnroll,
    /// `presence remove`: removing the last one turns the server-verified requirement off.
    PresenceRemove,
    /// `device revoke`: ends every session of a master device.
    DeviceRevoke,
    /// `recover`: opening and completing a recovery with the recovery key, on the new machine
    /// (the server's guard is the recovery delay, not presence: the old keys may be lost).
    Recover,
    /// `recovery-key rotate`: replaces the recovery key.
    RecoveryKeyRotate,
    /// `store --high-value` / `--high-value=false` changing whether a credential is high-value.
    HighValueChange,
    /// `policy set` of a policy that removes or loosens a restricting rule.
    PolicyWeaken,
    /// The owner's own `read` or `run` of a high-value credential. Asked on the machine once the
    /// verified grant says the credential is high-value, before the value is printed or handed to
    /// a command; the server is not asked, because `store` and `approve` fetch the same sealed
    /// version without showing presence for it.
    HighValueRead,
    /// An owner's operation a `require_presence` rule of the account's policy matched: known
    /// only to the server, which answers `PRESENCE_REQUIRED` naming the rule; the CLI then asks
    /// and sends the request again. Its presence cannot be skipped.
    PolicyRule,
}

impl Critical {
    pub const ALL: [Critical; 17] = [
        Critical::Approve,
        Critical::Revoke,
        Critical::Teardown,
        Critical::InitForce,
        Critical::AgentCreate,
        Critical::AgentUpgrade,
        Critical::ScopeWiden,
        Critical::ConfigWeaken,
        Critical::PresenceEnroll,
        Critical::PresenceRemove,
        Critical::DeviceRevoke,
        Critical::Recover,
        Critical::RecoveryKeyRotate,
        Critical::HighValueChange,
        Critical::PolicyWeaken,
        Critical::HighValueRead,
        Critical::PolicyRule,
    ];

    /// A stable name, for messages and tests.
    pub fn as_str(self) -> &'static str {
        match self {
            Critical::Approve => "approve",
            Critical::Revoke => "revoke",
            Critical::Teardown => "teardown",
            Critical::InitForce => "init-force",
            Critical::AgentCreate => "agent-create",
            Critical::AgentUpgrade => "agent-upgrade",
            Critical::ScopeWiden => "scope-widen",
            Critical::ConfigWeaken => "config-weaken",
            Critical::PresenceEnroll => "presence-enroll",
            Critical::PresenceRemove => "presence-remove",
            Critical::DeviceRevoke => "device-revoke",
            Critical::Recover => "recover",
            Critical::RecoveryKeyRotate => "recovery-key-rotate",
            Critical::HighValueChange => "high-value-change",
            Critical::PolicyWeaken => "policy-weaken",
            Critical::HighValueRead => "high-value-read",
            Critical::PolicyRule => "policy-rule",
        }
    }

    /// Whether the server's presence policy sees the operation: not `init --force`, which stays
    /// on the machine, nor `recover`, whose new machine has no session (the recovery delay is
    /// the server's guard there), nor the owner's read of a high-value credential.
    pub fn reaches_the_server(self) -> bool {
        !matches!(self, Critical::InitForce | Critical::Recover | Critical::HighValueRead)
    }
}

impl std::fmt::Display for Critical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
