//! The human's presence at the master before a critical operation (PRODUCT.md §5), with all
//! platform code in this crate. One entry point, [`PresenceGate::require_presence`]: it shows the
//! exact operation ([`CriticalOp`]) and asks the best available backend — fprintd, polkit, Touch
//! ID, Windows Hello — falling back to the terminal (the session passphrase, or a typed
//! confirmation of the operation), as the [`Policy`] allows.
//!
//! A backend that does not exist here (no reader, no enrolled finger, no polkit agent, not this
//! OS) steps aside for the next one; a backend that exists and says no (a non-matching finger, a
//! wrong passphrase, a timeout, Ctrl-C) ends the check: a refusal never falls through to a weaker
//! method.

mod backend;
pub mod fido_hid;
mod gate;
mod op;
pub mod terminal;
pub mod tty;

#[cfg(target_os = "linux")]
mod dbus;
#[cfg(target_os = "linux")]
pub mod fprintd;
#[cfg(target_os = "linux")]
pub mod polkit;
#[cfg(target_os = "macos")]
pub mod touchid;
#[cfg(target_os = "windows")]
pub mod windows_hello;

pub use backend::{BackendError, PresenceBackend, PresenceMethod};
pub use gate::{Policy, Presence, PresenceError, PresenceGate};
pub use op::{CriticalOp, shorten};
