//! Vault operations that combine the client and the key hierarchy: storing seals locally and
//! uploads ciphertext; reading downloads and opens locally. The server never sees a value.

use agentkeys_proto::agents::AgentDevice;
use agentkeys_proto::agents::agent_namespace;
use agentkeys_proto::certificate::DeviceCertificate;
use agentkeys_proto::grant::{FLAG_HIGH_VALUE, GrantStatement};
use agentkeys_proto::names::{InvalidServiceName, validate_service_name};
use agentkeys_proto::types::{
    CredentialVersionResponse, MAX_VALUE_BYTES, PutCredentialRequest, RecipientWrap, SealedCredentialResponse,
    VAULT_NAMESPACE,
};
use agentkeys_proto::{ErrorCode, b64, ids};
use zeroize::Zeroizing;

use crate::client::{ApiClient, ClientError};
use crate::crypto::{self, CredentialContext, CryptoError, KeyPair, SymmetricKey, WrapLabel};
use crate::exit;
use crate::integrity::{self, IntegrityError, Verifier};
use crate::random::RandomSource;
use crate::session::Session;

/// How often a store retries after losing a version race to a concurrent store.
const MAX_STORE_ATTEMPTS: usize = 16;

/// A vault operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("invalid service name {name:?}: {source}")]
    InvalidName { name: String, source: InvalidServiceName },
    #[error("the value is empty; there is nothing to store")]
    EmptyValue,
    #[error("the value is {len} bytes; the largest storable value is {MAX_VALUE_BYTES} bytes")]
    ValueTooLarge { len: usize },
    #[error("credential '{service}' could not be opened: {source}")]
    Open { service: String, source: CryptoError },
    #[error("the server answered for {got} when asked for {wanted}: refusing the response")]
    Mismatch { wanted: String, got: String },
    #[error("gave up storing '{service}' after {MAX_STORE_ATTEMPTS} concurrent writes raced it")]
    TooManyConflicts { service: String },
    #[error("this is an agent session; only the account owner's session holds the account key")]
    NotMaster,
    #[error(
        "device {device_id} of agent {agent_id} has no valid certificate from this account: refusing to wrap a key to it"
    )]
    Uncertified { agent_id: String, device_id: String },
    #[error("cannot allocate protected memory for a credential: {0}")]
    SecretMemory(std::io::Error),
    #[error("gave up recording a decision in the account's statement log after other master devices raced it")]
    StatementRace,
    #[error("INTEGRITY: {0}")]
    Integrity(IntegrityError),
    /// A store that keeps the current version's high-value mark found that version unverifiable.
    #[error("INTEGRITY: {source}")]
    UnverifiedMark { service: String, source: IntegrityError },
}

impl From<crate::statements::StatementError> for VaultError {
    fn from(error: crate::statements::StatementError) -> Self {
        match error {
            crate::statements::StatementError::Client(e) => VaultError::Client(e),
            crate::statements::StatementError::Integrity(e) => VaultError::Integrity(e),
            crate::statements::StatementError::NotMaster => VaultError::NotMaster,
        }
    }
}

impl From<IntegrityError> for VaultError {
    fn from(error: IntegrityError) -> Self {
        VaultError::Integrity(error)
    }
}

impl VaultError {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<agentkeys_proto::ErrorCode> {
        match self {
            VaultError::Client(e) => e.code(),
            VaultError::Integrity(_) | VaultError::UnverifiedMark { .. } => Some(ErrorCode::Integrity),
            _ => None,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            VaultError::Client(e) => e.exit_code(),
            VaultError::InvalidName { .. } | VaultError::EmptyValue | VaultError::ValueTooLarge { .. } => exit::USAGE,
            VaultError::Open { .. }
            | VaultError::Mismatch { .. }
            | VaultError::TooManyConflicts { .. }
            | VaultError::StatementRace => exit::ERROR,
            VaultError::NotMaster => exit::DENIED,
            VaultError::Uncertified { .. } | VaultError::SecretMemory(_) => exit::ERROR,
            VaultError::Integrity(_) | VaultError::UnverifiedMark { .. } => exit::for_code(ErrorCode::Integrity),
        }
    }

