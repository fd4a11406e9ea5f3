//! Wire types of the agent side: agents and their devices, scope and tiers, pairing and link
//! codes, and the one approval queue (PRODUCT.md §3). Keys and wraps are base64url strings; the
//! server stores and forwards them but can open none of them.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// How long a pair code, link code or agent request stays open.
pub const REQUEST_TTL_MS: i64 = 10 * 60 * 1000;

/// What an agent may do (PRODUCT.md §3). Ordered: each tier includes the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Metadata only: whoami, names of credentials, its own usage.
    Safe,
    /// Also reads the credentials in its scope, and runs commands with them.
    Standard,
    /// Also stores into its own namespace (sub-agents come later).
    Admin,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Safe, Tier::Standard, Tier::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Safe => "safe",
            Tier::Standard => "standard",
            Tier::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The namespace of an agent's private credentials (overrides of the vault, or its own).
pub fn agent_namespace(agent_id: &str) -> String {
    crate::namespace::Namespace::Agent(agent_id.to_owned()).as_stored()
}

/// Where an agent stands. Stored as its [`AgentStatus::as_str`]; an unknown stored value is an
/// error, never a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Created with a link code that was not redeemed yet.
    Pending,
    Active,
    /// Every session ended; the agent can be paired or created again under its label.
    Revoked,
    /// Revoked, and its private credentials and wraps deleted.
    TornDown,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 4] =
        [AgentStatus::Pending, AgentStatus::Active, AgentStatus::Revoked, AgentStatus::TornDown];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Pending => "pending",
            AgentStatus::Active => "active",
            AgentStatus::Revoked => "revoked",
            AgentStatus::TornDown => "torn_down",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request of the approval queue stands. `Expired` is never stored: a pending request
/// past its expiry reads as expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl RequestStatus {
    pub const ALL: [RequestStatus; 4] =
        [RequestStatus::Pending, RequestStatus::Approved, RequestStatus::Denied, RequestStatus::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
            RequestStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A data key wrapped to one device, for one credential version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceWrap {
    #[cfg_attr(feature = "openapi", schema(pattern = "^(?:vault|agent:ag_[A-Za-z0-9._-]{0,61})$"))]
    pub namespace: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::names::ServiceName))]
    pub service: String,
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_i64))]
    #[serde(deserialize_with = "crate::number::whole")]
    pub version: u64,
    pub device_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes81))]
    pub wrap: String,
    /// The writer's grant of this key (required on every wrap a client sends). Its recipient is
    /// `device_id`, or — for a wrap a daemon re-wrapped when it redeemed a link code — that link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<crate::grant::Grant>,
    /// The master device that signed the grant, in what the server relays to a daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<crate::grant::SignerDevice>,
}

/// What receives an agent's data keys: one of its devices, or the key of a link code not
/// redeemed yet (its daemon re-wraps to its own device key when it redeems the code).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    #[default]
    Device,
    Link,
}

/// One device of an agent (or the key of its pending link code), with what proves the account
/// owner approved its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentDevice {
    /// The device id, or the link id of a link code.
    pub device_id: String,
    /// A device, or a link code's key: its certificate is then the account's bare signature over
    /// [`crate::ids::link_key_payload`].
    #[serde(default)]
    pub kind: RecipientKind,
    pub agent_id: String,
    pub sign_public: String,
    pub kx_public: String,
    /// The certificate chain (docs/protocol.md, "Agent devices"), checked by the master before
    /// it wraps anything to this key.
    pub certificate: String,
    pub created_at_ms: i64,
    pub revoked: bool,
}

/// One line of `GET /v1/agents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentSummary {
    pub agent_id: String,
    pub label: String,
    pub aliases: Vec<String>,
    pub tier: Tier,
    pub status: AgentStatus,
    pub scope: Vec<String>,
    pub devices: Vec<AgentDevice>,
    /// Link codes minted for the agent and not redeemed yet: they receive its data keys too.
    #[serde(default)]
    pub links: Vec<AgentDevice>,
    pub created_at_ms: i64,
    pub last_seen_ms: Option<i64>,
}

/// `GET /v1/agents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentListResponse {
    pub agents: Vec<AgentSummary>,
}

