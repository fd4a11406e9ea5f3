//! The master's `/v1/presence` routes: opening a ceremony bound to the request it is about to
//! send, waiting for it, cancelling it; enrolling, listing and removing presence keys; and the
//! attestation roots enrollment is restricted to. The human's side of a ceremony is the page
//! ([`super::page`]).

use std::time::Duration;

use agentkeys_proto::ceremony::{
    self, AttestationRootsRequest, CeremonyPurpose, CeremonyStarted, CeremonyState, CeremonyStatus, CeremonyWait,
    EnrollRequest, KeyKind, PresenceKey, PresenceKeyList, StartCeremonyRequest,
};
use agentkeys_proto::{ErrorBody, b64, ids, names};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use sha2::{Digest as _, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::models;
use super::ops::{CancelCeremony, ExpireCeremony, RemoveKey, SetAttestationRoots, StartCeremony, ceremony_over};
use super::queries::{self, CeremonyRow, KeyRow, RootRow};
use crate::engine::audit::Subject;
use crate::error::ApiError;
use crate::http::action::signed;
use crate::http::decode;
use crate::http::signed::{Caller, Signed};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(signed("presence.ceremony.start", routes!(start_ceremony)))
        .routes(signed("presence.ceremony.status", routes!(ceremony_status)))
        .routes(signed("presence.ceremony.cancel", routes!(cancel_ceremony)))
        .routes(signed("presence.key.enroll", routes!(enroll_key)))
        .routes(signed("presence.key.list", routes!(list_keys)))
        .routes(signed("presence.key.remove", routes!(remove_key)))
        .routes(signed("presence.roots.set", routes!(set_attestation_roots)))
}

/// What a ceremony's row is made of, from the caller and what it is for.
struct NewCeremony<'a> {
    purpose: CeremonyPurpose,
    method: &'a str,
    path: &'a str,
    body_digest: [u8; 32],
    operation: &'a str,
    key: Option<(&'a str, KeyKind)>,
}

fn new_ceremony(state: &AppState, caller: &Caller, new: NewCeremony<'_>) -> Result<CeremonyRow, ApiError> {
    relying_party(state)?;
    let id = ids::ceremony_id(state.random.bytes::<16>()?);
    let nonce = state.random.bytes::<32>()?;
    let challenge = ceremony::ceremony_challenge(
        &id,
        &caller.account_id,
        new.purpose,
        new.method,
        new.path,
        &new.body_digest,
        &nonce,
    );
    let now = state.clock.now_ms();
    let ttl = match new.purpose {
        CeremonyPurpose::Assert => ceremony::CEREMONY_TTL_MS,
        CeremonyPurpose::Enroll => ceremony::ENROLL_TTL_MS,
    };
    Ok(CeremonyRow {
        id,
        account_id: caller.account_id.clone(),
        device_id: caller.device_id.clone(),
        purpose: new.purpose,
        state: CeremonyState::Pending,
        code: ids::format_request_code(state.random.bytes::<5>()?),
        challenge: challenge.to_vec(),
        method: new.method.to_owned(),
        path: new.path.to_owned(),
        body_digest: new.body_digest.to_vec(),
        operation: new.operation.to_owned(),
        key_name: new.key.map(|(name, _)| name.to_owned()),
        key_kind: new.key.map(|(_, kind)| kind),
        key_id: None,
        reason: None,
        created_at_ms: now,
        expires_at_ms: now + ttl,
        completed_at_ms: None,
    })
}

/// The server's WebAuthn relying party, from its public URL; 503 with the fix when that URL
/// cannot be one.
pub fn relying_party(state: &AppState) -> Result<agentkeys_webauthn::RelyingParty, ApiError> {
    agentkeys_webauthn::RelyingParty::for_origin(&state.public_url).ok_or_else(|| ApiError::new(
        agentkeys_proto::ErrorCode::Unavailable,
        format!(
            "this server's public URL ({:?}) cannot be a WebAuthn relying party: a browser needs a host name, not an \
             IP address",
            state.public_url
        ),
        "start the server with --public-url https://<its host name> (for one machine, listen on 127.0.0.1 and it \
         serves as http://localhost)",
    ))
}

fn started(state: &AppState, row: &CeremonyRow) -> CeremonyStarted {
    CeremonyStarted {
        id: row.id.clone(),
        purpose: row.purpose,
        code: row.code.clone(),
        url: format!("{}/presence/{}", state.public_url, row.id),
        expires_at_ms: row.expires_at_ms,
    }
}