    pub fn hint(&self) -> String {
        match self {
            VaultError::Client(e) => e.hint(),
            VaultError::InvalidName { .. } => "pick a name like openai, github.com or aws_prod-2".into(),
            VaultError::EmptyValue => "pipe the value on stdin or type it at the prompt".into(),
            VaultError::ValueTooLarge { .. } => "store a reference (a path or a URL) instead of the blob".into(),
            VaultError::Open { .. } | VaultError::Mismatch { .. } => {
                "the server returned data this account did not seal; check --server and report it".into()
            }
            VaultError::TooManyConflicts { .. } => {
                "retry; another process is storing the same service in a loop".into()
            }
            VaultError::StatementRace => {
                "retry; nothing was changed. If it happens again, another master device is changing the same agents"
                    .into()
            }
            VaultError::NotMaster => "run this on the master with `agentkeys`, not with an agent session".into(),
            VaultError::Uncertified { agent_id, .. } => format!(
                "the server offered a key the account never approved; revoke the agent (`agentkeys revoke {agent_id}`), \
                 check who administers the server, and pair it again"
            ),
            VaultError::SecretMemory(_) => {
                "raise the locked-memory limit (`ulimit -l`, LimitMEMLOCK= in a systemd unit) or run fewer commands at once"
                    .into()
            }
            VaultError::Integrity(e) => e.hint(),
            VaultError::UnverifiedMark { service, .. } => format!(
                "the current version of '{service}' is not this account's, so whether it is high-value is unknown: \
                 store it again saying which (`agentkeys store {service} --high-value=false`, or `--high-value`)"
            ),
        }
    }
}

/// Checks a service name before anything is sent.
pub fn check_service(name: &str) -> Result<(), VaultError> {
    validate_service_name(name)
        .map_err(|source| VaultError::InvalidName { name: name.escape_debug().to_string(), source })
}

/// Where a credential lives: the account's vault, or one agent's private namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace<'a> {
    Vault,
    Agent(&'a str),
}

impl Namespace<'_> {
    pub fn name(&self) -> String {
        match self {
            Namespace::Vault => VAULT_NAMESPACE.to_owned(),
            Namespace::Agent(agent_id) => agent_namespace(agent_id),
        }
    }

    fn agent(&self) -> Option<&str> {
        match self {
            Namespace::Vault => None,
            Namespace::Agent(agent_id) => Some(agent_id),
        }
    }
}

/// The account key, or an error saying this session is an agent's.
pub fn account_key(session: &Session) -> Result<&KeyPair, VaultError> {
    session.account.as_ref().ok_or(VaultError::NotMaster)
}

/// Whether the current version of `service` is high-value, as its signed grant says (a server
/// cannot clear the flag unseen); `false` when nothing is stored yet.
async fn current_high_value(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    namespace: Namespace<'_>,
    service: &str,
) -> Result<bool, VaultError> {
    match verified_current(client, session, verifier, namespace, service).await {
        Ok(Some((sealed, _))) => Ok(sealed.flags & FLAG_HIGH_VALUE != 0),
        // Removed (its marker keeps the mark), never stored, or hidden by the server: what this
        // slot last verified says.
        Ok(None) => Ok(verifier.remembered_high_value(&namespace.name(), service)),
        // Its flag is only as good as its grant: a forged version says nothing about it.
        Err(VaultError::Integrity(source)) => Err(VaultError::UnverifiedMark { service: service.to_owned(), source }),
        Err(error) => Err(error),
    }
}

