//! `/v1/recoveries`: a recovery with the recovery key, opened, polled and completed by a new
//! machine that has no session yet (it authenticates with the session token it generated, whose
//! hash it opened the request with); and the account's `recovery-key` and `recovery-delay`.

use agentkeys_proto::agents::{MasterSessionResponse, RequestKind, RequestStatus};
use agentkeys_proto::devices::{
    CompleteRecoveryRequest, DeviceOrigin, MAX_RECOVERY_DELAY_MS, MIN_RECOVERY_DELAY_MS, OpenRecoveryRequest,
    RECOVERY_COMPLETE_WINDOW_MS, RecoveryDelayRequest, RecoveryStatusResponse, RotateRecoveryKeyRequest,
    recovery_open_payload,
};
use agentkeys_proto::types::ActorKind;
use agentkeys_proto::{ErrorBody, ErrorCode, b64, ids};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ops::{CompleteRecovery, OpenRecovery, RotateRecoveryKey, SetRecoveryDelay, not_completable};
use crate::anonymous::{Door, Source};
use crate::domains::accounts::queries::{self as accounts, NewDevice};
use crate::domains::presence::queries as presence;
use crate::domains::requests::queries::{self as requests, NewRequest, RequestRow};
use crate::engine::audit::{AuditDraft, Subject};
use crate::error::ApiError;
use crate::http::action::{Action, anonymous, signed};
use crate::http::decode::{self, ACCOUNT_KEY_WRAP_LEN};
use crate::http::door;
use crate::http::signed::Signed;
use crate::sessions::NewSession;
use crate::state::AppState;

/// The audit action of a completion that also removed the account's presence keys: the row
/// says so, apart from a plain `recovery.complete`.
pub const COMPLETE_REPLACING_PRESENCE_KEYS: &str = "recovery.complete.presence_keys_removed";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(anonymous("recovery.open", routes!(open_recovery)))
        .routes(anonymous("recovery.status", routes!(recovery_status)))
        .routes(anonymous("recovery.complete", routes!(complete_recovery)))
        .routes(signed("recovery_key.rotate", routes!(rotate_recovery_key)))
        .routes(signed("account.recovery_delay.change", routes!(set_recovery_delay)))
}

fn no_such_recovery() -> ApiError {
    ApiError::not_found("no such recovery", "open one with `agentkeys recover`")
}

