//! The error contract: one `ErrorCode` per failure a client can act on, each with a fixed HTTP
//! status (its CLI exit code is the clients' to define: `agentkeys_core::exit`), and the `{"error":{code,message,hint}}`
//! body every non-2xx response carries.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable failure code. The serialized names are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request body or query is malformed or has unknown fields.
    BadRequest,
    /// A service name outside [`crate::names::SERVICE_NAME_PATTERN`].
    InvalidServiceName,
    /// The request body is over [`crate::types::MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// The endpoint exists but does not take this HTTP method (the `Allow` header lists those it takes).
    MethodNotAllowed,
    /// No bearer token, or a token the server does not know.
    Unauthenticated,
    /// The request signature is missing or does not verify with the session's device key.
    SignatureInvalid,
    /// The signed timestamp is outside the accepted clock skew.
    StaleTimestamp,
    /// The nonce was already used by this session: a replayed request.
    ReplayedNonce,
    /// The session has expired or is otherwise unusable.
    SessionInvalid,
    /// The session (or the whole agent) was revoked by the account owner.
    Revoked,
    /// Authenticated, but not allowed (scope, policy, tier).
    Denied,
    /// No such credential (or it was removed).
    NotFound,
    /// Allowed only after the account owner approves a pending request (the message names its code).
    ApprovalRequired,
    /// A pairing or approval request was denied by the account owner, or expired.
    Declined,
    /// A critical operation of an account with a presence key, sent without a completed, unused
    /// presence ceremony bound to this exact request (the message says which check failed).
    PresenceRequired,
    /// A concurrent write took the version this write proposed; retry with `current_version + 1`.
    VersionConflict,
    /// The thing being created exists already.
    AlreadyExists,
    /// Too many requests; retry after `retry_after_s`.
    RateLimited,
    /// The server cannot serve right now (database down, shutting down).
    Unavailable,
    /// A server fault; the details are in the server log, never in the response.
    Internal,
    /// Found by a client, never sent by a server: the server's answer fails verification — a
    /// version the account never signed, a key granted to someone it never chose, or an older
    /// state than this client already saw. The client refuses it and reports it to the audit.
    Integrity,
}

impl ErrorCode {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidServiceName,
        ErrorCode::PayloadTooLarge,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unauthenticated,
        ErrorCode::SignatureInvalid,
        ErrorCode::StaleTimestamp,
        ErrorCode::ReplayedNonce,
        ErrorCode::SessionInvalid,
        ErrorCode::Revoked,
        ErrorCode::Denied,
        ErrorCode::NotFound,
        ErrorCode::ApprovalRequired,
        ErrorCode::Declined,
        ErrorCode::PresenceRequired,
        ErrorCode::VersionConflict,
        ErrorCode::AlreadyExists,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::Integrity,
    ];

    /// The wire name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::InvalidServiceName => "INVALID_SERVICE_NAME",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::SignatureInvalid => "SIGNATURE_INVALID",
            ErrorCode::StaleTimestamp => "STALE_TIMESTAMP",
            ErrorCode::ReplayedNonce => "REPLAYED_NONCE",
            ErrorCode::SessionInvalid => "SESSION_INVALID",
            ErrorCode::Revoked => "REVOKED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::ApprovalRequired => "APPROVAL_REQUIRED",
            ErrorCode::Declined => "DECLINED",
            ErrorCode::PresenceRequired => "PRESENCE_REQUIRED",
            ErrorCode::VersionConflict => "VERSION_CONFLICT",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Integrity => "INTEGRITY",
        }
    }

    /// The code of a wire name; `None` for a name this version does not know.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == text)
    }

    /// The HTTP status the server answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidServiceName => 400,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unauthenticated
            | ErrorCode::SignatureInvalid
            | ErrorCode::StaleTimestamp
            | ErrorCode::ReplayedNonce
            | ErrorCode::SessionInvalid
            | ErrorCode::Revoked => 401,
            ErrorCode::Denied | ErrorCode::ApprovalRequired | ErrorCode::Declined | ErrorCode::PresenceRequired => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::VersionConflict | ErrorCode::AlreadyExists => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
            // Never answered by a server; were a proxy to relay a client's finding, it is a bad
            // answer from upstream.
            ErrorCode::Integrity => 502,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong and how to fix it. `message` and `hint` are for people; `code` is for programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    pub hint: String,
    /// With `RATE_LIMITED`: seconds until a retry can succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// With `VERSION_CONFLICT`: the newest version the server holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// With `APPROVAL_REQUIRED`: the code of the request the owner decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_code: Option<String>,
    /// With `PRESENCE_REQUIRED` because a `require_presence` rule matched: the rule, as
    /// `v<version>:<name>` ([`crate::policy::rule_ref`]). The CLI then asks for presence and
    /// sends the request again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("NOPE"), None);
    }
}
