//! `/v1/pairings`: a daemon's pairing, authenticated by the poll secret it opened it with.

use agentkeys_proto::agents::{
    AgentSessionResponse, MasterSessionResponse, OpenPairingRequest, OpenPairingResponse, PairingKind,
    PairingStatusResponse, REQUEST_TTL_MS, RequestKind, RequestStatus, RevealPairingRequest, Tier,
};
use agentkeys_proto::{ErrorBody, ErrorCode, ids};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ops::{OpenPairing, Reveal};
use crate::anonymous::{Door, Source};
use crate::domains::agents::queries as agents;
use crate::domains::requests::queries::{self as requests, NewRequest, RequestRow};
use crate::engine::audit::AuditDraft;
use crate::error::ApiError;
use crate::http::action::{Action, anonymous};
use crate::http::decode;
use crate::http::door;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(anonymous("pairing.open", routes!(open_pairing)))
        .routes(anonymous("pairing.status", routes!(pairing_status)))
        .routes(anonymous("pairing.reveal", routes!(reveal_pairing)))
}

fn unattributed(action: &'static str) -> AuditDraft {
    AuditDraft { action, ..AuditDraft::default() }
}

fn prepare_open(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<NewRequest, ApiError> {
    let request: OpenPairingRequest = decode::json(&decode::body(body)?)?;
    match request.kind {
        PairingKind::Pairing => decode::agent_name("agent label", &request.label)?,
        // A new master device: its device label (by the same rule, so one schema states it), and
        // no scope (it gets the account key, hence everything).
        PairingKind::Device => decode::agent_name("device label", &request.label)?,
        // A replacement machine for an existing agent, named by label, alias or id: it inherits
        // that agent's scope, so it asks for none.
        PairingKind::Recovery => decode::agent_name("agent", &request.label)?,
    }
    let kind = request.kind.request_kind();
    if kind != RequestKind::Pairing && !request.scope.is_empty() {
        return Err(ApiError::bad_request(format!(
            "a {} request asks for no scope: it gets what it replaces or joins",
            kind.as_str()
        )));
    }
    Ok(NewRequest {
        id: format!("pair_{}", state.random.hex::<16>()?),
        code: ids::format_request_code(state.random.bytes::<5>()?),
        kind,
        account_id: None,
        agent_id: None,
        scope: decode::scope(&request.scope)?,
        label: request.label,
        tier: (kind == RequestKind::Pairing).then_some(Tier::Standard),
        reason: None,
        device_sign_public: Some(decode::exact::<32>("device_sign_public", &request.device_sign_public)?.to_vec()),
        device_kx_public: Some(decode::exact::<32>("device_kx_public", &request.device_kx_public)?.to_vec()),
        token_hash: Some(decode::exact::<32>("token_hash", &request.token_hash)?.to_vec()),
        poll_hash: Some(decode::exact::<32>("poll_hash", &request.poll_hash)?.to_vec()),
        commitment: Some(decode::exact::<32>("commitment", &request.commitment)?.to_vec()),
        expires_at_ms: state.clock.now_ms() + REQUEST_TTL_MS,
        not_before_ms: None,
        device_id: None,
        namespace: None,
    })
}

/// Opens a pairing request for a daemon (no session yet). Answers with its code.
#[utoipa::path(post, path = "/v1/pairings", tag = "pairing", request_body = OpenPairingRequest,
    responses((status = 201, body = OpenPairingResponse), (status = 409, body = ErrorBody)))]
pub async fn open_pairing(
    State(state): State<AppState>,
    Action(action): Action,
    source: Source,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<OpenPairingResponse>), ApiError> {
    let request = match prepare_open(&state, body) {
        Ok(request) => request,
        Err(error) => return Err(door::refuse(&state, source, Door::Pairings, action, error).await),
    };
    let reply = OpenPairingResponse {
        pairing_id: request.id.clone(),
        code: request.code.clone(),
        expires_at_ms: request.expires_at_ms,
    };
    door::admit(&state, source, Door::Pairings, unattributed(action), OpenPairing(request)).await?;
    Ok((StatusCode::CREATED, Json(reply)))
}

fn poll_secret(headers: &HeaderMap) -> Result<[u8; 32], ApiError> {
    let secret =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(
            || {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    "no poll secret",
                    "poll with the secret the pairing was opened with",
                )
            },
        )?;
    Ok(Sha256::digest(secret.as_bytes()).into())
}

