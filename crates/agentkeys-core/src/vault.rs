//! Vault operations that combine the client and the key hierarchy: storing seals locally and
//! uploads ciphertext; reading downloads and opens locally. The server never sees a value.

use agentkeys_proto::names::{InvalidServiceName, validate_service_name};
use agentkeys_proto::types::{CredentialVersionResponse, MAX_VALUE_BYTES, PutCredentialRequest, VAULT_NAMESPACE};
use agentkeys_proto::{ErrorCode, b64};
use zeroize::Zeroizing;

use crate::client::{ApiClient, ClientError};
use crate::crypto::{self, CredentialContext, CryptoError, SymmetricKey, WrapLabel};
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
}

impl VaultError {
    pub fn exit_code(&self) -> u8 {
        match self {
            VaultError::Client(e) => e.exit_code(),
            VaultError::InvalidName { .. } | VaultError::EmptyValue | VaultError::ValueTooLarge { .. } => 2,
            VaultError::Open { .. } | VaultError::Mismatch { .. } | VaultError::TooManyConflicts { .. } => 1,
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
        }
    }
}

/// Checks a service name before anything is sent.
pub fn check_service(name: &str) -> Result<(), VaultError> {
    validate_service_name(name)
        .map_err(|source| VaultError::InvalidName { name: name.escape_debug().to_string(), source })
}

/// Seals `value` under a fresh data key and uploads it as the next version of `service`.
pub async fn store(
    client: &ApiClient,
    session: &Session,
    service: &str,
    value: &[u8],
    rng: &mut impl RandomSource,
) -> Result<CredentialVersionResponse, VaultError> {
    check_service(service)?;
    if value.is_empty() {
        return Err(VaultError::EmptyValue);
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(VaultError::ValueTooLarge { len: value.len() });
    }
    let account_kx = session.account.public().kx;
    let mut version = 1;
    for _ in 0..MAX_STORE_ATTEMPTS {
        let data_key = SymmetricKey::generate(rng);
        let context =
            CredentialContext { account_id: &session.account_id, namespace: VAULT_NAMESPACE, service, version };
        let request = PutCredentialRequest {
            version,
            ciphertext: b64::encode(crypto::seal_credential(&data_key, &context, value, rng)),
            data_key_wrap: b64::encode(
                crypto::wrap_to(&account_kx, data_key.expose(), WrapLabel::DataKey, rng)
                    .map_err(|source| VaultError::Open { service: service.into(), source })?,
            ),
        };
        match client.put_credential(service, &request).await {
            Err(ClientError::Api { detail, .. }) if detail.code == ErrorCode::VersionConflict => {
                version = detail.current_version.unwrap_or(version) + 1;
            }
            other => return Ok(other?),
        }
    }
    Err(VaultError::TooManyConflicts { service: service.into() })
}

/// Downloads the newest version of `service` and opens it with the account key.
pub async fn read(client: &ApiClient, session: &Session, service: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    check_service(service)?;
    let sealed = client.get_credential(service).await?;
    let wanted = format!("{}/{VAULT_NAMESPACE}/{service}", session.account_id);
    let got = format!("{}/{}/{}", sealed.account_id, sealed.namespace, sealed.service);
    if wanted != got {
        return Err(VaultError::Mismatch { wanted, got });
    }
    let open_err = |source| VaultError::Open { service: service.into(), source };
    let malformed = || open_err(CryptoError::Malformed("base64 field"));
    let wrap = b64::decode(&sealed.data_key_wrap).ok_or_else(malformed)?;
    let ciphertext = b64::decode(&sealed.ciphertext).ok_or_else(malformed)?;
    let data_key_bytes = session.account.unwrap(&wrap, WrapLabel::DataKey).map_err(open_err)?;
    let data_key = SymmetricKey::from_bytes(&data_key_bytes).map_err(open_err)?;
    let context = CredentialContext {
        account_id: &session.account_id,
        namespace: VAULT_NAMESPACE,
        service,
        version: sealed.version,
    };
    crypto::open_credential(&data_key, &context, &ciphertext).map_err(open_err)
}
