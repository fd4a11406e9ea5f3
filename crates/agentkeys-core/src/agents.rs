//! The master's side of agents: checking an agent device's certificate before wrapping anything
//! to it, wrapping the current data keys of a scope, link codes, and the approval of requests.
//! The server only stores and forwards what these produce.

use agentkeys_proto::agents::{
    AgentSummary, ApproveRequest, CreateAgentRequest, CreateAgentResponse, DecisionResponse, DeviceWrap,
    PendingRequest, RequestKind, RevokeRequest, ScopeChangeRequest, Tier, agent_namespace,
};
use agentkeys_proto::{ErrorCode, b64, ids};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::client::{ApiClient, ClientError};
use crate::crypto::{self, KeyPair, WrapLabel};
use crate::integrity::{self, Verifier};
use crate::random::RandomSource;
use crate::session::Session;
use crate::statements;
use crate::vault::{self, Namespace, VaultError, account_key, certified_kx};

/// How often a grant is retried when a store races it.
const MAX_GRANT_ATTEMPTS: usize = 8;

/// The current data key of each service that exists, wrapped to `recipient_kx`, addressed to
/// `recipient_id` and granted to it (signed by this master device). Services not stored yet are
/// skipped: their first version will be wrapped to the agent when it is stored.
pub async fn wrap_current(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    namespace: Namespace<'_>,
    services: &[String],
    (recipient_id, recipient_kx): (&str, &[u8; 32]),
    rng: &mut impl RandomSource,
) -> Result<Vec<DeviceWrap>, VaultError> {
    let mut wraps = Vec::new();
    let ns = namespace.name();
    for service in services {
        let Some(current) = vault::current_data_key(client, session, verifier, namespace, service).await? else {
            continue;
        };
        // A high-value credential reaches an agent one approved release at a time, never ahead.
        if current.flags & agentkeys_proto::grant::FLAG_HIGH_VALUE != 0 {
            continue;
        }
        let wrap = crypto::wrap_to(recipient_kx, current.data_key.expose(), WrapLabel::DataKey, rng)
            .map_err(|source| VaultError::Open { service: service.clone(), source })?;
        let grant = integrity::sign_grant(
            session,
            &agentkeys_proto::grant::GrantStatement {
                account_id: &session.account_id,
                namespace: &ns,
                service,
                version: current.version,
                ciphertext_sha256: &current.ciphertext_sha256,
                flags: current.flags,
                recipient: recipient_id,
            },
        );
        wraps.push(DeviceWrap {
            namespace: ns.clone(),
            service: service.clone(),
            version: current.version,
            device_id: recipient_id.to_owned(),
            wrap: b64::encode(wrap),
            grant: Some(grant),
            signer: None,
        });
    }
    Ok(wraps)
}

/// The agent's private credentials, by name.
async fn private_services(client: &ApiClient, agent_id: &str) -> Result<Vec<String>, ClientError> {
    let namespace = agent_namespace(agent_id);
    Ok(client
        .list_credentials()
        .await?
        .credentials
        .into_iter()
        .filter(|c| c.namespace == namespace)
        .map(|c| c.service)
        .collect())
}

/// Finds an agent by id, label or alias (PRODUCT.md §3: `<agent>` accepts all three).
pub fn resolve<'a>(agents: &'a [AgentSummary], name: &str) -> Option<&'a AgentSummary> {
    agents
        .iter()
        .find(|a| a.agent_id == name)
        .or_else(|| agents.iter().find(|a| a.label == name))
        .or_else(|| agents.iter().find(|a| a.aliases.iter().any(|alias| alias == name)))
}

/// A link code: 32 random bytes that derive a one-use key pair. Text form `AKL1-` + base32
/// (no padding) of `secret || SHA-256(secret)[..2]`, so a truncated paste is caught locally.
pub struct LinkCode(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkCode(..)")
    }
}

const LINK_PREFIX: &str = "AKL1-";

impl LinkCode {
    pub fn generate(rng: &mut impl RandomSource) -> Self {
        Self(Zeroizing::new(rng.array::<32>()))
    }

