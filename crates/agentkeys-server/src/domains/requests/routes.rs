//! `/v1/requests`: the master's queue (list, look up, approve, deny) and an agent's ask.

use agentkeys_proto::agents::{
    AgentAskRequest, AgentAskResponse, ApproveRequest, DecisionResponse, PendingRequest, REQUEST_TTL_MS, RequestKind,
    RequestListResponse, RequestListWait, RequestStatus,
};
use agentkeys_proto::certificate::DeviceCertificate;
use agentkeys_proto::devices::DeviceOrigin;
use agentkeys_proto::types::ActorKind;
use agentkeys_proto::{ErrorBody, ids};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ops::{Approve, Ask, Deny, Grant, Lookup};
use super::queries::{self, NewRequest, RequestRow};
use crate::domains::accounts::queries::{self as accounts, NewDevice};
use crate::domains::agents::ops::NewAgentDevice;
use crate::domains::agents::queries as agents;
use crate::domains::credentials::ops::decode_wraps;
use crate::domains::statements::ops::decode_statements;
use crate::engine::audit::Subject;
use crate::error::{ApiError, no_such_agent};
use crate::http::action::signed;
use crate::http::decode::{self, ACCOUNT_KEY_WRAP_LEN};
use crate::http::signed::{Caller, Signed};
use crate::sessions::NewSession;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(signed("request.list", routes!(list_requests)))
        .routes(signed("request.open", routes!(ask)))
        .routes(signed("request.lookup", routes!(lookup_request)))
        .routes(signed("request.approve", routes!(approve_request)))
        .routes(signed("request.deny", routes!(deny_request)))
        .routes(signed("request.decision", routes!(request_decision)))
}

fn decision(row: RequestRow) -> Json<DecisionResponse> {
    Json(DecisionResponse { code: row.code, kind: row.kind, status: row.status, agent_id: row.agent_id })
}

/// The account's pending requests: its agents' asks and the pairings it has looked up. With
/// `changed_from` (the digest of the list the caller has) the answer is held up to `wait_s`
/// seconds while the queue is unchanged: `agentkeys listen` follows the queue this way.
#[utoipa::path(get, path = "/v1/requests", tag = "requests", params(RequestListWait),
    responses((status = 200, body = RequestListResponse), (status = 400, body = ErrorBody)))]
