//! `POST /v1/accounts` (no session yet) and `GET`/`PUT /v1/account/settings`.

use agentkeys_proto::types::{AccountSettings, AccountSettingsChange, CreateAccountRequest, CreateAccountResponse};
use agentkeys_proto::{ErrorBody, b64, ids};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ops::{CreateAccount, SetRequirePresence};
use super::queries;
use crate::anonymous::{Door, Source};
use crate::engine::audit::{AuditDraft, Subject};
use crate::error::ApiError;
use crate::http::action::{Action, anonymous, signed};
use crate::http::decode::{self, ACCOUNT_KEY_WRAP_LEN};
use crate::http::door;
use crate::http::signed::Signed;
use crate::sessions::NewSession;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(anonymous("account.create", routes!(create_account)))
        .routes(signed("account.settings", routes!(account_settings)))
        .routes(signed("account.settings.change", routes!(put_account_settings)))
}

fn validate_new_account(state: &AppState, request: &CreateAccountRequest) -> Result<(CreateAccount, String), ApiError> {
    let label = request.device_label.as_str();
    agentkeys_proto::names::validate_display_text(label, ids::DEVICE_LABEL_MAX)
        .map_err(|e| ApiError::bad_request(format!("device_label is refused: {e}")))?;
    let account_sign: [u8; 32] = decode::exact("account_sign_public", &request.account_sign_public)?;
    let account_kx: [u8; 32] = decode::exact("account_kx_public", &request.account_kx_public)?;
    let device_sign: [u8; 32] = decode::exact("device_sign_public", &request.device_sign_public)?;
    let device_kx: [u8; 32] = decode::exact("device_kx_public", &request.device_kx_public)?;
    let certificate: [u8; 64] = decode::exact("device_certificate", &request.device_certificate)?;
    let wrap_device = decode::bounded(
        "account_key_wrap_device",
        &request.account_key_wrap_device,
        ACCOUNT_KEY_WRAP_LEN,
        ACCOUNT_KEY_WRAP_LEN,
    )?;
    let wrap_recovery = decode::bounded(
        "account_key_wrap_recovery",
        &request.account_key_wrap_recovery,
        ACCOUNT_KEY_WRAP_LEN,
        ACCOUNT_KEY_WRAP_LEN,
    )?;
    let recovery_sign: [u8; 32] = decode::exact("recovery_sign_public", &request.recovery_sign_public)?;
    let account_id = ids::account_id(&account_sign);
    let device_id = ids::device_id(&device_sign);
    let payload = ids::device_certificate_payload(&account_id, &device_sign, &device_kx, label);
    if !decode::ed25519_ok(&account_sign, &payload, &certificate) {
        return Err(ApiError::bad_request("device_certificate does not verify with account_sign_public"));
    }
    let token = format!("akt_{}", b64::encode(state.random.bytes::<32>()?));
    let account = CreateAccount {
        account_id,
        sign_public: account_sign.to_vec(),
        kx_public: account_kx.to_vec(),
        recovery_sign_public: recovery_sign.to_vec(),
        device: CreateAccount::master_device(
            device_id,
            label.to_owned(),
            device_sign.to_vec(),
            device_kx.to_vec(),
            certificate.to_vec(),
        ),
        wrap_device,
        wrap_recovery,
        session: NewSession {
            session_id: state.random.session_id()?,
            token_hash: Sha256::digest(token.as_bytes()).to_vec(),
        },
    };
    Ok((account, token))
}

/// Creates an account and its first master device; returns the session token once.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = CreateAccountRequest,
    responses((status = 201, body = CreateAccountResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_account(
    State(state): State<AppState>,
    Action(action): Action,
    source: Source,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreateAccountResponse>), ApiError> {
    let validated = decode::body(body)
        .and_then(|body| decode::json::<CreateAccountRequest>(&body))
        .and_then(|request| validate_new_account(&state, &request));
    let (account, token) = match validated {
        Ok(valid) => valid,
        Err(error) => return Err(door::refuse(&state, source, Door::Accounts, action, error).await),
    };
    let reply = CreateAccountResponse {
        account_id: account.account_id.clone(),
        device_id: account.device.device_id.clone(),
        session_id: account.session.session_id.clone(),
        session_token: agentkeys_proto::secret::WireSecret::new(token),
    };
    let audit = AuditDraft {
        account_id: Some(reply.account_id.clone()),
        actor: Some(reply.device_id.clone()),
        session_id: Some(reply.session_id.clone()),
        action,
        subject: Subject::default(),
    };
    door::admit(&state, source, Door::Accounts, audit, account).await?;
    Ok((StatusCode::CREATED, Json(reply)))
}

/// The account's server-side policy.
#[utoipa::path(get, path = "/v1/account/settings", tag = "session",
    responses((status = 200, body = AccountSettings), (status = 403, body = ErrorBody)))]
pub async fn account_settings(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Json<AccountSettings>, ApiError> {
    let caller = &signed.caller;
    if let Err(error) = caller.require_master() {
        return Err(caller.refuse(&state, error).await);
    }
    let mut conn = state.db.reads.acquire().await?;
    let required = queries::requires_presence(&mut conn, &caller.account_id).await?;
    drop(conn);
    let delay_ms = queries::recovery_delay_ms(&state.db.reads, &caller.account_id).await?;
    caller.record(&state, Subject::default()).await?;
    Ok(Json(AccountSettings {
        require_presence_for_critical: required,
        recovery_delay_s: delay_ms.unwrap_or_default() / 1000,
    }))
}

/// Changes the account's server-side policy; turning the presence requirement off is itself a
/// critical operation.
#[utoipa::path(put, path = "/v1/account/settings", tag = "session", request_body = AccountSettingsChange,
    responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn put_account_settings(State(state): State<AppState>, signed: Signed) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    let decision = caller.require_master().and_then(|()| signed.json::<AccountSettingsChange>()).map(|settings| {
        SetRequirePresence { account_id: caller.account_id.clone(), required: settings.require_presence_for_critical }
    });
    caller.commit(&state, Subject::default(), decision).await?;
    Ok(StatusCode::NO_CONTENT)
}
