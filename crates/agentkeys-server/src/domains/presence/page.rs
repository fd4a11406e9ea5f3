//! The human's side of a ceremony: `<public-url>/presence/<id>`, a page of plain HTML and a
//! script embedded in the binary (no build step, no third-party code, a strict
//! Content-Security-Policy), which fetches the ceremony's WebAuthn options, calls
//! `navigator.credentials.get` (or `.create` to enroll) and posts the answer back. The ceremony
//! id is the page's only credential (random, 128 bits, sent nowhere but the master's terminal),
//! and the answer is worth nothing without the presence key's signature over the challenge.
//!
//! Not in the OpenAPI document: these routes are for a browser, not for API clients. They go
//! through the anonymous door ([`crate::anonymous`]) so guessing ids is counted and limited.

use agentkeys_proto::ceremony::CeremonyPurpose;
use agentkeys_proto::{ErrorCode, b64, ids};
use agentkeys_webauthn::{RelyingParty, TrustedRoots, WebauthnError};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ops::{CompleteAssertion, CompleteEnrollment, RefuseCeremony, closed};
use super::queries::{self, CeremonyRow, KeyRow};
use super::routes::relying_party;
use crate::anonymous::{Door, Source};
use crate::engine::audit::{AuditDraft, Subject};
use crate::engine::op::Op;
use crate::error::ApiError;
use crate::http::{decode, door};
use crate::state::AppState;

const PAGE: &str = include_str!("assets/ceremony.html");
const SCRIPT: &str = include_str!("assets/ceremony.js");
const STYLE: &str = include_str!("assets/ceremony.css");

