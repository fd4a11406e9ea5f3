//! Joining by pair code, from the joining machine's side — a daemon pairing (`agentkeys-daemon
//! pair`), a replacement machine for an agent (`agentkeys-daemon recover`) and a new master
//! device (`agentkeys device join`) all follow it: generate the device key, the session token
//! and a poll secret here (only their hashes are sent), commit to the OTP's nonce, print the
//! code, wait until a master claims it, pin the claiming account's signing key, print the OTP
//! over it and reveal the nonce, then wait for the decision (docs/protocol.md "Pairing").

use std::time::{Duration, Instant};

use agentkeys_proto::agents::{OpenPairingRequest, PairingKind, PairingStatusResponse, RequestStatus};
use agentkeys_proto::{ErrorCode, b64, ids};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::client::{ApiClient, ClientError};
use crate::crypto::KeyPair;
use crate::error::{CommandError, exit};
use crate::random::{OsRandom, RandomSource as _};

/// How often a waiting machine asks whether it was decided.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// A fresh secret with a prefix: `akt_` (a session token), `akp_` (a poll secret).
pub fn new_secret(prefix: &str) -> SecretString {
    SecretString::from(format!("{prefix}{}", b64::encode(Zeroizing::new(OsRandom.array::<32>()).as_ref())))
}

/// The SHA-256 of a secret, as the server keeps it.
pub fn secret_hash(secret: &SecretString) -> [u8; 32] {
    Sha256::digest(secret.expose_secret().as_bytes()).into()
}

fn hash_b64(secret: &SecretString) -> String {
    b64::encode(secret_hash(secret))
}

/// What the joining machine asks to be.
#[derive(Debug, Clone)]
pub struct Ask {
    pub kind: PairingKind,
    /// An agent label (pairing), an agent's label, alias or id (recovery), a device label (device).
    pub label: String,
    /// Sorted and unique, as the server keeps it: the OTP covers that form.
    pub scope: Vec<String>,
    pub timeout: Duration,
}