/// `POST /v1/agents`: create an agent and mint a link code for it. The link key's private half
/// is in the code only; the server gets its public half, certified by the account key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAgentRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::names::AgentName))]
    pub label: String,
    #[cfg_attr(feature = "openapi", schema(max_items = 256, value_type = Vec<crate::names::ServiceName>))]
    pub scope: Vec<String>,
    pub tier: Tier,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub link_sign_public: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub link_kx_public: String,
    /// Account signature over [`crate::ids::link_key_payload`].
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes64))]
    pub link_certificate: String,
    /// The scope's current data keys, wrapped to the link key.
    pub wraps: Vec<DeviceWrap>,
    /// Link-key signature over [`crate::ids::link_account_payload`]: binds the code to this
    /// account's signing key, which the daemon pins.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes64))]
    pub account_binding: String,
    /// The account-key-signed statements of this change (`crate::statement`): appended to the
    /// account's log in the change's own transaction, so the log and the change never part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 8))]
    pub statements: Vec<crate::statement::AccountStatement>,
}

/// Answer to [`CreateAgentRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAgentResponse {
    pub agent_id: String,
    pub link_id: String,
    pub expires_at_ms: i64,
}

/// `POST /v1/links/{link_id}/redeem`, signed by the link key (not a session): binds a fresh
/// device key to the agent and opens its session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RedeemLinkRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub device_sign_public: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub device_kx_public: String,
    /// SHA-256 of the session token the daemon generated; the token itself never leaves it.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub token_hash: String,
    /// Link-key signature over [`crate::ids::agent_device_payload`] for the new device.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes64))]
    pub device_certificate: String,
    /// The data keys, re-wrapped from the link key to the new device key.
    pub wraps: Vec<DeviceWrap>,
    /// Link-key signature over [`redeem_payload`]: proves the caller holds the code's secret.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes64))]
    pub proof: String,
}

/// What the link key signs to redeem: `agentkeys-link-redeem-v1 \n link id \n hex(token hash)`.
pub fn redeem_payload(link_id: &str, token_hash: &[u8; 32], device_certificate: &[u8; 64]) -> Vec<u8> {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!("agentkeys-link-redeem-v1\n{link_id}\n{}\n{}", hex(token_hash), hex(device_certificate)).into_bytes()
}

/// `GET /v1/links/{link_id}`: who the daemon is about to become, and the wraps it must re-wrap
/// to its own key before redeeming. The link id is derived from the code's secret, so only a
/// holder of the code knows where to look; the wraps open only with that secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LinkInfoResponse {
    pub account_id: String,
    /// Lets the daemon check that `account_id` derives from the key that signed the link.
    pub account_sign_public: String,
    pub agent_id: String,
    pub label: String,
    pub scope: Vec<String>,
    pub tier: Tier,
    pub link_certificate: String,
    /// The link key's signature over [`crate::ids::link_account_payload`] (absent for a code
    /// minted before it existed, which the daemon refuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_binding: Option<String>,
    pub wraps: Vec<DeviceWrap>,
    pub expires_at_ms: i64,
}

/// Answer to a redeemed link or an approved pairing: the new agent session. The token is the
/// daemon's own; it is not in here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentSessionResponse {
    pub account_id: String,
    pub agent_id: String,
    pub label: String,
    pub device_id: String,
    pub session_id: String,
    pub tier: Tier,
    pub scope: Vec<String>,
}

/// `POST /v1/pairings` (no session yet): a daemon asks to join some account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OpenPairingRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::names::AgentName))]
    pub label: String,
    #[cfg_attr(feature = "openapi", schema(max_items = 256, value_type = Vec<crate::names::ServiceName>))]
    pub scope: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub device_sign_public: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub device_kx_public: String,
    /// SHA-256 of the session token the daemon generated.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub token_hash: String,
    /// SHA-256 of the secret the daemon polls with.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub poll_hash: String,
    /// [`crate::ids::pairing_commitment`] of the daemon's OTP nonce (revealed later).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub commitment: String,
    /// What the machine asks to be; a daemon pairing by default.
    #[serde(default)]
    pub kind: PairingKind,
}

/// The kinds of request a pair code opens (`POST /v1/pairings`): the subset of [`RequestKind`]
/// whose machine shows an OTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PairingKind {
    /// A daemon pairing as the agent `label`.
    #[default]
    Pairing,
    /// A new master device: `label` is its device label.
    Device,
    /// A replacement machine for the agent `label` names (its label, alias or id).
    Recovery,
}

impl PairingKind {
    pub fn request_kind(self) -> RequestKind {
        match self {
            PairingKind::Pairing => RequestKind::Pairing,
            PairingKind::Device => RequestKind::Device,
            PairingKind::Recovery => RequestKind::Recovery,
        }
    }
}

/// `POST /v1/pairings/{pairing_id}/reveal` with the poll secret as bearer: the daemon reveals its
/// OTP nonce once a master has claimed the code (the status says `claimed`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevealPairingRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub nonce: String,
}

/// Answer to [`OpenPairingRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OpenPairingResponse {
    pub pairing_id: String,
    pub code: String,
    pub expires_at_ms: i64,
}

