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