pub async fn list_requests(
    State(state): State<AppState>,
    query: Result<Query<RequestListWait>, QueryRejection>,
    signed: Signed,
) -> Result<Json<RequestListResponse>, ApiError> {
    use agentkeys_proto::agents::MAX_DECISION_WAIT_S;
    let caller = &signed.caller;
    let asked = caller.require_master().and_then(|()| {
        let wait = decode::query(query)?;
        let wait_s = wait.wait_s.unwrap_or(0);
        if wait_s > MAX_DECISION_WAIT_S {
            return Err(ApiError::bad_request(format!("wait_s is at most {MAX_DECISION_WAIT_S}")));
        }
        let digest_shaped = |d: &String| d.len() == 32 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if wait.changed_from.as_ref().is_some_and(|d| !digest_shaped(d)) {
            return Err(ApiError::bad_request(
                "changed_from is the digest of a list this server answered (32 lowercase hex digits)",
            ));
        }
        Ok((wait_s, wait.changed_from))
    });
    let (wait_s, changed_from) = match asked {
        Ok(asked) => asked,
        Err(error) => return Err(caller.refuse(&state, error).await),
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(u64::from(wait_s));
    let (rows, digest) = loop {
        // Enabled before the read, so a request opened or decided in between still wakes us.
        let changed = state.request_events.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let rows = queries::pending_for(&state.db.reads, &caller.account_id, state.clock.now_ms()).await?;
        let digest = queue_digest(&rows);
        if changed_from.as_deref() != Some(digest.as_str()) || tokio::time::Instant::now() >= deadline {
            break (rows, digest);
        }
        // Another replica's change, or a request expiring, wakes no one: look again every second.
        let next = deadline.min(tokio::time::Instant::now() + std::time::Duration::from_secs(1));
        let _ = tokio::time::timeout_at(next, changed).await;
    };
    caller.record(&state, Subject::default()).await?;
    Ok(Json(RequestListResponse { requests: rows.iter().map(RequestRow::to_pending).collect(), digest }))
}

/// Names a queue by its pending codes: equal digests, the same requests.
fn queue_digest(rows: &[RequestRow]) -> String {
    use sha2::Digest as _;
    let mut codes: Vec<&str> = rows.iter().map(|row| row.code.as_str()).collect();
    codes.sort_unstable();
    hex::encode(&sha2::Sha256::digest(codes.join(",").as_bytes())[..16])
}

/// An agent asks for a service or a tier. Only the account owner can grant it.
#[utoipa::path(post, path = "/v1/requests", tag = "requests", request_body = AgentAskRequest,
    responses((status = 201, body = AgentAskResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
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
        agentkeys_proto::names::validate_display_text(&request.reason, agentkeys_proto::agents::MAX_REASON_CHARS)
            .map_err(|e| ApiError::bad_request(format!("the reason is refused: {e}")))?;
        let (scope, tier) = match (request.kind, &request.service, request.tier) {
            (RequestKind::Access, Some(service), None) => (decode::scope(std::slice::from_ref(service))?, None),
            (RequestKind::Tier, None, Some(tier)) => (Vec::new(), Some(tier)),
            _ => return Err(ApiError::bad_request("ask for access with a service, or for a tier with a tier")),
        };
        let (label, _, _) =
            agents::identity(&state.db.reads, &agent_id).await?.ok_or_else(|| no_such_agent(&agent_id))?;
        Ok(NewRequest {
            id: format!("req_{}", state.random.hex::<16>()?),
            code: ids::format_request_code(state.random.bytes::<5>()?),
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
            not_before_ms: None,
            device_id: None,
            namespace: None,
        })
    }
    .await;
    let reply =
        prepared.as_ref().ok().map(|r| AgentAskResponse { code: r.code.clone(), expires_at_ms: r.expires_at_ms });
    let subject = Subject {
        namespace: caller.agent_id.as_deref().map(agentkeys_proto::agents::agent_namespace),
        service: prepared.as_ref().ok().and_then(|r| r.scope.first().cloned()),
    };
    let policies = state.policies.clone();
    let ask = prepared.map(|request| Ask { request, policies, decided_by: Default::default() });
    caller.commit(&state, subject, ask).await?;
    state.request_events.notify_waiters();
    Ok((StatusCode::CREATED, Json(reply.expect("a committed request has a reply"))))
}

/// Looks a request up by code, for the master to review before deciding. Misses are counted: the
/// account is slowed, then locked (see the requests domain's ops).
#[utoipa::path(get, path = "/v1/requests/{code}", tag = "requests", params(("code" = ids::RequestCode, Path, description = "Request code (case, dashes and spaces do not matter)")),
    responses((status = 200, body = PendingRequest), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn lookup_request(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<Json<PendingRequest>, ApiError> {
    let caller = &signed.caller;
    let op = caller
        .require_master()
        .and(decode::code_path(path))
        .map(|code| Lookup { account_id: caller.account_id.clone(), code });
    let row = caller.commit(&state, Subject::default(), op).await?;
    // A looked-up pairing joins the account's queue.
    state.request_events.notify_waiters();
    Ok(Json(row.to_pending()))
}

/// Prepares what an approval grants, from the request as the master saw it.
/// What a release serves: `uses` reads (`None`: any number) within `for_ms`. One read within
/// [`RELEASE_DEFAULT_FOR_MS`] unless told; `for_s` alone means any number within it.
fn release_terms(uses: Option<u32>, for_s: Option<u32>) -> Result<(Option<i64>, i64), ApiError> {
    use agentkeys_proto::agents::{RELEASE_DEFAULT_FOR_MS, RELEASE_MAX_FOR_MS, RELEASE_MAX_USES};
    if uses.is_some_and(|n| n == 0 || n > RELEASE_MAX_USES) {
        return Err(ApiError::bad_request(format!("a release serves from 1 to {RELEASE_MAX_USES} uses")));
    }
    let for_ms = match for_s {
        None => RELEASE_DEFAULT_FOR_MS,
        Some(seconds) if seconds > 0 && i64::from(seconds) * 1000 <= RELEASE_MAX_FOR_MS => i64::from(seconds) * 1000,
        Some(_) => return Err(ApiError::bad_request("a release lasts from 1 second to 24 hours (for_s 1..=86400)")),
    };
    let uses = match (uses, for_s) {
        (Some(n), _) => Some(i64::from(n)),
        (None, None) => Some(1),
        (None, Some(_)) => None,
    };
    Ok((uses, for_ms))
}

async fn prepare_grant(
    state: &AppState,
    caller: &Caller,
    row: &RequestRow,
    request: ApproveRequest,
) -> Result<Grant, ApiError> {
    let granted = if request.scope.is_empty() { row.scope.clone() } else { decode::scope(&request.scope)? };
    match row.kind {
        RequestKind::Pairing => {
            let keys = request_keys(row)?;
            let agent_id = ids::agent_id(&caller.account_id, &row.label);
            let device = certified_agent_device(state, caller, &agent_id, keys, &request).await?;
            let wraps = decode_wraps(&request.wraps, &agent_id, Some(&device.device_id))?;
            Ok(Grant::Pairing { agent_id, device, scope: granted, wraps })
        }
        RequestKind::Access => {
            let agent_id = row.agent_id.clone().unwrap_or_default();
            Ok(Grant::Access { scope: granted, wraps: decode_wraps(&request.wraps, &agent_id, None)? })
        }
        RequestKind::Tier => Ok(Grant::Tier),
        RequestKind::Device => {
            let RequestKeys { sign, kx, token_hash } = request_keys(row)?;
            let signature =
                decode::exact::<64>("device_certificate", request.device_certificate.as_deref().unwrap_or(""))?;
            let account_key = accounts::sign_public(&state.db.reads, &caller.account_id)
                .await?
                .ok_or_else(|| ApiError::internal("a session's account has no key"))?;
            let payload = ids::device_certificate_payload(&caller.account_id, &sign, &kx, &row.label);
            if !decode::ed25519_ok(&account_key, &payload, &signature) {
                return Err(ApiError::bad_request("device_certificate does not verify for this request's device key"));
            }
            let account_key_wrap = decode::bounded(
                "account_key_wrap",
                request.account_key_wrap.as_deref().unwrap_or(""),
                ACCOUNT_KEY_WRAP_LEN,
                ACCOUNT_KEY_WRAP_LEN,
            )?;
            let device = NewDevice {
                device_id: ids::device_id(&sign),
                kind: ActorKind::Master,
                label: row.label.clone(),
                sign_public: sign.to_vec(),
                kx_public: kx.to_vec(),
                certificate: signature.to_vec(),
                agent_id: None,
                origin: Some(DeviceOrigin::Join),
            };
            let session = NewSession { session_id: state.random.session_id()?, token_hash };
            Ok(Grant::Device { device, session, account_key_wrap })
        }
        RequestKind::Recovery => {
            let keys = request_keys(row)?;
            let mut conn = state.db.reads.acquire().await?;
            let agent_id = agents::resolve_name(&mut conn, &caller.account_id, &row.label).await?.ok_or_else(|| {
                ApiError::not_found(
                    format!("recovery {} names agent {:?}, which this account does not have", row.code, row.label),
                    "check the name on the replacement machine (`agentkeys agents` lists them), or pair it anew",
                )
            })?;
            drop(conn);
            let device = certified_agent_device(state, caller, &agent_id, keys, &request).await?;
            let wraps = decode_wraps(&request.wraps, &agent_id, Some(&device.device_id))?;
            Ok(Grant::Recovery { agent_id, device, wraps, keep_old: request.keep_old })
        }
        RequestKind::Release => {
            let (Some(agent_id), Some(device_id), Some(namespace), [service]) =
                (&row.agent_id, &row.device_id, &row.namespace, row.scope.as_slice())
            else {
                return Err(ApiError::internal("a release request without its agent, device or credential"));
            };
            let wraps = decode_wraps(&request.wraps, agent_id, Some(device_id))?;
            let [wrap] = wraps.as_slice() else {
                return Err(ApiError::bad_request("a release approval carries one wrap, to the device that asked"));
            };
            if wrap.namespace != *namespace || wrap.service != *service {
                return Err(ApiError::bad_request(format!(
                    "release {} is for '{service}' in {}; the wrap is for another credential",
                    row.code,
                    namespace.as_stored()
                )));
            }
            let (uses, for_ms) = release_terms(request.uses, request.for_s)?;
            Ok(Grant::Release { wrap: wrap.clone(), uses, for_ms })
        }
        RequestKind::AccountRecovery => Err(ApiError::new(
            agentkeys_proto::ErrorCode::Denied,
            format!(
                "request {} is a recovery with the recovery key: it is not approved, it waits out its delay",
                row.code
            ),
            "deny it if it is not yours (`agentkeys deny CODE`); to add a machine you hold, run `agentkeys device join` \
             there and approve that instead",
        )),
    }
}

/// The device keys and session token hash a pairing-kind request carries.
struct RequestKeys {
    sign: [u8; 32],
    kx: [u8; 32],
    token_hash: Vec<u8>,
}

fn request_keys(row: &RequestRow) -> Result<RequestKeys, ApiError> {
    let (Some(sign), Some(kx), Some(token_hash)) =
        (row.device_sign_public.clone(), row.device_kx_public.clone(), row.token_hash.clone())
    else {
        return Err(ApiError::internal("a pairing request without keys"));
    };
    let sign: [u8; 32] = sign.try_into().map_err(|_| ApiError::internal("bad stored key"))?;
    let kx: [u8; 32] = kx.try_into().map_err(|_| ApiError::internal("bad stored key"))?;
    Ok(RequestKeys { sign, kx, token_hash })
}

/// An agent device the master certified (a paired certificate chain) for `agent_id`, with a new
/// session; refused unless the certificate verifies with the account key.
async fn certified_agent_device(
    state: &AppState,
    caller: &Caller,
    agent_id: &str,
    RequestKeys { sign, kx, token_hash }: RequestKeys,
    request: &ApproveRequest,
) -> Result<NewAgentDevice, ApiError> {
    let signature = decode::exact::<64>("device_certificate", request.device_certificate.as_deref().unwrap_or(""))?;
    let certificate = DeviceCertificate::Paired { account_signature: signature };
    let account_key = accounts::sign_public(&state.db.reads, &caller.account_id)
        .await?
        .ok_or_else(|| ApiError::internal("a session's account has no key"))?;
    if !certificate.verifies(&account_key, &caller.account_id, agent_id, &sign, &kx, &decode::ed25519_ok) {
        return Err(ApiError::bad_request("device_certificate does not verify for this request's device key"));
    }
    Ok(NewAgentDevice {
        device_id: ids::device_id(&sign),
        sign_public: sign.to_vec(),
        kx_public: kx.to_vec(),
        certificate: certificate.encode(),
        session: NewSession { session_id: state.random.session_id()?, token_hash },
    })
}

/// Approves a request: certifies a pairing's device, grants access, or raises a tier.
#[utoipa::path(post, path = "/v1/requests/{code}/approve", tag = "requests", request_body = ApproveRequest,
    params(("code" = ids::RequestCode, Path, description = "Request code (case, dashes and spaces do not matter)")), responses((status = 200, body = DecisionResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn approve_request(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<Json<DecisionResponse>, ApiError> {
    let caller = &signed.caller;
    let prepared = async {
        caller.require_master()?;
        let code = decode::code_path(path)?;
        let mut request: ApproveRequest = signed.json()?;
        let statements = decode_statements(&caller.account_id, &std::mem::take(&mut request.statements))?;
        let now = state.clock.now_ms();
        // Only a request this account already holds: its own agents' asks, or a pairing it claimed
        // through a guarded look-up. Anything else goes to the op unprepared and counts as a
        // miss, so nothing here tells a guesser that a code exists.
        let row = queries::find_by_code(&state.db.reads, &code).await?.filter(|row| {
            row.status_at(now) == RequestStatus::Pending
                && row.account_id.as_deref() == Some(caller.account_id.as_str())
        });
        let grant = match &row {
            Some(row) => Some(Box::new(prepare_grant(&state, caller, row, request).await?)),
            None => None,
        };
        // The audit row names the agent the approval is about.
        let subject = match grant.as_deref() {
            Some(Grant::Pairing { agent_id, .. } | Grant::Recovery { agent_id, .. }) => Some(agent_id.clone()),
            _ => row.and_then(|row| row.agent_id),
        };
        Ok::<_, ApiError>((
            Approve {
                account_id: caller.account_id.clone(),
                code,
                grant,
                statements,
                policies: state.policies.clone(),
            },
            subject,
        ))
    }
    .await;
    let subject =
        prepared.as_ref().ok().and_then(|(_, agent)| agent.as_deref().map(Subject::agent)).unwrap_or_default();
    let row = caller.commit(&state, subject, prepared.map(|(op, _)| op)).await?;
    state.request_events.notify_waiters();
    Ok(decision(row))
}

/// Denies a request; a denied pairing's daemon stops waiting and exits 6.
#[utoipa::path(post, path = "/v1/requests/{code}/deny", tag = "requests",
    params(("code" = ids::RequestCode, Path, description = "Request code (case, dashes and spaces do not matter)")),
    responses((status = 200, body = DecisionResponse), (status = 404, body = ErrorBody)))]
pub async fn deny_request(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    signed: Signed,
) -> Result<Json<DecisionResponse>, ApiError> {
    let caller = &signed.caller;
    let op = caller
        .require_master()
        .and(decode::code_path(path))
        .map(|code| Deny { account_id: caller.account_id.clone(), code });
    let row = caller.commit(&state, Subject::default(), op).await?;
    state.request_events.notify_waiters();
    Ok(decision(row))
}

/// Where a request stands, held up to `wait_s` seconds (at most 25) while it is pending: an agent
/// waiting on the owner's decision asks once per wait, not once a second. An agent sees only its
/// own requests (a release, only from the device that asked), a master those of its account;
/// any other code is `NOT_FOUND`, as an unknown one is.
#[utoipa::path(get, path = "/v1/requests/{code}/decision", tag = "requests",
    params(("code" = ids::RequestCode, Path, description = "Request code (case, dashes and spaces do not matter)"),
        agentkeys_proto::agents::DecisionWait),
    responses((status = 200, body = DecisionResponse), (status = 404, body = ErrorBody)))]
pub async fn request_decision(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<agentkeys_proto::agents::DecisionWait>, QueryRejection>,
    signed: Signed,
) -> Result<Json<DecisionResponse>, ApiError> {
    use agentkeys_proto::agents::MAX_DECISION_WAIT_S;
    let caller = &signed.caller;
    let asked = (|| {
        let agent_id = caller.agent_id.clone();
        let code = decode::code_path(path)?;
        let wait_s = decode::query(query)?.wait_s.unwrap_or(0);
        if wait_s > MAX_DECISION_WAIT_S {
            return Err(ApiError::bad_request(format!("wait_s is at most {MAX_DECISION_WAIT_S}")));
        }
        Ok((agent_id, code, wait_s))
    })();
    let (agent_id, code, wait_s) = match asked {
        Ok(asked) => asked,
        Err(error) => return Err(caller.refuse(&state, error).await),
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(u64::from(wait_s));
    let row = loop {
        // Enabled before the read, so a decision committed in between still wakes us.
        let changed = state.request_events.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let row = queries::find_by_code(&state.db.reads, &code).await?.filter(|row| {
            let own = |agent_id: &String| {
                row.agent_id.as_ref() == Some(agent_id)
                    && (row.kind != RequestKind::Release || row.device_id.as_deref() == Some(caller.device_id.as_str()))
            };
            row.account_id.as_deref() == Some(caller.account_id.as_str()) && agent_id.as_ref().is_none_or(own)
        });
        let Some(row) = row else {
            let error = ApiError::not_found(
                format!("no request of this {} has code {code}", if agent_id.is_some() { "agent" } else { "account" }),
                "use the code a read or an ask answered with; `agentkeys requests` lists the open ones",
            );
            return Err(caller.refuse(&state, error).await);
        };
        if row.status_at(state.clock.now_ms()) != RequestStatus::Pending || tokio::time::Instant::now() >= deadline {
            break row;
        }
        // Another replica's decision wakes no one here: look again every second.
        let next = deadline.min(tokio::time::Instant::now() + std::time::Duration::from_secs(1));
        let _ = tokio::time::timeout_at(next, changed).await;
    };
    let status = row.status_at(state.clock.now_ms());
    let subject = row.agent_id.as_deref().map(Subject::agent).unwrap_or_default();
    caller.record(&state, subject).await?;
    Ok(decision(RequestRow { status, ..row }))
}