/// What happens while it waits, for the caller to print.
#[derive(Debug)]
pub enum Event<'a> {
    /// The server is rate limiting pairings; retrying.
    Busy,
    /// The request is open under this code.
    Opened { code: &'a str },
    /// A master of `account_id` claimed the code: show this OTP.
    Claimed { code: &'a str, otp: &'a str, account_id: &'a str },
}

/// An approved request: the device key and token that are now a session, the server's last
/// status (with the session it made), and the account signing key pinned end to end. `Debug`
/// shows no secret (the key pair shows its public halves, the token is redacted).
#[derive(Debug)]
pub struct Joined {
    pub device: KeyPair,
    pub token: SecretString,
    pub status: PairingStatusResponse,
    pub account_sign_public: [u8; 32],
}

/// Opens the request and waits for the master's decision.
pub async fn join(client: &ApiClient, ask: &Ask, mut on: impl FnMut(Event<'_>)) -> Result<Joined, CommandError> {
    let device = KeyPair::generate(&mut OsRandom);
    let keys = device.public();
    let token = new_secret("akt_");
    let poll = new_secret("akp_");
    // The OTP's nonce: committed now, revealed only once a master has claimed the code, so the
    // server cannot search for a key of its own that shows the same number.
    let nonce = Zeroizing::new(OsRandom.array::<32>());
    let request = OpenPairingRequest {
        label: ask.label.clone(),
        scope: ask.scope.clone(),
        device_sign_public: b64::encode(keys.sign),
        device_kx_public: b64::encode(keys.kx),
        token_hash: hash_b64(&token),
        poll_hash: hash_b64(&poll),
        commitment: b64::encode(ids::pairing_commitment(&nonce)),
        kind: ask.kind,
    };
    let deadline = Instant::now() + ask.timeout;
    // A server that is rate limiting pairing requests (someone is flooding it) asks for a retry:
    // wait as long as it says, a little longer each time, until the deadline.
    let mut attempt = 0u32;
    let opened = loop {
        match client.open_pairing(&request).await {
            Err(ClientError::Api { detail, .. })
                if detail.code == ErrorCode::RateLimited && Instant::now() < deadline =>
            {
                attempt += 1;
                let wait = Duration::from_secs(detail.retry_after_s.unwrap_or(1).clamp(1, 30))
                    + Duration::from_millis(u64::from(OsRandom.array::<1>()[0]) * 4 * u64::from(attempt.min(8)));
                if attempt == 1 {
                    on(Event::Busy);
                }
                tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
            }
            other => break other?,
        }
    };
    on(Event::Opened { code: &opened.code });
    // The account that claims the code: pinned at the first claim seen, before the nonce is
    // revealed, and covered by the OTP, so a server that shows a key of its own is caught.
    let mut account_sign: Option<[u8; 32]> = None;
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let status = match client.pairing_status(&opened.pairing_id, poll.expose_secret()).await {
            Ok(status) => status,
            // A server restart or a network blip must not lose a pairing the human may be approving.
            Err(ClientError::Unreachable { .. }) if Instant::now() < deadline => continue,
            Err(error) => return Err(error.into()),
        };
        if status.claimed && account_sign.is_none() {
            let claimed = status.account_sign_public.as_deref().and_then(b64::decode_array::<32>).ok_or_else(|| {
                CommandError::new(
                    exit::ERROR,
                    "the server says the code was claimed but names no account key",
                    "check that --server points at an agentkeys-server of the same version",
                )
            })?;
            account_sign = Some(claimed);
            let otp = ids::pairing_otp(
                &nonce,
                ask.kind.request_kind().as_str(),
                &opened.code,
                &ask.label,
                &ask.scope,
                (&keys.sign, &keys.kx),
                &claimed,
            );
            on(Event::Claimed { code: &opened.code, otp: &otp, account_id: &ids::account_id(&claimed) });
        }
        if let (Some(pinned), Some(shown)) = (&account_sign, status.account_sign_public.as_deref())
            && b64::decode_array::<32>(shown).as_ref() != Some(pinned)
        {
            return Err(CommandError::new(
                exit::ERROR,
                "INTEGRITY: the server now names another account for this request than the one it was claimed by",
                "the server is not trustworthy: deny the code on the master and try again against a server you trust",
            ));
        }
        if status.status == RequestStatus::Pending && status.claimed && !status.revealed {
            // Unreachable or busy: the next poll tries again.
            match client.reveal_pairing(&opened.pairing_id, poll.expose_secret(), &nonce).await {
                Ok(()) | Err(ClientError::Unreachable { .. }) => {}
                Err(ClientError::Api { detail, .. }) if detail.code == ErrorCode::RateLimited => {}
                Err(error) => return Err(error.into()),
            }
        }
        match status.status {
            RequestStatus::Approved => {
                let Some(account_sign_public) = account_sign else {
                    return Err(CommandError::new(
                        exit::ERROR,
                        "INTEGRITY: the server approved this request without it ever being claimed by an account",
                        "the server is not trustworthy: try again against a server you trust",
                    ));
                };
                return Ok(Joined { device, token, status, account_sign_public });
            }
            RequestStatus::Denied => {
                return Err(CommandError::new(
                    exit::DECLINED,
                    format!("the master denied this {} request", ask.kind.request_kind().as_str()),
                    "ask the account owner, then try again",
                ));
            }
            RequestStatus::Expired => {
                return Err(CommandError::new(
                    exit::DECLINED,
                    "the code expired before the master approved it",
                    "run the command again",
                ));
            }
            RequestStatus::Pending if Instant::now() >= deadline => {
                return Err(CommandError::new(
                    exit::DECLINED,
                    format!("no decision within {}s", ask.timeout.as_secs()),
                    "run it again, and approve it on the master while this waits",
                ));
            }
            RequestStatus::Pending => {}
        }
    }
}
