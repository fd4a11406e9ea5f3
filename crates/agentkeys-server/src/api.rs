//! The `/v1` handlers. Each one validates, decides, and hands its decision to the writer through
//! [`Caller::commit`], answering only once the decision, the nonce and the audit row are durable.
//! The `#[utoipa::path]` attributes are the OpenAPI document: it is generated from these.

use agentkeys_proto::agents::agent_namespace;
use agentkeys_proto::names::validate_service_name;
use agentkeys_proto::types::{
    AccountSettings, AgentIdentity, AuditQuery, AuditResponse, CreateAccountRequest, CreateAccountResponse,
    CredentialListResponse, CredentialSummary, CredentialVersionResponse, MAX_VALUE_BYTES, NamespaceQuery,
    PutCredentialRequest, SealedCredentialResponse, VAULT_NAMESPACE, WhoAmIResponse,
};
use agentkeys_proto::{ErrorBody, ErrorCode, b64, ids};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::agents::{AgentOp, Wrap};
use crate::app::AppState;
use crate::audit::AuditDraft;
use crate::auth::{Caller, Signed};
use crate::error::ApiError;
use crate::writer::{Applied, NewAccount, NewVersion, Operation};

/// Audit action names, by route. Also used to label requests that failed authentication.
pub fn describe_route(method: &Method, matched_path: &str, path: &str) -> (&'static str, Option<String>) {
    let service = || path.rsplit('/').next().filter(|s| validate_service_name(s).is_ok()).map(str::to_owned);
    match (method.as_str(), matched_path) {
        ("GET", "/v1/session") => ("session.whoami", None),
        ("GET", "/v1/credentials") => ("credential.list", None),
        ("GET", "/v1/credentials/{service}") => ("credential.read", service()),
        ("PUT", "/v1/credentials/{service}") => ("credential.store", service()),
        ("DELETE", "/v1/credentials/{service}") => ("credential.remove", service()),
        ("GET", "/v1/audit") => ("audit.read", None),
        ("GET", "/v1/account/settings") => ("account.settings", None),
        ("PUT", "/v1/account/settings") => ("account.settings.change", None),
        ("GET", "/v1/agents") => ("agent.list", None),
        ("POST", "/v1/agents") => ("agent.create", None),
        ("POST", "/v1/agents/{agent_id}/scope") => ("agent.scope", None),
        ("POST", "/v1/agents/{agent_id}/tier") => ("agent.tier", None),
        ("POST", "/v1/agents/{agent_id}/aliases") => ("agent.alias", None),
        ("POST", "/v1/agents/{agent_id}/revoke") => ("agent.revoke", None),
        ("POST", "/v1/agents/{agent_id}/teardown") => ("agent.teardown", None),
        ("GET", "/v1/recipients") => ("agent.recipients", None),
        ("GET", "/v1/requests") => ("request.list", None),
        ("POST", "/v1/requests") => ("request.open", None),
        ("GET", "/v1/requests/{code}") => ("request.lookup", None),
        ("POST", "/v1/requests/{code}/approve") => ("request.approve", None),
        ("POST", "/v1/requests/{code}/deny") => ("request.deny", None),
        _ => ("request", None),
    }
}

/// The error for a credential that does not exist (or was removed).
pub fn credential_not_found(service: &str) -> ApiError {
    ApiError::not_found(
        format!("no credential named '{service}'"),
        format!("store it with `agentkeys store {service}`; see what exists with `agentkeys list`"),
    )
}

fn service_from(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(service) = path.map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))?;
    validate_service_name(&service).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidServiceName,
            format!("invalid service name {:?}: {e}", service.escape_debug().to_string()),
            "pick a name like openai, github.com or aws_prod-2",
        )
    })?;
    Ok(service)
}

pub(crate) fn decode_exact<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], ApiError> {
    b64::decode_array::<N>(text)
        .ok_or_else(|| ApiError::bad_request(format!("{field} must be {N} bytes of unpadded base64url")))
}