fn no_such_pairing() -> ApiError {
    ApiError::not_found("no such pairing request", "open a new one with `agentkeys-daemon pair`")
}

/// The pairing with `pairing_id`, when `poll_hash` is the one it was opened with.
async fn polled(state: &AppState, pairing_id: &str, poll_hash: &[u8; 32]) -> Result<RequestRow, ApiError> {
    let row = requests::pairing(&state.db.reads, pairing_id).await?;
    row.filter(|row| row.poll_hash.as_deref().is_some_and(|stored| bool::from(stored.ct_eq(poll_hash))))
        .ok_or_else(no_such_pairing)
}

/// Where a pairing stands, for the daemon that opened it (its poll secret as bearer).
#[utoipa::path(get, path = "/v1/pairings/{pairing_id}", tag = "pairing", params(("pairing_id" = String, Path)),
    security(("pairing_poll" = [])),
    responses((status = 200, body = PairingStatusResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn pairing_status(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<PairingStatusResponse>, ApiError> {
    let pairing_id = decode::path(path)?;
    let request = polled(&state, &pairing_id, &poll_secret(&headers)?).await?;
    let status = request.status_at(state.clock.now_ms());
    let session = match (&request.account_id, &request.agent_id, &request.device_id, &request.session_id) {
        (Some(account_id), Some(agent_id), Some(device_id), Some(session_id))
            if status == RequestStatus::Approved && request.kind != RequestKind::Device =>
        {
            // The agent's own label: a recovery may have named it by alias or id.
            let (label, tier, scope) = agents::identity(&state.db.reads, agent_id)
                .await?
                .ok_or_else(|| crate::error::no_such_agent(agent_id))?;
            Some(AgentSessionResponse {
                account_id: account_id.clone(),
                agent_id: agent_id.clone(),
                label,
                device_id: device_id.clone(),
                session_id: session_id.clone(),
                tier,
                scope,
            })
        }
        _ => None,
    };
    let master = match (&request.account_id, &request.device_id, &request.session_id) {
        (Some(account_id), Some(device_id), Some(session_id))
            if status == RequestStatus::Approved && request.kind == RequestKind::Device =>
        {
            let wrap = crate::domains::accounts::queries::key_wrap(&state.db.reads, account_id, device_id)
                .await?
                .ok_or_else(|| ApiError::internal("an approved device join without its account key wrap"))?;
            Some(MasterSessionResponse {
                account_id: account_id.clone(),
                device_id: device_id.clone(),
                device_label: request.label.clone(),
                session_id: session_id.clone(),
                account_key_wrap: agentkeys_proto::b64::encode(wrap),
            })
        }
        _ => None,
    };
    // The claiming account's signing key: the daemon pins it and computes its OTP over it.
    let account_sign_public = match &request.account_id {
        Some(account_id) => crate::domains::accounts::queries::sign_public(&state.db.reads, account_id)
            .await?
            .map(agentkeys_proto::b64::encode),
        None => None,
    };
    Ok(Json(PairingStatusResponse {
        status,
        claimed: request.account_id.is_some(),
        revealed: request.reveal.is_some(),
        account_sign_public,
        session,
        master,
    }))
}

/// The daemon reveals the nonce behind its OTP, once a master has claimed the code (so the keys
/// that master will certify are fixed before the number they must match becomes computable).
#[utoipa::path(post, path = "/v1/pairings/{pairing_id}/reveal", tag = "pairing", request_body = RevealPairingRequest,
    params(("pairing_id" = String, Path)), security(("pairing_poll" = [])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reveal_pairing(
    State(state): State<AppState>,
    Action(action): Action,
    source: Source,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let prepared = async {
        let pairing_id = decode::path(path)?;
        let poll_hash = poll_secret(&headers)?;
        let request: RevealPairingRequest = decode::json(&decode::body(body)?)?;
        let nonce = decode::exact::<32>("nonce", &request.nonce)?;
        let found = polled(&state, &pairing_id, &poll_hash).await?;
        if found.commitment.as_deref() != Some(ids::pairing_commitment(&nonce).as_slice()) {
            return Err(ApiError::bad_request("the nonce does not match the pairing's commitment"));
        }
        Ok(Reveal { pairing_id, nonce: nonce.to_vec() })
    }
    .await;
    match prepared {
        Ok(reveal) => door::admit(&state, source, Door::Pairings, unattributed(action), reveal).await?,
        Err(error) => return Err(door::refuse(&state, source, Door::Pairings, action, error).await),
    }
    Ok(StatusCode::NO_CONTENT)
}
