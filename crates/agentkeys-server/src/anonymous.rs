//! Traffic without a session: creating accounts, opening and revealing pairings, looking up and
//! redeeming link codes, and requests to signed routes that carry no valid token. Anyone who can
//! reach the server can send them, so each is limited per source address and in total, by token
//! buckets in the database (every replica draws from the same ones), and their refusals are
//! counted — metrics, and one audit row per source per minute — instead of an audit row each.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use sqlx::{AnyConnection, Row as _};

use crate::engine::op::{BoxFuture, CriticalFor, Ctx, Maintenance, Op, OpError};
use crate::engine::ratelimit::{RateLimit, take_token};
use crate::error::ApiError;

/// Where a request came from: its peer address, IPv6 by /64 (one host holds a whole /64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source(String);

impl Source {
    pub fn of(peer: Option<IpAddr>) -> Self {
        Self(match peer {
            Some(IpAddr::V4(ip)) => format!("ip4:{ip}"),
            Some(IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
                Some(v4) => format!("ip4:{v4}"),
                None => {
                    let s = ip.segments();
                    format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
            // Driven without a socket (tests of the router): one shared source.
            None => "local".to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())))
    }
}

/// What an anonymous request tries to do; each door has its own buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Accounts,
    Pairings,
    Links,
    /// Recoveries with the recovery key: opened, polled and completed by a machine with no
    /// session yet.
    Recoveries,
    /// The presence ceremony page, reached with a ceremony id as its only credential.
    Presence,
    /// A signed route reached without a session the server knows.
    Unauthenticated,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Accounts => "accounts",
            Door::Pairings => "pairings",
            Door::Links => "links",
            Door::Recoveries => "recoveries",
            Door::Presence => "presence",
            Door::Unauthenticated => "unauthenticated",
        }
    }

    fn refusal(self, retry_after: u64, whole_server: bool) -> ApiError {
        let whom = if whole_server { "this server" } else { "your address" };
        ApiError::rate_limited(
            format!("too many {} requests without a session from {whom}", self.as_str()),
            format!("retry in {retry_after}s"),
            retry_after,
        )
    }
}

/// The limits of every door: per source, and in total (ten times as much).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnonymousLimits {
    pub per_source: RateLimit,
}

impl Default for AnonymousLimits {
    /// Ten at once, then one every ten seconds, per source and door.
    fn default() -> Self {
        Self { per_source: RateLimit::every(10, std::time::Duration::from_secs(10)) }
    }
}

impl AnonymousLimits {
    /// The presence page gets ten times the budget: a human's browser makes two requests per
    /// ceremony (options, answer), a ceremony id is 128 random bits (nothing to guess), and
    /// every ceremony was opened by a signed master request, so the limit only has to stop a
    /// flood, not throttle a human confirming several operations in a row.
    fn for_door(self, door: Door) -> Self {
        match door {
            Door::Presence => Self {
                per_source: RateLimit {
                    burst: self.per_source.burst.saturating_mul(10),
                    every_us: (self.per_source.every_us / 10).max(1),
                },
            },
            _ => self,
        }
    }

    fn total(self) -> RateLimit {
        RateLimit { burst: self.per_source.burst.saturating_mul(10), every_us: (self.per_source.every_us / 10).max(1) }
    }
}

/// Takes a token of `door` for `source` and one of the door's total; refused (keeping the spent
/// tokens) when either is empty.
async fn admit(
    conn: &mut AnyConnection,
    source: &Source,
    door: Door,
    limits: AnonymousLimits,
    now: i64,
) -> Result<(), OpError> {
    let limits = limits.for_door(door);
    let own = format!("anon:{}:{}", door.as_str(), source.as_str());
    if let Err(retry_after) = take_token(conn, &own, limits.per_source, now).await? {
        return Err(OpError::RefusedKeeping(door.refusal(retry_after, false)));
    }
    let all = format!("anon:{}", door.as_str());
    if let Err(retry_after) = take_token(conn, &all, limits.total(), now).await? {
        return Err(OpError::RefusedKeeping(door.refusal(retry_after, true)));
    }
    Ok(())
}

/// An anonymous request's op, behind its door.
#[derive(Debug)]
pub struct Admitted<O> {
    pub source: Source,
    pub door: Door,
    pub limits: AnonymousLimits,
    pub op: O,
}

impl<O: Op> Op for Admitted<O> {
    type Output = O::Output;

    fn critical(&self) -> Option<CriticalFor<'_>> {
        self.op.critical()
    }

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<O::Output, OpError> {
        admit(conn, &self.source, self.door, self.limits, cx.now_ms).await?;
        self.op.apply(conn, cx).await
    }

    fn audited_namespace(output: &Self::Output) -> Option<String> {
        O::audited_namespace(output)
    }
}

/// How long one audit row stands for a source's refused anonymous requests.
pub const WINDOW_MS: i64 = 60_000;

/// An anonymous request refused before it had an op (no token, an unknown token, a malformed
/// body): it spends a token of its door, is counted per source and minute, and only the first of
/// each minute gets an audit row — so a flood adds one row a minute, not one a request.
#[derive(Debug)]
pub struct Refused {
    pub source: Source,
    pub door: Door,
    pub limits: AnonymousLimits,
    pub error: ApiError,
    first_in_window: AtomicBool,
}

impl Refused {
    pub fn new(source: Source, door: Door, limits: AnonymousLimits, error: ApiError) -> Self {
        Self { source, door, limits, error, first_in_window: AtomicBool::new(false) }
    }
}

impl Op for Refused {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        let window = cx.now_ms - cx.now_ms.rem_euclid(WINDOW_MS);
        let counted = sqlx::query(
            "INSERT INTO anonymous_failures (source, window_start_ms, failures) VALUES ($1, $2, 1) \
             ON CONFLICT (source, window_start_ms) DO UPDATE SET failures = anonymous_failures.failures + 1 \
             RETURNING failures",
        )
        .bind(self.source.as_str())
        .bind(window)
        .fetch_one(&mut *conn)
        .await?;
        let failures: i64 = counted.try_get("failures")?;
        self.first_in_window.store(failures == 1, Ordering::Relaxed);
        admit(conn, &self.source, self.door, self.limits, cx.now_ms).await?;
        Err(OpError::RefusedKeeping(self.error.clone()))
    }

    fn audited(&self) -> bool {
        self.first_in_window.load(Ordering::Relaxed)
    }
}

/// Forgets refusal counts after a day.
#[derive(Debug, Clone, Copy, Default)]
pub struct Forget;

impl Maintenance for Forget {
    fn prune<'a>(&'a self, conn: &'a mut AnyConnection, now: i64) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query("DELETE FROM anonymous_failures WHERE window_start_ms < $1")
                .bind(now - 24 * 3600 * 1000)
                .execute(&mut *conn)
                .await
                .map(|_| ())
        })
    }
}