pub(crate) fn decode_bounded(field: &'static str, text: &str, min: usize, max: usize) -> Result<Vec<u8>, ApiError> {
    b64::decode(text)
        .filter(|bytes| (min..=max).contains(&bytes.len()))
        .ok_or_else(|| ApiError::bad_request(format!("{field} must be {min} to {max} bytes of unpadded base64url")))
}

/// A wrapped 32-byte data key: format byte, ephemeral key, key, tag.
pub(crate) const DATA_KEY_WRAP_LEN: usize = 1 + 32 + 32 + 16;
/// A wrapped 64-byte account key.
const ACCOUNT_KEY_WRAP_LEN: usize = 1 + 32 + 64 + 16;
/// Sealed values carry a format byte, a 24-byte nonce and a 16-byte tag.
const SEAL_OVERHEAD: usize = 1 + 24 + 16;

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(ApiError::internal)?;
    Ok(out)
}

/// A new session id: `ses_` + 24 random hex digits.
pub(crate) fn new_session_id() -> Result<String, ApiError> {
    Ok(format!("ses_{}", hex::encode(random_bytes::<12>()?)))
}

fn validate_new_account(request: &CreateAccountRequest) -> Result<(NewAccount, String), ApiError> {
    let label = request.device_label.as_str();
    if label.is_empty() || label.len() > ids::DEVICE_LABEL_MAX || label.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "device_label must be 1 to {} printable characters",
            ids::DEVICE_LABEL_MAX
        )));
    }
    let account_sign: [u8; 32] = decode_exact("account_sign_public", &request.account_sign_public)?;
    let account_kx: [u8; 32] = decode_exact("account_kx_public", &request.account_kx_public)?;
    let device_sign: [u8; 32] = decode_exact("device_sign_public", &request.device_sign_public)?;
    let device_kx: [u8; 32] = decode_exact("device_kx_public", &request.device_kx_public)?;
    let certificate: [u8; 64] = decode_exact("device_certificate", &request.device_certificate)?;
    let wrap_device = decode_bounded(
        "account_key_wrap_device",
        &request.account_key_wrap_device,
        ACCOUNT_KEY_WRAP_LEN,
        ACCOUNT_KEY_WRAP_LEN,
    )?;
    let wrap_recovery = decode_bounded(
        "account_key_wrap_recovery",
        &request.account_key_wrap_recovery,
        ACCOUNT_KEY_WRAP_LEN,
        ACCOUNT_KEY_WRAP_LEN,
    )?;
    let account_id = ids::account_id(&account_sign);
    let device_id = ids::device_id(&device_sign);
    let payload = ids::device_certificate_payload(&account_id, &device_sign, &device_kx, label);
    VerifyingKey::from_bytes(&account_sign)
        .ok()
        .and_then(|key| key.verify_strict(&payload, &Signature::from_bytes(&certificate)).ok())
        .ok_or_else(|| ApiError::bad_request("device_certificate does not verify with account_sign_public"))?;
    let token = format!("akt_{}", b64::encode(random_bytes::<32>()?));
    let session_id = new_session_id()?;
    let account = NewAccount {
        account_id,
        sign_public: account_sign.to_vec(),
        kx_public: account_kx.to_vec(),
        device_id,
        device_label: label.to_owned(),
        device_sign_public: device_sign.to_vec(),
        device_kx_public: device_kx.to_vec(),
        device_certificate: certificate.to_vec(),
        wrap_device,
        wrap_recovery,
        session_id,
        token_hash: Sha256::digest(token.as_bytes()).to_vec(),
    };
    Ok((account, token))
}

