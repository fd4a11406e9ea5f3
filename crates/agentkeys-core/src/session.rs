//! Session storage: one slot per session id (`master`, later `daemon-<agent id>`), behind the
//! small [`SessionStore`] trait so the keychain-backed store of a later issue slots in beside the
//! encrypted-file store here without touching callers.
//!
//! The file form (PRODUCT.md §6): `<home>/<id>/session.enc` sealed with XChaCha20-Poly1305 (the
//! AAD binds the id, so a session file copied into another slot does not open), its 32-byte key
//! in `<home>/<id>/session.key`; both 0600 in a 0700 directory, each written atomically
//! (temp file, fsync, rename, fsync of the directory) so a crash leaves the old or the new file,
//! never a torn one. Files readable by others are refused, as ssh refuses loose keys.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use agentkeys_proto::b64;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use std::sync::Arc;

use agentkeys_keychain::{Keychain, SystemKeychain};

use crate::crypto::{self, KeyPair, SymmetricKey};
use crate::random::{OsRandom, RandomSource};

/// The id of the master's session slot.
pub const MASTER_SESSION_ID: &str = "master";

/// Agent session slots are `daemon-<agent id>`.
pub const DAEMON_SESSION_PREFIX: &str = "daemon-";

/// A session id that is always a safe single path component and keychain account name:
/// `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionId(String);

/// Longest id kept as typed; longer ones are hashed.
const SESSION_ID_MAX: usize = 64;

impl SessionId {
    /// Refuses what could only be a mistake or an attack on the path (`/`, `\`, `..`, control
    /// characters, nothing at all); keeps a safe id as it is; maps any other (long, spaces,
    /// non-ASCII, a leading dot) to `id-` + 32 hex digits of its SHA-256, stable for the same text.
    pub fn parse(text: &str) -> Result<Self, SessionError> {
        let dangerous =
            text.is_empty() || text.contains(['/', '\\']) || text.contains("..") || text.chars().any(char::is_control);
        if dangerous {
            return Err(SessionError::InvalidId(text.escape_debug().to_string()));
        }
        let safe = text.len() <= SESSION_ID_MAX
            && text.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if safe {
            return Ok(Self(text.to_owned()));
        }
        let digest =
            <sha2::Sha256 as sha2::Digest>::digest([b"agentkeys-session-id-v1\0".as_slice(), text.as_bytes()].concat());
        Ok(Self(format!("id-{}", &hex::encode(digest)[..32])))
    }

    pub fn master() -> Self {
        Self(MASTER_SESSION_ID.to_owned())
    }

