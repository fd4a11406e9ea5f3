//! JSON bodies of the `/v1` API. Binary fields are base64url strings (see [`crate::b64`]); every
//! request type refuses unknown fields so a typo in a client is an error, not a silent no-op.

use serde::{Deserialize, Serialize};

/// Largest request body the server reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Largest credential value, in bytes, before sealing. Sealed and base64-encoded it still fits in
/// [`MAX_BODY_BYTES`] with room for the rest of the request.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;

pub use crate::namespace::VAULT_NAMESPACE;

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// `POST /v1/accounts`: create an account and its first (master) device.
///
/// The private half of the account key never appears here: only its wraps, which the server can
/// store but not open.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// A name for this device, shown in `whoami` and the audit log.
    #[cfg_attr(feature = "openapi", schema(format = "display-text", min_length = 1, max_length = 64))]
    pub device_label: String,
    /// Account Ed25519 public key (32 bytes, base64url).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub account_sign_public: String,
    /// Account X25519 public key (32 bytes, base64url): data keys are wrapped to it.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub account_kx_public: String,
    /// Device Ed25519 public key (32 bytes): signs every request of this device's sessions.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub device_sign_public: String,
    /// Device X25519 public key (32 bytes).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub device_kx_public: String,
    /// Account signature over the device certificate payload (64 bytes, base64url).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes64))]
    pub device_certificate: String,
    /// The account private key wrapped to the device key (base64url).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes113))]
    pub account_key_wrap_device: String,
    /// The account private key wrapped to the recovery key (base64url).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes113))]
    pub account_key_wrap_recovery: String,
    /// The recovery key's Ed25519 signing key (32 bytes, derived from it: docs/protocol.md
    /// "Recovery key"): a recovery proves it holds the key by signing with it.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub recovery_sign_public: String,
}

/// Answer to [`CreateAccountRequest`]. `Debug` leaves the token out.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAccountResponse {
    pub account_id: String,
    pub device_id: String,
    pub session_id: String,
    /// The bearer token. Shown once; the server keeps only its SHA-256.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub session_token: crate::secret::WireSecret,
}

impl std::fmt::Debug for CreateAccountResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateAccountResponse")
            .field("account_id", &self.account_id)
            .field("device_id", &self.device_id)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/session`: who the caller is. Never contains a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WhoAmIResponse {
    pub account_id: String,
    pub device_id: String,
    pub device_label: String,
    pub actor_kind: ActorKind,
    pub session_id: String,
    pub session_created_at_ms: i64,
    /// For agents: which agent, its tier and scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentIdentity>,
    /// For master devices: a recovery of the account with its recovery key, pending. Unless a
    /// master device denies it, it completes once its delay has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_pending: Option<crate::agents::PendingRequest>,
}

/// What kind of device a session belongs to. Stored as [`ActorKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A device of the human who owns the account.
    Master,
    /// A device of one of the account's agents.
    Agent,
}

impl ActorKind {
    pub const ALL: [ActorKind; 2] = [ActorKind::Master, ActorKind::Agent];

    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Master => "master",
            ActorKind::Agent => "agent",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for ActorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who an agent session acts for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentIdentity {
    pub agent_id: String,
    pub label: String,
    pub tier: crate::agents::Tier,
    pub scope: Vec<String>,
}

/// `PUT /v1/credentials/{service}`: store a new version of a sealed credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutCredentialRequest {
    /// The version this write creates: the current version plus one. The AEAD binds it.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 9223372036854775807_i64))]
    #[serde(deserialize_with = "crate::number::whole")]
    pub version: u64,
    /// XChaCha20-Poly1305 nonce and ciphertext (base64url).
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
            min_length = 56,
            max_length = 43746
        )
    )]
    pub ciphertext: String,
    /// The data key wrapped to the account key (base64url).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes81))]
    pub data_key_wrap: String,
    /// The writer's grant of the account-key wrap (its recipient is the account id).
    pub grant: crate::grant::Grant,
    /// [`crate::grant::FLAG_HIGH_VALUE`] and future flags; signed into every grant.
    #[serde(default, deserialize_with = "crate::number::whole")]
    pub flags: u8,
    /// The data key wrapped to every agent device that may read this service (from
    /// `GET /v1/recipients`); the server refuses a set that is not exactly those devices.
    #[serde(default)]
    pub agent_wraps: Vec<RecipientWrap>,
}

/// A data key wrapped to one agent device.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecipientWrap {
    pub device_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes81))]
    pub wrap: String,
    /// The writer's grant of this wrap (its recipient is `device_id`).
    pub grant: crate::grant::Grant,
}

