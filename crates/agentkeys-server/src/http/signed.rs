//! Authentication of `/v1` requests: the [`Signed`] extractor finds the session by the SHA-256 of
//! its bearer token (through [`crate::sessions`]), checks the timestamp, and verifies the device
//! key's signature over method, path, timestamp, nonce and body digest. Whether the session is
//! still live, and whether the nonce is fresh, the writer decides later, in the same transaction
//! as the request's audit row — which is what makes revocation and the replay check hold across
//! replicas. Failures with a known session are audited in its account before they are
//! answered; those without one are counted at the anonymous door ([`crate::anonymous`]).

use std::sync::Arc;

use agentkeys_proto::presence::{self, PresenceClaim};
use agentkeys_proto::signing::{self, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_CLOCK_SKEW_S};
use agentkeys_proto::types::{ActorKind, MAX_BODY_BYTES};
use agentkeys_proto::{ErrorCode, b64};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts as _, Request};
use axum::http::request::Parts;
use ed25519_dalek::Signature;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::action::Action;
use crate::anonymous::{Door, Source};
use crate::engine::audit::{AuditDraft, HeadSlot, Subject};
use crate::engine::op::{Op, Record, RequestBinding};
use crate::engine::writer::{NonceRecord, Submission};
use crate::error::{ApiError, session_revoked};
use crate::sessions::KnownSession;
use crate::state::AppState;

/// An authenticated caller, and the route it called.
#[derive(Debug, Clone)]
pub struct Caller {
    pub session_id: String,
    pub account_id: String,
    pub device_id: String,
    pub device_label: String,
    pub kind: ActorKind,
    pub session_created_at_ms: i64,
    /// The agent this device belongs to; `None` for a master device.
    pub agent_id: Option<String>,
    pub nonce: NonceRecord,
    /// How the human showed presence, when the request is a critical master operation.
    pub presence: Option<PresenceClaim>,
    /// The request as signed, minus `presence=`: what a presence ceremony is bound to.
    pub request: RequestBinding,
    /// The route's audit action.
    pub action: &'static str,
    /// Where the writer tells this request its account chain's head ([`super::chain`]).
    pub head: Option<Arc<HeadSlot>>,
}

impl Caller {
    /// Commits this request's decision, nonce and audit row; returns the op's output once durable.
    pub async fn commit<O: Op>(
        &self,
        state: &AppState,
        subject: Subject,
        decision: Result<O, ApiError>,
    ) -> Result<O::Output, ApiError> {
        let submission = Submission {
            nonce: Some(self.nonce.clone()),
            presence: self.presence.clone(),
            request: Some(self.request.clone()),
            audit: AuditDraft {
                account_id: Some(self.account_id.clone()),
                actor: Some(self.device_id.clone()),
                session_id: Some(self.session_id.clone()),
                action: self.action,
                subject,
            },
            head: self.head.clone(),
        };
        state.writer.submit(submission, decision).await
    }

    /// Commits a request that changes nothing (a read served from the read pool).
    pub async fn record(&self, state: &AppState, subject: Subject) -> Result<(), ApiError> {
        self.commit(state, subject, Ok(Record)).await
    }

    /// Refuses agents: for what only the account owner may do.
    pub fn require_master(&self) -> Result<(), ApiError> {
        match &self.agent_id {
            None => Ok(()),
            Some(agent_id) => Err(ApiError::new(
                ErrorCode::Denied,
                format!("agent {agent_id} cannot do this: only the account owner can"),
                "ask the account owner; an agent may ask for access with the request_access tool",
            )),
        }
    }

    /// Audits a refusal about `subject` (consuming the nonce), for a route whose answer is not
    /// the refusal itself; returns what the writer answered.
    pub async fn refuse_with_subject(
        &self,
        state: &AppState,
        subject: Subject,
        error: ApiError,
    ) -> Result<(), ApiError> {
        self.commit::<Record>(state, subject, Err(error)).await
    }

    /// Audits a refused request (consuming its nonce) and returns the error to answer with:
    /// the refusal itself, or `REPLAYED_NONCE` when the request was a replay.
    pub async fn refuse(&self, state: &AppState, error: ApiError) -> ApiError {
        match self.commit::<Record>(state, Subject::default(), Err(error.clone())).await {
            Err(answer) => answer,
            Ok(()) => error,
        }
    }
}