    /// The slot of an agent's daemon session.
    pub fn daemon(agent_id: &str) -> Result<Self, SessionError> {
        Self::parse(&format!("{DAEMON_SESSION_PREFIX}{agent_id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A logged-in device: where the server is, who we are, and the keys that prove it.
pub struct Session {
    pub server_url: String,
    pub account_id: String,
    pub device_id: String,
    pub device_label: String,
    pub session_id: String,
    pub token: SecretString,
    pub device: KeyPair,
    /// The account key, for a master device: unwrapped once at init so reads need no extra
    /// round trip. Agents never hold it; they open what is wrapped to their device key.
    pub account: Option<KeyPair>,
    /// For an agent device (`daemon-<agent id>` slots): the agent it acts for.
    pub agent_id: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("server_url", &self.server_url)
            .field("account_id", &self.account_id)
            .field("device_id", &self.device_id)
            .field("session_id", &self.session_id)
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

/// The serialized form inside `session.enc`; wiped when dropped.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct SessionRecord {
    format: u32,
    server_url: String,
    account_id: String,
    device_id: String,
    device_label: String,
    session_id: String,
    token: String,
    device_secret: String,
    /// Empty for an agent session.
    #[serde(default)]
    account_secret: String,
    /// Empty for a master session.
    #[serde(default)]
    agent_id: String,
}

const RECORD_FORMAT: u32 = 1;

impl Session {
    fn to_record(&self) -> SessionRecord {
        SessionRecord {
            format: RECORD_FORMAT,
            server_url: self.server_url.clone(),
            account_id: self.account_id.clone(),
            device_id: self.device_id.clone(),
            device_label: self.device_label.clone(),
            session_id: self.session_id.clone(),
            token: self.token.expose_secret().to_owned(),
            device_secret: b64::encode(self.device.secret_blob().as_ref()),
            account_secret: self.account.as_ref().map(|a| b64::encode(a.secret_blob().as_ref())).unwrap_or_default(),
            agent_id: self.agent_id.clone().unwrap_or_default(),
        }
    }

    fn from_record(record: &SessionRecord) -> Result<Self, &'static str> {
        if record.format != RECORD_FORMAT {
            return Err("unknown session format");
        }
        let key = |text: &str| -> Result<KeyPair, &'static str> {
            let blob = Zeroizing::new(b64::decode(text).ok_or("bad key encoding")?);
            KeyPair::from_secret_blob(&blob).map_err(|_| "bad key length")
        };
        Ok(Self {
            server_url: record.server_url.clone(),
            account_id: record.account_id.clone(),
            device_id: record.device_id.clone(),
            device_label: record.device_label.clone(),
            session_id: record.session_id.clone(),
            token: SecretString::from(record.token.clone()),
            device: key(&record.device_secret)?,
            account: (!record.account_secret.is_empty()).then(|| key(&record.account_secret)).transpose()?,
            agent_id: (!record.agent_id.is_empty()).then(|| record.agent_id.clone()),
        })
    }
}

/// Why a session could not be loaded or saved. Each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("invalid session id {0:?}: it must not be empty or contain '/', '\\', '..' or control characters")]
    InvalidId(String),
    #[error(
        "{0}; fix: unlock the keychain (or start its service), or set AGENTKEYS_SESSION_STORE=file to keep sessions in files"
    )]
    Keychain(agentkeys_keychain::KeychainError),
    #[error("AGENTKEYS_SESSION_STORE={0:?} is not a storage mode: use auto, keychain or file")]
    BadMode(String),
    #[error("cannot find the AgentKeys home directory: set AGENTKEYS_HOME or HOME")]
    NoHome,
    #[error("{path} is accessible by other users (mode {mode:o}); fix it with: chmod 600 {path}")]
    LoosePermissions { path: String, mode: u32 },
    #[error(
        "{path} cannot be opened ({reason}): it was changed, truncated or belongs to another key; restore it \
         from a backup, or move it aside and run `agentkeys init --force` (a new, empty account: the old one \
         stays reachable only with its recovery key)"
    )]
    Corrupt { path: String, reason: String },
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: String, source: std::io::Error },
}

/// Stores sessions by id. Implementations must write atomically: after a crash a load returns
/// either the previous session or the new one.
pub trait SessionStore {
    fn load(&self, id: &SessionId) -> Result<Option<Session>, SessionError>;
    fn save(&self, id: &SessionId, session: &Session) -> Result<(), SessionError>;
    /// Removes the session; `Ok(false)` when there was none.
    fn clear(&self, id: &SessionId) -> Result<bool, SessionError>;
    /// Where the session lives, for `whoami` (never the secret itself).
    fn describe(&self, id: &SessionId) -> String;
    /// The ids of stored sessions that start with `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<SessionId>, SessionError>;
}

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

/// The session store (PRODUCT.md §6): the session sealed in `<home>/<id>/session.enc`, its 32-byte
/// data key in the OS keychain (`service=agentkeys, account=<id>`) when there is a usable one,
/// else in `<home>/<id>/session.key`. A key file left by the file-only form is moved into the
/// keychain on first use. Saves of one id are serialized across processes by a lock file.
#[derive(Debug, Clone)]
pub struct EncryptedFileStore {
    home: PathBuf,
    /// Appended to keychain account names for a home other than `~/.agentkeys`, so two homes on
    /// one machine (a test's, a second profile's) never share the keychain entry of one id.
    account_suffix: String,
    keychain: Option<Arc<dyn Keychain>>,
    /// `AGENTKEYS_SESSION_STORE=keychain`: keychain failures are errors, never a fallback.
    strict: bool,
}

const SESSION_FILE: &str = "session.enc";
const KEY_FILE: &str = "session.key";

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SessionError + 'a {
    move |source| SessionError::Io { action, path: path.display().to_string(), source }
}

fn session_aad(id: &SessionId) -> Vec<u8> {
    let mut aad = b"agentkeys-session-v1\0".to_vec();
    aad.extend_from_slice(id.as_str().as_bytes());
    aad
}