fn validate_start(request: &StartCeremonyRequest) -> Result<[u8; 32], ApiError> {
    if !matches!(request.method.as_str(), "POST" | "PUT" | "DELETE" | "PATCH") {
        return Err(ApiError::bad_request(format!(
            "method {:?} is not one a critical operation is sent with (POST, PUT, DELETE, PATCH)",
            request.method
        )));
    }
    let path = request.path.as_str();
    if !path.starts_with("/v1/") || path.len() > ceremony::PATH_MAX || !path.bytes().all(|b| b.is_ascii_graphic()) {
        // A path that still carries `presence=` is not refused: no request is bound to it (the
        // binding is taken without it), so such a ceremony can never be consumed.
        return Err(ApiError::bad_request(format!(
            "path must be the request's /v1/ path and query as it will be signed (printable ASCII), at most {} \
             characters",
            ceremony::PATH_MAX
        )));
    }
    names::validate_display_text(&request.operation, ceremony::OPERATION_MAX)
        .map_err(|e| ApiError::bad_request(format!("operation is refused: {e}")))?;
    decode::exact::<32>("body_digest", &request.body_digest)
}

/// Opens a ceremony bound to the request the master is about to send: its method, its path and
/// query (without `presence=`) and the SHA-256 of its body. Answered with the page's URL and the
/// code the page shows.
#[utoipa::path(post, path = "/v1/presence/ceremonies", tag = "presence", request_body = StartCeremonyRequest,
    responses((status = 201, body = CeremonyStarted), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn start_ceremony(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<(StatusCode, Json<CeremonyStarted>), ApiError> {
    let caller = &signed.caller;
    let decision = caller.require_master().and_then(|()| signed.json::<StartCeremonyRequest>()).and_then(|request| {
        let body_digest = validate_start(&request)?;
        let new = NewCeremony {
            purpose: CeremonyPurpose::Assert,
            method: &request.method,
            path: &request.path,
            body_digest,
            operation: &request.operation,
            key: None,
        };
        new_ceremony(&state, caller, new)
    });
    let reply = decision.as_ref().ok().map(|row| started(&state, row));
    caller.commit(&state, Subject::default(), decision.map(|ceremony| StartCeremony { ceremony })).await?;
    Ok((StatusCode::CREATED, Json(reply.ok_or_else(|| ApiError::internal("a started ceremony has no row"))?)))
}

fn ceremony_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let id = decode::path(path)?;
    // A malformed id names no ceremony: 404 like any unknown one (the schema states no pattern
    // for path ids, as for the other domains).
    if !ids::is_ceremony_id(&id) {
        return Err(ApiError::not_found(
            "no such presence ceremony: a ceremony id is cer_ and 22 base64url characters",
            "open the link the waiting command printed, as printed",
        ));
    }
    Ok(id)
}

/// Loads the caller's ceremony from the read pool.
async fn callers_ceremony(state: &AppState, caller: &Caller, id: &str) -> Result<CeremonyRow, ApiError> {
    let mut conn = state.db.reads.acquire().await?;
    queries::ceremony(&mut conn, id)
        .await?
        .filter(|row| row.account_id == caller.account_id)
        .ok_or_else(|| super::ops::no_such_ceremony(id))
}

fn status(row: &CeremonyRow, key: Option<PresenceKey>) -> CeremonyStatus {
    CeremonyStatus {
        id: row.id.clone(),
        purpose: row.purpose,
        state: row.state,
        expires_at_ms: row.expires_at_ms,
        key,
        reason: row.reason.clone(),
    }
}

/// Where a ceremony stands. `wait_s` holds the answer until it is no longer pending (at most 25
/// s). One that expired, was cancelled or was refused is answered `DECLINED` with why.
#[utoipa::path(get, path = "/v1/presence/ceremonies/{id}", tag = "presence", params(
        ("id" = String, Path, description = "Ceremony id (cer_…)"), CeremonyWait),
    responses((status = 200, body = CeremonyStatus), (status = 404, body = ErrorBody)))]