    /// The link key pair: HKDF-SHA256 (no salt, info `agentkeys-link-key-v1`) of the secret, 64
    /// bytes, as an Ed25519 seed and an X25519 secret.
    pub fn key_pair(&self) -> KeyPair {
        let mut blob = Zeroizing::new([0u8; 64]);
        Hkdf::<Sha256>::new(None, self.0.as_ref())
            .expand(b"agentkeys-link-key-v1", blob.as_mut())
            .expect("64 bytes is a valid HKDF length");
        KeyPair::from_secret_blob(blob.as_ref()).expect("64 bytes is a valid blob")
    }

    pub fn link_id(&self) -> String {
        ids::link_id(&self.key_pair().public().sign)
    }

    pub fn to_text(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(34));
        raw.extend_from_slice(self.0.as_ref());
        raw.extend_from_slice(&<Sha256 as sha2::Digest>::digest(self.0.as_ref())[..2]);
        Zeroizing::new(format!("{LINK_PREFIX}{}", data_encoding::BASE32_NOPAD.encode(&raw)))
    }

    pub fn parse(text: &str) -> Result<Self, crypto::CryptoError> {
        let upper = Zeroizing::new(text.trim().to_ascii_uppercase());
        let body =
            upper.strip_prefix(LINK_PREFIX).ok_or(crypto::CryptoError::Malformed("link code (expected AKL1-…)"))?;
        let raw = Zeroizing::new(
            data_encoding::BASE32_NOPAD
                .decode(body.as_bytes())
                .map_err(|_| crypto::CryptoError::Malformed("link code (not base32)"))?,
        );
        if raw.len() != 34 || <Sha256 as sha2::Digest>::digest(&raw[..32])[..2] != raw[32..] {
            return Err(crypto::CryptoError::Malformed("link code (checksum mismatch: was it copied whole?)"));
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&raw[..32]);
        Ok(Self(secret))
    }
}

/// Creates an agent and mints its link code: the link key is certified by the account key, and
/// the scope's current data keys are wrapped to it. Only the code opens them.
pub async fn create_agent(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    label: &str,
    scope: &[String],
    tier: Tier,
    rng: &mut impl RandomSource,
) -> Result<(CreateAgentResponse, LinkCode), VaultError> {
    let account = account_key(session)?;
    let agent_id = ids::agent_id(&session.account_id, label);
    let code = LinkCode::generate(rng);
    let link = code.key_pair().public();
    let link_id = ids::link_id(&link.sign);
    let certificate = account.sign(&ids::link_key_payload(&session.account_id, &agent_id, &link.sign, &link.kx));
    // The link key vouches for the account key: the daemon pins it, and only the master and the
    // code's holder can make this signature.
    let account_binding = code.key_pair().sign(&ids::link_account_payload(&link_id, &account.public().sign));
    let mut attempts = 0;
    loop {
        statements::sync(client, session, verifier).await?;
        let said = statements::sign(session, verifier, statements::grant(verifier, &agent_id, scope, &[]))?;
        let wraps = wrap_current(client, session, verifier, Namespace::Vault, scope, (&link_id, &link.kx), rng).await?;
        let request = CreateAgentRequest {
            label: label.to_owned(),
            scope: scope.to_vec(),
            tier,
            link_sign_public: b64::encode(link.sign),
            link_kx_public: b64::encode(link.kx),
            link_certificate: b64::encode(certificate),
            wraps,
            account_binding: b64::encode(account_binding),
            statements: said.wire(),
        };
        match client.create_agent(&request).await {
            Err(ClientError::Api { detail, .. })
                if detail.code == ErrorCode::VersionConflict && attempts < MAX_GRANT_ATTEMPTS =>
            {
                attempts += 1;
            }
            other => {
                let created = other?;
                said.taken(verifier);
                return Ok((created, code));
            }
        }
    }
}