impl EncryptedFileStore {
    /// Key files only.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        let home = home.into();
        Self { account_suffix: account_suffix(&home), home, keychain: None, strict: false }
    }

    /// Keys in `keychain`; with `strict`, a failing keychain is an error instead of a fallback.
    pub fn with_keychain(home: impl Into<PathBuf>, keychain: Arc<dyn Keychain>, strict: bool) -> Self {
        Self { keychain: Some(keychain), strict, ..Self::new(home) }
    }

    /// The keychain account of a session id: the id itself for `~/.agentkeys`, else the id and
    /// `@` and 12 hex digits of the home's path hash.
    pub fn keychain_account(&self, id: &SessionId) -> String {
        format!("{id}{}", self.account_suffix)
    }

    /// The store under `home` in `mode`: connects to the OS keychain (within
    /// [`KEYCHAIN_TIMEOUT`]) unless the mode is `file`.
    pub fn open(home: impl Into<PathBuf>, mode: StoreMode) -> Result<Self, SessionError> {
        let home = home.into();
        if mode == StoreMode::File {
            return Ok(Self::new(home));
        }
        match SystemKeychain::connect(KEYCHAIN_TIMEOUT) {
            Ok(keychain) => Ok(Self::with_keychain(home, Arc::new(keychain), mode == StoreMode::Keychain)),
            Err(error) if mode == StoreMode::Keychain => Err(SessionError::Keychain(error)),
            Err(_) => Ok(Self::new(home)),
        }
    }

    /// The store under `$AGENTKEYS_HOME` (or `~/.agentkeys`) in the mode `AGENTKEYS_SESSION_STORE` asks for.
    pub fn from_env() -> Result<Self, SessionError> {
        let home = crate::paths::agentkeys_home().ok_or(SessionError::NoHome)?;
        Self::open(home, StoreMode::from_env()?)
    }

    /// The keychain in use, if any.
    pub fn keychain_name(&self) -> Option<&'static str> {
        self.keychain.as_ref().map(|k| k.name())
    }

    pub fn dir(&self, id: &SessionId) -> PathBuf {
        self.home.join(id.as_str())
    }

    /// Reads a file that must be private to this user.
    fn read_private(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, SessionError> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("cannot open", path)(e)),
        };
        let mode = file.metadata().map_err(io_err("cannot inspect", path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SessionError::LoosePermissions { path: path.display().to_string(), mode });
        }
        let mut bytes = Zeroizing::new(Vec::new());
        file.read_to_end(&mut bytes).map_err(io_err("cannot read", path))?;
        Ok(Some(bytes))
    }

    fn read_key(&self, id: &SessionId) -> Result<Option<SymmetricKey>, SessionError> {
        let path = self.dir(id).join(KEY_FILE);
        match Self::read_private(&path)? {
            None => Ok(None),
            Some(bytes) => SymmetricKey::from_bytes(&bytes).map(Some).map_err(|_| SessionError::Corrupt {
                path: path.display().to_string(),
                reason: "key file is not 32 bytes".into(),
            }),
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one whole:
/// a 0600 temp file in the same directory, fsync, rename over, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SessionError> {
    let dir = path.parent().expect("session files live in a directory");
    let suffix = hex::encode(OsRandom.array::<6>());
    let tmp = dir.join(format!(".{}.{suffix}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("cannot create", &tmp))?;
        file.write_all(bytes).map_err(io_err("cannot write", &tmp))?;
        file.sync_all().map_err(io_err("cannot sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("cannot replace", path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("cannot sync", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn ensure_private_dir(dir: &Path) -> Result<(), SessionError> {
    fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("cannot set permissions on", dir))
}

/// Where a session's data key was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyHome {
    Keychain,
    File,
}

impl EncryptedFileStore {
    /// The keychain's answer for `id`: `Ok(None)` when it has no key or (not strict) is unusable.
    fn keychain_key(&self, id: &SessionId) -> Result<Option<SymmetricKey>, SessionError> {
        let Some(keychain) = &self.keychain else { return Ok(None) };
        match keychain.get(&self.keychain_account(id)) {
            Ok(Some(bytes)) => SymmetricKey::from_bytes(&bytes).map(Some).map_err(|_| SessionError::Corrupt {
                path: format!("the {} entry agentkeys/{}", keychain.name(), self.keychain_account(id)),
                reason: "it is not a 32-byte key".into(),
            }),
            Ok(None) => Ok(None),
            Err(error) if self.strict => Err(SessionError::Keychain(error)),
            Err(_) => Ok(None),
        }
    }

    /// The keys that may open the session, keychain first: both exist only when a save fell back
    /// to a file while the keychain was away, and then the file's key is the newer one.
    fn candidate_keys(&self, id: &SessionId) -> Result<Vec<(SymmetricKey, KeyHome)>, SessionError> {
        let mut keys = Vec::with_capacity(2);
        if let Some(key) = self.keychain_key(id)? {
            keys.push((key, KeyHome::Keychain));
        }
        if let Some(key) = self.read_key(id)? {
            keys.push((key, KeyHome::File));
        }
        Ok(keys)
    }

    /// Moves a key file's key into the keychain: stored, read back, and only then the file
    /// removed. Any failure leaves the key file, which still works.
    fn migrate(&self, id: &SessionId, key: &SymmetricKey) -> bool {
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

    /// Holds the id's lock file exclusively until dropped: saves of one id never interleave.
    fn lock(&self, id: &SessionId) -> Result<File, SessionError> {
        let path = self.dir(id).join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("cannot open", &path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("cannot lock", &path)(e.into()))?;
        Ok(file)
    }
}

impl SessionStore for EncryptedFileStore {
    fn load(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        let path = self.dir(id).join(SESSION_FILE);
        let Some(sealed) = Self::read_private(&path)? else { return Ok(None) };
        let corrupt =
            |reason: &str| SessionError::Corrupt { path: path.display().to_string(), reason: reason.to_owned() };
        let candidates = self.candidate_keys(id)?;
        if candidates.is_empty() {
            return Err(corrupt(match &self.keychain {
                Some(_) => {
                    "its key is neither in the keychain nor in session.key (if the keychain was reset, the session is lost: pair or init again)"
                }
                None => {
                    "its key file session.key is missing; if the session was saved while a keychain was usable, its key is there: start or unlock the keychain (check DBUS_SESSION_BUS_ADDRESS), then retry"
                }
            }));
        }
        let mut last_error = String::new();
        for (key, home) in candidates {
            let plain = match crypto::aead_open(&key, &session_aad(id), &sealed) {
                Ok(plain) => plain,
                Err(error) => {
                    last_error = error.to_string();
                    continue;
                }
            };
            let record: SessionRecord =
                serde_json::from_slice(&plain).map_err(|_| corrupt("the decrypted record is not a session"))?;
            let session = Session::from_record(&record).map_err(corrupt)?;
            if home == KeyHome::File && self.keychain.is_some() {
                // A key file (the earlier file-only form, or a fallback save): move it into the
                // keychain, quietly; a failure leaves the file, which still works.
                if let Ok(_lock) = self.lock(id) {
                    self.migrate(id, &key);
                }
            }
            return Ok(Some(session));
        }
        Err(corrupt(&last_error))
    }

    fn save(&self, id: &SessionId, session: &Session) -> Result<(), SessionError> {
        let dir = self.dir(id);
        ensure_private_dir(&self.home)?;
        ensure_private_dir(&dir)?;
        let _lock = self.lock(id)?;
        // Keep the key that opens the current file, so a concurrent reader never pairs a new key
        // with an old file; a fresh one only for a new slot (or one whose key is gone).
        let current = self.candidate_keys(id)?;
        let sealed_now = Self::read_private(&dir.join(SESSION_FILE)).ok().flatten();
        let opener = current.into_iter().find(|(key, _)| {
            sealed_now.as_ref().is_none_or(|sealed| crypto::aead_open(key, &session_aad(id), sealed).is_ok())
        });
        let (key, mut home) = opener.unwrap_or_else(|| (SymmetricKey::generate(&mut OsRandom), KeyHome::File));
        if home == KeyHome::File && self.keychain.is_some() {
            if self.migrate(id, &key) {
                home = KeyHome::Keychain;
            } else if self.strict {
                return Err(SessionError::Keychain(agentkeys_keychain::KeychainError::Failed {
                    name: self.keychain.as_ref().map_or("OS", |k| k.name()),
                    reason: "the session key could not be stored and read back".into(),
                }));
            }
        }
        // The key is durable before the file that needs it; a key file the keychain superseded goes.
        match home {
            KeyHome::File => {
                if self.read_key(id).ok().flatten().is_none_or(|on_disk| on_disk.expose() != key.expose()) {
                    write_atomically(&dir.join(KEY_FILE), key.expose())?;
                }
            }
            KeyHome::Keychain => {
                let _ = fs::remove_file(dir.join(KEY_FILE));
            }
        }
        let plain = Zeroizing::new(serde_json::to_vec(&session.to_record()).expect("a session record serializes"));
        let sealed = crypto::aead_seal(&key, &session_aad(id), &plain, &mut OsRandom);
        write_atomically(&dir.join(SESSION_FILE), &sealed)
    }

    fn clear(&self, id: &SessionId) -> Result<bool, SessionError> {
        let dir = self.dir(id);
        let mut removed = false;
        if let Some(keychain) = &self.keychain {
            match keychain.delete(&self.keychain_account(id)) {
                Ok(deleted) => removed |= deleted,
                Err(error) if self.strict => return Err(SessionError::Keychain(error)),
                Err(_) => {}
            }
        }
        for name in [SESSION_FILE, KEY_FILE, ".lock"] {
            let path = dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => removed |= name != ".lock",
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("cannot remove", &path)(e)),
            }
        }
        // The slot's directory goes too when nothing else is in it.
        let _ = fs::remove_dir(&dir);
        Ok(removed)
    }

    fn describe(&self, id: &SessionId) -> String {
        let file = self.dir(id).join(SESSION_FILE);
        match (&self.keychain, self.dir(id).join(KEY_FILE).exists()) {
            (Some(keychain), false) => format!("keychain ({}), sealed in {}", keychain.name(), file.display()),
            _ => format!("file ({})", file.display()),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<SessionId>, SessionError> {
        let entries = match fs::read_dir(&self.home) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot list", &self.home)(e)),
        };
        let mut ids: Vec<SessionId> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str().and_then(|name| SessionId::parse(name).ok()))
            .filter(|id| id.as_str().starts_with(prefix) && self.dir(id).join(SESSION_FILE).is_file())
            .collect();
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    fn sample(rng: &mut SeededRandom) -> Session {
        Session {
            server_url: "http://127.0.0.1:8090".into(),
            account_id: "acct_x".into(),
            device_id: "dev_x".into(),
            device_label: "laptop".into(),
            session_id: "ses_x".into(),
            token: SecretString::from("akt_token_value_for_tests".to_owned()),
            device: KeyPair::generate(rng),
            account: Some(KeyPair::generate(rng)),
            agent_id: None,
        }
    }

    #[test]
    fn save_load_clear_round_trip_with_private_modes() {
        let home = tempfile::tempdir().unwrap();
        let store = EncryptedFileStore::new(home.path());
        let id = SessionId::master();
        let session = sample(&mut SeededRandom::new(b"s"));
        assert!(store.load(&id).unwrap().is_none());
        store.save(&id, &session).unwrap();
        let loaded = store.load(&id).unwrap().unwrap();
        assert_eq!(loaded.account.as_ref().map(KeyPair::public), session.account.as_ref().map(KeyPair::public));
        assert_eq!(loaded.token.expose_secret(), "akt_token_value_for_tests");
        let file = store.dir(&id).join(SESSION_FILE);
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(store.dir(&id)).unwrap().permissions().mode() & 0o777, 0o700);
        let raw = fs::read(&file).unwrap();
        assert!(!raw.windows(10).any(|w| w == b"akt_token_"), "the token is not stored in the clear");
        assert!(store.clear(&id).unwrap());
        assert!(store.load(&id).unwrap().is_none());
    }

    #[test]
    fn tampered_truncated_moved_and_loose_files_are_refused_with_a_fix() {
        let home = tempfile::tempdir().unwrap();
        let store = EncryptedFileStore::new(home.path());
        let id = SessionId::master();
        store.save(&id, &sample(&mut SeededRandom::new(b"t"))).unwrap();
        let file = store.dir(&id).join(SESSION_FILE);
        let good = fs::read(&file).unwrap();

        let mut flipped = good.clone();
        flipped[40] ^= 0x20;
        write_atomically(&file, &flipped).unwrap();
        assert!(matches!(store.load(&id), Err(SessionError::Corrupt { .. })));

        write_atomically(&file, &good[..good.len() / 2]).unwrap();
        let err = store.load(&id).unwrap_err();
        assert!(err.to_string().contains("agentkeys init --force"), "{err}");

        // The AAD binds the slot: the same files under another id do not open.
        let other = SessionId::parse("daemon-x").unwrap();
        ensure_private_dir(&store.dir(&other)).unwrap();
        write_atomically(&store.dir(&other).join(SESSION_FILE), &good).unwrap();
        fs::copy(store.dir(&id).join(KEY_FILE), store.dir(&other).join(KEY_FILE)).unwrap();
        assert!(matches!(store.load(&other), Err(SessionError::Corrupt { .. })));

        write_atomically(&file, &good).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.load(&id).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    /// Two processes saving one id at once: each save is whole, and the survivor opens. Separate
    /// store values on separate threads take the lock file as separate processes would.
    #[test]
    fn concurrent_saves_of_one_id_never_tear() {
        let home = tempfile::tempdir().unwrap();
        let id = SessionId::master();
        let writers: Vec<_> = (0..6u8)
            .map(|n| {
                let store = EncryptedFileStore::new(home.path());
                let id = id.clone();
                std::thread::spawn(move || {
                    let mut rng = SeededRandom::new(&[n]);
                    for round in 0..15 {
                        let mut session = sample(&mut rng);
                        session.device_id = format!("dev_{n}_{round}");
                        store.save(&id, &session).unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let loaded = EncryptedFileStore::new(home.path()).load(&id).unwrap().expect("a session");
        assert!(loaded.device_id.ends_with("_14"), "the last save of some writer won whole: {}", loaded.device_id);
        let leftovers: Vec<_> = fs::read_dir(home.path().join("master"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temp files left behind: {leftovers:?}");
    }

    /// A full disk during a save: the save fails with the path, and the old session still opens.
    /// Needs root for a small tmpfs; CI runs as root.
    #[test]
    fn a_full_disk_leaves_the_old_session_usable() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI runs as root and can mount a tmpfs");
            eprintln!("skipping: cannot mount a tmpfs (not root)");
            return;
        }
        let unmount = unmount_on_drop(dir.path().to_path_buf());
        let store = EncryptedFileStore::new(dir.path());
        let id = SessionId::master();
        let mut rng = SeededRandom::new(b"full");
        let first = sample(&mut rng);
        store.save(&id, &first).unwrap();
        // Fill the disk, then try to save a new session.
        let filler = dir.path().join("filler");
        let mut file = File::create(&filler).unwrap();
        while file.write_all(&[0u8; 4096]).is_ok() {}
        let _ = file.sync_all();
        let mut second = sample(&mut rng);
        second.device_id = "dev_second".into();
        let error = store.save(&id, &second).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("session.enc") && message.contains("No space left"),
            "names the file and why: {message}"
        );
        let loaded = store.load(&id).unwrap().expect("the old session");
        assert_eq!(loaded.device_id, first.device_id, "the old session is intact");
        drop(file);
        drop(unmount);
    }

    /// Unmounts the tmpfs when the test ends, pass or fail.
    fn unmount_on_drop(path: PathBuf) -> impl Drop {
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        Unmount(path)
    }

    /// A key from another slot, or a replaced key file, opens nothing: a clear error, not garbage.
    #[test]
    fn a_wrong_key_is_refused_with_the_fix() {
        let home = tempfile::tempdir().unwrap();
        let store = EncryptedFileStore::new(home.path());
        let id = SessionId::master();
        store.save(&id, &sample(&mut SeededRandom::new(b"k"))).unwrap();
        write_atomically(&home.path().join("master").join(KEY_FILE), &[7u8; 32]).unwrap();
        let error = store.load(&id).unwrap_err();
        assert!(matches!(error, SessionError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("restore it from a backup"), "{error}");
    }

    #[test]
    fn clear_removes_the_files_and_nothing_else() {
        let home = tempfile::tempdir().unwrap();
        let store = EncryptedFileStore::new(home.path());
        let (master, other) = (SessionId::master(), SessionId::parse("daemon-ag_x").unwrap());
        let mut rng = SeededRandom::new(b"c");
        store.save(&master, &sample(&mut rng)).unwrap();
        store.save(&other, &sample(&mut rng)).unwrap();
        assert!(store.clear(&other).unwrap());
        assert!(!home.path().join("daemon-ag_x").exists(), "the slot's directory is gone");
        assert!(store.load(&master).unwrap().is_some(), "the other slot is untouched");
        assert!(!store.clear(&other).unwrap(), "clearing twice finds nothing");
        assert_eq!(store.list("").unwrap(), vec![master]);
    }

    #[test]
    fn session_ids_are_safe_path_components() {
        for bad in ["", "..", "../x", "a/b", "a\\b", "a\nb", "x\u{7f}"] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(SessionId::parse("daemon-ag_3f2a9c1b").unwrap().as_str(), "daemon-ag_3f2a9c1b");
        for odd in [".hidden", "my laptop", "ünïcode", &"x".repeat(65)] {
            let id = SessionId::parse(odd).unwrap();
            assert!(id.as_str().starts_with("id-") && id.as_str().len() == 35, "{odd:?} -> {id}");
            assert_eq!(SessionId::parse(odd).unwrap(), id, "the mapping is stable");
        }
        assert_ne!(SessionId::parse("a b").unwrap(), SessionId::parse("a  b").unwrap());
    }
}
