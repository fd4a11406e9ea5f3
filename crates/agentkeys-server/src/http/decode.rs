//! Checked values from untrusted input: path segments, queries, JSON bodies and base64url fields.
//! Every failure is a `BAD_REQUEST` (or `INVALID_SERVICE_NAME`) that names the field and the rule.

use agentkeys_proto::names::validate_service_name;
use agentkeys_proto::{ErrorCode, b64, ids};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};

use crate::error::ApiError;

/// A wrapped 32-byte data key: format byte, ephemeral key, key, tag.
pub const DATA_KEY_WRAP_LEN: usize = 1 + 32 + 32 + 16;
/// A wrapped 64-byte account key.
pub const ACCOUNT_KEY_WRAP_LEN: usize = 1 + 32 + 64 + 16;
/// Sealed values carry a format byte, a 24-byte nonce and a 16-byte tag.
pub const SEAL_OVERHEAD: usize = 1 + 24 + 16;
/// Most services one request may name.
pub const MAX_SCOPE: usize = 256;

/// Exactly `N` bytes of unpadded base64url.
pub fn exact<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], ApiError> {
    b64::decode_array::<N>(text)
        .ok_or_else(|| ApiError::bad_request(format!("{field} must be {N} bytes of unpadded base64url")))
}

/// `min..=max` bytes of unpadded base64url.
pub fn bounded(field: &'static str, text: &str, min: usize, max: usize) -> Result<Vec<u8>, ApiError> {
    b64::decode(text)
        .filter(|bytes| (min..=max).contains(&bytes.len()))
        .ok_or_else(|| ApiError::bad_request(format!("{field} must be {min} to {max} bytes of unpadded base64url")))
}

/// A JSON body, refusing unknown fields (the wire types say so).
pub fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The raw body of an unsigned route, with the size limit's refusal.
pub fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|_| ApiError::payload_too_large())
}

pub fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(value)| value).map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))
}

pub fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(value)| value).map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))
}

/// A service name by the one rule of [`validate_service_name`].
pub fn service_name(service: &str) -> Result<(), ApiError> {
    validate_service_name(service).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidServiceName,
            format!("invalid service name {:?}: {e}", service.escape_debug().to_string()),
            "pick a name like openai, github.com or aws_prod-2",
        )
    })
}

/// A `{service}` path segment.
pub fn service_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let service = self::path(path)?;
    service_name(&service)?;
    Ok(service)
}

/// Agent labels and aliases follow the service-name rule: safe in ids, tables and shells.
pub fn agent_name(what: &str, name: &str) -> Result<(), ApiError> {
    validate_service_name(name)
        .map_err(|e| ApiError::bad_request(format!("invalid {what} {:?}: {e}", name.escape_debug().to_string())))
}

/// An agent id (`ag_…`): the CLI resolves labels and aliases before it asks.
pub fn agent_id(agent_id: &str) -> Result<(), ApiError> {
    if !agent_id.starts_with("ag_") {
        return Err(ApiError::bad_request("the path takes an agent id (ag_…); the CLI resolves labels and aliases"));
    }
    agent_name("agent id", agent_id)
}

/// An `{agent_id}` path segment.
pub fn agent_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let agent = self::path(path)?;
    agent_id(&agent)?;
    Ok(agent)
}

/// A `{code}` path segment, normalized (case, dashes, look-alike characters).
pub fn code_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let code = self::path(path)?;
    ids::normalize_request_code(&code).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{:?} is not a request code: codes look like 7K3D-QX2M",
            code.escape_debug().to_string()
        ))
    })
}

/// A list of services: each valid, at most [`MAX_SCOPE`], returned sorted without repeats.
pub fn scope(scope: &[String]) -> Result<Vec<String>, ApiError> {
    if scope.len() > MAX_SCOPE {
        return Err(ApiError::bad_request(format!("at most {MAX_SCOPE} services per request")));
    }
    let mut out = Vec::with_capacity(scope.len());
    for service in scope {
        validate_service_name(service).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidServiceName,
                format!("invalid service name {:?} in scope: {e}", service.escape_debug().to_string()),
                "pick names like openai, github.com or aws_prod-2",
            )
        })?;
        if !out.contains(service) {
            out.push(service.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `signature` is `public`'s strict Ed25519 signature of `message`.
pub fn ed25519_ok(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(public)
        .is_ok_and(|key| key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature)).is_ok())
}