/// Nothing but this origin's own script and style, no framing, no forms, no referrer (the URL
/// is the ceremony's capability).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'none'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const OPEN: &str = "presence.page.open";
const ANSWER: &str = "presence.ceremony.complete";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/presence/{id}", get(page))
        .route("/presence/{id}/options", get(options))
        .route("/presence/{id}/answer", post(answer))
        .route("/assets/ceremony.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/assets/ceremony.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

/// The headers every response of the page carries.
fn harden(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    harden(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The page itself is the same for every ceremony: its script reads the id from the URL.
async fn page(path: Result<Path<String>, PathRejection>) -> Response {
    match decode::path(path) {
        Ok(id) if ids::is_ceremony_id(&id) => asset("text/html; charset=utf-8", PAGE),
        _ => harden(
            ApiError::not_found("no such presence ceremony", "open the link the waiting command printed")
                .into_response(),
        ),
    }
}

/// The ceremony, from the read pool; an id that is malformed or unknown is refused at the door.
async fn find(
    state: &AppState,
    source: Source,
    action: &'static str,
    path: Result<Path<String>, PathRejection>,
) -> Result<(CeremonyRow, Source), ApiError> {
    let id = decode::path(path);
    let row = match &id {
        Ok(id) if ids::is_ceremony_id(id) => {
            let mut conn = state.db.reads.acquire().await?;
            queries::ceremony(&mut conn, id).await?
        }
        _ => None,
    };
    match row {
        Some(row) => Ok((row, source)),
        None => {
            let error = super::ops::no_such_ceremony(id.as_deref().unwrap_or("?"));
            Err(door::refuse(state, source, Door::Presence, action, error).await)
        }
    }
}

fn audit(row: &CeremonyRow, action: &'static str, key_name: Option<String>) -> AuditDraft {
    AuditDraft {
        account_id: Some(row.account_id.clone()),
        actor: Some(row.device_id.clone()),
        session_id: None,
        action,
        subject: Subject { namespace: None, service: key_name.or_else(|| row.key_name.clone()) },
    }
}

/// Commits `op` as the page's request in the ceremony's account, and wakes pollers.
async fn commit<O: Op>(state: &AppState, source: Source, audit: AuditDraft, op: O) -> Result<O::Output, ApiError> {
    let result = door::admit(state, source, Door::Presence, audit, op).await;
    state.ceremony_events.notify_waiters();
    result
}

/// Audits a refusal of the page's request in the ceremony's account; returns the answer.
async fn reject(state: &AppState, source: Source, audit: AuditDraft, error: ApiError) -> ApiError {
    commit(state, source, audit, Refusal(error.clone())).await.err().unwrap_or(error)
}

/// A refusal the page's request gets, audited in the ceremony's account.
#[derive(Debug)]
struct Refusal(ApiError);

impl Op for Refusal {
    type Output = ();
    const WRITES: bool = false;

    async fn apply(
        &self,
        _conn: &mut sqlx::AnyConnection,
        _cx: crate::engine::op::Ctx,
    ) -> Result<(), crate::engine::op::OpError> {
        // Keeping the spent token: a refused page request costs what an answer does.
        Err(crate::engine::op::OpError::RefusedKeeping(self.0.clone()))
    }
}

fn credential(id: &[u8]) -> serde_json::Value {
    json!({ "type": "public-key", "id": b64::encode(id) })
}

/// What the page shows and passes to `navigator.credentials`.
#[derive(Debug, Serialize)]
struct PageOptions {
    purpose: CeremonyPurpose,
    code: String,
    operation: String,
    /// The request the ceremony is bound to, as the server will check it.
    request: String,
    expires_at_ms: i64,
    public_key: serde_json::Value,
}

async fn options(
    State(state): State<AppState>,
    source: Source,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (row, source) = find(&state, source, OPEN, path).await?;
    let now = state.clock.now_ms();
    if let Some(error) = closed(&row, now) {
        return Err(reject(&state, source, audit(&row, OPEN, None), error).await);
    }
    let rp = relying_party(&state)?;
    let keys = {
        let mut conn = state.db.reads.acquire().await?;
        queries::keys(&mut conn, &row.account_id).await?
    };
    let timeout = (row.expires_at_ms - now).max(1000);
    let listed: Vec<_> = keys.iter().map(|k| credential(&k.credential_id)).collect();
    let public_key = match row.purpose {
        CeremonyPurpose::Assert => json!({
            "challenge": b64::encode(&row.challenge),
            "rpId": rp.id,
            "allowCredentials": listed,
            "userVerification": "required",
            "timeout": timeout,
        }),
        CeremonyPurpose::Enroll => json!({
            "challenge": b64::encode(&row.challenge),
            "rp": { "id": rp.id, "name": "AgentKeys" },
            "user": {
                // The account, not a person: the user handle only keeps this account's keys apart.
                "id": b64::encode(<sha2::Sha256 as sha2::Digest>::digest(row.account_id.as_bytes())),
                "name": row.account_id,
                "displayName": format!("AgentKeys master {}", row.account_id),
            },
            "pubKeyCredParams": [
                { "type": "public-key", "alg": agentkeys_webauthn::Algorithm::Es256.cose() },
                { "type": "public-key", "alg": agentkeys_webauthn::Algorithm::EdDsa.cose() },
            ],
            "authenticatorSelection": {
                "authenticatorAttachment": row.key_kind.map_or("cross-platform", |k| k.attachment()),
                "residentKey": "discouraged",
                "requireResidentKey": false,
                "userVerification": "required",
            },
            "attestation": "direct",
            "excludeCredentials": listed,
            "timeout": timeout,
        }),
    };
    // A read, not audited and spending no token: the id is the human's (128 random bits, from
    // the CLI that opened it), and each write here would cost a commit on the ceremony's path.
    // Ids that name no ceremony, and closed ones, are refused through the door above.
    let options = PageOptions {
        purpose: row.purpose,
        code: row.code.clone(),
        operation: row.operation.clone(),
        request: format!("{} {}", row.method, row.path),
        expires_at_ms: row.expires_at_ms,
        public_key,
    };
    Ok(harden(Json(options).into_response()))
}

/// What the page posts: `navigator.credentials`' answer, binary fields in base64url.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageAnswer {
    credential_id: String,
    client_data_json: String,
    #[serde(default)]
    authenticator_data: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    attestation_object: Option<String>,
}

fn field(name: &str, value: Option<&str>) -> Result<Vec<u8>, ApiError> {
    value
        .and_then(agentkeys_webauthn::from_b64url)
        .ok_or_else(|| ApiError::bad_request(format!("the answer's {name} is missing or not base64url")))
}

/// Why a presence key's answer was refused: one audit action each, so `usage` says why.
fn refusal_action(error: &WebauthnError) -> &'static str {
    match error {
        WebauthnError::ClientData(_)
        | WebauthnError::WrongType { .. }
        | WebauthnError::WrongChallenge
        | WebauthnError::WrongOrigin { .. }
        | WebauthnError::CrossOrigin => "presence.refused.client-data",
        WebauthnError::AuthenticatorData(_) | WebauthnError::WrongRpId(_) => "presence.refused.authenticator-data",
        WebauthnError::UserNotPresent | WebauthnError::UserNotVerified => "presence.refused.unverified",
        WebauthnError::Key(_) | WebauthnError::BadSignature => "presence.refused.signature",
        WebauthnError::Attestation(_) | WebauthnError::Untrusted(_) => "presence.refused.attestation",
    }
}

fn refused(error: &WebauthnError) -> ApiError {
    ApiError::new(
        ErrorCode::Denied,
        format!("the presence key's answer was refused: {error}"),
        "nothing was changed; run the command again and answer with an enrolled presence key (with its PIN or \
         biometric)",
    )
}

async fn answer(
    State(state): State<AppState>,
    source: Source,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (row, source) = find(&state, source, ANSWER, path).await?;
    let now = state.clock.now_ms();
    if let Some(error) = closed(&row, now) {
        return Err(reject(&state, source, audit(&row, ANSWER, None), error).await);
    }
    let parsed = decode::body(body).and_then(|body| decode::json::<PageAnswer>(&body));
    let answer = match parsed {
        Ok(answer) => answer,
        // Malformed JSON is the page's bug, not the key's answer: refused, the ceremony stays open.
        Err(error) => return Err(reject(&state, source, audit(&row, ANSWER, None), error).await),
    };
    let rp = relying_party(&state)?;
    let keys = {
        let mut conn = state.db.reads.acquire().await?;
        queries::keys(&mut conn, &row.account_id).await?
    };
    match row.purpose {
        CeremonyPurpose::Assert => assert(&state, source, &row, &rp, &keys, &answer).await?,
        CeremonyPurpose::Enroll => enroll(&state, source, &row, &rp, &answer, now).await?,
    }
    Ok(harden(Json(json!({ "state": "completed" })).into_response()))
}

async fn refuse(
    state: &AppState,
    source: Source,
    row: &CeremonyRow,
    action: &'static str,
    key: Option<&KeyRow>,
    error: ApiError,
) -> ApiError {
    let op = RefuseCeremony { id: row.id.clone(), key_id: key.map(|k| k.id.clone()), error: error.clone() };
    commit(state, source, audit(row, action, key.map(|k| k.name.clone())), op).await.err().unwrap_or(error)
}

async fn assert(
    state: &AppState,
    source: Source,
    row: &CeremonyRow,
    rp: &RelyingParty,
    keys: &[KeyRow],
    answer: &PageAnswer,
) -> Result<(), ApiError> {
    let credential_id = field("credential_id", Some(&answer.credential_id))?;
    let client_data = field("client_data_json", Some(&answer.client_data_json))?;
    let auth_data = field("authenticator_data", answer.authenticator_data.as_deref())?;
    let signature = field("signature", answer.signature.as_deref())?;
    let Some(key) = keys.iter().find(|k| k.credential_id == credential_id) else {
        let error = ApiError::new(
            ErrorCode::Denied,
            "the presence key that answered is not enrolled in this account",
            "answer with a key `agentkeys presence list` shows, or enroll this one with `agentkeys presence enroll`",
        );
        return Err(refuse(state, source, row, "presence.refused.unknown-key", None, error).await);
    };
    let verified = agentkeys_webauthn::CredentialKey::from_cose(&key.public_key).and_then(|cose| {
        agentkeys_webauthn::verify_assertion(rp, &row.challenge, &cose, &client_data, &auth_data, &signature)
    });
    let assertion = match verified {
        Ok(assertion) => assertion,
        Err(error) => return Err(refuse(state, source, row, refusal_action(&error), Some(key), refused(&error)).await),
    };
    let stored = u32::try_from(key.sign_count).unwrap_or(u32::MAX);
    if !agentkeys_webauthn::counter_advances(stored, assertion.sign_count) {
        let error = super::ops::possibly_cloned(i64::from(assertion.sign_count));
        return Err(refuse(state, source, row, "presence.refused.cloned", Some(key), error).await);
    }
    let op =
        CompleteAssertion { id: row.id.clone(), key_id: key.id.clone(), sign_count: i64::from(assertion.sign_count) };
    commit(state, source, audit(row, ANSWER, Some(key.name.clone())), op).await
}

async fn enroll(
    state: &AppState,
    source: Source,
    row: &CeremonyRow,
    rp: &RelyingParty,
    answer: &PageAnswer,
    now: i64,
) -> Result<(), ApiError> {
    let client_data = field("client_data_json", Some(&answer.client_data_json))?;
    let attestation = field("attestation_object", answer.attestation_object.as_deref())?;
    let roots = {
        let mut conn = state.db.reads.acquire().await?;
        queries::attestation_roots(&mut conn, &row.account_id).await?
    };
    let roots =
        TrustedRoots::from_der(&roots).map_err(|e| ApiError::internal(format!("a stored attestation root: {e}")))?;
    let verified =
        agentkeys_webauthn::verify_registration(rp, &row.challenge, &client_data, &attestation, &roots, now / 1000);
    let registration = match verified {
        Ok(registration) => registration,
        Err(error) => return Err(refuse(state, source, row, refusal_action(&error), None, refused(&error)).await),
    };
    let (Some(name), Some(kind)) = (row.key_name.clone(), row.key_kind) else {
        return Err(ApiError::internal("an enrollment ceremony has no key name"));
    };
    let key = KeyRow {
        id: ids::presence_key_id(&registration.credential_id),
        account_id: row.account_id.clone(),
        name,
        kind,
        credential_id: registration.credential_id.clone(),
        public_key: registration.key.cose().to_vec(),
        sign_count: i64::from(registration.sign_count),
        aaguid: registration.aaguid.to_vec(),
        attestation_format: registration.attestation.format.clone(),
        attestation_trust: registration.attestation.trust.as_str().to_owned(),
        attestation_subject: registration.attestation.subject.clone(),
        created_at_ms: now,
        last_used_at_ms: None,
    };
    let op = CompleteEnrollment { id: row.id.clone(), key };
    commit(state, source, audit(row, ANSWER, None), op).await
}
