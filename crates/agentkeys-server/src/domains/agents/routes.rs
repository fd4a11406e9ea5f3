//! `/v1/agents` and `/v1/recipients`: the account owner's agent operations.

use agentkeys_proto::agents::{
    AgentListResponse, AliasRequest, CreateAgentRequest, CreateAgentResponse, REQUEST_TTL_MS, RecipientsResponse,
    RevokeRequest, ScopeChangeRequest, TierChangeRequest,
};
use agentkeys_proto::namespace::Namespace;
use agentkeys_proto::types::RecipientsQuery;
use agentkeys_proto::{ErrorBody, ids};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ops::{AddAlias, ChangeScope, CreateAgent, Revoke, SetTier, Teardown};
use super::queries;
use crate::domains::accounts::queries as accounts;
use crate::domains::credentials::ops::decode_wraps;
use crate::domains::links::queries::NewLink;
use crate::domains::statements::ops::decode_statements;
use crate::engine::audit::Subject;
use crate::engine::op::Op;
use crate::error::ApiError;
use crate::http::action::signed;
use crate::http::decode;
use crate::http::signed::{Caller, Signed};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(signed("agent.list", routes!(list_agents)))
        .routes(signed("agent.create", routes!(create_agent)))
        .routes(signed("agent.scope", routes!(change_scope)))
        .routes(signed("agent.tier", routes!(change_tier)))
        .routes(signed("agent.alias", routes!(add_alias)))
        .routes(signed("agent.revoke", routes!(revoke_agent)))
        .routes(signed("agent.teardown", routes!(teardown_agent)))
        .routes(signed("agent.recipients", routes!(recipients)))
}

/// Commits an agent operation by the account owner, audited against the agent's namespace.
async fn commit_agent_op<O: Op>(
    state: &AppState,
    caller: &Caller,
    agent_id: Result<String, ApiError>,
    op: impl FnOnce(String) -> Result<O, ApiError>,
) -> Result<O::Output, ApiError> {
    let subject = agent_id.as_deref().map(Subject::agent).unwrap_or_default();
    let decision = caller.require_master().and(agent_id).and_then(op);
    caller.commit(state, subject, decision).await
}

/// Every agent of the account: id, label, aliases, tier, status, scope, devices, last seen.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", responses((status = 200, body = AgentListResponse), (status = 403, body = ErrorBody)))]
pub async fn list_agents(State(state): State<AppState>, signed: Signed) -> Result<Json<AgentListResponse>, ApiError> {
    let caller = &signed.caller;
    if let Err(error) = caller.require_master() {
        return Err(caller.refuse(&state, error).await);
    }
    let agents = queries::list(&state.db.reads, &caller.account_id, state.clock.now_ms()).await?;
    caller.record(&state, Subject::default()).await?;
    Ok(Json(AgentListResponse { agents }))
}

/// Creates an agent and registers the link key of its link code. The code's secret never reaches
/// the server: it gets the link key's public half, certified by the account key, and the scope's
/// data keys wrapped to it.
#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = CreateAgentRequest,
    responses((status = 201, body = CreateAgentResponse), (status = 409, body = ErrorBody)))]
