//! What the human is asked to allow, rendered exactly: which agent, which device, which services.
//! Each rendering names its operation from the one list of critical operations
//! ([`agentkeys_proto::critical::Critical`]) that the server enforces too.

use agentkeys_proto::critical::Critical;

/// One critical operation: the sentence shown at every prompt, and the words a typed confirmation
/// must repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriticalOp {
    /// "Approve pairing of build-bot (device 3F2A…91) with scope openai,github".
    pub text: String,
    /// What the terminal fallback asks the human to type, e.g. `revoke build-bot`.
    pub confirmation: String,
    /// Which critical operation it is (its name appears in messages: `approve`, `revoke`, …).
    pub kind: Critical,
    /// Whether the terminal may take the session passphrase as the answer; not when the
    /// operation replaces the session (its passphrase may be what was forgotten).
    pub allows_passphrase: bool,
}

/// Shortens a long opaque string (a device id, a key) to its head and tail, never to nothing:
/// `dev_3f2a9c1b0e…91`.
pub fn shorten(text: &str) -> String {
    const HEAD: usize = 8;
    const TAIL: usize = 2;
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= HEAD + TAIL + 2 {
        return text.to_owned();
    }
    let head: String = chars[..HEAD].iter().collect();
    let tail: String = chars[chars.len() - TAIL..].iter().collect();
    format!("{head}…{tail}")
}

/// `text` without the characters that make text show something other than what it is
/// ([`agentkeys_proto::names::is_hidden_char`]), at most `max` characters.
fn printable(text: &str, max: usize) -> String {
    text.chars().filter(|&c| !agentkeys_proto::names::is_hidden_char(c)).take(max).collect()
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "no services".to_owned() } else { items.join(",") }
}

impl CriticalOp {
    fn new(kind: Critical, text: String, confirmation: String) -> Self {
        Self { text, confirmation, kind, allows_passphrase: true }
    }

    pub fn approve_pairing(label: &str, device_id: &str, scope: &[String]) -> Self {
        Self::new(
            Critical::Approve,
            format!("Approve pairing of {label} (device {}) with scope {}", shorten(device_id), list(scope)),
            format!("approve {label}"),
        )
    }

    /// Adds a sentence the human must see (e.g. "joins existing agent …"), at every prompt.
    pub fn with_note(mut self, note: &str) -> Self {
        self.text = format!("{}; {note}", self.text);
        self
    }

    pub fn approve_access(label: &str, services: &[String]) -> Self {
        Self::new(
            Critical::Approve,
            format!("Approve access of agent {label} to {}", list(services)),
            format!("approve {label}"),
        )
    }

    pub fn approve_tier(label: &str, from: &str, to: &str) -> Self {
        Self::new(
            Critical::Approve,
            format!("Approve agent {label} moving from tier {from} to {to}"),
            format!("approve {label}"),
        )
    }

    pub fn revoke(label: &str) -> Self {
        Self::new(Critical::Revoke, format!("Revoke all sessions of agent {label}"), format!("revoke {label}"))
    }

    pub fn teardown(label: &str) -> Self {
        Self::new(
            Critical::Teardown,
            format!(
                "Tear down agent {label}: end its sessions, delete its private credentials and every key wrapped to it"
            ),
            format!("teardown {label}"),
        )
    }

    pub fn replace_account(slot: &str, account_id: Option<&str>) -> Self {
        let what = account_id.map(|a| format!(" (account {})", shorten(a))).unwrap_or_default();
        Self {
            allows_passphrase: false,
            ..Self::new(
                Critical::InitForce,
                format!("Replace the '{slot}' session{what} with a new, empty account"),
                "replace account".to_owned(),
            )
        }
    }

    pub fn create_agent(label: &str, tier: &str, scope: &[String]) -> Self {
        Self::new(
            Critical::AgentCreate,
            format!("Create agent {label} (tier {tier}, scope {}) and mint a link code for it", list(scope)),
            format!("create {label}"),
        )
    }

    pub fn upgrade_agent(label: &str, from: &str, to: &str) -> Self {
        Self::new(
            Critical::AgentUpgrade,
            format!("Change agent {label} from tier {from} to {to}"),
            format!("upgrade {label}"),
        )
    }

    pub fn widen_scope(label: &str, services: &[String]) -> Self {
        Self::new(Critical::ScopeWiden, format!("Let agent {label} read {}", list(services)), format!("widen {label}"))
    }

    pub fn enroll_presence_key(name: &str, kind: &str) -> Self {
        Self::new(
            Critical::PresenceEnroll,
            format!("Enroll {kind} presence key '{name}': every critical operation will then need it"),
            format!("enroll {name}"),
        )
    }

    pub fn remove_presence_key(name: &str, last: bool) -> Self {
        let then = if last { ": it is the last one, the server stops requiring a presence key" } else { "" };
        Self::new(Critical::PresenceRemove, format!("Remove presence key '{name}'{then}"), format!("remove {name}"))
    }