async fn prepare_open(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<NewRequest, ApiError> {
    let request: OpenRecoveryRequest = decode::json(&decode::body(body)?)?;
    agentkeys_proto::names::validate_display_text(&request.device_label, ids::DEVICE_LABEL_MAX)
        .map_err(|e| ApiError::bad_request(format!("device_label is refused: {e}")))?;
    let recovery_sign: [u8; 32] = decode::exact("recovery_sign_public", &request.recovery_sign_public)?;
    let sign: [u8; 32] = decode::exact("device_sign_public", &request.device_sign_public)?;
    let kx: [u8; 32] = decode::exact("device_kx_public", &request.device_kx_public)?;
    let token_hash: [u8; 32] = decode::exact("token_hash", &request.token_hash)?;
    let signature: [u8; 64] = decode::exact("signature", &request.signature)?;
    let payload = recovery_open_payload(&sign, &kx, &token_hash, &request.device_label);
    if !decode::ed25519_ok(&recovery_sign, &payload, &signature) {
        return Err(ApiError::bad_request("the signature does not verify with recovery_sign_public"));
    }
    let account_id = accounts::by_recovery_key(&state.db.reads, &recovery_sign).await?.ok_or_else(|| {
        ApiError::not_found(
            "no account on this server has this recovery key",
            "check --server (the server the account was created on), and that this is the newest recovery key \
             (`agentkeys recovery-key rotate` replaces the old one)",
        )
    })?;
    let delay_ms = accounts::recovery_delay_ms(&state.db.reads, &account_id)
        .await?
        .ok_or_else(|| ApiError::internal("an account without a recovery delay"))?;
    let now = state.clock.now_ms();
    Ok(NewRequest {
        id: format!("rec_{}", state.random.hex::<16>()?),
        code: ids::format_request_code(state.random.bytes::<5>()?),
        kind: RequestKind::AccountRecovery,
        account_id: Some(account_id),
        agent_id: None,
        label: request.device_label,
        scope: Vec::new(),
        tier: None,
        reason: None,
        device_sign_public: Some(sign.to_vec()),
        device_kx_public: Some(kx.to_vec()),
        token_hash: Some(token_hash.to_vec()),
        poll_hash: None,
        commitment: None,
        not_before_ms: Some(now + delay_ms),
        expires_at_ms: now + delay_ms + RECOVERY_COMPLETE_WINDOW_MS,
        device_id: None,
        namespace: None,
    })
}

/// Opens a recovery of the account whose recovery key signed it. The server holds it for the
/// account's recovery delay; every master device sees it and may deny it.
#[utoipa::path(post, path = "/v1/recoveries", tag = "recovery", request_body = OpenRecoveryRequest,
    responses((status = 201, body = RecoveryStatusResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn open_recovery(
    State(state): State<AppState>,
    Action(action): Action,
    source: Source,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<RecoveryStatusResponse>), ApiError> {
    let request = match prepare_open(&state, body).await {
        Ok(request) => request,
        Err(error) => return Err(door::refuse(&state, source, Door::Recoveries, action, error).await),
    };
    let account_id = request.account_id.clone().unwrap_or_default();
    let mut conn = state.db.reads.acquire().await?;
    let presence_keys = presence::key_count(&mut conn, &account_id).await?;
    drop(conn);
    let reply = RecoveryStatusResponse {
        recovery_id: request.id.clone(),
        code: request.code.clone(),
        account_id: account_id.clone(),
        status: RequestStatus::Pending,
        not_before_ms: request.not_before_ms.unwrap_or_default(),
        expires_at_ms: request.expires_at_ms,
        presence_keys: u32::try_from(presence_keys).unwrap_or(u32::MAX),
        recovery_wrap: None,
        account_sign_public: None,
        master: None,
    };
    let audit = AuditDraft { account_id: Some(account_id), action, ..AuditDraft::default() };
    door::admit(&state, source, Door::Recoveries, audit, OpenRecovery(request)).await?;
    state.request_events.notify_waiters();
    Ok((StatusCode::CREATED, Json(reply)))
}

/// The recovery `recovery_id`, when the bearer is the token it was opened with.
async fn authorized(state: &AppState, recovery_id: &str, headers: &HeaderMap) -> Result<RequestRow, ApiError> {
    let token =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(
            || {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    "no token",
                    "ask with the session token the recovery was opened with (`agentkeys recover` does)",
                )
            },
        )?;
    let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    requests::account_recovery(&state.db.reads, recovery_id)
        .await?
        .filter(|row| row.token_hash.as_deref().is_some_and(|stored| bool::from(stored.ct_eq(&token_hash))))
        .ok_or_else(no_such_recovery)
}

/// Where a recovery stands. Once its delay has passed, the answer carries the account key's
/// recovery wrap (which only the recovery key opens); once completed, the new device's session.
#[utoipa::path(get, path = "/v1/recoveries/{recovery_id}", tag = "recovery", params(("recovery_id" = String, Path)),
    responses((status = 200, body = RecoveryStatusResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn recovery_status(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<RecoveryStatusResponse>, ApiError> {
    let recovery_id = decode::path(path)?;
    let row = authorized(&state, &recovery_id, &headers).await?;
    let now = state.clock.now_ms();
    let status = row.status_at(now);
    let account_id = row.account_id.clone().unwrap_or_default();
    let ready = status == RequestStatus::Pending && row.not_before_ms.is_some_and(|t| t <= now);
    let (recovery_wrap, account_sign_public) = if ready {
        let wrap = accounts::recovery_wrap(&state.db.reads, &account_id).await?;
        let sign = accounts::sign_public(&state.db.reads, &account_id).await?;
        (wrap.map(b64::encode), sign.map(b64::encode))
    } else {
        (None, None)
    };
    let master = match (&row.device_id, &row.session_id) {
        (Some(device_id), Some(session_id)) if status == RequestStatus::Approved => {
            let wrap = accounts::key_wrap(&state.db.reads, &account_id, device_id)
                .await?
                .ok_or_else(|| ApiError::internal("a completed recovery without its account key wrap"))?;
            Some(MasterSessionResponse {
                account_id: account_id.clone(),
                device_id: device_id.clone(),
                device_label: row.label.clone(),
                session_id: session_id.clone(),
                account_key_wrap: b64::encode(wrap),
            })
        }
        _ => None,
    };
    let mut conn = state.db.reads.acquire().await?;
    let presence_keys = presence::key_count(&mut conn, &account_id).await?;
    drop(conn);
    Ok(Json(RecoveryStatusResponse {
        recovery_id: row.id,
        code: row.code,
        account_id,
        status,
        not_before_ms: row.not_before_ms.unwrap_or_default(),
        expires_at_ms: row.expires_at_ms,
        presence_keys: u32::try_from(presence_keys).unwrap_or(u32::MAX),
        recovery_wrap,
        account_sign_public,
        master,
    }))
}

async fn prepare_complete(
    state: &AppState,
    recovery_id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(CompleteRecovery, String), ApiError> {
    let row = authorized(state, recovery_id, headers).await?;
    let request: CompleteRecoveryRequest = decode::json(&decode::body(body)?)?;
    if let Some(why) = not_completable(&row, state.clock.now_ms()) {
        return Err(why);
    }
    let account_id = row.account_id.clone().unwrap_or_default();
    let (Some(sign), Some(kx), Some(token_hash)) =
        (row.device_sign_public.clone(), row.device_kx_public.clone(), row.token_hash.clone())
    else {
        return Err(ApiError::internal("a recovery without its device keys"));
    };
    let sign: [u8; 32] = sign.try_into().map_err(|_| ApiError::internal("bad stored key"))?;
    let kx: [u8; 32] = kx.try_into().map_err(|_| ApiError::internal("bad stored key"))?;
    let certificate: [u8; 64] = decode::exact("device_certificate", &request.device_certificate)?;
    let account_key = accounts::sign_public(&state.db.reads, &account_id)
        .await?
        .ok_or_else(|| ApiError::internal("a recovery of an account without a key"))?;
    let payload = ids::device_certificate_payload(&account_id, &sign, &kx, &row.label);
    if !decode::ed25519_ok(&account_key, &payload, &certificate) {
        return Err(ApiError::bad_request(
            "device_certificate does not verify with the account key: the recovery key did not open this account's key",
        ));
    }
    let account_key_wrap =
        decode::bounded("account_key_wrap", &request.account_key_wrap, ACCOUNT_KEY_WRAP_LEN, ACCOUNT_KEY_WRAP_LEN)?;
    let op = CompleteRecovery {
        recovery_id: row.id.clone(),
        device: NewDevice {
            device_id: ids::device_id(&sign),
            kind: ActorKind::Master,
            label: row.label.clone(),
            sign_public: sign.to_vec(),
            kx_public: kx.to_vec(),
            certificate: certificate.to_vec(),
            agent_id: None,
            origin: Some(DeviceOrigin::Recovery),
        },
        session: NewSession { session_id: state.random.session_id()?, token_hash },
        account_key_wrap,
        replace_presence_keys: request.replace_presence_keys,
    };
    Ok((op, account_id))
}

/// Completes a recovery whose delay has passed: the new machine becomes a master device,
/// certified by the account key it unwrapped with the recovery key. With
/// `replace_presence_keys`, the account's presence keys are removed in the same transaction.
#[utoipa::path(post, path = "/v1/recoveries/{recovery_id}/complete", tag = "recovery",
    request_body = CompleteRecoveryRequest, params(("recovery_id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn complete_recovery(
    State(state): State<AppState>,
    Action(action): Action,
    source: Source,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let prepared = match decode::path(path) {
        Ok(recovery_id) => prepare_complete(&state, &recovery_id, &headers, body).await,
        Err(error) => Err(error),
    };
    let (op, account_id) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return Err(door::refuse(&state, source, Door::Recoveries, action, error).await),
    };
    let audit = AuditDraft {
        account_id: Some(account_id),
        actor: Some(op.device.device_id.clone()),
        session_id: Some(op.session.session_id.clone()),
        action: if op.replace_presence_keys { COMPLETE_REPLACING_PRESENCE_KEYS } else { action },
        subject: Subject::default(),
    };
    door::admit(&state, source, Door::Recoveries, audit, op).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the account's recovery key (critical): the account key wrapped to the new one and
/// its signing key. A recovery opened with the old key is denied.
#[utoipa::path(put, path = "/v1/account/recovery-key", tag = "recovery", request_body = RotateRecoveryKeyRequest,
    responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn rotate_recovery_key(State(state): State<AppState>, signed: Signed) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    let op = caller.require_master().and_then(|()| signed.json::<RotateRecoveryKeyRequest>()).and_then(|request| {
        Ok(RotateRecoveryKey {
            account_id: caller.account_id.clone(),
            wrap: decode::bounded(
                "account_key_wrap",
                &request.account_key_wrap,
                ACCOUNT_KEY_WRAP_LEN,
                ACCOUNT_KEY_WRAP_LEN,
            )?,
            recovery_sign_public: decode::exact::<32>("recovery_sign_public", &request.recovery_sign_public)?.to_vec(),
        })
    });
    caller.commit(&state, Subject::default(), op).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets how long a recovery with the recovery key waits (critical when it shortens it).
#[utoipa::path(put, path = "/v1/account/recovery-delay", tag = "recovery", request_body = RecoveryDelayRequest,
    responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn set_recovery_delay(State(state): State<AppState>, signed: Signed) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    let prepared = async {
        caller.require_master()?;
        let request: RecoveryDelayRequest = signed.json()?;
        let delay_ms = i64::try_from(request.delay_s).unwrap_or(i64::MAX).saturating_mul(1000);
        if !(MIN_RECOVERY_DELAY_MS..=MAX_RECOVERY_DELAY_MS).contains(&delay_ms) {
            return Err(ApiError::bad_request(format!(
                "the recovery delay must be {}h to {}d",
                MIN_RECOVERY_DELAY_MS / 3_600_000,
                MAX_RECOVERY_DELAY_MS / 86_400_000
            )));
        }
        let current = accounts::recovery_delay_ms(&state.db.reads, &caller.account_id).await?.unwrap_or_default();
        Ok(SetRecoveryDelay { account_id: caller.account_id.clone(), delay_ms, shortens: delay_ms < current })
    }
    .await;
    caller.commit(&state, Subject::default(), prepared).await?;
    Ok(StatusCode::NO_CONTENT)
}
