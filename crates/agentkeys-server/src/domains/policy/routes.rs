//! `GET /v1/policy`, `PUT /v1/policy` and `GET /v1/audit/{seq}/explain`: the owner's policy,
//! its replacement, and which rule decided a past request.

use agentkeys_policy::Policy;
use agentkeys_policy::change::compare;
use agentkeys_proto::ErrorBody;
use agentkeys_proto::policy::{
    ExplainResponse, PolicyQuery, PolicyResponse, SetPolicyRequest, SetPolicyResponse, parse_rule_ref,
};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ops::SetPolicy;
use super::queries;
use crate::engine::audit::Subject;
use crate::error::ApiError;
use crate::http::action::signed;
use crate::http::decode;
use crate::http::signed::Signed;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(signed("policy.read", routes!(get_policy)))
        .routes(signed("policy.set", routes!(set_policy)))
        .routes(signed("policy.explain", routes!(explain)))
}

/// The policy in force, or an earlier version (`?version=N`). Version 0 is the empty policy.
#[utoipa::path(get, path = "/v1/policy", tag = "policy", params(PolicyQuery),
    responses((status = 200, body = PolicyResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_policy(
    State(state): State<AppState>,
    query: Result<Query<PolicyQuery>, QueryRejection>,
    signed: Signed,
) -> Result<Json<PolicyResponse>, ApiError> {
    let caller = &signed.caller;
    let query = match caller.require_master().and(decode::query(query)) {
        Ok(query) => query,
        Err(error) => return Err(caller.refuse(&state, error).await),
    };
    let mut conn = state.db.reads.acquire().await?;
    let current = queries::current_version(&mut conn, &caller.account_id).await?;
    let version = match query.version.map(i64::try_from) {
        None => current,
        Some(Ok(version)) if (1..=current).contains(&version) => version,
        Some(_) => {
            let error = ApiError::not_found(
                format!("the policy has no version {}; it is at version {current}", query.version.unwrap_or(0)),
                "`agentkeys policy show` shows the current one",
            );
            return Err(caller.refuse(&state, error).await);
        }
    };
    let answer = match queries::get(&mut conn, &caller.account_id, version).await? {
        Some(stored) => PolicyResponse {
            version: stored.version as u64,
            text: stored.text,
            created_at_ms: Some(stored.created_at_ms),
            created_by: Some(stored.created_by),
        },
        None => PolicyResponse { version: 0, text: String::new(), created_at_ms: None, created_by: None },
    };
    drop(conn);
    caller.record(&state, Subject::default()).await?;
    Ok(Json(answer))
}

/// Replaces the policy with a new version. The text is validated first (every problem listed);
/// a change that removes or loosens a `deny`, `require_approval` or `require_presence` rule of
/// the version it replaces is critical.
#[utoipa::path(put, path = "/v1/policy", tag = "policy", request_body = SetPolicyRequest,
    responses((status = 200, body = SetPolicyResponse), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_policy(State(state): State<AppState>, signed: Signed) -> Result<Json<SetPolicyResponse>, ApiError> {
    let caller = &signed.caller;
    let prepared = async {
        caller.require_master()?;
        let request: SetPolicyRequest = signed.json()?;
        let new = Policy::parse(&request.text).map_err(|problems| {
            ApiError::new(
                agentkeys_proto::ErrorCode::BadRequest,
                format!("the policy is refused: {problems}"),
                "fix each problem, then check the file with `agentkeys policy test CASES --policy FILE`",
            )
        })?;
        let base_version =
            i64::try_from(request.base_version).map_err(|_| ApiError::bad_request("base_version is out of range"))?;
        let mut conn = state.db.reads.acquire().await?;
        let old = match base_version {
            0 => Policy::empty(),
            version => {
                let stored = queries::get(&mut conn, &caller.account_id, version).await?.ok_or_else(|| {
                    ApiError::new(
                        agentkeys_proto::ErrorCode::VersionConflict,
                        format!("the policy has no version {version} to replace"),
                        "run `agentkeys policy set FILE` again: it compares with the current version",
                    )
                })?;
                Policy::parse(&stored.text).map_err(|_| ApiError::internal("a stored policy no longer parses"))?
            }
        };
        Ok::<_, ApiError>(SetPolicy {
            account_id: caller.account_id.clone(),
            device_id: caller.device_id.clone(),
            text: request.text,
            base_version,
            changes: compare(&old, &new),
        })
    }
    .await;
    let answer = caller.commit(&state, Subject::default(), prepared).await?;
    Ok(Json(answer))
}

/// Which rule decided an audit row of the account, with the rule as it was written then.
#[utoipa::path(get, path = "/v1/audit/{seq}/explain", tag = "policy",
    params(("seq" = i64, Path, minimum = 1, description = "The audit row's sequence number (`agentkeys usage --json` shows it)")),
    responses((status = 200, body = ExplainResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn explain(
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    signed: Signed,
) -> Result<Json<ExplainResponse>, ApiError> {
    let caller = &signed.caller;
    let seq = match caller.require_master().and(decode::path(path)) {
        Ok(seq) => seq,
        Err(error) => return Err(caller.refuse(&state, error).await),
    };
    let mut conn = state.db.reads.acquire().await?;
    let Some(row) = queries::audit_row(&mut conn, &caller.account_id, seq).await? else {
        let error = ApiError::not_found(
            format!("this account has no audit row {seq}"),
            "`agentkeys usage --json` lists the rows with their seq",
        );
        drop(conn);
        return Err(caller.refuse(&state, error).await);
    };
    // Rows from before any policy (or of requests no policy decides) name no version: the one
    // in force at the row's time is shown.
    let (policy_version, rule, rule_text) = match row.policy_rule.as_deref().and_then(parse_rule_ref) {
        Some((version, Some(name))) => {
            let text = queries::get(&mut conn, &caller.account_id, version as i64)
                .await?
                .and_then(|stored| Policy::parse(&stored.text).ok())
                .and_then(|policy| policy.rule(name).map(|rule| rule.to_toml()));
            (version, Some(name.to_owned()), text)
        }
        Some((version, None)) => (version, None, None),
        None => (queries::version_at(&mut conn, &caller.account_id, row.ts_ms).await? as u64, None, None),
    };
    drop(conn);
    caller.record(&state, Subject::default()).await?;
    Ok(Json(ExplainResponse {
        seq: row.seq,
        ts_ms: row.ts_ms,
        action: row.action,
        service: row.service,
        outcome: row.outcome,
        policy_version,
        rule,
        rule_text,
    }))
}