    pub fn approve_device(label: &str, device_id: &str) -> Self {
        Self::new(
            Critical::Approve,
            format!(
                "Approve master device {label} (device {}): it gets the account key, and with it every credential",
                shorten(device_id)
            ),
            format!("approve {label}"),
        )
    }

    pub fn approve_recovery(agent: &str, device_id: &str, keep_old: bool) -> Self {
        let old = if keep_old { "keeping its other devices" } else { "revoking its other devices" };
        Self::new(
            Critical::Approve,
            format!(
                "Approve a replacement machine (device {}) for agent {agent}: it gets the agent's scope and private \
                 credentials, {old}",
                shorten(device_id)
            ),
            format!("approve {agent}"),
        )
    }

    pub fn revoke_device(label: &str, device_id: &str) -> Self {
        Self::new(
            Critical::DeviceRevoke,
            format!("Revoke master device {label} (device {}): end every session of it", shorten(device_id)),
            format!("revoke {label}"),
        )
    }

    /// Opening a recovery on this machine with the recovery key (the account is not known yet).
    pub fn open_recovery() -> Self {
        Self::new(
            Critical::Recover,
            "Open a recovery of the account this recovery key belongs to, making this machine its master device"
                .to_owned(),
            "recover".to_owned(),
        )
    }

    pub fn complete_recovery(account_id: &str) -> Self {
        Self::new(
            Critical::Recover,
            format!("Complete the recovery of account {}: this machine gets the account key", shorten(account_id)),
            "recover".to_owned(),
        )
    }

    pub fn rotate_recovery_key() -> Self {
        Self::new(
            Critical::RecoveryKeyRotate,
            "Replace the recovery key: the current one stops working".to_owned(),
            "rotate recovery key".to_owned(),
        )
    }

    pub fn read_high_value(service: &str) -> Self {
        Self::new(
            Critical::HighValueRead,
            format!("Open high-value credential {service} on this machine"),
            format!("read {service}"),
        )
    }

    /// An operation the server says rule `rule` of the account's policy requires presence for:
    /// `request` is this machine's own line for it (`PUT /v1/credentials/prod-db`), `what` the
    /// server's sentence (shown, never trusted: the presence answers only the request this
    /// machine is sending), both stripped of what could steer a terminal.
    pub fn policy_rule(rule: &str, request: &str, what: &str) -> Self {
        let rule = printable(rule, 64);
        Self::new(
            Critical::PolicyRule,
            format!("Go on with {}; the server says: {}", printable(request, 200), printable(what, 300)),
            format!("allow {rule}"),
        )
    }

    pub fn change_high_value(service: &str, high_value: bool) -> Self {
        let what = if high_value {
            format!("Mark {service} high-value: no agent reads it without an approval of each use")
        } else {
            format!("Clear high-value on {service}: agents in its scope read it without asking")
        };
        Self::new(Critical::HighValueChange, what, format!("store {service}"))
    }

    /// `weakens`: why the new policy weakens the old (one line per loosened rule).
    pub fn weaken_policy(from: u64, weakens: &[String]) -> Self {
        Self::new(
            Critical::PolicyWeaken,
            format!("Replace policy version {from}, which {}", weakens.join(", ")),
            "set policy".to_owned(),
        )
    }

    pub fn approve_release(agent: &str, service: &str, device_id: &str, uses: &str, reason: Option<&str>) -> Self {
        let reason = reason.map(|r| format!(" (reason given: {r:?})")).unwrap_or_default();
        Self::new(
            Critical::Approve,
            format!("Release high-value {service} to agent {agent} (device {}) for {uses}{reason}", shorten(device_id)),
            format!("approve {agent}"),
        )
    }

    /// `setting` as shown ("biometric policy"), `key` as typed in `config set` ("biometric").
    pub fn weaken_setting(setting: &str, key: &str, from: &str, to: &str) -> Self {
        Self::new(Critical::ConfigWeaken, format!("Change {setting} from {from} to {to}"), format!("set {key} {to}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_render_exactly_and_opaque_strings_shorten_but_never_vanish() {
        let op = CriticalOp::approve_pairing(
            "build-bot",
            "dev_3f2a9c1b0e7d44a1c291",
            &["openai".to_owned(), "github".to_owned()],
        );
        assert_eq!(op.text, "Approve pairing of build-bot (device dev_3f2a…91) with scope openai,github");
        assert_eq!(op.confirmation, "approve build-bot");
        assert_eq!(CriticalOp::revoke("build-bot").text, "Revoke all sessions of agent build-bot");
        assert_eq!(
            CriticalOp::weaken_setting("biometric policy", "biometric", "required", "off").text,
            "Change biometric policy from required to off"
        );
        let ruled = CriticalOp::policy_rule("guard\u{1b}[2J\u{202e}", "PUT /v1/credentials/x", "rule\nsays");
        assert_eq!(ruled.confirmation, "allow guard[2J");
        assert_eq!(ruled.text, "Go on with PUT /v1/credentials/x; the server says: rulesays");
        assert_eq!(shorten("short"), "short");
        assert_eq!(shorten("ünïcode-and-longer-still"), "ünïcode-…ll");
        assert!(!shorten(&"x".repeat(500)).is_empty());
    }
}