/// `GET /v1/pairings/{pairing_id}` with the poll secret as bearer: where the pairing stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PairingStatusResponse {
    pub status: RequestStatus,
    /// A master has looked the code up: the keys it will certify are fixed; time to reveal.
    #[serde(default)]
    pub claimed: bool,
    /// The nonce was revealed.
    #[serde(default)]
    pub revealed: bool,
    /// Once claimed: the signing key of the account that claimed the code. The daemon pins it and
    /// computes the OTP over it, so a key the server stands in makes the numbers differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sign_public: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<AgentSessionResponse>,
    /// An approved `device` request: the new master device's session and the account key
    /// wrapped to its key-agreement key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<MasterSessionResponse>,
}

/// A new master device's session, from an approved device join or a completed recovery. The
/// token is the new machine's own; it is not in here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MasterSessionResponse {
    pub account_id: String,
    pub device_id: String,
    pub device_label: String,
    pub session_id: String,
    /// The account key wrapped to this device (`wrap` of docs/protocol.md, label account-key).
    pub account_key_wrap: String,
}

/// The kinds of request in the approval queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// A daemon asking to pair (`agentkeys-daemon pair`).
    Pairing,
    /// An agent asking for a service (MCP `request_access`).
    Access,
    /// An agent asking for a higher tier (MCP `request_tier`).
    Tier,
    /// A new machine of the account's owner asking to become a master device
    /// (`agentkeys device join`): approving it wraps the account key to it.
    Device,
    /// A replacement machine asking to take over an existing agent (`agentkeys-daemon recover`):
    /// same agent id, scope, tier and private credentials, a new device key.
    Recovery,
    /// A new machine holding the recovery key (`agentkeys recover`): held for the account's
    /// recovery delay, during which any master device can deny it.
    AccountRecovery,
    /// An agent's read of a high-value credential: approving it wraps the current data key to
    /// the asking device alone, for a number of uses or a time.
    Release,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Pairing => "pairing",
            RequestKind::Access => "access",
            RequestKind::Tier => "tier",
            RequestKind::Device => "device",
            RequestKind::Recovery => "recovery",
            RequestKind::AccountRecovery => "account_recovery",
            RequestKind::Release => "release",
        }
    }

    pub const ALL: [RequestKind; 7] = [
        RequestKind::Pairing,
        RequestKind::Access,
        RequestKind::Tier,
        RequestKind::Device,
        RequestKind::Recovery,
        RequestKind::AccountRecovery,
        RequestKind::Release,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One request of the approval queue, as the master sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PendingRequest {
    pub code: String,
    pub kind: RequestKind,
    /// The agent the request is about: for pairing, the label it asks for.
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Services asked for (pairing, access).
    pub scope: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The pairing daemon's keys, to compute the OTP and to certify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_sign_public: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_kx_public: Option<String>,
    /// The daemon's commitment to its OTP nonce, and the nonce once revealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// An account recovery: when its delay has passed and it can complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    /// A release: the agent device that asked (the only one the key is wrapped to), and the
    /// namespace of the credential (`vault`, or the agent's own `agent:<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `GET /v1/requests`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestListResponse {
    pub requests: Vec<PendingRequest>,
    /// Names this list (the pending codes, hashed): passed back as `changed_from`, it holds the
    /// next list until the queue differs from this one.
    #[serde(default)]
    pub digest: String,
}

/// Query of `GET /v1/requests`: with `changed_from` (a list's `digest`), hold the answer up to
/// `wait_s` seconds (0 to [`MAX_DECISION_WAIT_S`]) while the queue is still that list, so a
/// listening master asks once per change or per wait, never in a busy loop.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct RequestListWait {
    #[cfg_attr(feature = "openapi", param(minimum = 0, maximum = 25))]
    pub wait_s: Option<u32>,
    #[cfg_attr(feature = "openapi", param(min_length = 32, max_length = 32, pattern = "^[0-9a-f]{32}$"))]
    pub changed_from: Option<String>,
}

/// `POST /v1/requests/{code}/approve`. What it carries depends on the kind: a pairing needs the
/// certificate and the wraps for the granted scope; an access request needs the wraps; a tier
/// request needs nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// The scope granted (pairing, access): may differ from what was asked.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 256, value_type = Vec<crate::names::ServiceName>))]
    pub scope: Vec<String>,
    /// Pairing: account signature over [`crate::ids::agent_device_payload`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::b64::Bytes64>))]
    pub device_certificate: Option<String>,
    #[serde(default)]
    pub wraps: Vec<DeviceWrap>,
    /// The account-key-signed statements of this change (`crate::statement`): appended to the
    /// account's log in the change's own transaction, so the log and the change never part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 8))]
    pub statements: Vec<crate::statement::AccountStatement>,
    /// Device join: the account key wrapped to the new device's key-agreement key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::b64::Bytes113>))]
    pub account_key_wrap: Option<String>,
    /// Agent recovery: keep the agent's old devices (by default they are revoked).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_old: bool,
    /// Release: how many reads the wrap serves (default 1 when `for_s` is not given, else
    /// unlimited within `for_s`), and for how long (default [`RELEASE_DEFAULT_FOR_MS`], at most
    /// [`RELEASE_MAX_FOR_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub uses: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86400))]
    pub for_s: Option<u32>,
}

