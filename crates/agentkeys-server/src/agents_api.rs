//! The `/v1` handlers of the agent side: agents, scope, tiers, aliases, revoke and teardown (the
//! account owner's), link codes and pairing requests (a daemon's, before it has a session), and
//! the approval queue. Like [`crate::api`], each handler validates and decides, and the writer
//! commits the decision with its audit row before anything is answered.

use agentkeys_proto::agents::{
    AgentAskRequest, AgentAskResponse, AgentListResponse, AgentSessionResponse, AliasRequest, ApproveRequest,
    CreateAgentRequest, CreateAgentResponse, DecisionResponse, DeviceWrap, LinkInfoResponse, OpenPairingRequest,
    OpenPairingResponse, PairingStatusResponse, PendingRequest, REQUEST_TTL_MS, RecipientsResponse, RedeemLinkRequest,
    RequestKind, RequestListResponse, RevealPairingRequest, ScopeChangeRequest, Tier, TierChangeRequest,
    agent_namespace, redeem_payload,
};
use agentkeys_proto::certificate::DeviceCertificate;
use agentkeys_proto::names::validate_service_name;
use agentkeys_proto::types::{RecipientsQuery, VAULT_NAMESPACE};
use agentkeys_proto::{ErrorBody, ErrorCode, b64, ids};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use sqlx::Row as _;

use crate::agents::{AgentApplied, AgentOp, NewDevice, NewLink, Wrap, validate_agent_name};
use crate::api::{DATA_KEY_WRAP_LEN, decode_bounded, decode_exact, new_session_id, random_bytes};
use crate::app::AppState;
use crate::audit::AuditDraft;
use crate::auth::{Caller, Signed};
use crate::error::ApiError;
use crate::requests::{Grant, NewRequest, RequestOp, RequestRow};
use crate::writer::{Applied, Operation};

/// Most services one request may name.
const MAX_SCOPE: usize = 256;
/// Longest reason an agent may give.
const MAX_REASON: usize = 500;

fn ed25519_ok(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(public)
        .is_ok_and(|key| key.verify_strict(message, &Signature::from_bytes(signature)).is_ok())
}

fn random_hex<const N: usize>() -> Result<String, ApiError> {
    Ok(hex::encode(random_bytes::<N>()?))
}

fn check_scope(scope: &[String]) -> Result<Vec<String>, ApiError> {
    if scope.len() > MAX_SCOPE {
        return Err(ApiError::bad_request(format!("at most {MAX_SCOPE} services per request")));
    }
    let mut out = Vec::with_capacity(scope.len());
    for service in scope {
        validate_service_name(service).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidServiceName,
                format!("invalid service name {:?} in scope: {e}", service.escape_debug().to_string()),
                "pick names like openai, github.com or aws_prod-2",
            )
        })?;
        if !out.contains(service) {
            out.push(service.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// Decodes wraps addressed to `recipient` (a device or link id) or, with `None`, to anyone; each
/// must be for the vault or `agent_id`'s namespace.
fn decode_wraps(wraps: &[DeviceWrap], agent_id: &str, recipient: Option<&str>) -> Result<Vec<Wrap>, ApiError> {
    let private = agent_namespace(agent_id);
    wraps
        .iter()
        .map(|w| {
            if w.namespace != VAULT_NAMESPACE && w.namespace != private {
                return Err(ApiError::bad_request(format!(
                    "a wrap names namespace {:?}, not this agent's",
                    w.namespace
                )));
            }
            if recipient.is_some_and(|r| r != w.device_id) {
                return Err(ApiError::bad_request("a wrap is addressed to another device"));
            }
            validate_service_name(&w.service).map_err(|e| ApiError::bad_request(format!("wrap service: {e}")))?;
            let wrap = decode_bounded("wrap", &w.wrap, DATA_KEY_WRAP_LEN, DATA_KEY_WRAP_LEN)?;
            let version = i64::try_from(w.version).map_err(|_| ApiError::bad_request("wrap version out of range"))?;
            Ok(Wrap {
                namespace: w.namespace.clone(),
                service: w.service.clone(),
                version,
                recipient: w.device_id.clone(),
                wrap,
            })
        })
        .collect()
}

async fn account_sign_public(state: &AppState, account_id: &str) -> Result<[u8; 32], ApiError> {
    let row = sqlx::query("SELECT sign_public FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_one(&state.db.reads)
        .await?;
    let bytes: Vec<u8> = row.try_get("sign_public").map_err(ApiError::from)?;
    bytes.try_into().map_err(|_| ApiError::internal("stored account key has the wrong length"))
}

fn agent_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(agent_id) = path.map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))?;
    if !agent_id.starts_with("ag_") {
        return Err(ApiError::bad_request("the path takes an agent id (ag_…); the CLI resolves labels and aliases"));
    }
    validate_agent_name("agent id", &agent_id)?;
    Ok(agent_id)
}

