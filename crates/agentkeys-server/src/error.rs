//! The server's one error type at the HTTP boundary, and the catalogue of the errors more than one
//! module answers with. Every failure becomes an [`ApiError`] with a stable [`ErrorCode`], a
//! message and a fix, rendered as `{"error":{code,message,hint}}`. Internal causes are logged,
//! never sent. It sits below the engine and the HTTP layer, which both answer with it.

use agentkeys_proto::{ErrorBody, ErrorCode, ErrorDetail};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub hint: String,
    pub retry_after_s: Option<u64>,
    pub current_version: Option<u64>,
    /// What the error names for programs besides its code, when anything.
    pub names: Option<Named>,
}

/// What an error names besides its code (at most one thing; kept in one field so that
/// `Result<_, ApiError>` stays small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// With `APPROVAL_REQUIRED`: the request the owner decides.
    RequestCode(String),
    /// With `PRESENCE_REQUIRED`: the policy rule that requires presence (`v3:name`).
    Rule(String),
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: hint.into(),
            retry_after_s: None,
            current_version: None,
            names: None,
        }
    }

    /// `APPROVAL_REQUIRED` naming the request the owner decides.
    pub fn approval_required(code: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            names: Some(Named::RequestCode(code.to_owned())),
            ..Self::new(ErrorCode::ApprovalRequired, message, hint)
        }
    }

    /// `PRESENCE_REQUIRED` because the policy's rule `rule` (`v3:name`) requires presence.
    pub fn presence_for_rule(rule: String, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { names: Some(Named::Rule(rule)), ..Self::new(ErrorCode::PresenceRequired, message, hint) }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message, "fix the request; the OpenAPI document is at /v1/openapi.json")
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is over {} bytes", agentkeys_proto::types::MAX_BODY_BYTES),
            "send a smaller value",
        )
    }

    /// A server fault: the cause goes to the log, the client gets a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            ErrorCode::Internal,
            "the server hit an internal error",
            "retry; if it persists, check the server log",
        )
    }

    /// The database is unreachable or refused the write.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "database unavailable");
        Self::new(ErrorCode::Unavailable, "the server's database is unavailable", "retry shortly; check the server log")
    }

    pub fn not_found(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message, hint)
    }

    /// `RATE_LIMITED` with the seconds until a retry can succeed.
    pub fn rate_limited(message: impl Into<String>, hint: impl Into<String>, retry_after_s: u64) -> Self {
        Self { retry_after_s: Some(retry_after_s), ..Self::new(ErrorCode::RateLimited, message, hint) }
    }

    /// `VERSION_CONFLICT` naming the newest version the server holds.
    pub fn version_conflict(message: impl Into<String>, hint: impl Into<String>, current: Option<i64>) -> Self {
        Self {
            current_version: current.map(|v| v.max(0) as u64),
            ..Self::new(ErrorCode::VersionConflict, message, hint)
        }
    }
}

/// The answer for a session that was revoked (or deleted), from authentication or from the
/// writer's check in the answering transaction.
pub fn session_revoked() -> ApiError {
    ApiError::new(
        ErrorCode::Revoked,
        "this session was revoked by the account owner",
        "this device no longer has access; an agent must be paired again (`agentkeys-daemon pair`), a master \
         device re-initialized by its owner",
    )
}

/// A replayed nonce.
pub fn replayed() -> ApiError {
    ApiError::new(
        ErrorCode::ReplayedNonce,
        "this request's nonce was already used: the request is a replay",
        "send a freshly signed request; the AgentKeys clients do this on every call",
    )
}

/// The writer is gone: the server is stopping.
pub fn shutting_down() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "the server is shutting down",
        "retry against another replica or after restart",
    )
}

/// A critical operation made without presence, on an account that requires it.
pub fn presence_required() -> ApiError {
    ApiError::new(
        ErrorCode::Denied,
        "this account requires the human's presence for critical operations, and this one was made without it \
         (--no-biometric, AGENTKEYS_BIOMETRIC=off, or a client that does not report it)",
        "run it again without --no-biometric and confirm in person (fingerprint, password or typed confirmation); \
         in person, `agentkeys config set require-presence off` lifts the requirement",
    )
}

/// A credential that does not exist (or was removed), as the account owner is told.
pub fn credential_not_found(service: &str) -> ApiError {
    ApiError::not_found(
        format!("no credential named '{service}'"),
        format!("store it with `agentkeys store {service}`; see what exists with `agentkeys list`"),
    )
}

/// An agent id that names no agent of the caller's account.
pub fn no_such_agent(agent: &str) -> ApiError {
    ApiError::not_found(format!("no agent '{agent}' in this account"), "list agents with `agentkeys agents`")
}

/// An operation on an agent that was torn down.
pub fn agent_torn_down(agent_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Revoked,
        format!("agent {agent_id} was torn down"),
        "create it again with `agentkeys agent create LABEL` or pair a daemon with that label",
    )
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        // Lost connections (SQLSTATE class 08) and an administrator or restart ending them
        // (class 57) are outages the client can retry, not server bugs.
        let connection_lost = match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
            _ => false,
        };
        if connection_lost { ApiError::unavailable(error) } else { ApiError::internal(error) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after_s;
        let (request_code, rule) = match self.names {
            Some(Named::RequestCode(code)) => (Some(code), None),
            Some(Named::Rule(rule)) => (None, Some(rule)),
            None => (None, None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                hint: self.hint,
                retry_after_s: self.retry_after_s,
                current_version: self.current_version,
                request_code,
                rule,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

/// A duration for messages: `3d 4h`, `71h 59m`, `5m 3s`, `42s`.
pub fn duration_text(seconds: i64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}
