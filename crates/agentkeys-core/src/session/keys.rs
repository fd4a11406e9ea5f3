//! Where a session's 32-byte data key lives: the OS keychain when there is a usable one, else
//! `session.key` beside the session file ([`KeySource`]); and the move of a key file into the
//! keychain once one answers.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentkeys_keychain::{Keychain, KeychainError, SystemKeychain};

use super::files::{KEY_FILE, read_private};
use super::types::{SessionError, SessionId};
use crate::crypto::SymmetricKey;

/// How sessions keep their data keys (`AGENTKEYS_SESSION_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// The OS keychain when it answers, else a key file (the default).
    Auto,
    /// The OS keychain or a loud failure, never a file.
    Keychain,
    /// Key files only; the keychain is never touched.
    File,
}

impl StoreMode {
    pub const ENV: &'static str = "AGENTKEYS_SESSION_STORE";

    pub fn from_env() -> Result<Self, SessionError> {
        match std::env::var(Self::ENV).ok().as_deref().map(str::trim) {
            None | Some("" | "auto") => Ok(StoreMode::Auto),
            Some("keychain") => Ok(StoreMode::Keychain),
            Some("file") => Ok(StoreMode::File),
            Some(other) => Err(SessionError::BadMode(other.to_owned())),
        }
    }
}

fn account_suffix(home: &Path) -> String {
    let default = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".agentkeys"));
    let canonical = fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
    if default.is_some_and(|d| fs::canonicalize(&d).unwrap_or(d) == canonical) {
        return String::new();
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(canonical.as_os_str().as_encoded_bytes());
    format!("@{}", &hex::encode(digest)[..12])
}

/// How long any one keychain call may take before the store gives up on the keychain.
pub const KEYCHAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where a session's data key was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyHome {
    Keychain,
    File,
}

/// The keys that may open a session, and whether the keychain was away while looking.
#[derive(Debug, Default)]
pub(super) struct Candidates {
    pub(super) keys: Vec<(SymmetricKey, KeyHome)>,
    /// The keychain did not answer (auto mode only; strict mode fails instead).
    pub(super) keychain_away: Option<KeychainError>,
}

/// The keychain (if any) and the key files under one home.
#[derive(Debug, Clone)]
pub(super) struct KeySource {
    pub(super) home: PathBuf,
    /// Appended to keychain account names for a home other than `~/.agentkeys`, so two homes on
    /// one machine (a test's, a second profile's) never share the keychain entry of one id.
    account_suffix: String,
    pub(super) keychain: Option<Arc<dyn Keychain>>,
    /// `AGENTKEYS_SESSION_STORE=keychain`: keychain failures are errors, never a fallback.
    pub(super) strict: bool,
}

impl KeySource {
    pub(super) fn new(home: PathBuf, keychain: Option<Arc<dyn Keychain>>, strict: bool) -> Self {
        Self { account_suffix: account_suffix(&home), home, keychain, strict }
    }

    /// The keychain in `mode`, connected within [`KEYCHAIN_TIMEOUT`]; `None` for `file`, or in
    /// `auto` when none answers.
    pub(super) fn connect(mode: StoreMode) -> Result<Option<Arc<dyn Keychain>>, SessionError> {
        if mode == StoreMode::File {
            return Ok(None);
        }
        match SystemKeychain::connect(KEYCHAIN_TIMEOUT) {
            Ok(keychain) => Ok(Some(Arc::new(keychain))),
            Err(error) if mode == StoreMode::Keychain => Err(SessionError::Keychain(error)),
            Err(_) => Ok(None),
        }
    }

    pub(super) fn dir(&self, id: &SessionId) -> PathBuf {
        self.home.join(id.as_str())
    }

    /// The keychain account of a session id: the id itself for `~/.agentkeys`, else the id and
    /// `@` and 12 hex digits of the home's path hash.
    pub(super) fn keychain_account(&self, id: &SessionId) -> String {
        format!("{id}{}", self.account_suffix)
    }

    pub(super) fn read_key(&self, id: &SessionId) -> Result<Option<SymmetricKey>, SessionError> {
        let path = self.dir(id).join(KEY_FILE);
        read_key_file(&path)
    }

    /// The keys that may open the session, keychain first: both exist only when a save fell back
    /// to a file while the keychain was away, and then the file's key is the newer one.
    pub(super) fn candidate_keys(&self, id: &SessionId) -> Result<Candidates, SessionError> {
        let mut found = Candidates::default();
        if let Some(keychain) = &self.keychain {
            match keychain.get(&self.keychain_account(id)) {
                Ok(Some(bytes)) => {
                    let key = SymmetricKey::from_bytes(&bytes).map_err(|_| SessionError::Corrupt {
                        path: format!("the {} entry agentkeys/{}", keychain.name(), self.keychain_account(id)),
                        reason: "it is not a 32-byte key".into(),
                    })?;
                    found.keys.push((key, KeyHome::Keychain));
                }
                Ok(None) => {}
                Err(error) if self.strict => return Err(SessionError::Keychain(error)),
                Err(error) => found.keychain_away = Some(error),
            }
        }
        if let Some(key) = self.read_key(id)? {
            found.keys.push((key, KeyHome::File));
        }
        Ok(found)
    }

    /// Moves a key file's key into the keychain: stored, read back, and only then the file
    /// removed. Any failure leaves the key file, which still works.
    pub(super) fn migrate(&self, id: &SessionId, key: &SymmetricKey) -> bool {
        let Some(keychain) = &self.keychain else { return false };
        let stored = keychain.set(&self.keychain_account(id), key.expose()).is_ok()
            && keychain
                .get(&self.keychain_account(id))
                .ok()
                .flatten()
                .is_some_and(|back| back.as_slice() == key.expose());
        stored
            && match fs::remove_file(self.dir(id).join(KEY_FILE)) {
                Ok(()) => true,
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            }
    }

    /// Forgets the slot's key everywhere (its keychain entry and key file); failures are
    /// harmless once nothing needs the key.
    pub(super) fn forget(&self, id: &SessionId) {
        if let Some(keychain) = &self.keychain {
            let _ = keychain.delete(&self.keychain_account(id));
        }
        let _ = fs::remove_file(self.dir(id).join(KEY_FILE));
    }
}

fn read_key_file(path: &Path) -> Result<Option<SymmetricKey>, SessionError> {
    match read_private(path)? {
        None => Ok(None),
        Some(bytes) => SymmetricKey::from_bytes(&bytes).map(Some).map_err(|_| SessionError::Corrupt {
            path: path.display().to_string(),
            reason: "key file is not 32 bytes".into(),
        }),
    }
}