pub async fn ceremony_status(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<CeremonyWait>, QueryRejection>,
    signed: Signed,
) -> Result<Json<CeremonyStatus>, ApiError> {
    let caller = &signed.caller;
    let asked = caller.require_master().and_then(|()| Ok((ceremony_path(path)?, decode::query(query)?)));
    let (id, wait) = match asked {
        Ok(asked) => asked,
        Err(error) => return Err(caller.refuse(&state, error).await),
    };
    let wait_s = wait.wait_s.unwrap_or(0);
    if wait_s > ceremony::MAX_WAIT_S {
        let error = ApiError::bad_request(format!("wait_s is at most {}", ceremony::MAX_WAIT_S));
        return Err(caller.refuse(&state, error).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(wait_s));
    let row = loop {
        // Registered before the read, so an answer committed in between still wakes us.
        let changed = state.ceremony_events.notified();
        let row = match callers_ceremony(&state, caller, &id).await {
            Ok(row) => row,
            Err(error) => return Err(caller.refuse(&state, error).await),
        };
        let now = state.clock.now_ms();
        if row.state != CeremonyState::Pending || row.expires_at_ms <= now || tokio::time::Instant::now() >= deadline {
            break row;
        }
        // Another replica's answer wakes no one here: look again every second.
        let _ =
            tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)), changed).await;
    };
    let subject = Subject { namespace: None, service: row.key_name.clone() };
    let now = state.clock.now_ms();
    if row.state == CeremonyState::Pending && row.expires_at_ms <= now {
        let expire = Caller { action: "presence.ceremony.expire", ..caller.clone() };
        expire.commit(&state, subject, Ok(ExpireCeremony { id: row.id.clone() })).await?;
        return Err(ApiError::internal("an expired ceremony was not refused"));
    }
    if let Some(over) = ceremony_over(&row, now) {
        return Err(caller.refuse_with_subject(&state, subject, over.clone()).await.err().unwrap_or(over));
    }
    let key = match (&row.key_id, row.purpose) {
        (Some(key_id), CeremonyPurpose::Enroll) => {
            let mut conn = state.db.reads.acquire().await?;
            queries::keys(&mut conn, &caller.account_id)
                .await?
                .into_iter()
                .find(|k| &k.id == key_id)
                .map(|k| wire_key(&k))
        }
        _ => None,
    };
    caller.record(&state, subject).await?;
    Ok(Json(status(&row, key)))
}

