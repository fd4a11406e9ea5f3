//! What the master CLI and the agent daemon share: the key hierarchy and its sealing and wrapping
//! constructions ([`crypto`]), request signing ([`signing`]), the HTTP API client ([`client`]),
//! vault operations that combine them ([`vault`]), and session storage ([`session`]).
//!
//! Secrets are held in zeroizing types and exposed only at the point of use; nothing in this crate
//! prints one.

pub mod account;
pub mod agents;
pub mod chain;
pub mod child;
pub mod client;
pub mod crypto;
pub mod daemon_client;
pub mod error;
pub mod exec;
pub mod exit;
pub mod harden;
pub mod integrity;
pub mod mask;
pub mod pairing;
pub mod paths;
pub mod random;
pub mod secret_mem;
pub mod session;
pub mod signing;
pub mod statements;
pub mod vault;

pub use client::{ApiClient, ClientError};
pub use random::{OsRandom, RandomSource};