fn code_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(code) = path.map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))?;
    ids::normalize_request_code(&code).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{:?} is not a request code: codes look like 7K3D-QX2M",
            code.escape_debug().to_string()
        ))
    })
}

/// Commits an agent operation by the account owner, audited against the agent's namespace.
async fn commit_agent_op(
    state: &AppState,
    caller: &Caller,
    action: &'static str,
    agent_id: Result<String, ApiError>,
    op: impl FnOnce(String) -> Result<AgentOp, ApiError>,
) -> Result<Applied, ApiError> {
    let namespace = agent_id.as_ref().ok().map(|a| agent_namespace(a));
    let decision = caller.require_master().and(agent_id).and_then(op).map(|op| Operation::Agent(Box::new(op)));
    caller.commit_about(state, action, namespace, None, decision).await
}

/// Every agent of the account: id, label, aliases, tier, status, scope, devices, last seen.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", responses((status = 200, body = AgentListResponse), (status = 403, body = ErrorBody)))]
pub async fn list_agents(State(state): State<AppState>, signed: Signed) -> Result<Json<AgentListResponse>, ApiError> {
    let caller = &signed.caller;
    if let Err(error) = caller.require_master() {
        return Err(caller.refuse(&state, "agent.list", error).await);
    }
    let agents = crate::agents::list(&state.db.reads, &caller.account_id).await?;
    caller.commit(&state, "agent.list", None, Ok(Operation::None)).await?;
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
        validate_agent_name("agent label", &request.label)?;
        let scope = check_scope(&request.scope)?;
        let agent_id = ids::agent_id(&caller.account_id, &request.label);
        let link_sign = decode_exact::<32>("link_sign_public", &request.link_sign_public)?;
        let link_kx = decode_exact::<32>("link_kx_public", &request.link_kx_public)?;
        let certificate = decode_exact::<64>("link_certificate", &request.link_certificate)?;
        let account_key = account_sign_public(&state, &caller.account_id).await?;
        let payload = ids::link_key_payload(&caller.account_id, &agent_id, &link_sign, &link_kx);
        if !ed25519_ok(&account_key, &payload, &certificate) {
            return Err(ApiError::bad_request("link_certificate does not verify with the account key"));
        }
        let link_id = ids::link_id(&link_sign);
        let wraps = decode_wraps(&request.wraps, &agent_id, Some(&link_id))?;
        let link = NewLink {
            link_id,
            sign_public: link_sign.to_vec(),
            kx_public: link_kx.to_vec(),
            certificate: certificate.to_vec(),
            expires_at_ms: now + REQUEST_TTL_MS,
            wraps,
        };
        Ok::<_, ApiError>((agent_id, request.label, request.tier, scope, link))
    }
    .await;
    let reply = prepared.as_ref().ok().map(|(agent_id, _, _, _, link)| CreateAgentResponse {
        agent_id: agent_id.clone(),
        link_id: link.link_id.clone(),
        expires_at_ms: link.expires_at_ms,
    });
    let namespace = reply.as_ref().map(|r| agent_namespace(&r.agent_id));
    let decision = prepared.map(|(agent_id, label, tier, scope, link)| {
        Operation::Agent(Box::new(AgentOp::Create {
            account_id: caller.account_id.clone(),
            agent_id,
            label,
            tier,
            scope,
            link,
        }))
    });
    caller.commit_about(&state, "agent.create", namespace, None, decision).await?;
    Ok((StatusCode::CREATED, Json(reply.expect("a committed agent has a reply"))))
}