/// Cancels a pending ceremony (Ctrl-C in the command waiting for it).
#[utoipa::path(delete, path = "/v1/presence/ceremonies/{id}", tag = "presence",
    params(("id" = String, Path, description = "Ceremony id (cer_…)")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn cancel_ceremony(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    let decision = caller
        .require_master()
        .and_then(|()| ceremony_path(path))
        .map(|id| CancelCeremony { account_id: caller.account_id.clone(), id });
    caller.commit(&state, Subject::default(), decision).await?;
    state.ceremony_events.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

/// Enrolls a presence key: opens an enrollment ceremony whose page calls
/// `navigator.credentials.create`. Critical: the account's first key needs the local presence
/// methods, later ones an assertion from an enrolled key.
#[utoipa::path(post, path = "/v1/presence/keys", tag = "presence", request_body = EnrollRequest,
    responses((status = 201, body = CeremonyStarted), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn enroll_key(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<(StatusCode, Json<CeremonyStarted>), ApiError> {
    let caller = &signed.caller;
    let decision = caller.require_master().and_then(|()| signed.json::<EnrollRequest>()).and_then(|request| {
        validate_key_name(&request.name)?;
        let operation = format!("Enroll {} presence key '{}'", request.kind.as_str(), request.name);
        let new = NewCeremony {
            purpose: CeremonyPurpose::Enroll,
            method: &caller.request.method,
            path: &caller.request.path,
            body_digest: caller.request.body_digest,
            operation: &operation,
            key: Some((&request.name, request.kind)),
        };
        new_ceremony(&state, caller, new)
    });
    let reply = decision.as_ref().ok().map(|row| started(&state, row));
    let subject = Subject { namespace: None, service: decision.as_ref().ok().and_then(|row| row.key_name.clone()) };
    caller.commit(&state, subject, decision.map(|ceremony| StartCeremony { ceremony })).await?;
    Ok((StatusCode::CREATED, Json(reply.ok_or_else(|| ApiError::internal("a started ceremony has no row"))?)))
}

/// Presence key names follow the service-name rule (safe in a shell, a path, a log line).
fn validate_key_name(name: &str) -> Result<(), ApiError> {
    names::validate_service_name(name)
        .map_err(|e| ApiError::bad_request(format!("presence key name {name:?} is refused: {e}")))
}

pub fn wire_key(key: &KeyRow) -> PresenceKey {
    let aaguid = models::aaguid_text(&key.aaguid);
    let algorithm = agentkeys_webauthn::CredentialKey::from_cose(&key.public_key)
        .map_or("unknown", |k| k.algorithm().as_str())
        .to_owned();
    PresenceKey {
        id: key.id.clone(),
        name: key.name.clone(),
        kind: key.kind,
        model: models::model(&aaguid).map(str::to_owned),
        aaguid,
        algorithm,
        attestation_format: key.attestation_format.clone(),
        attestation_trust: key.attestation_trust.clone(),
        attestation_subject: key.attestation_subject.clone(),
        sign_count: u64::try_from(key.sign_count).unwrap_or(0),
        created_at_ms: key.created_at_ms,
        last_used_at_ms: key.last_used_at_ms,
    }
}

/// The account's presence keys.
#[utoipa::path(get, path = "/v1/presence/keys", tag = "presence", responses((status = 200, body = PresenceKeyList)))]
pub async fn list_keys(State(state): State<AppState>, signed: Signed) -> Result<Json<PresenceKeyList>, ApiError> {
    let caller = &signed.caller;
    if let Err(error) = caller.require_master() {
        return Err(caller.refuse(&state, error).await);
    }
    let mut conn = state.db.reads.acquire().await?;
    let keys = queries::keys(&mut conn, &caller.account_id).await?;
    drop(conn);
    caller.record(&state, Subject::default()).await?;
    Ok(Json(PresenceKeyList { keys: keys.iter().map(wire_key).collect() }))
}

/// Removes a presence key, by id or name (critical). Removing the last one turns the server's
/// requirement of a ceremony off.
#[utoipa::path(delete, path = "/v1/presence/keys/{key}", tag = "presence",
    params(("key" = String, Path, description = "Presence key id (pk_…) or name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_key(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    let named = caller.require_master().and_then(|()| decode::path(path));
    let found = match named {
        Ok(name) => {
            let mut conn = state.db.reads.acquire().await?;
            let keys = queries::keys(&mut conn, &caller.account_id).await?;
            keys.into_iter().find(|k| k.id == name || k.name == name).ok_or_else(|| {
                ApiError::not_found(
                    format!("no presence key named '{name}'"),
                    "see the enrolled keys with `agentkeys presence list`",
                )
            })
        }
        Err(error) => Err(error),
    };
    let subject = Subject { namespace: None, service: found.as_ref().ok().map(|k| k.name.clone()) };
    let decision = found.map(|key| RemoveKey { account_id: caller.account_id.clone(), key_id: key.id });
    caller.commit(&state, subject, decision).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restricts enrollment to authenticators whose attestation chains to one of these roots
/// (critical); an empty list lifts the restriction.
#[utoipa::path(put, path = "/v1/presence/attestation-roots", tag = "presence", request_body = AttestationRootsRequest,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn set_attestation_roots(State(state): State<AppState>, signed: Signed) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    let decision =
        caller.require_master().and_then(|()| signed.json::<AttestationRootsRequest>()).and_then(|request| {
            if request.certificates.len() > ceremony::MAX_ATTESTATION_ROOTS {
                return Err(ApiError::bad_request(format!(
                    "at most {} attestation roots may be listed",
                    ceremony::MAX_ATTESTATION_ROOTS
                )));
            }
            let mut roots = Vec::with_capacity(request.certificates.len());
            for (i, text) in request.certificates.iter().enumerate() {
                let der = b64::decode(text).filter(|der| der.len() <= 16 * 1024).ok_or_else(|| {
                    ApiError::bad_request(format!("certificates[{i}] is not base64url DER (at most 16 KiB)"))
                })?;
                let subject = agentkeys_webauthn::certificate_subject(&der)
                    .map_err(|e| ApiError::bad_request(format!("certificates[{i}] is not a certificate: {e}")))?;
                roots.push(RootRow { fingerprint: Sha256::digest(&der).to_vec(), certificate: der, subject });
            }
            agentkeys_webauthn::TrustedRoots::from_der(
                &roots.iter().map(|r| r.certificate.clone()).collect::<Vec<_>>(),
            )
            .map_err(|e| ApiError::bad_request(format!("the attestation roots are refused: {e}")))?;
            Ok(SetAttestationRoots { account_id: caller.account_id.clone(), roots })
        });
    caller.commit(&state, Subject::default(), decision).await?;
    Ok(StatusCode::NO_CONTENT)
}
