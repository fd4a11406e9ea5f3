//! Session storage (PRODUCT.md §6): one slot per session id (`master`, `daemon-<agent id>`),
//! shared by the CLI and the daemon behind the small [`SessionStore`] trait.
//!
//! Each slot is `<home>/<id>/session.enc`, sealed with XChaCha20-Poly1305 (the AAD binds the id,
//! so a session file copied into another slot does not open), 0600 in a 0700 directory, written
//! atomically (temp file, fsync, rename, fsync of the directory) so a crash leaves the old or the
//! new file, never a torn one. Its 32-byte key lives in the OS keychain when there is a usable
//! one, else in `session.key` beside it; or, for a master that asked for it, it is derived from a
//! passphrase with Argon2id and stored nowhere. Files readable by others are refused, as ssh
//! refuses loose keys.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use agentkeys_proto::b64;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentkeys_keychain::{Keychain, KeychainError, SystemKeychain};

use crate::crypto::{self, Argon2Cost, KeyPair, SymmetricKey};
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
    /// The session's key is in a keychain that is not answering now (locked, stopped, no bus).
    #[error(
        "{error}, and the key of {path} is kept there, so the session cannot be opened now (nothing was \
         changed); fix: unlock the keychain or start its service (check DBUS_SESSION_BUS_ADDRESS), then retry"
    )]
    KeychainAway { error: KeychainError, path: String },
    #[error("AGENTKEYS_SESSION_STORE={0:?} is not a storage mode: use auto, keychain or file")]
    BadMode(String),
    #[error(
        "the '{id}' session is sealed with a passphrase and there is no terminal to ask for it; fix: run the \
         command in a terminal (a passphrase is never read from a pipe, an argument or the environment)"
    )]
    PassphraseNeeded { id: String },
    #[error(
        "wrong passphrase for the '{id}' session ({attempts} attempts), nothing was changed; fix: try again; a \
         forgotten passphrase cannot be reset: move {dir} aside and run `agentkeys init` (a new account: the \
         old one stays reachable only with its recovery key)"
    )]
    WrongPassphrase { id: String, attempts: u32, dir: String },
    #[error("cannot read the passphrase: {0}")]
    PassphraseInput(String),
    #[error("cancelled at the passphrase prompt: nothing was done")]
    PassphraseCancelled,
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
    /// Asks for the passphrase of a passphrase-sealed session (the CLI's terminal prompt).
    passphrase: Option<Arc<dyn PassphrasePrompt>>,
    /// Keys derived from a passphrase in this process, by id, with the header they belong to, so
    /// a save after a load does not ask again (a presence check always asks).
    unlocked: Arc<Mutex<HashMap<String, UnlockedKey>>>,
}

/// A key derived from a passphrase, and the file header (cost and salt) it was derived for.
type UnlockedKey = (PassphraseHeader, Arc<SymmetricKey>);

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
const PASSPHRASE_FORMAT: u8 = 2;
const PASSPHRASE_HEADER_LEN: usize = 1 + 12 + 16;

/// The Argon2id cost and salt at the head of a passphrase-sealed session file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PassphraseHeader {
    cost: Argon2Cost,
    salt: [u8; 16],
}

impl PassphraseHeader {
    fn encode(&self) -> [u8; PASSPHRASE_HEADER_LEN] {
        let mut out = [0u8; PASSPHRASE_HEADER_LEN];
        out[0] = PASSPHRASE_FORMAT;
        out[1..5].copy_from_slice(&self.cost.memory_kib.to_be_bytes());
        out[5..9].copy_from_slice(&self.cost.iterations.to_be_bytes());
        out[9..13].copy_from_slice(&self.cost.lanes.to_be_bytes());
        out[13..].copy_from_slice(&self.salt);
        out
    }