/// A request whose signature verified, with its raw body.
#[derive(Debug)]
pub struct Signed {
    pub caller: Caller,
    pub body: Bytes,
}

impl Signed {
    /// Parses the body as JSON, refusing unknown fields.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        super::decode::json(&self.body)
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Unauthenticated,
        message,
        "run `agentkeys init` against this server, or check --server / AGENTKEYS_SERVER",
    )
}

fn signature_invalid(message: &str) -> ApiError {
    ApiError::new(
        ErrorCode::SignatureInvalid,
        message,
        "requests must be signed by this session's device key: use an AgentKeys client, and check that nothing \
         between it and the server (a proxy) rewrites the path, query or body",
    )
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

struct AuthFailure {
    error: ApiError,
    session: Option<Arc<KnownSession>>,
}

impl From<ApiError> for AuthFailure {
    fn from(error: ApiError) -> Self {
        Self { error, session: None }
    }
}

async fn authenticate(state: &AppState, parts: &Parts, body: &[u8]) -> Result<Caller, AuthFailure> {
    let Action(action) = parts
        .extensions
        .get::<Action>()
        .copied()
        .ok_or_else(|| ApiError::internal("a signed route was declared without its audit action"))?;
    let token = header(parts, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthenticated("the request has no bearer token"))?;
    let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let session = match state.sessions.get(&token_hash) {
        Some(session) => session,
        None => {
            let session = crate::sessions::find(&state.db.reads, &token_hash)
                .await
                .map_err(ApiError::from)?
                .filter(|row| bool::from(row.token_hash.ct_eq(&token_hash)))
                .map(|row| Arc::new(KnownSession::new(row)))
                .ok_or_else(|| unauthenticated("the session token is not known to this server"))?;
            if session.row.revoked_at_ms.is_some() {
                return Err(AuthFailure { error: session_revoked(), session: Some(session) });
            }
            state.sessions.insert(token_hash, session.clone());
            session
        }
    };
    let fail = |error: ApiError, session: &Arc<KnownSession>| AuthFailure { error, session: Some(session.clone()) };
    let (Some(timestamp), Some(nonce), Some(signature)) =
        (header(parts, HEADER_TIMESTAMP), header(parts, HEADER_NONCE), header(parts, HEADER_SIGNATURE))
    else {
        return Err(fail(signature_invalid("the request is not signed"), &session));
    };
    let Ok(timestamp) = timestamp.parse::<i64>() else {
        return Err(fail(signature_invalid("the signature timestamp is not a number"), &session));
    };
    let now_s = state.clock.now_ms().div_euclid(1000);
    if (now_s - timestamp).abs() > MAX_CLOCK_SKEW_S {
        return Err(fail(
            ApiError::new(
                ErrorCode::StaleTimestamp,
                format!(
                    "the request was signed {}s away from the server's clock (at most {MAX_CLOCK_SKEW_S}s allowed)",
                    now_s - timestamp
                ),
                "sync this machine's clock (NTP) and retry",
            ),
            &session,
        ));
    }
    if !signing::nonce_is_well_formed(nonce) {
        return Err(fail(signature_invalid("the request nonce is malformed"), &session));
    }
    let target = parts.extensions.get::<SignedTarget>();
    let path_and_query = match target {
        Some(target) => target.path_and_query.as_str(),
        None => parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
    };
    let body_digest = signing::body_digest(body);
    let payload = signing::signing_payload(
        parts.method.as_str(),
        path_and_query,
        &session.row.session_id,
        timestamp,
        nonce,
        &body_digest,
    );
    let verified = (|| {
        let signature: [u8; 64] = b64::decode_array(signature)?;
        session.device_key?.verify_strict(&payload, &Signature::from_bytes(&signature)).ok()
    })();
    if verified.is_none() {
        return Err(fail(
            signature_invalid("the request signature does not verify with this session's device key"),
            &session,
        ));
    }
    Ok(Caller {
        nonce: NonceRecord {
            session_id: session.row.session_id.clone(),
            nonce: nonce.to_owned(),
            // From the signed timestamp, not this replica's clock: the last moment any replica
            // with a correct clock could still accept this request.
            expires_at_ms: (timestamp + MAX_CLOCK_SKEW_S) * 1000,
        },
        session_id: session.row.session_id.clone(),
        account_id: session.row.account_id.clone(),
        device_id: session.row.device_id.clone(),
        device_label: session.row.device_label.clone(),
        kind: session.row.device_kind,
        session_created_at_ms: session.row.created_at_ms,
        agent_id: session.row.agent_id.clone(),
        presence: target.and_then(|t| t.presence.clone()),
        request: RequestBinding {
            method: parts.method.as_str().to_owned(),
            // After [`take_presence`], the target without `presence=`.
            path: parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
            body_digest,
        },
        action,
        head: parts.extensions.get::<Arc<HeadSlot>>().cloned(),
    })
}

/// A request's path and query as the client signed them, and the `presence=` parameter that
/// [`take_presence`] took out of the query so the handlers' query types never see it.
#[derive(Debug, Clone)]
pub struct SignedTarget {
    pub path_and_query: String,
    pub presence: Option<PresenceClaim>,
}

/// Takes `presence=` out of the query (the signature still covers it: see [`SignedTarget`]);
/// an unknown method, or `webauthn:` without a well-formed ceremony id, is a bad request.
pub async fn take_presence(mut request: Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let prefix = format!("{}=", presence::QUERY_PARAM);
    let Some(query) = request.uri().query().filter(|q| q.split('&').any(|pair| pair.starts_with(&prefix))) else {
        return next.run(request).await;
    };
    let mut shown = Vec::new();
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix(&prefix) {
            Some(value) => {
                shown.push(value.to_owned());
                false
            }
            None => true,
        })
        .collect();
    let method = match shown.as_slice() {
        [one] => PresenceClaim::parse(one),
        _ => None,
    };
    let Some(method) = method else {
        return ApiError::bad_request(format!(
            "presence={shown:?} is not one presence method (or webauthn:<ceremony id>)"
        ))
        .into_response();
    };
    let original = request.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let stripped = if rest.is_empty() {
        request.uri().path().to_owned()
    } else {
        format!("{}?{}", request.uri().path(), rest.join("&"))
    };
    match stripped.parse() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return ApiError::bad_request("malformed request target").into_response(),
    }
    request.extensions_mut().insert(SignedTarget { path_and_query: original, presence: Some(method) });
    next.run(request).await
}