/// Adds and removes services. Added services carry their current data key wrapped to each of
/// the agent's devices; removed ones lose every wrap.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/scope", tag = "agents", request_body = ScopeChangeRequest,
    params(("agent_id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn change_scope(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    commit_agent_op(&state, caller, "agent.scope", agent_path(path), |agent_id| {
        let request: ScopeChangeRequest = signed.json()?;
        Ok(AgentOp::Scope {
            account_id: caller.account_id.clone(),
            add: check_scope(&request.add)?,
            remove: check_scope(&request.remove)?,
            wraps: decode_wraps(&request.wraps, &agent_id, None)?,
            agent_id,
        })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets the agent's tier (PRODUCT.md §3).
#[utoipa::path(post, path = "/v1/agents/{agent_id}/tier", tag = "agents", request_body = TierChangeRequest,
    params(("agent_id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn change_tier(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    commit_agent_op(&state, caller, "agent.tier", agent_path(path), |agent_id| {
        let request: TierChangeRequest = signed.json()?;
        Ok(AgentOp::Tier { account_id: caller.account_id.clone(), agent_id, tier: request.tier })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives the agent another name, unique in the account.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/aliases", tag = "agents", request_body = AliasRequest,
    params(("agent_id" = String, Path)), responses((status = 204), (status = 409, body = ErrorBody)))]
pub async fn add_alias(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    commit_agent_op(&state, caller, "agent.alias", agent_path(path), |agent_id| {
        let request: AliasRequest = signed.json()?;
        validate_agent_name("alias", &request.alias)?;
        if request.alias.starts_with("ag_") {
            return Err(ApiError::bad_request("aliases cannot start with ag_, which marks agent ids"));
        }
        Ok(AgentOp::Alias { account_id: caller.account_id.clone(), agent_id, alias: request.alias })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the agent: its next request fails, on every replica.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/revoke", tag = "agents",
    params(("agent_id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_agent(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    commit_agent_op(&state, caller, "agent.revoke", agent_path(path), |agent_id| {
        Ok(AgentOp::Revoke { account_id: caller.account_id.clone(), agent_id })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes the agent and deletes its private credentials and every data key wrapped to it.
#[utoipa::path(post, path = "/v1/agents/{agent_id}/teardown", tag = "agents",
    params(("agent_id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn teardown_agent(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    commit_agent_op(&state, caller, "agent.teardown", agent_path(path), |agent_id| {
        Ok(AgentOp::Teardown { account_id: caller.account_id.clone(), agent_id })
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
        let Query(query) = query.map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        validate_service_name(&query.service).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let namespace = match &query.agent {
            Some(agent) => {
                validate_agent_name("agent id", agent)?;
                agent_namespace(agent)
            }
            None => VAULT_NAMESPACE.to_owned(),
        };
        Ok((namespace, query.service))
    });
    let (namespace, service) = match checked {
        Ok(found) => found,
        Err(error) => return Err(caller.refuse(&state, "agent.recipients", error).await),
    };
    let mut conn = state.db.reads.acquire().await?;
    let devices = crate::agents::recipients(&mut conn, &caller.account_id, &namespace, &service).await?;
    drop(conn);
    caller.commit(&state, "agent.recipients", Some((&namespace, &service)), Ok(Operation::None)).await?;
    Ok(Json(RecipientsResponse { devices }))
}

/// What a link code leads to. No session: the link id is derived from the code's secret, and
/// what this returns opens only with that secret.
#[utoipa::path(get, path = "/v1/links/{link_id}", tag = "links", params(("link_id" = String, Path)),
    responses((status = 200, body = LinkInfoResponse), (status = 403, body = ErrorBody)))]
pub async fn link_info(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<LinkInfoResponse>, ApiError> {
    let Path(link_id) = path.map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))?;
    let now = state.clock.now_ms();
    let mut conn = state.db.reads.acquire().await?;
    let row = sqlx::query(
        "SELECT l.account_id, l.agent_id, l.certificate, l.expires_at_ms, l.redeemed_at_ms, a.label, a.tier, \
                c.sign_public AS account_sign FROM links l JOIN agents a ON a.id = l.agent_id \
         JOIN accounts c ON c.id = l.account_id WHERE l.id = $1",
    )
    .bind(&link_id)
    .fetch_optional(&mut *conn)
    .await?;
    let usable = row.as_ref().is_some_and(|r| {
        r.try_get::<Option<i64>, _>("redeemed_at_ms").ok().flatten().is_none()
            && r.try_get::<i64, _>("expires_at_ms").is_ok_and(|at| at >= now)
    });
    let Some(row) = row.filter(|_| usable) else {
        return Err(ApiError::new(
            ErrorCode::Declined,
            "this link code was already used, has expired, or does not exist",
            "ask the account owner for a new one: `agentkeys agent create LABEL`",
        ));
    };
    let agent_id: String = row.try_get("agent_id")?;
    let wraps = sqlx::query("SELECT namespace, service, version, wrap FROM link_wraps WHERE link_id = $1")
        .bind(&link_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|w| {
            Ok(DeviceWrap {
                namespace: w.try_get("namespace")?,
                service: w.try_get("service")?,
                version: w.try_get::<i64, _>("version")? as u64,
                device_id: link_id.clone(),
                wrap: b64::encode(w.try_get::<Vec<u8>, _>("wrap")?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Json(LinkInfoResponse {
        account_id: row.try_get("account_id")?,
        account_sign_public: b64::encode(row.try_get::<Vec<u8>, _>("account_sign")?),
        scope: crate::agents::scope_of(&mut conn, &agent_id).await?,
        agent_id,
        label: row.try_get("label")?,
        tier: Tier::parse(&row.try_get::<String, _>("tier")?).unwrap_or(Tier::Safe),
        link_certificate: b64::encode(row.try_get::<Vec<u8>, _>("certificate")?),
        wraps,
        expires_at_ms: row.try_get("expires_at_ms")?,
    }))
}

/// Binds a daemon's fresh device key to the agent with a link code: the request is signed by the
/// link key, which certifies the device key; the session token is the daemon's own (only its
/// hash is sent).
#[utoipa::path(post, path = "/v1/links/{link_id}/redeem", tag = "links", request_body = RedeemLinkRequest,
    params(("link_id" = String, Path)), responses((status = 201, body = AgentSessionResponse), (status = 403, body = ErrorBody)))]
pub async fn redeem_link(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<AgentSessionResponse>), ApiError> {
    let prepared = async {
        let Path(link_id) = path.map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))?;
        let body = body.map_err(|_| ApiError::payload_too_large())?;
        let request: RedeemLinkRequest =
            serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        let link =
            sqlx::query("SELECT account_id, agent_id, sign_public, kx_public, certificate FROM links WHERE id = $1")
                .bind(&link_id)
                .fetch_optional(&state.db.reads)
                .await?
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::Declined, "no such link code", "ask the account owner for a new one")
                })?;
        let account_id: String = link.try_get("account_id")?;
        let agent_id: String = link.try_get("agent_id")?;
        let link_sign: [u8; 32] =
            link.try_get::<Vec<u8>, _>("sign_public")?.try_into().map_err(|_| ApiError::internal("bad link key"))?;
        let link_kx: [u8; 32] =
            link.try_get::<Vec<u8>, _>("kx_public")?.try_into().map_err(|_| ApiError::internal("bad link key"))?;
        let account_signature: [u8; 64] = link
            .try_get::<Vec<u8>, _>("certificate")?
            .try_into()
            .map_err(|_| ApiError::internal("bad link certificate"))?;
        let device_sign = decode_exact::<32>("device_sign_public", &request.device_sign_public)?;
        let device_kx = decode_exact::<32>("device_kx_public", &request.device_kx_public)?;
        let token_hash = decode_exact::<32>("token_hash", &request.token_hash)?;
        let link_signature = decode_exact::<64>("device_certificate", &request.device_certificate)?;
        let proof = decode_exact::<64>("proof", &request.proof)?;
        if !ed25519_ok(&link_sign, &redeem_payload(&link_id, &token_hash, &link_signature), &proof) {
            return Err(ApiError::new(
                ErrorCode::SignatureInvalid,
                "the redemption is not signed by this link code's key",
                "copy the whole link code from `agentkeys agent create`",
            ));
        }
        if !ed25519_ok(
            &link_sign,
            &ids::agent_device_payload(&account_id, &agent_id, &device_sign, &device_kx),
            &link_signature,
        ) {
            return Err(ApiError::bad_request("device_certificate does not verify with the link key"));
        }
        let device_id = ids::device_id(&device_sign);
        let certificate = DeviceCertificate::Linked {
            link_sign_public: link_sign,
            link_kx_public: link_kx,
            account_signature,
            link_signature,
        };
        let device = NewDevice {
            device_id: device_id.clone(),
            sign_public: device_sign.to_vec(),
            kx_public: device_kx.to_vec(),
            certificate: certificate.encode(),
            session_id: new_session_id()?,
            token_hash: token_hash.to_vec(),
        };
        let wraps = decode_wraps(&request.wraps, &agent_id, Some(&device_id))?;
        Ok::<_, ApiError>((account_id, agent_id, link_id, device, wraps))
    }
    .await;
    let (account_id, agent_id, session) = match &prepared {
        Ok((account_id, agent_id, _, device, _)) => (
            Some(account_id.clone()),
            Some(agent_id.clone()),
            Some((device.device_id.clone(), device.session_id.clone())),
        ),
        Err(_) => (None, None, None),
    };
    let audit = AuditDraft {
        account_id,
        actor: session.as_ref().map(|s| s.0.clone()),
        session_id: session.as_ref().map(|s| s.1.clone()),
        action: "link.redeem",
        namespace: agent_id.as_deref().map(agent_namespace),
        service: None,
        presence: None,
    };
    let decision = prepared.map(|(_, _, link_id, device, wraps)| {
        Operation::Agent(Box::new(AgentOp::RedeemLink { link_id, device, wraps }))
    });
    match state.writer.submit(None, decision, audit).await? {
        Applied::Agent(AgentApplied::Bound { account_id, agent_id, label, tier, scope }) => {
            let (device_id, session_id) = session.expect("a bound device was prepared");
            Ok((
                StatusCode::CREATED,
                Json(AgentSessionResponse { account_id, agent_id, label, device_id, session_id, tier, scope }),
            ))
        }
        other => Err(ApiError::internal(format!("writer returned {other:?} for a link"))),
    }
}

