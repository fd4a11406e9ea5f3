//! What a session is: its slot id ([`SessionId`]), the logged-in device ([`Session`]) and its
//! sealed record, why loading or saving failed ([`SessionError`]), and the [`SessionStore`] trait.

use agentkeys_keychain::KeychainError;
use agentkeys_proto::b64;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto::KeyPair;

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
    /// For an agent device: the account's signing key, pinned end to end when it joined (the
    /// pairing OTP covers it; a link code's key signs it). Every grant it reads must chain to it.
    /// `None` in a session saved before versions were signed: then the key the server relays is
    /// taken when it derives the session's account id.
    pub account_sign_public: Option<[u8; 32]>,
    /// For an agent device that joined by a link code: that link's id, to which the master
    /// granted the keys this device re-wrapped when it redeemed the code.
    pub link_id: Option<String>,
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
pub(super) struct SessionRecord {
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
    /// Agents: the pinned account signing key (base64url); empty before it was pinned.
    #[serde(default)]
    account_sign_public: String,
    /// Agents that joined by a link code: its id.
    #[serde(default)]
    link_id: String,
}

const RECORD_FORMAT: u32 = 1;

impl Session {
    pub(super) fn to_record(&self) -> SessionRecord {
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
            account_sign_public: self.account_sign_public.map(b64::encode).unwrap_or_default(),
            link_id: self.link_id.clone().unwrap_or_default(),
        }
    }

    pub(super) fn from_record(record: &SessionRecord) -> Result<Self, &'static str> {
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
            account_sign_public: (!record.account_sign_public.is_empty())
                .then(|| b64::decode_array::<32>(&record.account_sign_public).ok_or("bad account key encoding"))
                .transpose()?,
            link_id: (!record.link_id.is_empty()).then(|| record.link_id.clone()),
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
    Keychain(KeychainError),
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

/// What every sealed session file binds: the slot id, so a file copied into another slot does not open.
pub(super) fn session_aad(id: &SessionId) -> Vec<u8> {
    let mut aad = b"agentkeys-session-v1\0".to_vec();
    aad.extend_from_slice(id.as_str().as_bytes());
    aad
}