/// The OTP of a pairing request as the master computes it, from the keys the server relayed, the
/// nonce the daemon revealed after this master's look-up, and this account's own signing key (the
/// daemon computes it over the key it was shown). `None` until the nonce is revealed; an error
/// when the nonce does not open the daemon's commitment.
pub fn pairing_otp(session: &Session, request: &PendingRequest) -> Result<Option<String>, VaultError> {
    let account_sign = account_key(session)?.public().sign;
    let bad = |what: &str| VaultError::Mismatch {
        wanted: format!("a pairing request with {what}"),
        got: request.code.clone(),
    };
    let sign = b64::decode_array::<32>(request.device_sign_public.as_deref().unwrap_or(""))
        .ok_or_else(|| bad("a device key"))?;
    let kx = b64::decode_array::<32>(request.device_kx_public.as_deref().unwrap_or(""))
        .ok_or_else(|| bad("a device key"))?;
    let commitment = b64::decode_array::<32>(request.commitment.as_deref().unwrap_or(""))
        .ok_or_else(|| bad("a nonce commitment"))?;
    let Some(reveal) = request.reveal.as_deref() else { return Ok(None) };
    let nonce = b64::decode_array::<32>(reveal).ok_or_else(|| bad("a well-formed nonce"))?;
    if ids::pairing_commitment(&nonce) != commitment {
        return Err(bad("a nonce that opens its commitment"));
    }
    Ok(Some(ids::pairing_otp(
        &nonce,
        request.kind.as_str(),
        &request.code,
        &request.label,
        &request.scope,
        (&sign, &kx),
        &account_sign,
    )))
}

/// The device fingerprint shown at approval: the device id.
pub fn device_fingerprint(request: &PendingRequest) -> Option<String> {
    Some(ids::device_id(&b64::decode_array::<32>(request.device_sign_public.as_deref()?)?))
}

/// The keys a pairing-kind request carries.
fn request_keys(request: &PendingRequest) -> Result<([u8; 32], [u8; 32]), VaultError> {
    let bad = || VaultError::Mismatch { wanted: "a request with device keys".into(), got: request.code.clone() };
    let sign = b64::decode_array::<32>(request.device_sign_public.as_deref().ok_or_else(bad)?).ok_or_else(bad)?;
    let kx = b64::decode_array::<32>(request.device_kx_public.as_deref().ok_or_else(bad)?).ok_or_else(bad)?;
    Ok((sign, kx))
}

/// What an agent's new device must open: `scope` and, when the agent exists, the rest of its
/// scope (each service checked against what this master granted it) and its private
/// credentials — wrapped to the device. Also what the server listed as its scope before.
async fn wraps_for_new_device(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    (agent_id, device_id, kx): (&str, &str, &[u8; 32]),
    scope: &[String],
    rng: &mut impl RandomSource,
) -> Result<(Vec<DeviceWrap>, Vec<String>), VaultError> {
    let mut services = scope.to_vec();
    let mut known = Vec::new();
    let agents = client.list_agents().await?.agents;
    if let Some(existing) = agents.iter().find(|a| a.agent_id == agent_id) {
        // What it has already must be what this master granted it.
        for service in existing.scope.iter().filter(|s| !scope.contains(s)) {
            if let Err(error) = verifier.check_in_scope(agent_id, device_id, service) {
                return Err(vault::reported(client, error).await);
            }
            services.push(service.clone());
        }
        known = existing.scope.clone();
    }
    let mut wraps = wrap_current(client, session, verifier, Namespace::Vault, &services, (device_id, kx), rng).await?;
    let private = private_services(client, agent_id).await?;
    wraps.extend(
        wrap_current(client, session, verifier, Namespace::Agent(agent_id), &private, (device_id, kx), rng).await?,
    );
    Ok((wraps, known))
}

/// How an approval is given beyond what the request asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApproveOptions {
    /// Agent recovery: keep the agent's old devices instead of revoking them.
    pub keep_old: bool,
    /// A release: how many reads it serves, and for how long (the server's defaults when `None`).
    pub uses: Option<u32>,
    pub for_s: Option<u32>,
}