/// Opens a pairing request for a daemon (no session yet). Answers with its code.
#[utoipa::path(post, path = "/v1/pairings", tag = "pairing", request_body = OpenPairingRequest,
    responses((status = 201, body = OpenPairingResponse), (status = 429, body = ErrorBody)))]
pub async fn open_pairing(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<OpenPairingResponse>), ApiError> {
    let now = state.clock.now_ms();
    let prepared = (|| {
        let body = body.map_err(|_| ApiError::payload_too_large())?;
        let request: OpenPairingRequest =
            serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        validate_agent_name("agent label", &request.label)?;
        Ok::<_, ApiError>(NewRequest {
            id: format!("pair_{}", random_hex::<16>()?),
            code: ids::format_request_code(random_bytes::<5>()?),
            kind: RequestKind::Pairing,
            account_id: None,
            agent_id: None,
            scope: check_scope(&request.scope)?,
            label: request.label,
            tier: Some(Tier::Standard),
            reason: None,
            device_sign_public: Some(decode_exact::<32>("device_sign_public", &request.device_sign_public)?.to_vec()),
            device_kx_public: Some(decode_exact::<32>("device_kx_public", &request.device_kx_public)?.to_vec()),
            token_hash: Some(decode_exact::<32>("token_hash", &request.token_hash)?.to_vec()),
            poll_hash: Some(decode_exact::<32>("poll_hash", &request.poll_hash)?.to_vec()),
            commitment: Some(decode_exact::<32>("commitment", &request.commitment)?.to_vec()),
            expires_at_ms: now + REQUEST_TTL_MS,
        })
    })();
    let reply = prepared.as_ref().ok().map(|r| OpenPairingResponse {
        pairing_id: r.id.clone(),
        code: r.code.clone(),
        expires_at_ms: r.expires_at_ms,
    });
    let audit = AuditDraft { action: "pairing.open", ..AuditDraft::default() };
    let decision = prepared.map(|r| Operation::Request(Box::new(RequestOp::Open(Box::new(r)))));
    state.writer.submit(None, decision, audit).await?;
    Ok((StatusCode::CREATED, Json(reply.expect("a committed pairing has a reply"))))
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

/// Where a pairing stands, for the daemon that opened it (its poll secret as bearer).
#[utoipa::path(get, path = "/v1/pairings/{pairing_id}", tag = "pairing", params(("pairing_id" = String, Path)),
    responses((status = 200, body = PairingStatusResponse), (status = 404, body = ErrorBody)))]
