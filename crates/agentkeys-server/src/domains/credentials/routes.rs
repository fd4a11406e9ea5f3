//! `/v1/credentials`: the owner's store, read, removal and listing, and an agent's read and
//! listing. The `#[utoipa::path]` attributes are the OpenAPI document.

use agentkeys_proto::ErrorBody;
use agentkeys_proto::namespace::Namespace;
use agentkeys_proto::types::{
    CredentialListResponse, CredentialReadQuery, CredentialSummary, CredentialVersionResponse, MAX_VALUE_BYTES,
    NamespaceQuery, PutCredentialRequest, SealedCredentialResponse,
};
use agentkeys_proto::{b64, ids};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ops::{
    AgentList, AgentRead, PutVersion, ReadCredential, ReleaseAsk, RemoveCredential, StoredVersion, decode_grant,
    is_high_value,
};
use super::queries::{self, SealedVersion, SignerRow, StoredGrant, Wrap};
use crate::engine::audit::Subject;
use crate::error::ApiError;
use crate::http::action::signed;
use crate::http::decode::{self, DATA_KEY_WRAP_LEN, SEAL_OVERHEAD};
use crate::http::signed::{Caller, Signed};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(signed("credential.list", routes!(list_credentials)))
        .routes(signed("credential.read", routes!(get_credential)))
        .routes(signed("credential.store", routes!(put_credential)))
        .routes(signed("credential.remove", routes!(delete_credential)))
        .routes(signed("integrity.report", routes!(report_integrity)))
}

/// A client reports what it refused as not the account's (a forged, unsigned or rolled-back
/// version, a foreign account key), or an older version its user took on purpose after a
/// restore. Recorded in the account's audit chain: refusals with the `INTEGRITY` code.
#[utoipa::path(post, path = "/v1/integrity-reports", tag = "credentials",
    request_body = agentkeys_proto::grant::IntegrityReport,
    responses((status = 202), (status = 400, body = ErrorBody)))]
