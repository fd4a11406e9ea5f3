//! `/v1/links/{link_id}`: a daemon holding a link code looks it up and redeems it. No session:
//! the link id is derived from the code's secret, and the redemption is signed by the link key.

use agentkeys_proto::agents::{AgentSessionResponse, DeviceWrap, LinkInfoResponse, RedeemLinkRequest, redeem_payload};
use agentkeys_proto::certificate::DeviceCertificate;
use agentkeys_proto::{ErrorBody, ErrorCode, b64, ids};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ops::RedeemLink;
use super::queries;
use crate::anonymous::{Door, Source};
use crate::domains::agents::ops::NewAgentDevice;
use crate::domains::credentials::ops::decode_wraps;
use crate::engine::audit::{AuditDraft, Subject};
use crate::engine::op::Record;
use crate::error::ApiError;
use crate::http::action::{Action, anonymous};
use crate::http::decode;
use crate::http::door;
use crate::sessions::NewSession;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(anonymous("link.info", routes!(link_info)))
        .routes(anonymous("link.redeem", routes!(redeem_link)))
}

fn unusable() -> ApiError {
    ApiError::new(
        ErrorCode::Declined,
        "this link code was already used, has expired, or does not exist",
        "ask the account owner for a new one: `agentkeys agent create LABEL`",
    )
}

/// What a link code leads to. No session: the link id is derived from the code's secret, and
/// what this returns opens only with that secret.
#[utoipa::path(get, path = "/v1/links/{link_id}", tag = "links", params(("link_id" = String, Path)),
    responses((status = 200, body = LinkInfoResponse), (status = 403, body = ErrorBody)))]
pub async fn link_info(
    State(state): State<AppState>,
    Action(action): Action,
    source: Source,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<LinkInfoResponse>, ApiError> {
    let found = match decode::path(path) {
        Ok(link_id) => {
            let now = state.clock.now_ms();
            let info = queries::info(&state.db.reads, &link_id).await?;
            info.filter(|info| !info.redeemed && info.expires_at_ms >= now)
                .map(|info| (link_id, info))
                .ok_or_else(unusable)
        }
        Err(error) => Err(error),
    };
    let (link_id, info) = match found {
        Ok(found) => found,
        Err(error) => return Err(door::refuse(&state, source, Door::Links, action, error).await),
    };
    // A look-up of a live code spends a token of the door too, and is audited in its account.
    let audit = AuditDraft {
        account_id: Some(info.account_id.clone()),
        action,
        subject: Subject::agent(&info.agent_id),
        ..AuditDraft::default()
    };
    door::admit(&state, source, Door::Links, audit, Record).await?;
    let mut conn = state.db.reads.acquire().await?;
    let scope = crate::domains::agents::queries::scope_of(&mut conn, &info.agent_id).await?;
    Ok(Json(LinkInfoResponse {
        account_id: info.account_id,
        account_sign_public: b64::encode(info.account_sign_public),
        scope,
        label: info.label,
        tier: info.tier,
        link_certificate: b64::encode(info.certificate),
        account_binding: info.account_binding.map(b64::encode),
        wraps: info
            .wraps
            .into_iter()
            .map(|w| {
                let (grant, signer) = crate::domains::credentials::routes::wire_grant(w.grant);
                DeviceWrap {
                    namespace: w.namespace,
                    service: w.service,
                    version: w.version as u64,
                    device_id: link_id.clone(),
                    wrap: b64::encode(w.wrap),
                    grant,
                    signer,
                }
            })
            .collect(),
        expires_at_ms: info.expires_at_ms,
        agent_id: info.agent_id,
    }))
}

async fn prepare_redeem(
    state: &AppState,
    link_id: String,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, String, RedeemLink), ApiError> {
    let request: RedeemLinkRequest = decode::json(&decode::body(body)?)?;
    let link = queries::keys(&state.db.reads, &link_id).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::Declined, "no such link code", "ask the account owner for a new one")
    })?;
    let device_sign = decode::exact::<32>("device_sign_public", &request.device_sign_public)?;
    let device_kx = decode::exact::<32>("device_kx_public", &request.device_kx_public)?;
    let token_hash = decode::exact::<32>("token_hash", &request.token_hash)?;
    let link_signature = decode::exact::<64>("device_certificate", &request.device_certificate)?;
    let proof = decode::exact::<64>("proof", &request.proof)?;
    if !decode::ed25519_ok(&link.sign_public, &redeem_payload(&link_id, &token_hash, &link_signature), &proof) {
        return Err(ApiError::new(
            ErrorCode::SignatureInvalid,
            "the redemption is not signed by this link code's key",
            "copy the whole link code from `agentkeys agent create`",
        ));
    }
    let payload = ids::agent_device_payload(&link.account_id, &link.agent_id, &device_sign, &device_kx);
    if !decode::ed25519_ok(&link.sign_public, &payload, &link_signature) {
        return Err(ApiError::bad_request("device_certificate does not verify with the link key"));
    }
    let device_id = ids::device_id(&device_sign);
    let certificate = DeviceCertificate::Linked {
        link_sign_public: link.sign_public,
        link_kx_public: link.kx_public,
        account_signature: link.account_signature,
        link_signature,
    };
    let wraps = decode_wraps(&request.wraps, &link.agent_id, Some(&device_id))?;
    let device = NewAgentDevice {
        device_id,
        sign_public: device_sign.to_vec(),
        kx_public: device_kx.to_vec(),
        certificate: certificate.encode(),
        session: NewSession { session_id: state.random.session_id()?, token_hash: token_hash.to_vec() },
    };
    Ok((link.account_id, link.agent_id, RedeemLink { link_id, device, wraps }))
}

/// Binds a daemon's fresh device key to the agent with a link code: the request is signed by the
/// link key, which certifies the device key; the session token is the daemon's own (only its
/// hash is sent).
#[utoipa::path(post, path = "/v1/links/{link_id}/redeem", tag = "links", request_body = RedeemLinkRequest,
    params(("link_id" = String, Path)), responses((status = 201, body = AgentSessionResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn redeem_link(
    State(state): State<AppState>,
    Action(action): Action,
    source: Source,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<AgentSessionResponse>), ApiError> {
    let prepared = match decode::path(path) {
        Ok(link_id) => prepare_redeem(&state, link_id, body).await,
        Err(error) => Err(error),
    };
    let (account_id, agent_id, op) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return Err(door::refuse(&state, source, Door::Links, action, error).await),
    };
    let audit = AuditDraft {
        account_id: Some(account_id),
        actor: Some(op.device.device_id.clone()),
        session_id: Some(op.device.session.session_id.clone()),
        action,
        subject: Subject::agent(&agent_id),
    };
    let (device_id, session_id) = (op.device.device_id.clone(), op.device.session.session_id.clone());
    let bound = door::admit(&state, source, Door::Links, audit, op).await?;
    Ok((
        StatusCode::CREATED,
        Json(AgentSessionResponse {
            account_id: bound.account_id,
            agent_id: bound.agent_id,
            label: bound.label,
            device_id,
            session_id,
            tier: bound.tier,
            scope: bound.scope,
        }),
    ))
}