/// Approves a request as it was reviewed. A pairing: certify the device key and wrap the granted
/// scope's data keys (and, when the label names an existing agent, its private credentials) to
/// it. An agent recovery: the same for the existing agent `agent`, revoking its old devices
/// unless told to keep them. A device join: certify the new master device and wrap the account
/// key to it. An access request: wrap the service to every device of the agent. A tier: nothing
/// to wrap.
#[allow(clippy::too_many_arguments)]
pub async fn approve(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    request: &PendingRequest,
    scope: &[String],
    agent: Option<&AgentSummary>,
    options: ApproveOptions,
    rng: &mut impl RandomSource,
) -> Result<DecisionResponse, VaultError> {
    let account = account_key(session)?;
    let mut attempts = 0;
    // What the approval grants, and what the server listed for the agent before it.
    let (mut agent_id, mut known) = (request.agent_id.clone().unwrap_or_default(), Vec::new());
    loop {
        if !matches!(request.kind, RequestKind::Tier | RequestKind::Device) {
            statements::sync(client, session, verifier).await?;
        }
        let mut revoked = Vec::new();
        let approval = match request.kind {
            RequestKind::Pairing | RequestKind::Recovery => {
                let (sign, kx) = request_keys(request)?;
                agent_id = match (request.kind, agent) {
                    (RequestKind::Recovery, Some(agent)) => agent.agent_id.clone(),
                    (RequestKind::Recovery, None) => {
                        return Err(VaultError::Mismatch {
                            wanted: "the agent this recovery stands in for".into(),
                            got: request.label.clone(),
                        });
                    }
                    _ => ids::agent_id(&session.account_id, &request.label),
                };
                let device_id = ids::device_id(&sign);
                if let Err(error) = verifier.check_recipient(&agent_id, &device_id) {
                    return Err(vault::reported(client, error).await);
                }
                let certificate = account.sign(&ids::agent_device_payload(&session.account_id, &agent_id, &sign, &kx));
                let (wraps, listed) =
                    wraps_for_new_device(client, session, verifier, (&agent_id, &device_id, &kx), scope, rng).await?;
                known = listed;
                if request.kind == RequestKind::Recovery && !options.keep_old {
                    revoked = agent
                        .map(|a| a.devices.iter().filter(|d| !d.revoked).map(|d| d.device_id.clone()).collect())
                        .unwrap_or_default();
                }
                ApproveRequest {
                    scope: scope.to_vec(),
                    // The bare signature: the server stores it as a paired certificate chain.
                    device_certificate: Some(b64::encode(certificate)),
                    wraps,
                    keep_old: options.keep_old,
                    ..ApproveRequest::default()
                }
            }
            RequestKind::Device => {
                let (sign, kx) = request_keys(request)?;
                let public = crypto::PublicKeys { sign, kx };
                let certificate =
                    account.sign(&crypto::device_certificate_payload(&session.account_id, &public, &request.label));
                let wrap = crypto::wrap_to(&kx, account.secret_blob().as_ref(), WrapLabel::AccountKey, rng)
                    .map_err(|source| VaultError::Open { service: "the account key".into(), source })?;
                ApproveRequest {
                    device_certificate: Some(b64::encode(certificate)),
                    account_key_wrap: Some(b64::encode(wrap)),
                    ..ApproveRequest::default()
                }
            }
            RequestKind::Access => {
                let agents = client.list_agents().await?.agents;
                let agent = agents.iter().find(|a| a.agent_id == agent_id);
                known = agent.map(|a| a.scope.clone()).unwrap_or_default();
                let wraps = match agent {
                    Some(agent) => wraps_for_devices(client, session, verifier, agent, scope, rng).await?,
                    None => Vec::new(),
                };
                ApproveRequest { scope: scope.to_vec(), wraps, ..ApproveRequest::default() }
            }
            RequestKind::Release => ApproveRequest {
                wraps: vec![release_wrap(client, session, verifier, request, rng).await?],
                uses: options.uses,
                for_s: options.for_s,
                ..ApproveRequest::default()
            },
            RequestKind::Tier | RequestKind::AccountRecovery => ApproveRequest::default(),
        };
        let mut bodies = match request.kind {
            RequestKind::Tier | RequestKind::Device | RequestKind::AccountRecovery | RequestKind::Release => Vec::new(),
            _ => statements::grant(verifier, &agent_id, scope, &known),
        };
        // An agent's recovery says, in the account's log, that the machines it replaces never
        // receive a key again.
        if !revoked.is_empty() {
            bodies.extend(statements::revoke(verifier, &agent_id, &revoked, false));
        }
        let said = statements::sign(session, verifier, bodies)?;
        let approval = ApproveRequest { statements: said.wire(), ..approval };
        match client.approve_request(&request.code, &approval).await {
            Err(ClientError::Api { detail, .. })
                if detail.code == ErrorCode::VersionConflict && attempts < MAX_GRANT_ATTEMPTS =>
            {
                attempts += 1;
            }
            other => {
                let decided = other?;
                said.taken(verifier);
                return Ok(decided);
            }
        }
    }
}

