//! The OS keychain behind one small trait, so the session store holds a data key there without
//! knowing the platform: the Secret Service on Linux (pure Rust over D-Bus, zbus), the login
//! Keychain on macOS, the Credential Manager on Windows — each through the maintained
//! `keyring-core` store crate, compiled per `cfg(target_os)`.
//!
//! Every call is bounded: it runs on a detached thread and is abandoned after the timeout, so a
//! keychain that waits for an unlock prompt nobody answers, or a bus that stopped answering,
//! cannot hang the CLI or the daemon. After one timeout the keychain is treated as gone for the
//! rest of the process (the store serializes calls behind one connection, so the next call would
//! queue behind the stuck one).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use zeroize::Zeroizing;

/// Every entry lives under this service name; the account is the session id.
pub const SERVICE: &str = "agentkeys";

/// What the keychain said.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeychainError {
    /// No usable keychain: no session bus or provider, a locked collection, no default
    /// collection, or a call that did not finish within the timeout.
    #[error("the {name} keychain is not usable: {reason}")]
    Unavailable { name: &'static str, reason: String },
    /// The keychain answered with an error of its own.
    #[error("the {name} keychain failed: {reason}")]
    Failed { name: &'static str, reason: String },
}

/// A place that keeps small secrets by account name.
pub trait Keychain: Send + Sync + std::fmt::Debug {
    /// What to call it in messages: `Secret Service`, `macOS Keychain`, `Windows Credential Manager`.
    fn name(&self) -> &'static str;
    /// The secret stored for `account`, or `None`.
    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KeychainError>;
    /// Creates or replaces the secret of `account`.
    fn set(&self, account: &str, secret: &[u8]) -> Result<(), KeychainError>;
    /// Removes the secret of `account`; `Ok(false)` when there was none.
    fn delete(&self, account: &str) -> Result<bool, KeychainError>;
}

/// The platform's keychain, for this build.
pub const PLATFORM_NAME: &str = if cfg!(target_os = "macos") {
    "macOS Keychain"
} else if cfg!(target_os = "windows") {
    "Windows Credential Manager"
} else {
    "Secret Service"
};

/// The OS keychain through `keyring-core`.
pub struct SystemKeychain {
    store: Arc<keyring_core::CredentialStore>,
    timeout: Duration,
    /// Set after a call timed out: later calls fail at once instead of queueing behind it.
    stuck: Arc<AtomicBool>,
}

impl std::fmt::Debug for SystemKeychain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemKeychain").field("name", &PLATFORM_NAME).field("timeout", &self.timeout).finish()
    }
}

fn unavailable(reason: impl Into<String>) -> KeychainError {
    KeychainError::Unavailable { name: PLATFORM_NAME, reason: reason.into() }
}

/// Sorts `keyring-core` errors: "there is no usable keychain" versus "it said no".
fn classify(error: keyring_core::Error) -> KeychainError {
    match error {
        keyring_core::Error::NoStorageAccess(inner) => unavailable(format!("no access ({inner})")),
        keyring_core::Error::PlatformFailure(inner) => unavailable(inner.to_string()),
        keyring_core::Error::NoDefaultStore | keyring_core::Error::NotSupportedByStore(_) => {
            unavailable("no keychain on this system")
        }
        other => KeychainError::Failed { name: PLATFORM_NAME, reason: other.to_string() },
    }
}

/// Runs `call` on a detached thread and waits at most `timeout` for it.
fn bounded<T: Send + 'static>(
    what: &'static str,
    timeout: Duration,
    stuck: &AtomicBool,
    call: impl FnOnce() -> keyring_core::Result<T> + Send + 'static,
) -> Result<T, KeychainError> {
    if stuck.load(Ordering::SeqCst) {
        return Err(unavailable("an earlier call did not finish; not trying again in this process"));
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("keychain-{what}"))
        .spawn(move || {
            let _ = tx.send(call());
        })
        .map_err(|e| unavailable(format!("cannot start a thread: {e}")))?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result.map_err(classify),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            stuck.store(true, Ordering::SeqCst);
            Err(unavailable(format!("{what} did not answer within {} ms", timeout.as_millis())))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(unavailable(format!("{what} failed inside the keychain library")))
        }
    }
}

fn platform_store() -> keyring_core::Result<Arc<keyring_core::CredentialStore>> {
    #[cfg(target_os = "linux")]
    return Ok(zbus_secret_service_keyring_store::Store::new()?);
    #[cfg(target_os = "macos")]
    return Ok(apple_native_keyring_store::keychain::Store::new()?);
    #[cfg(target_os = "windows")]
    return Ok(windows_native_keyring_store::Store::new()?);
    #[allow(unreachable_code)]
    Err(keyring_core::Error::NotSupportedByStore("no native keychain on this OS".into()))
}

impl SystemKeychain {
    /// Connects to the OS keychain, within `timeout`.
    pub fn connect(timeout: Duration) -> Result<Self, KeychainError> {
        let stuck = Arc::new(AtomicBool::new(false));
        let store = bounded("connect", timeout, &stuck, platform_store)?;
        Ok(Self { store, timeout, stuck })
    }

    fn entry(&self, account: &str) -> keyring_core::Result<keyring_core::Entry> {
        self.store.build(SERVICE, account, None)
    }
}

impl Keychain for SystemKeychain {
    fn name(&self) -> &'static str {
        PLATFORM_NAME
    }

    fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KeychainError> {
        let entry = self.entry(account).map_err(classify)?;
        let found = bounded("read", self.timeout, &self.stuck, move || match entry.get_secret() {
            Ok(secret) => Ok(Some(Zeroizing::new(secret))),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(error) => Err(error),
        })?;
        Ok(found)
    }

    fn set(&self, account: &str, secret: &[u8]) -> Result<(), KeychainError> {
        let entry = self.entry(account).map_err(classify)?;
        let secret = Zeroizing::new(secret.to_vec());
        bounded("write", self.timeout, &self.stuck, move || entry.set_secret(&secret))
    }

    fn delete(&self, account: &str) -> Result<bool, KeychainError> {
        let entry = self.entry(account).map_err(classify)?;
        bounded("delete", self.timeout, &self.stuck, move || match entry.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring_core::Error::NoEntry) => Ok(false),
            Err(error) => Err(error),
        })
    }
}