/// Creates an account and its first master device; returns the session token once.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = CreateAccountRequest,
    responses((status = 201, body = CreateAccountResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_account(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreateAccountResponse>), ApiError> {
    let body = body.map_err(|_| ApiError::payload_too_large())?;
    let validated = serde_json::from_slice::<CreateAccountRequest>(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
        .and_then(|request| validate_new_account(&request));
    let (account_id, reply) = match &validated {
        Ok((account, token)) => (
            Some(account.account_id.clone()),
            Some(CreateAccountResponse {
                account_id: account.account_id.clone(),
                device_id: account.device_id.clone(),
                session_id: account.session_id.clone(),
                session_token: agentkeys_proto::secret::WireSecret::new(token.clone()),
            }),
        ),
        Err(_) => (None, None),
    };
    let audit = AuditDraft {
        account_id,
        actor: reply.as_ref().map(|r| r.device_id.clone()),
        session_id: reply.as_ref().map(|r| r.session_id.clone()),
        action: "account.create",
        ..AuditDraft::default()
    };
    let decision = validated.map(|(account, _)| Operation::CreateAccount(Box::new(account)));
    state.writer.submit(None, decision, audit).await?;
    Ok((StatusCode::CREATED, Json(reply.expect("a committed account has a reply"))))
}

/// Who the caller is. Never includes a token.
#[utoipa::path(get, path = "/v1/session", tag = "session", responses((status = 200, body = WhoAmIResponse), (status = 401, body = ErrorBody)))]
pub async fn whoami(State(state): State<AppState>, signed: Signed) -> Result<Json<WhoAmIResponse>, ApiError> {
    let caller = &signed.caller;
    let agent = match &caller.agent_id {
        Some(agent_id) => crate::agents::identity(&state.db.reads, agent_id).await?,
        None => None,
    };
    caller.commit(&state, "session.whoami", None, Ok(Operation::None)).await?;
    Ok(Json(WhoAmIResponse {
        account_id: caller.account_id.clone(),
        device_id: caller.device_id.clone(),
        device_label: caller.device_label.clone(),
        actor_kind: caller.device_kind.clone(),
        session_id: caller.session_id.clone(),
        session_created_at_ms: caller.session_created_at_ms,
        agent: agent.map(|(label, tier, scope)| AgentIdentity {
            agent_id: caller.agent_id.clone().unwrap_or_default(),
            label,
            tier,
            scope,
        }),
    }))
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
        return Err(caller.refuse(&state, "account.settings", error).await);
    }
    let mut conn = state.db.reads.acquire().await.map_err(ApiError::internal)?;
    let required = crate::writer::requires_presence(&mut conn, &caller.account_id).await.map_err(ApiError::internal)?;
    drop(conn);
    caller.commit(&state, "account.settings", None, Ok(Operation::None)).await?;
    Ok(Json(AccountSettings { require_presence_for_critical: required }))
}

/// Changes the account's server-side policy; turning the presence requirement off is itself a
/// critical operation.
#[utoipa::path(put, path = "/v1/account/settings", tag = "session", request_body = AccountSettings,
    responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn put_account_settings(State(state): State<AppState>, signed: Signed) -> Result<StatusCode, ApiError> {
    let caller = &signed.caller;
    let decision = caller.require_master().and_then(|()| signed.json::<AccountSettings>()).map(|settings| {
        Operation::AccountSettings {
            account_id: caller.account_id.clone(),
            require_presence_for_critical: settings.require_presence_for_critical,
        }
    });
    caller.commit(&state, "account.settings.change", None, decision).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The namespace a master request addresses: the vault, or `?agent=` an agent's private one.
/// Agents never choose: their reads resolve in the writer, their writes are refused.
fn namespace_for(caller: &Caller, query: Result<Query<NamespaceQuery>, QueryRejection>) -> Result<String, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    match query.agent {
        None => Ok(VAULT_NAMESPACE.to_owned()),
        Some(agent) => {
            caller.require_master()?;
            if !agent.starts_with("ag_") || crate::agents::validate_agent_name("agent id", &agent).is_err() {
                return Err(ApiError::bad_request("agent must be an agent id (ag_…); the CLI resolves labels"));
            }
            Ok(agent_namespace(&agent))
        }
    }
}

/// The newest sealed version of a credential. The server cannot open it.
///
/// For the account owner: the vault's (or, with `?agent=`, an agent's private) version with the
/// data key wrapped to the account key. For an agent: its private version if it has one, else the
/// vault's when the service is in its scope and its tier allows values — with the data key
/// wrapped to its own device key.
#[utoipa::path(get, path = "/v1/credentials/{service}", tag = "credentials",
    params(("service" = String, Path, description = "Service name"), NamespaceQuery),
    responses((status = 200, body = SealedCredentialResponse), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn get_credential(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<NamespaceQuery>, QueryRejection>,
    signed: Signed,
) -> Result<Json<SealedCredentialResponse>, ApiError> {
    let caller = &signed.caller;
    let service = service_from(path);
    let namespace = namespace_for(caller, query);
    let (namespace, read) = match (&caller.agent_id, &namespace) {
        // An agent names no namespace (`?agent=` is refused): the writer resolves its own.
        (Some(agent_id), _) => (
            VAULT_NAMESPACE.to_owned(),
            namespace.as_ref().map_err(Clone::clone).and(service.as_ref().map_err(Clone::clone)).map(|s| {
                Operation::Agent(Box::new(AgentOp::Read {
                    account_id: caller.account_id.clone(),
                    agent_id: agent_id.clone(),
                    device_id: caller.device_id.clone(),
                    service: s.clone(),
                    limit: state.read_limit,
                }))
            }),
        ),
        (None, Ok(namespace)) => (
            namespace.clone(),
            service.as_ref().map_err(Clone::clone).map(|s| Operation::ReadCredential {
                account_id: caller.account_id.clone(),
                namespace: namespace.clone(),
                service: s.clone(),
            }),
        ),
        (None, Err(error)) => (VAULT_NAMESPACE.to_owned(), Err(error.clone())),
    };
    let target = service.as_ref().ok().map(|s| (namespace.as_str(), s.as_str()));
    let (namespace, row) = match caller.commit(&state, "credential.read", target, read).await? {
        Applied::Credential(row) => (namespace, row),
        Applied::AgentCredential { namespace, row } => (namespace, row),
        other => return Err(ApiError::internal(format!("writer returned {other:?} for a read"))),
    };
    let service = service?;
    let (Some(ciphertext), Some(wrap)) = (row.ciphertext, row.data_key_wrap) else {
        return Err(ApiError::internal("the writer returned a removed version for a read"));
    };
    Ok(Json(SealedCredentialResponse {
        account_id: caller.account_id.clone(),
        namespace,
        service,
        version: row.version as u64,
        ciphertext: b64::encode(ciphertext),
        data_key_wrap: b64::encode(wrap),
        created_at_ms: row.created_at_ms,
        created_by: row.created_by,
    }))
}

fn validate_put(namespace: &str, service: &str, signed: &Signed) -> Result<NewVersion, ApiError> {
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
                namespace: namespace.to_owned(),
                service: service.to_owned(),
                version,
                recipient: w.device_id.clone(),
                wrap: decode_bounded("agent_wraps.wrap", &w.wrap, DATA_KEY_WRAP_LEN, DATA_KEY_WRAP_LEN)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(NewVersion {
        wraps,
        account_id: signed.caller.account_id.clone(),
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        version,
        ciphertext: decode_bounded(
            "ciphertext",
            &request.ciphertext,
            SEAL_OVERHEAD + 1,
            SEAL_OVERHEAD + MAX_VALUE_BYTES,
        )?,
        data_key_wrap: decode_bounded("data_key_wrap", &request.data_key_wrap, DATA_KEY_WRAP_LEN, DATA_KEY_WRAP_LEN)?,
        created_by: signed.caller.device_id.clone(),
    })
}

fn version_response(
    namespace: String,
    service: String,
    applied: Applied,
) -> Result<Json<CredentialVersionResponse>, ApiError> {
    match applied {
        Applied::Version { version, created_at_ms } => {
            Ok(Json(CredentialVersionResponse { namespace, service, version: version as u64, created_at_ms }))
        }
        other => Err(ApiError::internal(format!("writer returned {other:?} for a version write"))),
    }
}

/// Stores a new sealed version. `version` must be the current version plus one.
#[utoipa::path(put, path = "/v1/credentials/{service}", tag = "credentials", request_body = PutCredentialRequest,
    params(("service" = String, Path, description = "Service name"), NamespaceQuery),
    responses((status = 200, body = CredentialVersionResponse), (status = 409, body = ErrorBody), (status = 400, body = ErrorBody)))]
pub async fn put_credential(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<NamespaceQuery>, QueryRejection>,
    signed: Signed,
) -> Result<Json<CredentialVersionResponse>, ApiError> {
    let caller = &signed.caller;
    let service = service_from(path);
    let namespace = namespace_for(caller, query);
    let ns = namespace.as_deref().unwrap_or(VAULT_NAMESPACE).to_owned();
    let target = service.as_ref().ok().map(|s| (ns.as_str(), s.as_str()));
    let decision = service
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|s| validate_put(namespace.as_ref().map_err(Clone::clone)?, s, &signed))
        .map(Operation::PutCredential);
    let applied = caller.commit(&state, "credential.store", target, decision).await?;
    version_response(ns, service?, applied)
}

