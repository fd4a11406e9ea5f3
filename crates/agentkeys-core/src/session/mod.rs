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
//!
//! The seams: [`types`] (what a session is), [`files`] (private, atomic file I/O), [`keys`]
//! (where a data key lives, and its migration into the keychain), [`passphrase`] (the
//! passphrase form) and [`store`] (loading, saving, replacing and clearing slots).

mod files;
mod keys;
mod passphrase;
mod store;
mod types;

pub use files::{CHAIN_FILE, SEEN_FILE, replace_unsynced, write_atomically};
pub use keys::{KEYCHAIN_TIMEOUT, StoreMode};
pub use passphrase::{PASSPHRASE_ATTEMPTS, PassphrasePrompt};
pub use store::EncryptedFileStore;
pub use types::{DAEMON_SESSION_PREFIX, MASTER_SESSION_ID, Session, SessionError, SessionId, SessionStore};
