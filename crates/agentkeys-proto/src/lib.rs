//! Everything that crosses the wire between `agentkeys-server` and its clients: the JSON request
//! and response types, the stable error codes (with their HTTP statuses and CLI exit codes), the
//! service-name rule, and the canonical form that every request signature covers.
//!
//! Both sides depend on this crate and nothing else for the contract, so a change here is a
//! protocol change: keep it additive, and update `docs/protocol.md` with it.

pub mod agents;
pub mod b64;
pub mod ceremony;
pub mod certificate;
pub mod chain;
pub mod critical;
pub mod daemon;
pub mod devices;
pub mod error;
pub mod grant;
pub mod ids;
pub mod names;
pub mod namespace;
pub mod number;
pub mod policy;
pub mod presence;
pub mod secret;
pub mod signing;
pub mod statement;
pub mod types;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