pub async fn pairing_status(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<PairingStatusResponse>, ApiError> {
    let Path(pairing_id) = path.map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))?;
    let poll_hash = poll_secret(&headers)?;
    match crate::requests::pairing_status(&state.db.reads, &pairing_id, &poll_hash, state.clock.now_ms()).await? {
        Some(found) => Ok(Json(PairingStatusResponse {
            status: found.status,
            claimed: found.claimed,
            revealed: found.revealed,
            session: found.session,
        })),
        None => Err(no_such_pairing()),
    }
}

/// The daemon reveals the nonce behind its OTP, once a master has claimed the code (so the keys
/// that master will certify are fixed before the number they must match becomes computable).
#[utoipa::path(post, path = "/v1/pairings/{pairing_id}/reveal", tag = "pairing", request_body = RevealPairingRequest,
    params(("pairing_id" = String, Path)), responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reveal_pairing(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(pairing_id) = path.map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))?;
    let poll_hash = poll_secret(&headers)?;
    let body = body.map_err(|_| ApiError::payload_too_large())?;
    let request: RevealPairingRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let nonce = decode_exact::<32>("nonce", &request.nonce)?;
    let now = state.clock.now_ms();
    let Some(found) = crate::requests::pairing_status(&state.db.reads, &pairing_id, &poll_hash, now).await? else {
        return Err(no_such_pairing());
    };
    if found.commitment.as_deref() != Some(ids::pairing_commitment(&nonce).as_slice()) {
        return Err(ApiError::bad_request("the nonce does not match the pairing's commitment"));
    }
    let audit = AuditDraft { action: "pairing.reveal", ..AuditDraft::default() };
    let decision = Ok(Operation::Request(Box::new(RequestOp::Reveal { pairing_id, nonce: nonce.to_vec() })));
    state.writer.submit(None, decision, audit).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The account's pending requests: its agents' asks and the pairings it has looked up.