/// The newest version of a credential in `namespace` as this master verified it (this account's,
/// signed, not rolled back), with its ciphertext; `None` when the server holds none.
async fn verified_current(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    namespace: Namespace<'_>,
    service: &str,
) -> Result<Option<(SealedCredentialResponse, Vec<u8>)>, VaultError> {
    let sealed = match client.get_credential(service, namespace.agent()).await {
        Ok(sealed) => sealed,
        Err(ClientError::Api { detail, .. }) if detail.code == ErrorCode::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    check_origin(session, &sealed, &[namespace.name()], service)?;
    let ciphertext = ciphertext_of(&sealed)?;
    checked(client, verifier.check(session, &sealed, &ciphertext), verifier).await?;
    Ok(Some((sealed, ciphertext)))
}

/// Seals `value` under a fresh data key and uploads it as the next version of `service`, with
/// the data key wrapped to the account key and to every agent device that may read it — each
/// of whose certificates is checked first, so a key the server slipped in gets nothing. Keeps
/// the current version's high-value mark ([`store_marked`]).
pub async fn store(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    namespace: Namespace<'_>,
    service: &str,
    value: &[u8],
    rng: &mut impl RandomSource,
) -> Result<CredentialVersionResponse, VaultError> {
    store_marked(client, session, verifier, namespace, service, value, None, rng).await
}

/// [`store`], setting or clearing the high-value mark (`Some`), or keeping what the current
/// version has (`None`). A high-value version is wrapped to no agent: each release is approved
/// on its own.
#[allow(clippy::too_many_arguments)]
pub async fn store_marked(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    namespace: Namespace<'_>,
    service: &str,
    value: &[u8],
    high_value: Option<bool>,
    rng: &mut impl RandomSource,
) -> Result<CredentialVersionResponse, VaultError> {
    check_service(service)?;
    if value.is_empty() {
        return Err(VaultError::EmptyValue);
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(VaultError::ValueTooLarge { len: value.len() });
    }
    let account = account_key(session)?;
    let account_kx = account.public().kx;
    let ns = namespace.name();
    let mut version = 1;
    let mut synced = false;
    for _ in 0..MAX_STORE_ATTEMPTS {
        let high_value = match high_value {
            Some(wanted) => wanted,
            None => current_high_value(client, session, verifier, namespace, service).await?,
        };
        let flags = if high_value { FLAG_HIGH_VALUE } else { 0 };
        let recipients = match high_value {
            true => Vec::new(),
            false => client.recipients(service, namespace.agent()).await?.devices,
        };
        // Whom this master allows is the account's signed log: read what is new in it before a
        // key goes to any agent (a store nobody else reads costs nothing more).
        if !recipients.is_empty() && !synced {
            crate::statements::sync(client, session, verifier).await?;
            synced = true;
        }
        let data_key = SymmetricKey::generate(rng);
        let context = CredentialContext { account_id: &session.account_id, namespace: &ns, service, version };
        let wrap_err = |source| VaultError::Open { service: service.into(), source };
        let ciphertext = crypto::seal_credential(&data_key, &context, value, rng);
        let digest = integrity::ciphertext_digest(&ciphertext);
        let grant = |recipient: &str| {
            integrity::sign_grant(
                session,
                &GrantStatement {
                    account_id: &session.account_id,
                    namespace: &ns,
                    service,
                    version,
                    ciphertext_sha256: &digest,
                    flags,
                    recipient,
                },
            )
        };
        let mut agent_wraps = Vec::with_capacity(recipients.len());
        for device in &recipients {
            // A private credential goes to its own agent's devices and no one else's, whatever
            // the server lists.
            if namespace.agent().is_some_and(|owner| owner != device.agent_id) {
                return Err(VaultError::Uncertified {
                    agent_id: device.agent_id.clone(),
                    device_id: device.device_id.clone(),
                });
            }
            let allowed =
                verifier.check_recipient(&device.agent_id, &device.device_id).and_then(|()| match namespace {
                    Namespace::Vault => verifier.check_in_scope(&device.agent_id, &device.device_id, service),
                    Namespace::Agent(_) => Ok(()),
                });
            if let Err(error) = allowed {
                return Err(reported(client, error).await);
            }
            let kx = certified_kx(session, device)?;
            agent_wraps.push(RecipientWrap {
                device_id: device.device_id.clone(),
                wrap: b64::encode(crypto::wrap_to(&kx, data_key.expose(), WrapLabel::DataKey, rng).map_err(wrap_err)?),
                grant: grant(&device.device_id),
            });
        }
        let request = PutCredentialRequest {
            version,
            ciphertext: b64::encode(&ciphertext),
            data_key_wrap: b64::encode(
                crypto::wrap_to(&account_kx, data_key.expose(), WrapLabel::DataKey, rng).map_err(wrap_err)?,
            ),
            grant: grant(&session.account_id),
            flags,
            agent_wraps,
        };
        match client.put_credential(service, namespace.agent(), &request).await {
            // Another store took the version, or the set of agents that may read it changed:
            // seal again for what the server holds now.
            Err(ClientError::Api { detail, .. }) if detail.code == ErrorCode::VersionConflict => {
                version = detail.current_version.unwrap_or(version) + 1;
            }
            other => {
                let stored = other?;
                // What this master signed, not what the server says it stored.
                verifier.wrote(&ns, service, version, high_value);
                return Ok(stored);
            }
        }
    }
    Err(VaultError::TooManyConflicts { service: service.into() })
}

/// Checks that a sealed response is the one asked for: this account, an expected namespace,
/// this service.
fn check_origin(
    session: &Session,
    sealed: &SealedCredentialResponse,
    namespaces: &[String],
    service: &str,
) -> Result<(), VaultError> {
    if sealed.account_id == session.account_id && namespaces.contains(&sealed.namespace) && sealed.service == service {
        return Ok(());
    }
    Err(VaultError::Mismatch {
        wanted: format!("{}/{}/{service}", session.account_id, namespaces.join("|")),
        got: format!("{}/{}/{}", sealed.account_id, sealed.namespace, sealed.service),
    })
}

/// Opens a sealed response's data key with the account key (master) or the device key (agent).
fn open_data_key(session: &Session, sealed: &SealedCredentialResponse) -> Result<SymmetricKey, VaultError> {
    let open_err = |source| VaultError::Open { service: sealed.service.clone(), source };
    let wrap = b64::decode(&sealed.data_key_wrap).ok_or_else(|| open_err(CryptoError::Malformed("base64 field")))?;
    let key = match &session.account {
        Some(account) => account.unwrap(&wrap, WrapLabel::DataKey),
        None => session.device.unwrap(&wrap, WrapLabel::DataKey),
    }
    .map_err(open_err)?;
    SymmetricKey::from_bytes(&key).map_err(open_err)
}

fn ciphertext_of(sealed: &SealedCredentialResponse) -> Result<Vec<u8>, VaultError> {
    b64::decode(&sealed.ciphertext).ok_or_else(|| VaultError::Open {
        service: sealed.service.clone(),
        source: CryptoError::Malformed("base64 field"),
    })
}

/// Opens a sealed answer that was already verified (or, for the first wave's migration, is
/// trusted as it is).
fn open_sealed(session: &Session, sealed: &SealedCredentialResponse) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let data_key = open_data_key(session, sealed)?;
    let open_err = |source| VaultError::Open { service: sealed.service.clone(), source };
    let ciphertext = ciphertext_of(sealed)?;
    let context = CredentialContext {
        account_id: &session.account_id,
        namespace: &sealed.namespace,
        service: &sealed.service,
        version: sealed.version,
    };
    crypto::open_credential(&data_key, &context, &ciphertext).map_err(open_err)
}

