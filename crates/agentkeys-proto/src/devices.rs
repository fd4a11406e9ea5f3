//! Wire types of master devices (PRODUCT.md §3 "master devices", "master recovery"): the list,
//! the revocation of one, the recovery of the account with its recovery key, and the rotation of
//! that key. A device joins through the pairing routes (kind `device`, [`crate::agents`]).

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::agents::{MasterSessionResponse, RequestStatus};

/// The default recovery delay: three days, time for the owner to notice and deny.
pub const DEFAULT_RECOVERY_DELAY_MS: i64 = 72 * 60 * 60 * 1000;
/// The shortest recovery delay an account may set.
pub const MIN_RECOVERY_DELAY_MS: i64 = 60 * 60 * 1000;
/// The longest: a delay nobody can wait out protects nothing and locks the owner out.
pub const MAX_RECOVERY_DELAY_MS: i64 = 90 * 24 * 60 * 60 * 1000;
/// How long a recovery can be completed once its delay has passed; then it expires.
pub const RECOVERY_COMPLETE_WINDOW_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// One master device of the account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MasterDevice {
    pub device_id: String,
    pub label: String,
    pub created_at_ms: i64,
    /// The last request any session of the device made; `None` if it made none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
    /// When it was revoked; its sessions end then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<i64>,
    /// How it joined: `init`, `device join` or `recover`.
    pub joined_by: DeviceOrigin,
    /// The device this request came from.
    pub this_device: bool,
}

/// How a master device joined the account. Stored as [`DeviceOrigin::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeviceOrigin {
    /// The account's first device (`agentkeys init`).
    Init,
    /// Approved by another master device (`agentkeys device join`).
    Join,
    /// Recovered with the recovery key (`agentkeys recover`).
    Recovery,
}

impl DeviceOrigin {
    pub const ALL: [DeviceOrigin; 3] = [DeviceOrigin::Init, DeviceOrigin::Join, DeviceOrigin::Recovery];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceOrigin::Init => "init",
            DeviceOrigin::Join => "join",
            DeviceOrigin::Recovery => "recovery",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// `GET /v1/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceListResponse {
    pub devices: Vec<MasterDevice>,
}

/// What the recovery key signs to open a recovery: the new device's keys, the hash of the
/// session token it generated, and its label, so the server cannot give the request another
/// device (`agentkeys-recovery-open-v1 \n hex(sign) \n hex(kx) \n hex(token hash) \n label`).
pub fn recovery_open_payload(
    device_sign_public: &[u8; 32],
    device_kx_public: &[u8; 32],
    token_hash: &[u8; 32],
    label: &str,
) -> Vec<u8> {
    format!(
        "agentkeys-recovery-open-v1\n{}\n{}\n{}\n{label}",
        crate::ids::hex(device_sign_public),
        crate::ids::hex(device_kx_public),
        crate::ids::hex(token_hash)
    )
    .into_bytes()
}

/// `POST /v1/recoveries` (no session): a new machine, holding the recovery key, asks to become a
/// master device of the account that key recovers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OpenRecoveryRequest {
    /// The recovery key's signing key (docs/protocol.md "Recovery key"): finds the account.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub recovery_sign_public: String,
    #[cfg_attr(feature = "openapi", schema(format = "display-text", min_length = 1, max_length = 64))]
    pub device_label: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub device_sign_public: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub device_kx_public: String,
    /// SHA-256 of the session token the new machine generated; it also polls with that token.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub token_hash: String,
    /// The recovery signing key's signature over [`recovery_open_payload`].
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes64))]
    pub signature: String,
}

/// `GET /v1/recoveries/{recovery_id}` with the new session token as bearer, and the answer to
/// opening one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecoveryStatusResponse {
    pub recovery_id: String,
    /// The request's code: master devices see it in `requests` and deny it by it.
    pub code: String,
    pub account_id: String,
    pub status: RequestStatus,
    /// Not before: when the recovery delay has passed.
    pub not_before_ms: i64,
    /// After this it can no longer be completed.
    pub expires_at_ms: i64,
    /// Presence keys the account has (which a completion may replace).
    pub presence_keys: u32,
    /// Once the delay has passed (and the request is pending): the account key wrapped to the
    /// recovery key, and the account's signing key to check it against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_wrap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sign_public: Option<String>,
    /// Once completed: the new master device's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<MasterSessionResponse>,
}

/// `POST /v1/recoveries/{recovery_id}/complete` with the new session token as bearer, once the
/// delay has passed: the new device, certified by the account key the recovery key unwrapped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompleteRecoveryRequest {
    /// The account key's signature over the device certificate payload (as at `init`).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes64))]
    pub device_certificate: String,
    /// The account key wrapped to the new device.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes113))]
    pub account_key_wrap: String,
    /// Remove every presence key of the account (they were lost with the old machines): the
    /// new device then enrolls the first one again.
    #[serde(default)]
    pub replace_presence_keys: bool,
}

/// `PUT /v1/account/recovery-key` (critical): a new recovery key replaces the old one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateRecoveryKeyRequest {
    /// The account key wrapped to the new recovery key.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes113))]
    pub account_key_wrap: String,
    /// The new recovery key's signing key.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes32))]
    pub recovery_sign_public: String,
}

/// `PUT /v1/account/recovery-delay` (critical when it shortens the delay).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecoveryDelayRequest {
    /// Seconds; at least an hour, at most 90 days.
    #[cfg_attr(feature = "openapi", schema(minimum = 3600, maximum = 7776000))]
    #[serde(deserialize_with = "crate::number::whole")]
    pub delay_s: u64,
}