/// Query of the credential routes: the account owner addresses an agent's private namespace
/// with `?agent=ag_…`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct NamespaceQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::names::AgentId>))]
    pub agent: Option<String>,
}

/// Query of `GET /v1/credentials/{service}`: the master's namespace, or an agent's stated reason
/// (shown to the owner when the read needs approval: a high-value credential).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct CredentialReadQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::names::AgentId>))]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(min_length = 1, max_length = 500))]
    pub reason: Option<String>,
}

/// Query of `GET /v1/recipients`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct RecipientsQuery {
    #[cfg_attr(feature = "openapi", param(value_type = crate::names::ServiceName))]
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::names::AgentName>))]
    pub agent: Option<String>,
}

/// Answer to [`PutCredentialRequest`] and `DELETE /v1/credentials/{service}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialVersionResponse {
    pub namespace: String,
    pub service: String,
    pub version: u64,
    pub created_at_ms: i64,
}

/// `GET /v1/credentials/{service}`: the newest sealed version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SealedCredentialResponse {
    pub account_id: String,
    pub namespace: String,
    pub service: String,
    pub version: u64,
    pub ciphertext: String,
    pub data_key_wrap: String,
    pub created_at_ms: i64,
    pub created_by: String,
    /// Signed into the grant; see [`crate::grant::FLAG_HIGH_VALUE`].
    #[serde(default)]
    pub flags: u8,
    /// The account's signing key, which certified the signer (agents compare it with the one
    /// they pinned).
    pub account_sign_public: String,
    /// The grant of `data_key_wrap`; absent for a version stored before versions were signed,
    /// which readers refuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<crate::grant::Grant>,
    /// The master device that signed the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<crate::grant::SignerDevice>,
    /// Served through a release the owner approved (a high-value credential, or a policy rule
    /// requiring approval): the reader must not keep or cache the value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

/// One line of `GET /v1/credentials`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialSummary {
    pub namespace: String,
    pub service: String,
    pub version: u64,
    pub updated_at_ms: i64,
}

/// `GET /v1/credentials`: names and versions, never values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialListResponse {
    pub credentials: Vec<CredentialSummary>,
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only rows at or after this time (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    /// Only rows about this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::names::ServiceName>))]
    pub service: Option<String>,
    /// At most this many rows, newest last (1 to 1000; default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<u32>,
    /// Only rows of this agent (`ag_…`). Agents always see only their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// How the server decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allowed,
    Denied,
    RateLimited,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::RateLimited => "rate_limited",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Outcome::Allowed, Outcome::Denied, Outcome::RateLimited, Outcome::Failed]
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

/// One audit row as the account owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub seq: i64,
    pub ts_ms: i64,
    /// Device id of the actor, when the request authenticated that far.
    pub actor: Option<String>,
    pub action: String,
    pub namespace: Option<String>,
    pub service: Option<String>,
    pub outcome: Outcome,
    /// The error code, for anything but `allowed`.
    pub code: Option<ErrorCode>,
    /// How the human showed presence, for a critical master operation (`fprintd`, `polkit`,
    /// `touchid`, `windows-hello`, `prompt`, `skipped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<String>,
    /// The policy that decided the request: `vVERSION:RULE`, or `vVERSION` when no rule of
    /// that version matched ([`crate::policy::rule_ref`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl AuditEntry {
    pub fn outcome_str(&self) -> &'static str {
        self.outcome.as_str()
    }
}

/// `GET /v1/audit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditResponse {
    pub entries: Vec<AuditEntry>,
}

use crate::ErrorCode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_the_session_token_out() {
        let response = CreateAccountResponse {
            account_id: "acct_x".into(),
            device_id: "dev_x".into(),
            session_id: "ses_x".into(),
            session_token: crate::secret::WireSecret::new("akt_secret_token".into()),
        };
        assert!(!format!("{response:?}").contains("akt_secret_token"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let json = r#"{"version":1,"ciphertext":"","data_key_wrap":"","extra":1}"#;
        let err = serde_json::from_str::<PutCredentialRequest>(json).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}

/// `GET /v1/account/settings`: the account's server-side policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// Refuse critical operations (approve, revoke, teardown, agent create and upgrade, widening a
    /// scope, turning this off) whose presence was `skipped` or not reported.
    pub require_presence_for_critical: bool,
    /// How long a recovery with the recovery key waits before it can complete (set through
    /// `PUT /v1/account/recovery-delay`).
    pub recovery_delay_s: i64,
}

/// `PUT /v1/account/settings`: what it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccountSettingsChange {
    /// As in [`AccountSettings`]; turning it off is critical.
    pub require_presence_for_critical: bool,
}