/// Removes a credential (a removal marker becomes its newest version; history is kept).
#[utoipa::path(delete, path = "/v1/credentials/{service}", tag = "credentials",
    params(("service" = String, Path, description = "Service name"), NamespaceQuery),
    responses((status = 200, body = CredentialVersionResponse), (status = 404, body = ErrorBody)))]
pub async fn delete_credential(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<NamespaceQuery>, QueryRejection>,
    signed: Signed,
) -> Result<Json<CredentialVersionResponse>, ApiError> {
    let caller = &signed.caller;
    let service = service_from(path);
    let namespace = namespace_for(caller, query);
    let ns = namespace.as_deref().unwrap_or(VAULT_NAMESPACE).to_owned();
    let target = service.as_ref().ok().map(|s| (ns.as_str(), s.as_str()));
    let decision = caller.require_master().and(namespace).and_then(|namespace| {
        service.as_ref().map_err(Clone::clone).map(|s| Operation::RemoveCredential {
            account_id: caller.account_id.clone(),
            namespace,
            service: s.clone(),
            removed_by: caller.device_id.clone(),
        })
    });
    let applied = caller.commit(&state, "credential.remove", target, decision).await?;
    version_response(ns, service?, applied)
}

/// Names and versions of the account's credentials. Never values.
#[utoipa::path(get, path = "/v1/credentials", tag = "credentials", responses((status = 200, body = CredentialListResponse)))]
pub async fn list_credentials(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Json<CredentialListResponse>, ApiError> {
    let caller = &signed.caller;
    let rows = match &caller.agent_id {
        Some(agent_id) => crate::agents::credentials_visible_to(&state.db.reads, &caller.account_id, agent_id).await?,
        None => state.db.list_credentials(&caller.account_id).await?,
    };
    caller.commit(&state, "credential.list", None, Ok(Operation::None)).await?;
    Ok(Json(CredentialListResponse {
        credentials: rows
            .into_iter()
            .map(|(namespace, service, version, at)| CredentialSummary {
                namespace,
                service,
                version: version as u64,
                updated_at_ms: at,
            })
            .collect(),
    }))
}

/// The account's audit rows, oldest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery), responses((status = 200, body = AuditResponse)))]
pub async fn audit(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
    signed: Signed,
) -> Result<Json<AuditResponse>, ApiError> {
    let caller = &signed.caller;
    let query = query.map(|Query(q)| q).map_err(|e| ApiError::bad_request(format!("invalid query: {e}")));
    let query = match query.and_then(|q| match q.service.as_deref().map(validate_service_name) {
        Some(Err(e)) => Err(ApiError::new(ErrorCode::InvalidServiceName, e.to_string(), "pass a valid service name")),
        _ => Ok(q),
    }) {
        Ok(q) => q,
        Err(error) => {
            return Err(caller.refuse(&state, "audit.read", error).await);
        }
    };
    let limit = i64::from(query.limit.unwrap_or(1000).clamp(1, 1000));
    // An agent sees its own rows only, whatever it asks for.
    let agent = caller.agent_id.as_deref().or(query.agent.as_deref());
    let rows = state
        .db
        .audit_for_account(&caller.account_id, query.since_ms.unwrap_or(0), query.service.as_deref(), agent, limit)
        .await?;
    caller.commit(&state, "audit.read", None, Ok(Operation::None)).await?;
    Ok(Json(AuditResponse { entries: rows.iter().map(|row| row.to_entry()).collect() }))
}