/// A release: the current data key of the credential asked for, wrapped to the one device that
/// asked — once this master checked that the device is the agent's, certified, not revoked, and
/// (for a vault credential) granted the service. A server cannot make one up: only a master
/// holds the key.
async fn release_wrap(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    request: &PendingRequest,
    rng: &mut impl RandomSource,
) -> Result<DeviceWrap, VaultError> {
    let malformed = |what: &str| VaultError::Mismatch {
        wanted: format!("a release request with {what}"),
        got: request.code.clone(),
    };
    let agent_id = request.agent_id.as_deref().ok_or_else(|| malformed("an agent"))?;
    // What the human was shown is the label: the key goes to that agent and no other.
    if ids::agent_id(&session.account_id, &request.label) != agent_id {
        return Err(malformed("the agent its label names"));
    }
    let device_id = request.device_id.as_deref().ok_or_else(|| malformed("a device"))?;
    let [service] = request.scope.as_slice() else { return Err(malformed("one service")) };
    let ns = request.namespace.as_deref().ok_or_else(|| malformed("a namespace"))?;
    let namespace = match ns.strip_prefix("agent:") {
        Some(owner) if owner == agent_id => Namespace::Agent(agent_id),
        Some(_) => return Err(malformed("a credential of its own agent")),
        None if ns == agentkeys_proto::types::VAULT_NAMESPACE => Namespace::Vault,
        None => return Err(malformed("a known namespace")),
    };
    let agents = client.list_agents().await?.agents;
    let device = agents
        .iter()
        .filter(|a| a.agent_id == agent_id)
        .flat_map(|a| &a.devices)
        .find(|d| d.device_id == device_id && !d.revoked && d.agent_id == agent_id)
        .ok_or_else(|| VaultError::Uncertified { agent_id: agent_id.to_owned(), device_id: device_id.to_owned() })?;
    let allowed = verifier.check_recipient(agent_id, device_id).and_then(|()| match namespace {
        Namespace::Vault => verifier.check_in_scope(agent_id, device_id, service),
        Namespace::Agent(_) => Ok(()),
    });
    if let Err(error) = allowed {
        return Err(vault::reported(client, error).await);
    }
    let kx = certified_kx(session, device)?;
    let current = vault::current_data_key(client, session, verifier, namespace, service)
        .await?
        .ok_or_else(|| malformed("a credential that still exists"))?;
    let wrap = crypto::wrap_to(&kx, current.data_key.expose(), WrapLabel::DataKey, rng)
        .map_err(|source| VaultError::Open { service: service.clone(), source })?;
    let grant = integrity::sign_grant(
        session,
        &agentkeys_proto::grant::GrantStatement {
            account_id: &session.account_id,
            namespace: ns,
            service,
            version: current.version,
            ciphertext_sha256: &current.ciphertext_sha256,
            flags: current.flags,
            recipient: device_id,
        },
    );
    Ok(DeviceWrap {
        namespace: ns.to_owned(),
        service: service.clone(),
        version: current.version,
        device_id: device_id.to_owned(),
        wrap: b64::encode(wrap),
        grant: Some(grant),
        signer: None,
    })
}