/// Downloads the newest version of `service` and opens it locally. A master reads the vault (or,
/// with [`Namespace::Agent`], an agent's private namespace); an agent gets its private version or
/// the vault's, as the server resolves it, and opens it with its own device key.
pub async fn read(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    namespace: Namespace<'_>,
    service: &str,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    Ok(read_for(client, session, verifier, namespace, service, None).await?.value)
}

/// A credential opened for one use.
pub struct Opened {
    pub value: Zeroizing<Vec<u8>>,
    /// Released for this use alone (as its signed grant says): a daemon must not keep it.
    pub high_value: bool,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("high_value", &self.high_value).finish_non_exhaustive()
    }
}

/// [`read`], saying why (`reason`, shown to the owner when the read needs an approval: a
/// high-value credential answers `APPROVAL_REQUIRED` with a request code until one is given).
pub async fn read_for(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    namespace: Namespace<'_>,
    service: &str,
    reason: Option<&str>,
) -> Result<Opened, VaultError> {
    check_service(service)?;
    let sealed = client.get_credential_for(service, namespace.agent(), reason).await?;
    let expected = match &session.agent_id {
        Some(agent_id) => vec![VAULT_NAMESPACE.to_owned(), agent_namespace(agent_id)],
        None => vec![namespace.name()],
    };
    check_origin(session, &sealed, &expected, service)?;
    checked(client, verifier.check(session, &sealed, &ciphertext_of(&sealed)?), verifier).await?;
    // A release (of a high-value credential, or one a policy rule requires approval for) is
    // served for approved uses only: the reader treats it as high-value and keeps no copy.
    let high_value = sealed.flags & FLAG_HIGH_VALUE != 0 || sealed.released;
    Ok(Opened { value: open_sealed(session, &sealed)?, high_value })
}

/// Reports a refusal to the server's audit (best effort) and returns it as the error.
pub(crate) async fn reported(client: &ApiClient, error: IntegrityError) -> VaultError {
    let _ = client.report_integrity(&error.report()).await;
    VaultError::Integrity(error)
}

/// Reports a verification's finding to the server's audit (best effort: a hostile server may
/// drop it, an honest one records it), and what was taken under `--accept-rollback`.
async fn checked(
    client: &ApiClient,
    result: Result<(), IntegrityError>,
    verifier: &Verifier,
) -> Result<(), VaultError> {
    if let Err(error) = &result {
        let _ = client.report_integrity(&error.report()).await;
    }
    for accepted in verifier.take_accepted() {
        let _ = client.report_integrity(&accepted).await;
    }
    Ok(result?)
}