/// Longest reason an agent may give (an ask, a high-value read), in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// The most reads one release may serve.
pub const RELEASE_MAX_USES: u32 = 1000;
/// How long a release lasts when `approve` names no time: long enough for the agent that is
/// waiting on it, short enough that a forgotten one-use release does not linger.
pub const RELEASE_DEFAULT_FOR_MS: i64 = 15 * 60 * 1000;
/// The longest a release may last.
pub const RELEASE_MAX_FOR_MS: i64 = 24 * 60 * 60 * 1000;

/// Query of `GET /v1/requests/{code}/decision`: hold the answer until the request is decided, for
/// at most this many seconds (0 to [`MAX_DECISION_WAIT_S`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct DecisionWait {
    #[cfg_attr(feature = "openapi", param(minimum = 0, maximum = 25))]
    pub wait_s: Option<u32>,
}

/// The longest one decision look-up is held: below the 30 s a client or proxy waits for an answer.
pub const MAX_DECISION_WAIT_S: u32 = 25;

/// Answer to an approval or a denial, and where an agent's request stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DecisionResponse {
    pub code: String,
    pub kind: RequestKind,
    pub status: RequestStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// `POST /v1/requests` by an agent: ask the master for a service or a tier.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentAskRequest {
    pub kind: RequestKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::names::ServiceName>))]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[cfg_attr(feature = "openapi", schema(format = "display-text", min_length = 1, max_length = 500))]
    pub reason: String,
}

/// Answer to [`AgentAskRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentAskResponse {
    pub code: String,
    pub expires_at_ms: i64,
}

/// `POST /v1/agents/{agent_id}/scope`: add and remove services. Adding carries the current data
/// key of each added service wrapped to each of the agent's devices.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScopeChangeRequest {
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 256, value_type = Vec<crate::names::ServiceName>))]
    pub add: Vec<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 256, value_type = Vec<crate::names::ServiceName>))]
    pub remove: Vec<String>,
    #[serde(default)]
    pub wraps: Vec<DeviceWrap>,
    /// The account-key-signed statements of this change (`crate::statement`): appended to the
    /// account's log in the change's own transaction, so the log and the change never part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 8))]
    pub statements: Vec<crate::statement::AccountStatement>,
}

/// `POST /v1/agents/{agent_id}/revoke` and `…/teardown`: the account's statement of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// The account-key-signed statements of this change (`crate::statement`): appended to the
    /// account's log in the change's own transaction, so the log and the change never part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 8))]
    pub statements: Vec<crate::statement::AccountStatement>,
}

/// `POST /v1/agents/{agent_id}/tier`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TierChangeRequest {
    pub tier: Tier,
}

/// `POST /v1/agents/{agent_id}/aliases`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AliasRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(?:[0-9A-Zb-z][A-Za-z0-9._-]{0,63}|a(?:[0-9A-Za-fh-z._-][A-Za-z0-9._-]{0,62})?|ag(?:[0-9A-Za-z.-][A-Za-z0-9._-]{0,61})?)$"
        )
    )]
    pub alias: String,
}

/// `GET /v1/recipients?namespace=…&service=…`: the agent devices a new version of that
/// credential must be wrapped to. The master checks each certificate before wrapping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecipientsResponse {
    pub devices: Vec<AgentDevice>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered_and_round_trip() {
        assert!(Tier::Safe < Tier::Standard && Tier::Standard < Tier::Admin);
        for tier in Tier::ALL {
            assert_eq!(Tier::parse(tier.as_str()), Some(tier));
            assert_eq!(serde_json::to_string(&tier).unwrap(), format!("\"{tier}\""));
        }
    }

    #[test]
    fn states_round_trip_and_match_serde() {
        for status in AgentStatus::ALL {
            assert_eq!(AgentStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("\"{status}\""));
        }
        for status in RequestStatus::ALL {
            assert_eq!(RequestStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("\"{status}\""));
        }
        for kind in RequestKind::ALL {
            assert_eq!(RequestKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(AgentStatus::parse("gone"), None);
    }
}