impl FromRequest<AppState> for Signed {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| ApiError::payload_too_large())?;
        match authenticate(state, &parts, &body).await {
            Ok(caller) => Ok(Signed { caller, body }),
            Err(AuthFailure { error, session: None }) => {
                // No session the server knows: counted at the door, not audited row by row.
                let action = parts.extensions.get::<Action>().map_or("request", |a| a.0);
                let source = Source::from_request_parts(&mut parts, state).await.unwrap_or_else(|never| match never {});
                Err(super::door::refuse(state, source, Door::Unauthenticated, action, error).await)
            }
            Err(AuthFailure { error, session: Some(session) }) => {
                let action = parts.extensions.get::<Action>().map_or("request", |a| a.0);
                // The service an attacker named is recorded only when it is a valid name.
                let service = axum::extract::RawPathParams::from_request_parts(&mut parts, state)
                    .await
                    .ok()
                    .and_then(|params| params.iter().find(|(k, _)| *k == "service").map(|(_, v)| v.to_owned()))
                    .filter(|s| agentkeys_proto::names::validate_service_name(s).is_ok());
                // A known session that fails (a bad signature, a stale clock): audited in its account.
                let submission = Submission {
                    nonce: None,
                    presence: None,
                    request: None,
                    audit: AuditDraft {
                        account_id: Some(session.row.account_id.clone()),
                        actor: Some(session.row.device_id.clone()),
                        session_id: Some(session.row.session_id.clone()),
                        action,
                        subject: Subject { namespace: None, service },
                    },
                    head: None,
                };
                // The answer is the authentication error whatever the audit write returns.
                let _ = state.writer.submit::<Record>(submission, Err(error.clone())).await;
                Err(error)
            }
        }
    }
}