#[utoipa::path(get, path = "/v1/requests", tag = "requests", responses((status = 200, body = RequestListResponse)))]
pub async fn list_requests(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Json<RequestListResponse>, ApiError> {
    let caller = &signed.caller;
    if let Err(error) = caller.require_master() {
        return Err(caller.refuse(&state, "request.list", error).await);
    }
    let rows = crate::requests::pending_for(&state.db.reads, &caller.account_id, state.clock.now_ms()).await?;
    caller.commit(&state, "request.list", None, Ok(Operation::None)).await?;
    Ok(Json(RequestListResponse { requests: rows.iter().map(RequestRow::to_pending).collect() }))
}

/// An agent asks for a service or a tier. Only the account owner can grant it.
#[utoipa::path(post, path = "/v1/requests", tag = "requests", request_body = AgentAskRequest,
    responses((status = 201, body = AgentAskResponse)))]
pub async fn ask(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<(StatusCode, Json<AgentAskResponse>), ApiError> {
    let caller = &signed.caller;
    let now = state.clock.now_ms();
    let prepared = async {
        let Some(agent_id) = caller.agent_id.clone() else {
            return Err(ApiError::bad_request("only agents ask; the account owner changes access directly"));
        };
        let request: AgentAskRequest = signed.json()?;
        if request.reason.trim().is_empty()
            || request.reason.len() > MAX_REASON
            || request.reason.chars().any(char::is_control)
        {
            return Err(ApiError::bad_request(format!("reason must be 1 to {MAX_REASON} printable characters")));
        }
        let (scope, tier) = match (request.kind, &request.service, request.tier) {
            (RequestKind::Access, Some(service), None) => (check_scope(std::slice::from_ref(service))?, None),
            (RequestKind::Tier, None, Some(tier)) => (Vec::new(), Some(tier)),
            _ => return Err(ApiError::bad_request("ask for access with a service, or for a tier with a tier")),
        };
        let (label, _, _) = crate::agents::identity(&state.db.reads, &agent_id)
            .await?
            .ok_or_else(|| crate::agents::no_such_agent(&agent_id))?;
        Ok(NewRequest {
            id: format!("req_{}", random_hex::<16>()?),
            code: ids::format_request_code(random_bytes::<5>()?),
            kind: request.kind,
            account_id: Some(caller.account_id.clone()),
            agent_id: Some(agent_id),
            label,
            scope,
            tier,
            reason: Some(request.reason),
            device_sign_public: None,
            device_kx_public: None,
            token_hash: None,
            poll_hash: None,
            commitment: None,
            expires_at_ms: now + REQUEST_TTL_MS,
        })
    }
    .await;
    let reply =
        prepared.as_ref().ok().map(|r| AgentAskResponse { code: r.code.clone(), expires_at_ms: r.expires_at_ms });
    let service = prepared.as_ref().ok().and_then(|r| r.scope.first().cloned());
    let namespace = caller.agent_id.as_deref().map(agent_namespace);
    let decision = prepared.map(|r| Operation::Request(Box::new(RequestOp::Open(Box::new(r)))));
    caller.commit_about(&state, "request.open", namespace, service, decision).await?;
    Ok((StatusCode::CREATED, Json(reply.expect("a committed request has a reply"))))
}

/// Looks a request up by code, for the master to review before deciding. Misses are counted: the
/// account is slowed, then locked (see `requests.rs`).
#[utoipa::path(get, path = "/v1/requests/{code}", tag = "requests", params(("code" = String, Path)),
    responses((status = 200, body = PendingRequest), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn lookup_request(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<Json<PendingRequest>, ApiError> {
    let caller = &signed.caller;
    let decision = caller
        .require_master()
        .and(code_path(path))
        .map(|code| Operation::Request(Box::new(RequestOp::Lookup { account_id: caller.account_id.clone(), code })));
    match caller.commit(&state, "request.lookup", None, decision).await? {
        Applied::Request(row) => Ok(Json(row.to_pending())),
        other => Err(ApiError::internal(format!("writer returned {other:?} for a look-up"))),
    }
}

/// Prepares what an approval grants, from the request as the master saw it.
async fn prepare_grant(
    state: &AppState,
    caller: &Caller,
    row: &RequestRow,
    request: ApproveRequest,
) -> Result<Grant, ApiError> {
    let granted = if request.scope.is_empty() { row.scope.clone() } else { check_scope(&request.scope)? };
    match row.kind {
        RequestKind::Pairing => {
            let (Some(sign), Some(kx), Some(token_hash)) =
                (row.device_sign_public.clone(), row.device_kx_public.clone(), row.token_hash.clone())
            else {
                return Err(ApiError::internal("a pairing request without keys"));
            };
            let sign: [u8; 32] = sign.try_into().map_err(|_| ApiError::internal("bad stored key"))?;
            let kx: [u8; 32] = kx.try_into().map_err(|_| ApiError::internal("bad stored key"))?;
            let agent_id = ids::agent_id(&caller.account_id, &row.label);
            let signature =
                decode_exact::<64>("device_certificate", request.device_certificate.as_deref().unwrap_or(""))?;
            let certificate = DeviceCertificate::Paired { account_signature: signature };
            let account_key = account_sign_public(state, &caller.account_id).await?;
            if !certificate.verifies(&account_key, &caller.account_id, &agent_id, &sign, &kx, &ed25519_ok) {
                return Err(ApiError::bad_request("device_certificate does not verify for this request's device key"));
            }
            let device_id = ids::device_id(&sign);
            let wraps = decode_wraps(&request.wraps, &agent_id, Some(&device_id))?;
            let device = NewDevice {
                device_id,
                sign_public: sign.to_vec(),
                kx_public: kx.to_vec(),
                certificate: certificate.encode(),
                session_id: new_session_id()?,
                token_hash,
            };
            Ok(Grant::Pairing { agent_id, device, scope: granted, wraps })
        }
        RequestKind::Access => {
            let agent_id = row.agent_id.clone().unwrap_or_default();
            Ok(Grant::Access { scope: granted, wraps: decode_wraps(&request.wraps, &agent_id, None)? })
        }
        RequestKind::Tier => Ok(Grant::Tier),
    }
}

/// Approves a request: certifies a pairing's device, grants access, or raises a tier.
#[utoipa::path(post, path = "/v1/requests/{code}/approve", tag = "requests", request_body = ApproveRequest,
    params(("code" = String, Path)), responses((status = 200, body = DecisionResponse), (status = 404, body = ErrorBody)))]
pub async fn approve_request(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<Json<DecisionResponse>, ApiError> {
    let caller = &signed.caller;
    let prepared = async {
        caller.require_master()?;
        let code = code_path(path)?;
        let request: ApproveRequest = signed.json()?;
        let now = state.clock.now_ms();
        // Only a request this account already holds: its own agents' asks, or a pairing it claimed
        // through a guarded look-up. Anything else goes to the writer unprepared and counts as a
        // miss, so nothing here tells a guesser that a code exists.
        let row = crate::requests::find_by_code(&state.db.reads, &code).await?.filter(|row| {
            row.status_at(now) == "pending" && row.account_id.as_deref() == Some(caller.account_id.as_str())
        });
        let grant = match &row {
            Some(row) => Some(Box::new(prepare_grant(&state, caller, row, request).await?)),
            None => None,
        };
        // The audit row names the agent the approval is about.
        let subject = match grant.as_deref() {
            Some(Grant::Pairing { agent_id, .. }) => Some(agent_id.clone()),
            _ => row.and_then(|row| row.agent_id),
        };
        Ok::<_, ApiError>((RequestOp::Approve { account_id: caller.account_id.clone(), code, grant }, subject))
    }
    .await;
    let namespace = prepared.as_ref().ok().and_then(|(_, subject)| subject.as_deref().map(agent_namespace));
    let decision = prepared.map(|(op, _)| Operation::Request(Box::new(op)));
    match caller.commit_about(&state, "request.approve", namespace, None, decision).await? {
        Applied::Request(row) => Ok(Json(DecisionResponse {
            code: row.code.clone(),
            kind: row.kind,
            status: row.status.clone(),
            agent_id: row.agent_id.clone(),
        })),
        other => Err(ApiError::internal(format!("writer returned {other:?} for an approval"))),
    }
}

/// Denies a request; a denied pairing's daemon stops waiting and exits 6.
#[utoipa::path(post, path = "/v1/requests/{code}/deny", tag = "requests",
    params(("code" = String, Path)), responses((status = 200, body = DecisionResponse), (status = 404, body = ErrorBody)))]
pub async fn deny_request(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<Json<DecisionResponse>, ApiError> {
    let caller = &signed.caller;
    let decision = caller
        .require_master()
        .and(code_path(path))
        .map(|code| Operation::Request(Box::new(RequestOp::Deny { account_id: caller.account_id.clone(), code })));
    match caller.commit(&state, "request.deny", None, decision).await? {
        Applied::Request(row) => Ok(Json(DecisionResponse {
            code: row.code.clone(),
            kind: row.kind,
            status: row.status.clone(),
            agent_id: row.agent_id.clone(),
        })),
        other => Err(ApiError::internal(format!("writer returned {other:?} for a denial"))),
    }
}