/// The current data keys of `services` wrapped to every active device of `agent`, and to each of
/// its pending link codes.
async fn wraps_for_devices(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    agent: &AgentSummary,
    services: &[String],
    rng: &mut impl RandomSource,
) -> Result<Vec<DeviceWrap>, VaultError> {
    let mut wraps = Vec::new();
    for device in agent.devices.iter().filter(|d| !d.revoked).chain(&agent.links) {
        if let Err(error) = verifier.check_recipient(&device.agent_id, &device.device_id) {
            return Err(vault::reported(client, error).await);
        }
        let kx = certified_kx(session, device)?;
        let id = &device.device_id;
        wraps.extend(wrap_current(client, session, verifier, Namespace::Vault, services, (id, &kx), rng).await?);
    }
    Ok(wraps)
}

/// Adds and removes services of an agent's scope; added services are wrapped to every device.
/// The account's log says `granted` (what was added, or with `--set` the whole scope) is the
/// agent's, and `remove` no longer.
#[allow(clippy::too_many_arguments)]
pub async fn change_scope(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    agent: &AgentSummary,
    add: &[String],
    remove: &[String],
    granted: &[String],
    rng: &mut impl RandomSource,
) -> Result<(), VaultError> {
    let mut attempts = 0;
    let mut current = agent.clone();
    loop {
        statements::sync(client, session, verifier).await?;
        // An agent with no record is taken as listed, less what this change takes away.
        let known: Vec<String> = current.scope.iter().filter(|s| !remove.contains(s)).cloned().collect();
        let mut bodies = statements::grant(verifier, &agent.agent_id, granted, &known);
        bodies.extend(statements::ungrant(verifier, &agent.agent_id, remove));
        let said = statements::sign(session, verifier, bodies)?;
        let request = ScopeChangeRequest {
            add: add.to_vec(),
            remove: remove.to_vec(),
            wraps: wraps_for_devices(client, session, verifier, &current, add, rng).await?,
            statements: said.wire(),
        };
        match client.change_scope(&agent.agent_id, &request).await {
            Err(ClientError::Api { detail, .. })
                if detail.code == ErrorCode::VersionConflict && attempts < MAX_GRANT_ATTEMPTS =>
            {
                attempts += 1;
                // A device or link code joined, or a credential changed: read the agent again.
                let agents = client.list_agents().await?.agents;
                if let Some(fresh) = agents.into_iter().find(|a| a.agent_id == agent.agent_id) {
                    current = fresh;
                }
            }
            other => {
                other?;
                said.taken(verifier);
                return Ok(());
            }
        }
    }
}

/// Revokes an agent (every device and link code), or tears it down, with the account's
/// statement of it: from then on no master of the account wraps a key to those devices, whatever
/// the server lists.
pub async fn end_agent(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    agent: &AgentSummary,
    teardown: bool,
) -> Result<(), VaultError> {
    let ids: Vec<String> = agent.devices.iter().chain(&agent.links).map(|d| d.device_id.clone()).collect();
    for _ in 0..=MAX_GRANT_ATTEMPTS {
        statements::sync(client, session, verifier).await?;
        let said = statements::sign(session, verifier, statements::revoke(verifier, &agent.agent_id, &ids, teardown))?;
        let request = RevokeRequest { statements: said.wire() };
        let ended = match teardown {
            true => client.teardown_agent(&agent.agent_id, &request).await,
            false => client.revoke_agent(&agent.agent_id, &request).await,
        };
        match ended {
            // Another master device said something first: read the log again.
            Err(ClientError::Api { detail, .. }) if detail.code == ErrorCode::VersionConflict => {}
            other => {
                other?;
                said.taken(verifier);
                return Ok(());
            }
        }
    }
    Err(VaultError::StatementRace)
}
