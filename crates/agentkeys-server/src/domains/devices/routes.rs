//! `GET /v1/devices` and `POST /v1/devices/{device_id}/revoke`: the account owner's devices.

use agentkeys_proto::ErrorBody;
use agentkeys_proto::devices::DeviceListResponse;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ops::RevokeDevice;
use super::queries;
use crate::engine::audit::Subject;
use crate::error::ApiError;
use crate::http::action::signed;
use crate::http::decode;
use crate::http::signed::Signed;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(signed("device.list", routes!(list_devices)))
        .routes(signed("device.revoke", routes!(revoke_device)))
}

/// The account's master devices: label, when each joined and how, its last request, whether it
/// was revoked, and which one is asking.
#[utoipa::path(get, path = "/v1/devices", tag = "devices",
    responses((status = 200, body = DeviceListResponse), (status = 403, body = ErrorBody)))]
pub async fn list_devices(State(state): State<AppState>, signed: Signed) -> Result<Json<DeviceListResponse>, ApiError> {
    let caller = &signed.caller;
    if let Err(error) = caller.require_master() {
        return Err(caller.refuse(&state, error).await);
    }
    let devices = queries::list(&state.db.reads, &caller.account_id, &caller.device_id).await?;
    caller.record(&state, Subject::default()).await?;
    Ok(Json(DeviceListResponse { devices }))
}

/// Revokes a master device (critical): every session of it ends at once, on every replica, and
/// the account key's wrap to it is deleted. The device making the request cannot revoke itself.
#[utoipa::path(post, path = "/v1/devices/{device_id}/revoke", tag = "devices", params(("device_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_device(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    let op = caller.require_master().and(decode::path(path)).and_then(|device_id| {
        if device_id == caller.device_id {
            return Err(ApiError::new(
                agentkeys_proto::ErrorCode::Denied,
                format!("device {device_id} is the one making this request: a device does not revoke itself"),
                "revoke it from another master device (`agentkeys device revoke ID` there)",
            ));
        }
        Ok(RevokeDevice { account_id: caller.account_id.clone(), device_id })
    });
    caller.commit(&state, Subject::default(), op).await?;
    Ok(StatusCode::NO_CONTENT)
}