/// The current version of a credential as the master wraps it to a new recipient: its data key,
/// and what a grant of it signs.
#[derive(Debug)]
pub struct CurrentKey {
    pub version: u64,
    pub data_key: SymmetricKey,
    pub ciphertext_sha256: [u8; 32],
    pub flags: u8,
}

/// The current version of a credential and its data key, for the master to wrap it to an agent;
/// `None` when the credential does not exist.
pub async fn current_data_key(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    namespace: Namespace<'_>,
    service: &str,
) -> Result<Option<CurrentKey>, VaultError> {
    account_key(session)?;
    // A grant signed now would vouch for whatever this is: it must be the account's own first.
    let Some((sealed, ciphertext)) = verified_current(client, session, verifier, namespace, service).await? else {
        return Ok(None);
    };
    // Opening the value too proves the key is the one that sealed it, not one the server made up.
    open_sealed(session, &sealed)?;
    Ok(Some(CurrentKey {
        version: sealed.version,
        data_key: open_data_key(session, &sealed)?,
        ciphertext_sha256: integrity::ciphertext_digest(&ciphertext),
        flags: sealed.flags,
    }))
}

/// Signs again what the first wave stored unsigned, once per master slot: each current version
/// without a grant is stored again as a new, signed version (same value), so agents can verify
/// it. Returns the names it signed. Trusts those versions as they are — the one moment it must;
/// after it, an unsigned version is refused like any forgery (docs/security.md).
pub async fn sign_first_wave(
    client: &ApiClient,
    session: &Session,
    verifier: &Verifier,
    rng: &mut impl RandomSource,
) -> Result<Vec<String>, VaultError> {
    if session.account.is_none() || verifier.all_signed() {
        return Ok(Vec::new());
    }
    let mut signed = Vec::new();
    for listed in client.list_credentials().await?.credentials {
        let namespace = match listed.namespace.strip_prefix("agent:") {
            Some(agent_id) => Namespace::Agent(agent_id),
            None => Namespace::Vault,
        };
        let sealed = client.get_credential(&listed.service, namespace.agent()).await?;
        check_origin(session, &sealed, &[namespace.name()], &listed.service)?;
        if sealed.grant.is_some() {
            continue;
        }
        let value = open_sealed(session, &sealed)?;
        // The first wave had no high-value credentials.
        store_marked(client, session, verifier, namespace, &listed.service, &value, Some(false), rng).await?;
        signed.push(format!("{}/{}", listed.namespace, listed.service));
    }
    verifier.mark_all_signed();
    Ok(signed)
}

fn verify_ed25519(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    crypto::verify(public, message, signature).is_ok()
}

/// The X25519 key of an agent device (or of a pending link code), once its id derives from its
/// key and its certificate chain ties it to this account's key. Anything else is refused: the
/// server may have made it up.
pub fn certified_kx(session: &Session, device: &AgentDevice) -> Result<[u8; 32], VaultError> {
    let account = account_key(session)?;
    let uncertified =
        || VaultError::Uncertified { agent_id: device.agent_id.clone(), device_id: device.device_id.clone() };
    let sign = b64::decode_array::<32>(&device.sign_public).ok_or_else(uncertified)?;
    let kx = b64::decode_array::<32>(&device.kx_public).ok_or_else(uncertified)?;
    if device.kind == agentkeys_proto::agents::RecipientKind::Link {
        // A link code's key: the account's bare signature over the link key payload.
        let signature = b64::decode_array::<64>(&device.certificate).ok_or_else(uncertified)?;
        let payload = ids::link_key_payload(&session.account_id, &device.agent_id, &sign, &kx);
        let valid =
            ids::link_id(&sign) == device.device_id && verify_ed25519(&account.public().sign, &payload, &signature);
        return if valid { Ok(kx) } else { Err(uncertified()) };
    }
    let certificate =
        b64::decode(&device.certificate).and_then(|c| DeviceCertificate::decode(&c)).ok_or_else(uncertified)?;
    let valid = ids::device_id(&sign) == device.device_id
        && certificate.verifies(
            &account.public().sign,
            &session.account_id,
            &device.agent_id,
            &sign,
            &kx,
            &verify_ed25519,
        );
    if valid { Ok(kx) } else { Err(uncertified()) }
}
