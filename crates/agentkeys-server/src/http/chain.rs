//! Tells each signed request where its account's audit chain stands: the middleware of every
//! signed route reads the place the client saw last ([`HEADER_AUDIT_SEEN`]), leaves a
//! [`HeadSlot`] for the writer to fill once the request's row is durable, and answers with the
//! head after that row and the chain's hash at the place the client saw
//! ([`agentkeys_proto::chain`]). The client compares; the server checks nothing.

use agentkeys_proto::b64;
use agentkeys_proto::chain::{AUDIT_AT_NONE, HEADER_AUDIT_AT, HEADER_AUDIT_HEAD, HEADER_AUDIT_SEEN};
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::engine::audit::HeadSlot;
use crate::error::ApiError;

/// The place a request says it saw: a positive decimal within `i64`, or none; anything else is
/// a malformed request.
fn seen(request: &Request) -> Result<Option<i64>, ApiError> {
    let Some(value) = request.headers().get(HEADER_AUDIT_SEEN) else { return Ok(None) };
    value
        .to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|seq| *seq > 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!("{HEADER_AUDIT_SEEN} must be a place of the audit chain (1 or more)"))
        })
}

pub async fn answer_head(mut request: Request, next: Next) -> Response {
    let slot = match seen(&request) {
        Ok(seen) => HeadSlot::new(seen),
        Err(error) => return error.into_response(),
    };
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    if let Some(answer) = slot.answered() {
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&answer.head.to_header()) {
            headers.insert(HEADER_AUDIT_HEAD, value);
        }
        if slot.seen.is_some() {
            let at = answer.at_seen.map_or_else(|| AUDIT_AT_NONE.to_owned(), b64::encode);
            if let Ok(value) = HeaderValue::from_str(&at) {
                headers.insert(HEADER_AUDIT_AT, value);
            }
        }
    }
    response
}
