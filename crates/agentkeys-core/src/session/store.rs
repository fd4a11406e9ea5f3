//! The session store (PRODUCT.md §6): [`EncryptedFileStore`] seals each slot's record in
//! `<home>/<id>/session.enc` under a data key from [`super::keys`] (keychain or key file) or
//! [`super::passphrase`], and loads, saves, replaces and clears slots.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use agentkeys_keychain::{Keychain, KeychainError};
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::files::{
    CHAIN_FILE, KEY_FILE, SEEN_FILE, SESSION_FILE, ensure_private_dir, io_err, lock, read_private, write_atomically,
};
use super::keys::{KeyHome, KeySource, StoreMode};
use super::passphrase::{self, PassphraseHeader, PassphrasePrompt, Unlocker};
use super::types::{Session, SessionError, SessionId, SessionRecord, SessionStore, session_aad};
use crate::crypto::{self, Argon2Cost, SymmetricKey};
use crate::random::OsRandom;

/// The session store (PRODUCT.md §6): the session sealed in `<home>/<id>/session.enc`, its 32-byte
/// data key in the OS keychain (`service=agentkeys, account=<id>`) when there is a usable one,
/// else in `<home>/<id>/session.key`. A key file left by the file-only form is moved into the
/// keychain on first use. Saves of one id are serialized across processes by a lock file.
#[derive(Debug, Clone)]
pub struct EncryptedFileStore {
    keys: KeySource,
    /// Asks for, and remembers, the passphrase of a passphrase-sealed session.
    passphrase: Unlocker,
}

impl EncryptedFileStore {
    /// Key files only.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self { keys: KeySource::new(home.into(), None, false), passphrase: Unlocker::default() }
    }

    /// Asks `prompt` for the passphrase of a passphrase-sealed session.
    pub fn with_passphrase_prompt(mut self, prompt: Arc<dyn PassphrasePrompt>) -> Self {
        self.passphrase = self.passphrase.with_prompt(prompt);
        self
    }

    /// Keys in `keychain`; with `strict`, a failing keychain is an error instead of a fallback.
    pub fn with_keychain(home: impl Into<PathBuf>, keychain: Arc<dyn Keychain>, strict: bool) -> Self {
        Self { keys: KeySource::new(home.into(), Some(keychain), strict), passphrase: Unlocker::default() }
    }

    /// The keychain account of a session id: the id itself for `~/.agentkeys`, else the id and
    /// `@` and 12 hex digits of the home's path hash.
    pub fn keychain_account(&self, id: &SessionId) -> String {
        self.keys.keychain_account(id)
    }

    /// The store under `home` in `mode`: connects to the OS keychain (within
    /// [`super::KEYCHAIN_TIMEOUT`]) unless the mode is `file`.
    pub fn open(home: impl Into<PathBuf>, mode: StoreMode) -> Result<Self, SessionError> {
        Ok(match KeySource::connect(mode)? {
            Some(keychain) => Self::with_keychain(home, keychain, mode == StoreMode::Keychain),
            None => Self::new(home),
        })
    }

    /// The store under `$AGENTKEYS_HOME` (or `~/.agentkeys`) in the mode `AGENTKEYS_SESSION_STORE` asks for.
    pub fn from_env() -> Result<Self, SessionError> {
        let home = crate::paths::agentkeys_home().ok_or(SessionError::NoHome)?;
        Self::open(home, StoreMode::from_env()?)
    }

    /// The keychain in use, if any.
    pub fn keychain_name(&self) -> Option<&'static str> {
        self.keys.keychain.as_ref().map(|k| k.name())
    }

    pub fn dir(&self, id: &SessionId) -> PathBuf {
        self.keys.dir(id)
    }

    /// The slot's directory, made private, and its lock held until the guard drops.
    fn prepare(&self, id: &SessionId) -> Result<(PathBuf, fs::File), SessionError> {
        let dir = self.dir(id);
        ensure_private_dir(&self.keys.home)?;
        ensure_private_dir(&dir)?;
        let guard = lock(&dir)?;
        Ok((dir, guard))
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
        let (dir, _lock) = self.prepare(id)?;
        let header = passphrase::fresh_header(cost);
        let key = Unlocker::derive(passphrase, header).map_err(SessionError::PassphraseInput)?;
        let plain = Zeroizing::new(serde_json::to_vec(&session.to_record()).expect("a session record serializes"));
        write_atomically(&dir.join(SESSION_FILE), &passphrase::seal(id, header, &key, &plain))?;
        self.passphrase.remember(id, header, key);
        // The old keys open nothing now; they go, and a failure to remove them is harmless.
        self.keys.forget(id);
        Ok(())
    }

    /// Whether `id`'s session file is sealed with a passphrase.
    pub fn is_passphrase_sealed(&self, id: &SessionId) -> bool {
        use std::io::Read as _;
        let mut first = [0u8; 1];
        fs::File::open(self.dir(id).join(SESSION_FILE)).and_then(|mut f| f.read_exact(&mut first)).is_ok()
            && first[0] == passphrase::PASSPHRASE_FORMAT
    }

    /// Whether `passphrase` opens `id`'s passphrase-sealed session (a presence check); `Ok(false)`
    /// for a wrong one, and for a session that has no passphrase.
    pub fn check_passphrase(&self, id: &SessionId, passphrase: &SecretString) -> Result<bool, SessionError> {
        let path = self.dir(id).join(SESSION_FILE);
        let Some(sealed) = read_private(&path)? else { return Ok(false) };
        passphrase::opens(id, &path, &sealed, passphrase)
    }
}

impl EncryptedFileStore {
    /// Replaces `id`'s session with `session` under a fresh key, whatever sealed the old one
    /// (`init --force`): a passphrase-sealed slot becomes a key-sealed one, without asking.
    pub fn replace(&self, id: &SessionId, session: &Session) -> Result<(), SessionError> {
        self.passphrase.forget(id);
        self.save_keeping_form(id, session, false)
    }