pub async fn create_agent(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<(StatusCode, Json<CreateAgentResponse>), ApiError> {
    let caller = &signed.caller;
    let now = state.clock.now_ms();
    let prepared = async {
        caller.require_master()?;
        let request: CreateAgentRequest = signed.json()?;
        decode::agent_name("agent label", &request.label)?;
        let scope = decode::scope(&request.scope)?;
        let agent_id = ids::agent_id(&caller.account_id, &request.label);
        let link_sign = decode::exact::<32>("link_sign_public", &request.link_sign_public)?;
        let link_kx = decode::exact::<32>("link_kx_public", &request.link_kx_public)?;
        let certificate = decode::exact::<64>("link_certificate", &request.link_certificate)?;
        let account_key = accounts::sign_public(&state.db.reads, &caller.account_id)
            .await?
            .ok_or_else(|| ApiError::internal("a session's account has no key"))?;
        let payload = ids::link_key_payload(&caller.account_id, &agent_id, &link_sign, &link_kx);
        if !decode::ed25519_ok(&account_key, &payload, &certificate) {
            return Err(ApiError::bad_request("link_certificate does not verify with the account key"));
        }
        let link_id = ids::link_id(&link_sign);
        let account_binding = decode::exact::<64>("account_binding", &request.account_binding)?;
        let wraps = decode_wraps(&request.wraps, &agent_id, Some(&link_id))?;
        let link = NewLink {
            link_id,
            sign_public: link_sign.to_vec(),
            kx_public: link_kx.to_vec(),
            certificate: certificate.to_vec(),
            account_binding: account_binding.to_vec(),
            expires_at_ms: now + REQUEST_TTL_MS,
            wraps,
        };
        Ok::<_, ApiError>(CreateAgent {
            statements: decode_statements(&caller.account_id, &request.statements)?,
            account_id: caller.account_id.clone(),
            agent_id,
            label: request.label,
            tier: request.tier,
            scope,
            link,
        })
    }
    .await;
    let reply = prepared.as_ref().ok().map(|op| CreateAgentResponse {
        agent_id: op.agent_id.clone(),
        link_id: op.link.link_id.clone(),
        expires_at_ms: op.link.expires_at_ms,
    });
    let subject = reply.as_ref().map(|r| Subject::agent(&r.agent_id)).unwrap_or_default();
    caller.commit(&state, subject, prepared).await?;
    Ok((StatusCode::CREATED, Json(reply.expect("a committed agent has a reply"))))
}

/// Adds and removes services. Added services carry their current data key wrapped to each of
/// the agent's devices; removed ones lose every wrap.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/scope", tag = "agents", request_body = ScopeChangeRequest,
    params(("agent_id" = agentkeys_proto::names::AgentId, Path, description = "Agent id")), responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn change_scope(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    commit_agent_op(&state, caller, decode::agent_path(path), |agent_id| {
        let request: ScopeChangeRequest = signed.json()?;
        Ok(ChangeScope {
            statements: decode_statements(&caller.account_id, &request.statements)?,
            account_id: caller.account_id.clone(),
            add: decode::scope(&request.add)?,
            remove: decode::scope(&request.remove)?,
            wraps: decode_wraps(&request.wraps, &agent_id, None)?,
            agent_id,
        })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets the agent's tier (PRODUCT.md §3).
#[utoipa::path(post, path = "/v1/agents/{agent_id}/tier", tag = "agents", request_body = TierChangeRequest,
    params(("agent_id" = agentkeys_proto::names::AgentId, Path, description = "Agent id")), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn change_tier(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    commit_agent_op(&state, caller, decode::agent_path(path), |agent_id| {
        let request: TierChangeRequest = signed.json()?;
        Ok(SetTier { account_id: caller.account_id.clone(), agent_id, tier: request.tier })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives the agent another name, unique in the account.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/aliases", tag = "agents", request_body = AliasRequest,
    params(("agent_id" = agentkeys_proto::names::AgentId, Path, description = "Agent id")), responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_alias(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    commit_agent_op(&state, caller, decode::agent_path(path), |agent_id| {
        let request: AliasRequest = signed.json()?;
        decode::agent_name("alias", &request.alias)?;
        if request.alias.starts_with("ag_") {
            return Err(ApiError::bad_request("aliases cannot start with ag_, which marks agent ids"));
        }
        Ok(AddAlias { account_id: caller.account_id.clone(), agent_id, alias: request.alias })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the agent: its next request fails, on every replica.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/revoke", tag = "agents", request_body = RevokeRequest,
    params(("agent_id" = agentkeys_proto::names::AgentId, Path, description = "Agent id")), responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke_agent(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    commit_agent_op(&state, caller, decode::agent_path(path), |agent_id| {
        let request: RevokeRequest = signed.json()?;
        let statements = decode_statements(&caller.account_id, &request.statements)?;
        Ok(Revoke { account_id: caller.account_id.clone(), agent_id, statements })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes the agent and deletes its private credentials and every data key wrapped to it.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/teardown", tag = "agents", request_body = RevokeRequest,
    params(("agent_id" = agentkeys_proto::names::AgentId, Path, description = "Agent id")), responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn teardown_agent(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    commit_agent_op(&state, caller, decode::agent_path(path), |agent_id| {
        let request: RevokeRequest = signed.json()?;
        let statements = decode_statements(&caller.account_id, &request.statements)?;
        Ok(Teardown { account_id: caller.account_id.clone(), agent_id, statements })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The agent devices a new version of a credential must be wrapped to.
#[utoipa::path(get, path = "/v1/recipients", tag = "agents", params(RecipientsQuery),
    responses((status = 200, body = RecipientsResponse)))]
pub async fn recipients(
    State(state): State<AppState>,
    query: Result<Query<RecipientsQuery>, QueryRejection>,
    signed: Signed,
) -> Result<Json<RecipientsResponse>, ApiError> {
    let caller = &signed.caller;
    let checked = caller.require_master().and_then(|()| {
        let query = decode::query(query)?;
        agentkeys_proto::names::validate_service_name(&query.service)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let namespace = match query.agent {
            Some(agent) => {
                decode::agent_name("agent id", &agent)?;
                Namespace::Agent(agent)
            }
            None => Namespace::Vault,
        };
        Ok((namespace, query.service))
    });
    let (namespace, service) = match checked {
        Ok(found) => found,
        Err(error) => return Err(caller.refuse(&state, error).await),
    };
    let mut conn = state.db.reads.acquire().await?;
    let devices =
        queries::recipients(&mut conn, &caller.account_id, &namespace, &service, state.clock.now_ms()).await?;
    drop(conn);
    caller.record(&state, Subject::credential(&namespace, &service)).await?;
    Ok(Json(RecipientsResponse { devices }))
}