    /// The header and the sealed rest, or `None` when `bytes` is not a passphrase-sealed file.
    fn parse(bytes: &[u8]) -> Option<(Self, &[u8])> {
        if bytes.len() < PASSPHRASE_HEADER_LEN || bytes[0] != PASSPHRASE_FORMAT {
            return None;
        }
        let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let cost = Argon2Cost { memory_kib: word(1), iterations: word(5), lanes: word(9) };
        let salt = bytes[13..PASSPHRASE_HEADER_LEN].try_into().expect("16 bytes");
        Some((Self { cost, salt }, &bytes[PASSPHRASE_HEADER_LEN..]))
    }

    fn aad(&self, id: &SessionId) -> Vec<u8> {
        let mut aad = session_aad(id);
        aad.extend_from_slice(&self.encode());
        aad
    }
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
        Self {
            account_suffix: account_suffix(&home),
            home,
            keychain: None,
            strict: false,
            passphrase: None,
            unlocked: Arc::default(),
        }
    }

    /// Asks `prompt` for the passphrase of a passphrase-sealed session.
    pub fn with_passphrase_prompt(mut self, prompt: Arc<dyn PassphrasePrompt>) -> Self {
        self.passphrase = Some(prompt);
        self
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

/// The keys that may open a session, and whether the keychain was away while looking.
#[derive(Debug, Default)]
struct Candidates {
    keys: Vec<(SymmetricKey, KeyHome)>,
    /// The keychain did not answer (auto mode only; strict mode fails instead).
    keychain_away: Option<KeychainError>,
}

impl EncryptedFileStore {
    /// The keys that may open the session, keychain first: both exist only when a save fell back
    /// to a file while the keychain was away, and then the file's key is the newer one.
    fn candidate_keys(&self, id: &SessionId) -> Result<Candidates, SessionError> {
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

/// The passphrase form: for a master that asked for it, the key is derived from a passphrase with
/// Argon2id and kept nowhere; the cost and salt travel in the file's header.
impl EncryptedFileStore {
    /// Seals `session` under a key derived from `passphrase` (a fresh salt, the default cost)
    /// and removes the slot's keychain entry and key file: from now on only the passphrase opens it.
    pub fn save_with_passphrase(
        &self,
        id: &SessionId,
        session: &Session,
        passphrase: &SecretString,
    ) -> Result<(), SessionError> {
        self.save_with_passphrase_cost(id, session, passphrase, Argon2Cost::DEFAULT)
    }

    /// [`Self::save_with_passphrase`] at a chosen cost (tests use a cheap one).
    pub fn save_with_passphrase_cost(
        &self,
        id: &SessionId,
        session: &Session,
        passphrase: &SecretString,
        cost: Argon2Cost,
    ) -> Result<(), SessionError> {
        let dir = self.dir(id);
        ensure_private_dir(&self.home)?;
        ensure_private_dir(&dir)?;
        let _lock = self.lock(id)?;
        let header = PassphraseHeader { cost, salt: OsRandom.array() };
        let key = crypto::passphrase_key(passphrase.expose_secret().as_bytes(), &header.salt, cost)
            .map_err(|e| SessionError::PassphraseInput(e.to_string()))?;
        let plain = Zeroizing::new(serde_json::to_vec(&session.to_record()).expect("a session record serializes"));
        self.write_passphrase_sealed(id, header, &key, &plain)?;
        self.unlocked.lock().expect("not poisoned").insert(id.as_str().to_owned(), (header, Arc::new(key)));
        // The old keys open nothing now; they go, and a failure to remove them is harmless.
        if let Some(keychain) = &self.keychain {
            let _ = keychain.delete(&self.keychain_account(id));
        }
        let _ = fs::remove_file(dir.join(KEY_FILE));
        Ok(())
    }

    /// Whether `id`'s session file is sealed with a passphrase.
    pub fn is_passphrase_sealed(&self, id: &SessionId) -> bool {
        let mut first = [0u8; 1];
        File::open(self.dir(id).join(SESSION_FILE)).and_then(|mut f| f.read_exact(&mut first)).is_ok()
            && first[0] == PASSPHRASE_FORMAT
    }

    /// Whether `passphrase` opens `id`'s passphrase-sealed session (a presence check); `Ok(false)`
    /// for a wrong one, and for a session that has no passphrase.
    pub fn check_passphrase(&self, id: &SessionId, passphrase: &SecretString) -> Result<bool, SessionError> {
        let path = self.dir(id).join(SESSION_FILE);
        let Some(sealed) = Self::read_private(&path)? else { return Ok(false) };
        let Some((header, body)) = PassphraseHeader::parse(&sealed) else { return Ok(false) };
        let key = crypto::passphrase_key(passphrase.expose_secret().as_bytes(), &header.salt, header.cost)
            .map_err(|e| SessionError::Corrupt { path: path.display().to_string(), reason: e.to_string() })?;
        Ok(crypto::aead_open(&key, &header.aad(id), body).is_ok())
    }

    fn unlocked_key(&self, id: &SessionId, header: PassphraseHeader) -> Option<Arc<SymmetricKey>> {
        let unlocked = self.unlocked.lock().expect("not poisoned");
        unlocked.get(id.as_str()).filter(|(h, _)| *h == header).map(|(_, key)| key.clone())
    }

    /// Opens a passphrase-sealed body: with the key already derived in this process, else by
    /// asking up to [`PASSPHRASE_ATTEMPTS`] times.
    fn open_with_passphrase(
        &self,
        id: &SessionId,
        path: &Path,
        header: PassphraseHeader,
        body: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SessionError> {
        let aad = header.aad(id);
        if let Some(key) = self.unlocked_key(id, header)
            && let Ok(plain) = crypto::aead_open(&key, &aad, body)
        {
            return Ok(plain);
        }
        let prompt = self.passphrase.as_ref().ok_or_else(|| SessionError::PassphraseNeeded { id: id.to_string() })?;
        for attempt in 0..PASSPHRASE_ATTEMPTS {
            let passphrase = prompt.ask(id, attempt > 0)?;
            let key = crypto::passphrase_key(passphrase.expose_secret().as_bytes(), &header.salt, header.cost)
                .map_err(|e| SessionError::Corrupt { path: path.display().to_string(), reason: e.to_string() })?;
            if let Ok(plain) = crypto::aead_open(&key, &aad, body) {
                self.unlocked.lock().expect("not poisoned").insert(id.as_str().to_owned(), (header, Arc::new(key)));
                return Ok(plain);
            }
        }
        Err(SessionError::WrongPassphrase {
            id: id.to_string(),
            attempts: PASSPHRASE_ATTEMPTS,
            dir: self.dir(id).display().to_string(),
        })
    }

    fn write_passphrase_sealed(
        &self,
        id: &SessionId,
        header: PassphraseHeader,
        key: &SymmetricKey,
        plain: &[u8],
    ) -> Result<(), SessionError> {
        let mut file = header.encode().to_vec();
        file.extend_from_slice(&crypto::aead_seal(key, &header.aad(id), plain, &mut OsRandom));
        write_atomically(&self.dir(id).join(SESSION_FILE), &file)
    }
}

impl EncryptedFileStore {
    /// Replaces `id`'s session with `session` under a fresh key, whatever sealed the old one
    /// (`init --force`): a passphrase-sealed slot becomes a key-sealed one, without asking.
    pub fn replace(&self, id: &SessionId, session: &Session) -> Result<(), SessionError> {
        self.unlocked.lock().expect("not poisoned").remove(id.as_str());
        self.save_keeping_form(id, session, false)
    }

    /// Saves `session`; with `keep_form`, a passphrase-sealed slot stays sealed with its
    /// passphrase and a key that opens the current file is reused, else the slot starts over
    /// with a fresh key (a replacement: nothing of the old session is needed, or asked for).
    fn save_keeping_form(&self, id: &SessionId, session: &Session, keep_form: bool) -> Result<(), SessionError> {
        let dir = self.dir(id);
        ensure_private_dir(&self.home)?;
        ensure_private_dir(&dir)?;
        let _lock = self.lock(id)?;
        let plain = Zeroizing::new(serde_json::to_vec(&session.to_record()).expect("a session record serializes"));
        let sealed_now = if keep_form { Self::read_private(&dir.join(SESSION_FILE))? } else { None };
        if let Some((header, body)) = sealed_now.as_deref().and_then(|bytes| PassphraseHeader::parse(bytes)) {
            // A passphrase-sealed slot stays one: the same passphrase, asked once per process.
            let path = dir.join(SESSION_FILE);
            self.open_with_passphrase(id, &path, header, body)?;
            let key = self.unlocked_key(id, header).expect("cached by the open");
            return self.write_passphrase_sealed(id, header, &key, &plain);
        }
        // Keep the key that opens the current file, so a concurrent reader never pairs a new key
        // with an old file; a fresh one only for a new slot (or one whose key is gone).
        let current = if keep_form { self.candidate_keys(id)?.keys } else { Vec::new() };
        let opener = current.into_iter().find(|(key, _)| {
            sealed_now.as_ref().is_none_or(|sealed| crypto::aead_open(key, &session_aad(id), sealed).is_ok())
        });
        let (key, mut home) = opener.unwrap_or_else(|| (SymmetricKey::generate(&mut OsRandom), KeyHome::File));
        if home == KeyHome::File && self.keychain.is_some() {
            if self.migrate(id, &key) {
                home = KeyHome::Keychain;
            } else if self.strict {
                return Err(SessionError::Keychain(KeychainError::Failed {
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
        let sealed = crypto::aead_seal(&key, &session_aad(id), &plain, &mut OsRandom);
        write_atomically(&dir.join(SESSION_FILE), &sealed)
    }
}

impl SessionStore for EncryptedFileStore {
    fn load(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        let path = self.dir(id).join(SESSION_FILE);
        let Some(sealed) = Self::read_private(&path)? else { return Ok(None) };
        let corrupt =
            |reason: &str| SessionError::Corrupt { path: path.display().to_string(), reason: reason.to_owned() };
        let parse = |plain: &[u8]| -> Result<Session, SessionError> {
            let record: SessionRecord =
                serde_json::from_slice(plain).map_err(|_| corrupt("the decrypted record is not a session"))?;
            Session::from_record(&record).map_err(corrupt)
        };
        if let Some((header, body)) = PassphraseHeader::parse(&sealed) {
            return parse(&self.open_with_passphrase(id, &path, header, body)?).map(Some);
        }
        let candidates = self.candidate_keys(id)?;
        let mut last_error = String::new();
        for (key, home) in candidates.keys {
            let plain = match crypto::aead_open(&key, &session_aad(id), &sealed) {
                Ok(plain) => plain,
                Err(error) => {
                    last_error = error.to_string();
                    continue;
                }
            };
            let session = parse(&plain)?;
            if home == KeyHome::File && self.keychain.is_some() {
                // A key file (the earlier file-only form, or a fallback save): move it into the
                // keychain, quietly; a failure leaves the file, which still works.
                if let Ok(_lock) = self.lock(id) {
                    self.migrate(id, &key);
                }
            }
            return Ok(Some(session));
        }
        if let Some(error) = candidates.keychain_away {
            // Most likely its key is in the keychain that did not answer: say so, change nothing.
            return Err(SessionError::KeychainAway { error, path: path.display().to_string() });
        }
        Err(corrupt(match (&self.keychain, last_error.is_empty()) {
            (_, false) => &last_error,
            (Some(_), true) => {
                "its key is neither in the keychain nor in session.key (if the keychain was reset, the session is lost: pair or init again)"
            }
            (None, true) => {
                "its key file session.key is missing; if the session was saved while a keychain was usable, its key is there: start or unlock the keychain (check DBUS_SESSION_BUS_ADDRESS), then retry"
            }
        }))
    }

    fn save(&self, id: &SessionId, session: &Session) -> Result<(), SessionError> {
        self.save_keeping_form(id, session, true)
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
        if self.is_passphrase_sealed(id) {
            return format!("passphrase (Argon2id), sealed in {}", file.display());
        }
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

    /// A keychain in memory that can be taken away, to inject the fault "the keychain disappears
    /// between save and load" (the real Secret Service is exercised in tests/e2e/keychain.rs).
    #[derive(Debug, Default)]
    struct VanishingKeychain {
        entries: Mutex<HashMap<String, Vec<u8>>>,
        away: std::sync::atomic::AtomicBool,
    }

    impl VanishingKeychain {
        fn check(&self) -> Result<(), KeychainError> {
            if self.away.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(KeychainError::Unavailable { name: "test", reason: "the bus went away".into() });
            }
            Ok(())
        }
    }

    impl Keychain for VanishingKeychain {
        fn name(&self) -> &'static str {
            "test"
        }
        fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KeychainError> {
            self.check()?;
            Ok(self.entries.lock().unwrap().get(account).cloned().map(Zeroizing::new))
        }
        fn set(&self, account: &str, secret: &[u8]) -> Result<(), KeychainError> {
            self.check()?;
            self.entries.lock().unwrap().insert(account.to_owned(), secret.to_vec());
            Ok(())
        }
        fn delete(&self, account: &str) -> Result<bool, KeychainError> {
            self.check()?;
            Ok(self.entries.lock().unwrap().remove(account).is_some())
        }
    }

    #[test]
    fn a_keychain_that_disappears_between_save_and_load_loses_nothing() {
        let home = tempfile::tempdir().unwrap();
        let keychain = Arc::new(VanishingKeychain::default());
        let store = EncryptedFileStore::with_keychain(home.path(), keychain.clone(), false);
        let id = SessionId::master();
        let session = sample(&mut SeededRandom::new(b"v"));
        store.save(&id, &session).unwrap();
        assert!(!store.dir(&id).join(KEY_FILE).exists(), "the key went to the keychain");
        let sealed = fs::read(store.dir(&id).join(SESSION_FILE)).unwrap();

        keychain.away.store(true, std::sync::atomic::Ordering::SeqCst);
        let error = store.load(&id).unwrap_err();
        assert!(matches!(error, SessionError::KeychainAway { .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("unlock the keychain") && message.contains("nothing was changed"), "{message}");
        assert_eq!(fs::read(store.dir(&id).join(SESSION_FILE)).unwrap(), sealed, "the session file is untouched");
        let strict = EncryptedFileStore::with_keychain(home.path(), keychain.clone(), true);
        assert!(matches!(strict.load(&id), Err(SessionError::Keychain(_))));

        keychain.away.store(false, std::sync::atomic::Ordering::SeqCst);
        let back = store.load(&id).unwrap().expect("opens again once the keychain is back");
        assert_eq!(back.device_id, session.device_id);
    }

    /// Answers prompts from a list and counts them.
    #[derive(Debug)]
    struct ScriptedPassphrase {
        answers: Mutex<Vec<&'static str>>,
        asked: std::sync::atomic::AtomicUsize,
    }

    impl ScriptedPassphrase {
        fn new(answers: &[&'static str]) -> Arc<Self> {
            Arc::new(Self { answers: Mutex::new(answers.iter().rev().copied().collect()), asked: Default::default() })
        }
        fn asked(&self) -> usize {
            self.asked.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl PassphrasePrompt for ScriptedPassphrase {
        fn ask(&self, id: &SessionId, _again: bool) -> Result<SecretString, SessionError> {
            self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = self.answers.lock().unwrap().pop();
            answer
                .map(|a| SecretString::from(a.to_owned()))
                .ok_or(SessionError::PassphraseNeeded { id: id.to_string() })
        }
    }

    /// Cheap enough for a unit test; the default cost is measured in docs/benchmarks.md.
    const TEST_COST: Argon2Cost = Argon2Cost { memory_kib: 64, iterations: 1, lanes: 1 };

    #[test]
    fn a_passphrase_sealed_session_opens_only_with_its_passphrase() {
        let home = tempfile::tempdir().unwrap();
        let id = SessionId::master();
        let session = sample(&mut SeededRandom::new(b"p"));
        let keychain = Arc::new(VanishingKeychain::default());
        let writer = EncryptedFileStore::with_keychain(home.path(), keychain.clone(), false);
        writer.save(&id, &session).unwrap();
        assert_eq!(keychain.entries.lock().unwrap().len(), 1);
        let passphrase = SecretString::from("correct horse battery".to_owned());
        writer.save_with_passphrase_cost(&id, &session, &passphrase, TEST_COST).unwrap();
        assert!(keychain.entries.lock().unwrap().is_empty(), "the keychain entry opens nothing now and is gone");
        assert!(!writer.dir(&id).join(KEY_FILE).exists());
        assert!(writer.describe(&id).starts_with("passphrase (Argon2id)"), "{}", writer.describe(&id));
        let raw = fs::read(writer.dir(&id).join(SESSION_FILE)).unwrap();
        assert_eq!(raw[0], PASSPHRASE_FORMAT);
        assert!(!raw.windows(10).any(|w| w == b"akt_token_"));

        // No prompt (the daemon, or no terminal): a clear refusal.
        let error = EncryptedFileStore::new(home.path()).load(&id).unwrap_err();
        assert!(matches!(error, SessionError::PassphraseNeeded { .. }) && error.to_string().contains("terminal"));

        // Two wrong tries, then the right one; a save after the load does not ask again.
        let prompt = ScriptedPassphrase::new(&["wrong", "also wrong", "correct horse battery"]);
        let reader = EncryptedFileStore::new(home.path()).with_passphrase_prompt(prompt.clone());
        assert_eq!(reader.load(&id).unwrap().unwrap().device_id, session.device_id);
        assert_eq!(prompt.asked(), 3);
        reader.save(&id, &session).unwrap();
        assert_eq!(prompt.asked(), 3, "the derived key is reused within the process");
        assert_eq!(fs::read(reader.dir(&id).join(SESSION_FILE)).unwrap()[0], PASSPHRASE_FORMAT, "it stays sealed so");
        assert!(reader.check_passphrase(&id, &passphrase).unwrap());
        assert!(!reader.check_passphrase(&id, &SecretString::from("nope".to_owned())).unwrap());

        // Three wrong tries: exit 6 territory, and the file is untouched.
        let before = fs::read(reader.dir(&id).join(SESSION_FILE)).unwrap();
        let prompt = ScriptedPassphrase::new(&["a", "b", "c", "correct horse battery"]);
        let error = EncryptedFileStore::new(home.path()).with_passphrase_prompt(prompt.clone()).load(&id).unwrap_err();
        assert!(matches!(error, SessionError::WrongPassphrase { attempts: 3, .. }), "{error}");
        assert_eq!(prompt.asked(), 3);
        assert_eq!(fs::read(reader.dir(&id).join(SESSION_FILE)).unwrap(), before);

        // The header is bound: a changed cost (a tampered file) opens nothing, and an absurd one
        // is refused before any work.
        let mut tampered = before.clone();
        tampered[4] ^= 1;
        write_atomically(&reader.dir(&id).join(SESSION_FILE), &tampered).unwrap();
        let prompt = ScriptedPassphrase::new(&["correct horse battery"; 3]);
        let error = EncryptedFileStore::new(home.path()).with_passphrase_prompt(prompt).load(&id).unwrap_err();
        assert!(matches!(error, SessionError::WrongPassphrase { .. }), "{error}");
        tampered[1] = 0xff;
        write_atomically(&reader.dir(&id).join(SESSION_FILE), &tampered).unwrap();
        let prompt = ScriptedPassphrase::new(&["correct horse battery"]);
        let error = EncryptedFileStore::new(home.path()).with_passphrase_prompt(prompt).load(&id).unwrap_err();
        assert!(matches!(error, SessionError::Corrupt { .. }) && error.to_string().contains("maximum"), "{error}");
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