    /// Saves `session`; with `keep_form`, a passphrase-sealed slot stays sealed with its
    /// passphrase and a key that opens the current file is reused, else the slot starts over
    /// with a fresh key (a replacement: nothing of the old session is needed, or asked for).
    fn save_keeping_form(&self, id: &SessionId, session: &Session, keep_form: bool) -> Result<(), SessionError> {
        let (dir, _lock) = self.prepare(id)?;
        let plain = Zeroizing::new(serde_json::to_vec(&session.to_record()).expect("a session record serializes"));
        let path = dir.join(SESSION_FILE);
        let sealed_now = if keep_form { read_private(&path)? } else { None };
        if let Some((header, body)) = sealed_now.as_deref().and_then(|bytes| PassphraseHeader::parse(bytes)) {
            // A passphrase-sealed slot stays one: the same passphrase, asked once per process.
            self.passphrase.open(id, &path, &dir, header, body)?;
            let key = self.passphrase.key(id, header).expect("cached by the open");
            return write_atomically(&path, &passphrase::seal(id, header, &key, &plain));
        }
        // Keep the key that opens the current file, so a concurrent reader never pairs a new key
        // with an old file; a fresh one only for a new slot (or one whose key is gone).
        let current = if keep_form { self.keys.candidate_keys(id)?.keys } else { Vec::new() };
        let opener = current.into_iter().find(|(key, _)| {
            sealed_now.as_ref().is_none_or(|sealed| crypto::aead_open(key, &session_aad(id), sealed).is_ok())
        });
        let (key, mut home) = opener.unwrap_or_else(|| (SymmetricKey::generate(&mut OsRandom), KeyHome::File));
        if home == KeyHome::File && self.keys.keychain.is_some() {
            if self.keys.migrate(id, &key) {
                home = KeyHome::Keychain;
            } else if self.keys.strict {
                return Err(SessionError::Keychain(KeychainError::Failed {
                    name: self.keys.keychain.as_ref().map_or("OS", |k| k.name()),
                    reason: "the session key could not be stored and read back".into(),
                }));
            }
        }
        // The key is durable before the file that needs it; a key file the keychain superseded goes.
        match home {
            KeyHome::File => {
                if self.keys.read_key(id).ok().flatten().is_none_or(|on_disk| on_disk.expose() != key.expose()) {
                    write_atomically(&dir.join(KEY_FILE), key.expose())?;
                }
            }
            KeyHome::Keychain => {
                let _ = fs::remove_file(dir.join(KEY_FILE));
            }
        }
        let sealed = crypto::aead_seal(&key, &session_aad(id), &plain, &mut OsRandom);
        write_atomically(&path, &sealed)
    }
}

impl SessionStore for EncryptedFileStore {
    fn load(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        let path = self.dir(id).join(SESSION_FILE);
        let Some(sealed) = read_private(&path)? else { return Ok(None) };
        let corrupt =
            |reason: &str| SessionError::Corrupt { path: path.display().to_string(), reason: reason.to_owned() };
        let parse = |plain: &[u8]| -> Result<Session, SessionError> {
            let record: SessionRecord =
                serde_json::from_slice(plain).map_err(|_| corrupt("the decrypted record is not a session"))?;
            Session::from_record(&record).map_err(corrupt)
        };
        if let Some((header, body)) = PassphraseHeader::parse(&sealed) {
            return parse(&self.passphrase.open(id, &path, &self.dir(id), header, body)?).map(Some);
        }
        let candidates = self.keys.candidate_keys(id)?;
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
            if home == KeyHome::File && self.keys.keychain.is_some() {
                // A key file (the earlier file-only form, or a fallback save): move it into the
                // keychain, quietly; a failure leaves the file, which still works.
                if let Ok(_lock) = lock(&self.dir(id)) {
                    self.keys.migrate(id, &key);
                }
            }
            return Ok(Some(session));
        }
        if let Some(error) = candidates.keychain_away {
            // Most likely its key is in the keychain that did not answer: say so, change nothing.
            return Err(SessionError::KeychainAway { error, path: path.display().to_string() });
        }
        Err(corrupt(match (&self.keys.keychain, last_error.is_empty()) {
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
        if let Some(keychain) = &self.keys.keychain {
            match keychain.delete(&self.keys.keychain_account(id)) {
                Ok(deleted) => removed |= deleted,
                Err(error) if self.keys.strict => return Err(SessionError::Keychain(error)),
                Err(_) => {}
            }
        }
        for name in [SESSION_FILE, KEY_FILE, SEEN_FILE, CHAIN_FILE, ".lock"] {
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
        match (&self.keys.keychain, self.dir(id).join(KEY_FILE).exists()) {
            (Some(keychain), false) => format!("keychain ({}), sealed in {}", keychain.name(), file.display()),
            _ => format!("file ({})", file.display()),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<SessionId>, SessionError> {
        let entries = match fs::read_dir(&self.keys.home) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot list", &self.keys.home)(e)),
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
    use std::collections::HashMap;
    use std::fs::File;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::Mutex;

    use agentkeys_keychain::KeychainError;
    use secrecy::ExposeSecret as _;

    use super::super::passphrase::PASSPHRASE_FORMAT;
    use super::*;
    use crate::crypto::KeyPair;
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
            account_sign_public: None,
            link_id: None,
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
            // The suite's skip rule (tests/support: present_or_skip), which this crate cannot reach.
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI runs as root and can mount a tmpfs");
            eprintln!("SKIPPED: a_full_disk_leaves_the_old_session_usable: cannot mount a tmpfs (not root)");
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
