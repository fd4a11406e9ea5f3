//! The server's one error type at the HTTP boundary: every failure becomes an [`ApiError`] with a
//! stable [`ErrorCode`], a message and a fix, rendered as `{"error":{code,message,hint}}`.
//! Internal causes are logged, never sent.

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
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { code, message: message.into(), hint: hint.into(), retry_after_s: None, current_version: None }
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
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                hint: self.hint,
                retry_after_s: self.retry_after_s,
                current_version: self.current_version,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}
