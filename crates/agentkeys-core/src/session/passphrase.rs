//! The passphrase form of a session: for a master that asked for it, the data key is derived from
//! a passphrase with Argon2id and kept nowhere; the cost and salt travel in the file's header,
//! which the AEAD binds. [`Unlocker`] asks for the passphrase and remembers the derived key for
//! the rest of the process, so a save after a load does not ask again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

use super::types::{SessionError, SessionId, session_aad};
use crate::crypto::{self, Argon2Cost, SymmetricKey};
use crate::random::OsRandom;

/// Asks the human for a session's passphrase: the CLI asks on its terminal; the daemon never asks.
pub trait PassphrasePrompt: Send + Sync + std::fmt::Debug {
    /// The passphrase of `id`; `again` after a wrong one. Without a terminal,
    /// `Err(SessionError::PassphraseNeeded)`.
    fn ask(&self, id: &SessionId, again: bool) -> Result<SecretString, SessionError>;
}

/// Passphrase tries per load before giving up, as sudo and ssh allow.
pub const PASSPHRASE_ATTEMPTS: u32 = 3;

/// Format byte of a passphrase-sealed session file (a key-sealed one starts with
/// [`crypto::FORMAT_V1`]): `0x02 || memory_kib || iterations || lanes (u32 big-endian each) ||
/// salt(16) || sealed`, the header bound into the AAD.
pub(super) const PASSPHRASE_FORMAT: u8 = 2;
const PASSPHRASE_HEADER_LEN: usize = 1 + 12 + 16;

/// The Argon2id cost and salt at the head of a passphrase-sealed session file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PassphraseHeader {
    cost: Argon2Cost,
    salt: [u8; 16],
}

impl PassphraseHeader {
    pub(super) fn encode(&self) -> [u8; PASSPHRASE_HEADER_LEN] {
        let mut out = [0u8; PASSPHRASE_HEADER_LEN];
        out[0] = PASSPHRASE_FORMAT;
        out[1..5].copy_from_slice(&self.cost.memory_kib.to_be_bytes());
        out[5..9].copy_from_slice(&self.cost.iterations.to_be_bytes());
        out[9..13].copy_from_slice(&self.cost.lanes.to_be_bytes());
        out[13..].copy_from_slice(&self.salt);
        out
    }

    /// The header and the sealed rest, or `None` when `bytes` is not a passphrase-sealed file.
    pub(super) fn parse(bytes: &[u8]) -> Option<(Self, &[u8])> {
        if bytes.len() < PASSPHRASE_HEADER_LEN || bytes[0] != PASSPHRASE_FORMAT {
            return None;
        }
        let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let cost = Argon2Cost { memory_kib: word(1), iterations: word(5), lanes: word(9) };
        let salt = bytes[13..PASSPHRASE_HEADER_LEN].try_into().expect("16 bytes");
        Some((Self { cost, salt }, &bytes[PASSPHRASE_HEADER_LEN..]))
    }

    pub(super) fn aad(&self, id: &SessionId) -> Vec<u8> {
        let mut aad = session_aad(id);
        aad.extend_from_slice(&self.encode());
        aad
    }
}

/// A key derived from a passphrase, and the file header (cost and salt) it was derived for.
type UnlockedKey = (PassphraseHeader, Arc<SymmetricKey>);

/// Asks for passphrases and keeps the keys derived from them in this process, by slot id.
#[derive(Debug, Clone, Default)]
pub(super) struct Unlocker {
    prompt: Option<Arc<dyn PassphrasePrompt>>,
    unlocked: Arc<Mutex<HashMap<String, UnlockedKey>>>,
}

impl Unlocker {
    pub(super) fn with_prompt(mut self, prompt: Arc<dyn PassphrasePrompt>) -> Self {
        self.prompt = Some(prompt);
        self
    }

    pub(super) fn derive(passphrase: &SecretString, header: PassphraseHeader) -> Result<SymmetricKey, String> {
        crypto::passphrase_key(passphrase.expose_secret().as_bytes(), &header.salt, header.cost)
            .map_err(|e| e.to_string())
    }

    pub(super) fn remember(&self, id: &SessionId, header: PassphraseHeader, key: SymmetricKey) {
        self.unlocked.lock().expect("not poisoned").insert(id.as_str().to_owned(), (header, Arc::new(key)));
    }

    pub(super) fn forget(&self, id: &SessionId) {
        self.unlocked.lock().expect("not poisoned").remove(id.as_str());
    }

    pub(super) fn key(&self, id: &SessionId, header: PassphraseHeader) -> Option<Arc<SymmetricKey>> {
        let unlocked = self.unlocked.lock().expect("not poisoned");
        unlocked.get(id.as_str()).filter(|(h, _)| *h == header).map(|(_, key)| key.clone())
    }

    /// Opens a passphrase-sealed body: with the key already derived in this process, else by
    /// asking up to [`PASSPHRASE_ATTEMPTS`] times. `dir` is the slot, named in the error.
    pub(super) fn open(
        &self,
        id: &SessionId,
        path: &Path,
        dir: &Path,
        header: PassphraseHeader,
        body: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SessionError> {
        let aad = header.aad(id);
        if let Some(key) = self.key(id, header)
            && let Ok(plain) = crypto::aead_open(&key, &aad, body)
        {
            return Ok(plain);
        }
        let prompt = self.prompt.as_ref().ok_or_else(|| SessionError::PassphraseNeeded { id: id.to_string() })?;
        for attempt in 0..PASSPHRASE_ATTEMPTS {
            let passphrase = prompt.ask(id, attempt > 0)?;
            let key = Self::derive(&passphrase, header)
                .map_err(|reason| SessionError::Corrupt { path: path.display().to_string(), reason })?;
            if let Ok(plain) = crypto::aead_open(&key, &aad, body) {
                self.remember(id, header, key);
                return Ok(plain);
            }
        }
        Err(SessionError::WrongPassphrase {
            id: id.to_string(),
            attempts: PASSPHRASE_ATTEMPTS,
            dir: dir.display().to_string(),
        })
    }
}

/// Whether `passphrase` opens the passphrase-sealed file `sealed` of `id`; `Ok(false)` for a
/// wrong one, and for a file that is not passphrase-sealed.
pub(super) fn opens(
    id: &SessionId,
    path: &Path,
    sealed: &[u8],
    passphrase: &SecretString,
) -> Result<bool, SessionError> {
    let Some((header, body)) = PassphraseHeader::parse(sealed) else { return Ok(false) };
    let key = Unlocker::derive(passphrase, header)
        .map_err(|reason| SessionError::Corrupt { path: path.display().to_string(), reason })?;
    Ok(crypto::aead_open(&key, &header.aad(id), body).is_ok())
}

/// The bytes of a passphrase-sealed file: the header, then `plain` sealed under `key`.
pub(super) fn seal(id: &SessionId, header: PassphraseHeader, key: &SymmetricKey, plain: &[u8]) -> Vec<u8> {
    let mut file = header.encode().to_vec();
    file.extend_from_slice(&crypto::aead_seal(key, &header.aad(id), plain, &mut OsRandom));
    file
}

/// A header with a fresh salt at `cost`.
pub(super) fn fresh_header(cost: Argon2Cost) -> PassphraseHeader {
    use crate::random::RandomSource as _;
    PassphraseHeader { cost, salt: OsRandom.array() }
}
