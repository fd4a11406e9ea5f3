//! What a presence backend is: [`PresenceBackend`], and what it answers. Each platform's backend
//! implements it; the gate ([`crate::gate`]) orders them.

use std::time::Duration;

pub use agentkeys_proto::presence::PresenceMethod;

use crate::op::CriticalOp;

/// What a backend says when it does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// Not here (no reader, no enrolled finger, no service, not this OS): try the next backend.
    Unavailable(String),
    /// Here, and it said no: the check ends.
    Declined(String),
    TimedOut,
    Cancelled,
    Failed(String),
}

/// One way to show presence. Implementations release what they claimed on every path.
pub trait PresenceBackend: Send + Sync + std::fmt::Debug {
    fn method(&self) -> PresenceMethod;
    /// Shows `op` and waits up to `timeout` for the human.
    fn verify(&self, op: &CriticalOp, timeout: Duration) -> Result<(), BackendError>;
}