pub async fn report_integrity(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<axum::http::StatusCode, ApiError> {
    let caller = &signed.caller;
    let report: agentkeys_proto::grant::IntegrityReport = signed.json()?;
    let namespace = report
        .namespace
        .as_deref()
        .map(|n| Namespace::parse(n).ok_or_else(|| ApiError::bad_request("namespace is vault or agent:<agent id>")))
        .transpose()?;
    if [report.version, report.seen].into_iter().flatten().any(|v| i64::try_from(v).is_err()) {
        return Err(ApiError::bad_request("version and seen are at most 2^63 - 1"));
    }
    if let Some(service) = &report.service {
        agentkeys_proto::names::validate_service_name(service)
            .map_err(|e| ApiError::bad_request(format!("service: {e}")))?;
    }
    let subject = match (&namespace, &report.service) {
        (Some(namespace), Some(service)) => Subject::credential(namespace, service),
        (None, Some(service)) => Subject::credential(&Namespace::Vault, service),
        _ => Subject::default(),
    };
    if report.finding.is_refusal() {
        let what = match (&report.service, report.version, report.seen) {
            (Some(service), Some(version), Some(seen)) => format!("'{service}' version {version} (had seen {seen})"),
            (Some(service), Some(version), None) => format!("'{service}' version {version}"),
            _ => "an answer".to_owned(),
        };
        let finding = ApiError::new(
            agentkeys_proto::ErrorCode::Integrity,
            format!("a client refused {what} as {:?}", report.finding),
            "check the server's database and who can write to it",
        );
        // The row is the point: the refusal recorded is the report taken. Anything else the
        // writer answers (a replayed nonce, say) is the answer.
        match caller.refuse_with_subject(&state, subject, finding).await {
            Err(recorded) if recorded.code == agentkeys_proto::ErrorCode::Integrity => {}
            Err(other) => return Err(other),
            Ok(()) => {}
        }
    } else {
        caller.record(&state, subject).await?;
    }
    Ok(axum::http::StatusCode::ACCEPTED)
}

/// The namespace a master request addresses: the vault, or `?agent=` an agent's private one.
/// Agents never choose: their reads resolve in the op, their writes are refused.
fn namespace_for(caller: &Caller, query: Result<Query<NamespaceQuery>, QueryRejection>) -> Result<Namespace, ApiError> {
    namespace_of(caller, decode::query(query)?.agent)
}

fn namespace_of(caller: &Caller, agent: Option<String>) -> Result<Namespace, ApiError> {
    match agent {
        None => Ok(Namespace::Vault),
        Some(agent) => {
            caller.require_master()?;
            decode::agent_id(&agent)
                .map_err(|_| ApiError::bad_request("agent must be an agent id (ag_…); the CLI resolves labels"))?;
            Ok(Namespace::Agent(agent))
        }
    }
}

/// The audit subject of a credential route, from what parsed.
fn subject(namespace: &Result<Namespace, ApiError>, service: &Result<String, ApiError>) -> Subject {
    match service {
        Ok(service) => Subject::credential(namespace.as_ref().unwrap_or(&Namespace::Vault), service),
        Err(_) => Subject::default(),
    }
}

/// A stored grant and its signer as they travel.
pub fn wire_grant(
    grant: Option<(StoredGrant, Option<SignerRow>)>,
) -> (Option<agentkeys_proto::grant::Grant>, Option<agentkeys_proto::grant::SignerDevice>) {
    let Some((grant, signer)) = grant else { return (None, None) };
    let signer = signer.map(|s| agentkeys_proto::grant::SignerDevice {
        device_id: s.device_id,
        label: s.label,
        sign_public: b64::encode(s.sign_public),
        kx_public: b64::encode(s.kx_public),
        certificate: b64::encode(s.certificate),
    });
    let grant = agentkeys_proto::grant::Grant {
        recipient: grant.recipient,
        signer: grant.signer,
        signature: b64::encode(grant.signature),
    };
    (Some(grant), signer)
}

fn sealed_response(
    caller: &Caller,
    namespace: Namespace,
    service: String,
    sealed: SealedVersion,
) -> SealedCredentialResponse {
    let (grant, signer) = wire_grant(sealed.grant);
    SealedCredentialResponse {
        account_id: caller.account_id.clone(),
        namespace: namespace.as_stored(),
        service,
        version: sealed.version as u64,
        ciphertext: b64::encode(sealed.ciphertext),
        data_key_wrap: b64::encode(sealed.data_key_wrap),
        created_at_ms: sealed.created_at_ms,
        created_by: sealed.created_by,
        flags: u8::try_from(sealed.flags).unwrap_or(u8::MAX),
        account_sign_public: b64::encode(sealed.account_sign_public),
        grant,
        signer,
        released: sealed.released,
    }
}

/// The newest sealed version of a credential. The server cannot open it.
///
/// For the account owner: the vault's (or, with `?agent=`, an agent's private) version with the
/// data key wrapped to the account key. For an agent: its private version if it has one, else the
/// vault's when the service is in its scope and its tier allows values — with the data key
/// wrapped to its own device key.
///
/// A high-value credential reaches an agent only through a release: the read answers
/// `APPROVAL_REQUIRED` with the code of a release request (opened by this read, with `reason`)
/// until the owner approves it, then serves the released wrap for the uses or time approved.
#[utoipa::path(get, path = "/v1/credentials/{service}", tag = "credentials",
    params(("service" = agentkeys_proto::names::ServiceName, Path, description = "Service name"), CredentialReadQuery),
    responses((status = 200, body = SealedCredentialResponse), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn get_credential(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<CredentialReadQuery>, QueryRejection>,
    signed: Signed,
) -> Result<Json<SealedCredentialResponse>, ApiError> {
    let caller = &signed.caller;
    let service = decode::service_path(path);
    let query = decode::query(query);
    let reason = query.as_ref().ok().and_then(|q| q.reason.clone());
    let namespace = query.and_then(|q| namespace_of(caller, q.agent));
    let audited = subject(&namespace, &service);
    let (namespace, sealed) = match &caller.agent_id {
        // An agent names no namespace (`?agent=` is refused): its read resolves its own.
        Some(agent_id) => {
            let read = namespace.and(service.clone()).and_then(|service| {
                if let Some(reason) = &reason {
                    agentkeys_proto::names::validate_display_text(reason, agentkeys_proto::agents::MAX_REASON_CHARS)
                        .map_err(|e| ApiError::bad_request(format!("the reason is refused: {e}")))?;
                }
                Ok(AgentRead {
                    account_id: caller.account_id.clone(),
                    agent_id: agent_id.clone(),
                    device_id: caller.device_id.clone(),
                    service,
                    limit: state.limits.agent_reads,
                    release: ReleaseAsk {
                        id: format!("req_{}", state.random.hex::<16>()?),
                        code: ids::format_request_code(state.random.bytes::<5>()?),
                        reason,
                    },
                    policies: state.policies.clone(),
                    decided_by: Default::default(),
                })
            });
            let served = caller.commit(&state, audited, read).await;
            // A read refused for approval may have opened a release request: wake listeners.
            if served.as_ref().is_err_and(|error| error.code == agentkeys_proto::ErrorCode::ApprovalRequired) {
                state.request_events.notify_waiters();
            }
            served?
        }
        None => {
            let read = namespace.clone().and_then(|namespace| {
                Ok(ReadCredential {
                    account_id: caller.account_id.clone(),
                    namespace,
                    service: service.clone()?,
                    backend: state.db.backend,
                })
            });
            let sealed = caller.commit(&state, audited, read).await?;
            (namespace?, sealed)
        }
    };
    Ok(Json(sealed_response(caller, namespace, service?, sealed)))
}

fn validate_put(namespace: &Namespace, service: &str, signed: &Signed) -> Result<PutVersion, ApiError> {
    signed.caller.require_master()?;
    let request: PutCredentialRequest = signed.json()?;
    let version = i64::try_from(request.version)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| ApiError::bad_request("version must be at least 1"))?;
    let wraps = request
        .agent_wraps
        .iter()
        .map(|w| {
            Ok(Wrap {
                namespace: namespace.clone(),
                service: service.to_owned(),
                version,
                recipient: w.device_id.clone(),
                wrap: decode::bounded("agent_wraps.wrap", &w.wrap, DATA_KEY_WRAP_LEN, DATA_KEY_WRAP_LEN)?,
                grant: Some(decode_grant(Some(&w.grant))?),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(PutVersion {
        wraps,
        account_id: signed.caller.account_id.clone(),
        namespace: namespace.clone(),
        service: service.to_owned(),
        version,
        ciphertext: decode::bounded(
            "ciphertext",
            &request.ciphertext,
            SEAL_OVERHEAD + 1,
            SEAL_OVERHEAD + MAX_VALUE_BYTES,
        )?,
        data_key_wrap: decode::bounded("data_key_wrap", &request.data_key_wrap, DATA_KEY_WRAP_LEN, DATA_KEY_WRAP_LEN)?,
        created_by: signed.caller.device_id.clone(),
        flags: i64::from(request.flags),
        grant: decode_grant(Some(&request.grant))?,
        changes_high_value: false,
    })
}

/// Whether a new version marks or clears high-value, as the newest stored version says now (the
/// op checks again in its transaction).
async fn changes_high_value(state: &AppState, put: &PutVersion) -> Result<bool, ApiError> {
    let mut conn = state.db.reads.acquire().await?;
    let newest = queries::newest(&mut conn, &put.account_id, &put.namespace, &put.service).await?;
    let was = newest.is_some_and(|row| is_high_value(row.flags));
    Ok(was != is_high_value(put.flags))
}

fn version_response(namespace: Namespace, service: String, stored: StoredVersion) -> Json<CredentialVersionResponse> {
    Json(CredentialVersionResponse {
        namespace: namespace.as_stored(),
        service,
        version: stored.version as u64,
        created_at_ms: stored.created_at_ms,
    })
}

/// Stores a new sealed version. `version` must be the current version plus one.
#[utoipa::path(put, path = "/v1/credentials/{service}", tag = "credentials", request_body = PutCredentialRequest,
    params(("service" = agentkeys_proto::names::ServiceName, Path, description = "Service name"), NamespaceQuery),
    responses((status = 200, body = CredentialVersionResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn put_credential(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<NamespaceQuery>, QueryRejection>,
    signed: Signed,
) -> Result<Json<CredentialVersionResponse>, ApiError> {
    let caller = &signed.caller;
    let service = decode::service_path(path);
    let namespace = namespace_for(caller, query);
    let audited = subject(&namespace, &service);
    let mut decision = namespace
        .clone()
        .and_then(|namespace| validate_put(&namespace, service.as_ref().map_err(Clone::clone)?, &signed));
    if let Ok(put) = &mut decision {
        put.changes_high_value = changes_high_value(&state, put).await?;
    }
    let stored = caller.commit(&state, audited, decision).await?;
    Ok(version_response(namespace?, service?, stored))
}

/// Removes a credential (a removal marker becomes its newest version; history is kept).
#[utoipa::path(delete, path = "/v1/credentials/{service}", tag = "credentials",
    params(("service" = agentkeys_proto::names::ServiceName, Path, description = "Service name"), NamespaceQuery),
    responses((status = 200, body = CredentialVersionResponse), (status = 404, body = ErrorBody)))]
pub async fn delete_credential(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<NamespaceQuery>, QueryRejection>,
    signed: Signed,
) -> Result<Json<CredentialVersionResponse>, ApiError> {
    let caller = &signed.caller;
    let service = decode::service_path(path);
    let namespace = namespace_for(caller, query);
    let audited = subject(&namespace, &service);
    let decision = caller.require_master().and(namespace.clone()).and_then(|namespace| {
        Ok(RemoveCredential {
            account_id: caller.account_id.clone(),
            namespace,
            service: service.clone()?,
            removed_by: caller.device_id.clone(),
        })
    });
    let stored = caller.commit(&state, audited, decision).await?;
    Ok(version_response(namespace?, service?, stored))
}

/// Names and versions of the account's credentials (an agent's: those it may see). Never values.
#[utoipa::path(get, path = "/v1/credentials", tag = "credentials", responses((status = 200, body = CredentialListResponse)))]
pub async fn list_credentials(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Json<CredentialListResponse>, ApiError> {
    let caller = &signed.caller;
    let rows = match &caller.agent_id {
        Some(agent_id) => {
            let rows = queries::list_visible_to(&state.db.reads, &caller.account_id, agent_id).await?;
            let list = AgentList {
                account_id: caller.account_id.clone(),
                agent_id: agent_id.clone(),
                policies: state.policies.clone(),
                decided_by: Default::default(),
            };
            caller.commit(&state, Subject::default(), Ok(list)).await?;
            rows
        }
        None => {
            let rows = queries::list(&state.db.reads, &caller.account_id).await?;
            caller.record(&state, Subject::default()).await?;
            rows
        }
    };
    Ok(Json(CredentialListResponse {
        credentials: rows
            .into_iter()
            .map(|row| CredentialSummary {
                namespace: row.namespace.as_stored(),
                service: row.service,
                version: row.version as u64,
                updated_at_ms: row.updated_at_ms,
            })
            .collect(),
    }))
}
