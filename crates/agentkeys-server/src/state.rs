//! What every handler shares: the database, the writer, the clock and randomness, the metrics, the session
//! cache and the configured limits. Built once by [`crate::start`].

use crate::anonymous::AnonymousLimits;
use crate::clock::Clock;
use crate::db::Db;
use crate::engine::ratelimit::RateLimit;
use crate::engine::writer::Writer;
use crate::metrics::Metrics;
use crate::random::Random;
use crate::sessions::SessionCache;

#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub writer: Writer,
    pub clock: Clock,
    pub random: Random,
    pub metrics: Metrics,
    pub sessions: SessionCache,
    pub limits: Limits,
    /// The origin clients and browsers reach the server at (`--public-url`, else the listening
    /// address); empty for a server not listening on a socket (tests driving the router).
    pub public_url: String,
    /// Woken when a presence ceremony changes on this replica, so its poller answers at once.
    pub ceremony_events: std::sync::Arc<tokio::sync::Notify>,
    /// Woken when a request is opened or decided on this replica: decision look-ups and queue
    /// listeners waiting on one answer at once (others look again every second).
    pub request_events: std::sync::Arc<tokio::sync::Notify>,
    /// The accounts' policies, compiled once per version.
    pub policies: std::sync::Arc<crate::domains::policy::ops::Policies>,
}

/// The limits an operator can set (`--agent-read-burst`, `--agent-read-rate`,
/// `--anonymous-burst`, `--anonymous-per-minute`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Credential reads per agent.
    pub agent_reads: RateLimit,
    /// Requests without a session, per source and door (ten times that in total).
    pub anonymous: AnonymousLimits,
}
