//! `GET /v1/session` and `GET /v1/audit`.

use agentkeys_proto::ErrorBody;
use agentkeys_proto::types::{AgentIdentity, AuditQuery, AuditResponse, WhoAmIResponse};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::queries;
use crate::domains::agents::queries as agents;
use crate::domains::requests::queries as requests;
use crate::engine::audit::AuditRow;
use crate::engine::audit::Subject;
use crate::error::ApiError;
use crate::http::action::signed;
use crate::http::decode;
use crate::http::signed::Signed;
use crate::state::AppState;

/// The most rows one `GET /v1/audit` answers with.
const MAX_AUDIT_ROWS: u32 = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(signed("session.whoami", routes!(whoami))).routes(signed("audit.read", routes!(audit)))
}

/// Who the caller is. Never includes a token.
#[utoipa::path(get, path = "/v1/session", tag = "session", responses((status = 200, body = WhoAmIResponse), (status = 401, body = ErrorBody)))]
pub async fn whoami(State(state): State<AppState>, signed: Signed) -> Result<Json<WhoAmIResponse>, ApiError> {
    let caller = &signed.caller;
    let agent = match &caller.agent_id {
        Some(agent_id) => agents::identity(&state.db.reads, agent_id)
            .await?
            .map(|(label, tier, scope)| AgentIdentity { agent_id: agent_id.clone(), label, tier, scope }),
        None => None,
    };
    // A master device is told loudly of a recovery of its account: it may be a thief's.
    let recovery_pending = match caller.agent_id {
        None => requests::pending_account_recovery(&state.db.reads, &caller.account_id, state.clock.now_ms())
            .await?
            .map(|row| row.to_pending()),
        Some(_) => None,
    };
    caller.record(&state, Subject::default()).await?;
    Ok(Json(WhoAmIResponse {
        account_id: caller.account_id.clone(),
        device_id: caller.device_id.clone(),
        device_label: caller.device_label.clone(),
        actor_kind: caller.kind,
        session_id: caller.session_id.clone(),
        session_created_at_ms: caller.session_created_at_ms,
        agent,
        recovery_pending,
    }))
}

/// The account's audit rows, oldest first. An agent sees its own rows only.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery), responses((status = 200, body = AuditResponse)))]
pub async fn audit(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
    signed: Signed,
) -> Result<Json<AuditResponse>, ApiError> {
    let caller = &signed.caller;
    let query = decode::query(query).and_then(|q| {
        if let Some(service) = &q.service {
            decode::service_name(service)?;
        }
        if q.limit.is_some_and(|limit| !(1..=MAX_AUDIT_ROWS).contains(&limit)) {
            return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_AUDIT_ROWS}")));
        }
        Ok(q)
    });
    let query = match query {
        Ok(q) => q,
        Err(error) => return Err(caller.refuse(&state, error).await),
    };
    let limit = i64::from(query.limit.unwrap_or(MAX_AUDIT_ROWS));
    // An agent sees its own rows only, whatever it asks for.
    let agent = caller.agent_id.as_deref().or(query.agent.as_deref());
    let rows = queries::audit_for_account(
        &state.db.reads,
        &caller.account_id,
        query.since_ms.unwrap_or(0),
        query.service.as_deref(),
        agent,
        limit,
    )
    .await?;
    caller.record(&state, Subject::default()).await?;
    Ok(Json(AuditResponse { entries: rows.iter().map(AuditRow::to_entry).collect() }))
}
