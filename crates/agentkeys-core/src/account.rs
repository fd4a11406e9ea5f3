//! Creating an account (PRODUCT.md §3 `init`): generate the account key, this device's key and
//! the recovery key; certify the device key with the account key; wrap the account key to the
//! device and to the recovery key; send only public keys, the certificate and the wraps.

use std::sync::Arc;

use agentkeys_proto::b64;
use agentkeys_proto::types::CreateAccountRequest;
use secrecy::SecretString;

use crate::client::{ApiClient, ClientError};
use crate::crypto::{self, CryptoError, KeyPair, RecoveryKey, WrapLabel};
use crate::random::RandomSource;
use crate::session::Session;

/// A freshly created account: the session to save and the recovery key to show once.
#[derive(Debug)]
pub struct NewAccount {
    pub session: Arc<Session>,
    pub recovery_key: RecoveryKey,
}

/// Why account creation failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateAccountError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("key generation failed: {0}")]
    Crypto(#[from] CryptoError),
    #[error("the server answered with {field} {got:?}, but the keys derive {expected:?}: refusing it")]
    Mismatch { field: &'static str, expected: String, got: String },
}

/// Creates the account on `server_url` with this machine as its first master device.
pub async fn create_account(
    client: &ApiClient,
    device_label: &str,
    rng: &mut impl RandomSource,
) -> Result<NewAccount, CreateAccountError> {
    let account = KeyPair::generate(rng);
    let device = KeyPair::generate(rng);
    let recovery_key = RecoveryKey::generate(rng);
    let account_public = account.public();
    let device_public = device.public();
    let account_id = crypto::account_id(&account_public.sign);
    let device_id = crypto::device_id(&device_public.sign);
    let certificate = account.sign(&crypto::device_certificate_payload(&account_id, &device_public, device_label));
    let account_secret = account.secret_blob();
    let request = CreateAccountRequest {
        device_label: device_label.to_owned(),
        account_sign_public: b64::encode(account_public.sign),
        account_kx_public: b64::encode(account_public.kx),
        device_sign_public: b64::encode(device_public.sign),
        device_kx_public: b64::encode(device_public.kx),
        device_certificate: b64::encode(certificate),
        account_key_wrap_device: b64::encode(crypto::wrap_to(
            &device_public.kx,
            account_secret.as_ref(),
            WrapLabel::AccountKey,
            rng,
        )?),
        account_key_wrap_recovery: b64::encode(crypto::wrap_to(
            &recovery_key.kx_public(),
            account_secret.as_ref(),
            WrapLabel::AccountKey,
            rng,
        )?),
        recovery_sign_public: b64::encode(recovery_key.sign_public()),
    };
    let response = client.create_account(&request).await?;
    for (field, expected, got) in
        [("account id", &account_id, &response.account_id), ("device id", &device_id, &response.device_id)]
    {
        if expected != got {
            return Err(CreateAccountError::Mismatch { field, expected: expected.clone(), got: got.clone() });
        }
    }
    let session = Session {
        server_url: client.base_url().to_owned(),
        account_id,
        device_id,
        device_label: device_label.to_owned(),
        session_id: response.session_id,
        token: SecretString::from(response.session_token.expose().to_owned()),
        device,
        account: Some(account),
        agent_id: None,
        account_sign_public: None,
        link_id: None,
    };
    Ok(NewAccount { session: Arc::new(session), recovery_key })
}

/// A new master device's session from the server's answer (an approved device join, or a
/// completed recovery): the account key is opened from its wrap to this device's key, and must
/// be the account key this machine pinned (`expected_sign_public`), whose id the answer names.
pub fn master_session(
    server_url: &str,
    answer: &agentkeys_proto::agents::MasterSessionResponse,
    device: KeyPair,
    token: SecretString,
    expected_sign_public: &[u8; 32],
) -> Result<Session, CreateAccountError> {
    let wrap = b64::decode(&answer.account_key_wrap).ok_or(CryptoError::Malformed("account key wrap"))?;
    let blob = device.unwrap(&wrap, WrapLabel::AccountKey)?;
    let account = KeyPair::from_secret_blob(&blob)?;
    let account_id = crypto::account_id(&account.public().sign);
    let device_id = crypto::device_id(&device.public().sign);
    for (field, expected, got) in [
        ("account key", b64::encode(expected_sign_public), b64::encode(account.public().sign)),
        ("account id", account_id.clone(), answer.account_id.clone()),
        ("device id", device_id.clone(), answer.device_id.clone()),
    ] {
        if expected != got {
            return Err(CreateAccountError::Mismatch { field, expected, got });
        }
    }
    Ok(Session {
        server_url: server_url.to_owned(),
        account_id,
        device_id,
        device_label: answer.device_label.clone(),
        session_id: answer.session_id.clone(),
        token,
        device,
        account: Some(account),
        agent_id: None,
        account_sign_public: None,
        link_id: None,
    })
}

/// The request that opens a recovery: the recovery key's signing key finds the account and
/// signs this device's keys, the hash of its session token and its label
/// (docs/protocol.md "Recovery").
pub fn open_recovery_request(
    recovery: &RecoveryKey,
    device: &KeyPair,
    label: &str,
    token_hash: &[u8; 32],
) -> agentkeys_proto::devices::OpenRecoveryRequest {
    let keys = device.public();
    let payload = agentkeys_proto::devices::recovery_open_payload(&keys.sign, &keys.kx, token_hash, label);
    agentkeys_proto::devices::OpenRecoveryRequest {
        recovery_sign_public: b64::encode(recovery.sign_public()),
        device_label: label.to_owned(),
        device_sign_public: b64::encode(keys.sign),
        device_kx_public: b64::encode(keys.kx),
        token_hash: b64::encode(token_hash),
        signature: b64::encode(recovery.sign(&payload)),
    }
}

/// Completes a recovery past its delay: opens the account key from the recovery wrap the server
/// now gives out (it must be the key of the account the recovery was opened for), certifies this
/// device with it and wraps it to this device.
pub fn complete_recovery_request(
    recovery: &RecoveryKey,
    status: &agentkeys_proto::devices::RecoveryStatusResponse,
    device: &KeyPair,
    label: &str,
    replace_presence_keys: bool,
    rng: &mut impl RandomSource,
) -> Result<agentkeys_proto::devices::CompleteRecoveryRequest, CreateAccountError> {
    let wrap = status.recovery_wrap.as_deref().and_then(b64::decode).ok_or(CryptoError::Malformed("recovery wrap"))?;
    let blob = recovery.unwrap(&wrap, WrapLabel::AccountKey)?;
    let account = KeyPair::from_secret_blob(&blob)?;
    let account_id = crypto::account_id(&account.public().sign);
    if account_id != status.account_id {
        return Err(CreateAccountError::Mismatch {
            field: "account id",
            expected: status.account_id.clone(),
            got: account_id,
        });
    }
    let certificate = account.sign(&crypto::device_certificate_payload(&account_id, &device.public(), label));
    let wrapped = crypto::wrap_to(&device.public().kx, account.secret_blob().as_ref(), WrapLabel::AccountKey, rng)?;
    Ok(agentkeys_proto::devices::CompleteRecoveryRequest {
        device_certificate: b64::encode(certificate),
        account_key_wrap: b64::encode(wrapped),
        replace_presence_keys,
    })
}

/// A new recovery key for the account, and the request that replaces the old one with it.
pub fn rotate_recovery_key(
    account: &KeyPair,
    rng: &mut impl RandomSource,
) -> Result<(RecoveryKey, agentkeys_proto::devices::RotateRecoveryKeyRequest), CryptoError> {
    let recovery = RecoveryKey::generate(rng);
    let wrap = crypto::wrap_to(&recovery.kx_public(), account.secret_blob().as_ref(), WrapLabel::AccountKey, rng)?;
    let request = agentkeys_proto::devices::RotateRecoveryKeyRequest {
        account_key_wrap: b64::encode(wrap),
        recovery_sign_public: b64::encode(recovery.sign_public()),
    };
    Ok((recovery, request))
}
