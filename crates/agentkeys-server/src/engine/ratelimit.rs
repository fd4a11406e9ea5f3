//! Token buckets kept in the database, so every replica draws from the same one. Taken inside an
//! op, in the writer's transaction: a bucket is read and written by one writer at a time.

use std::time::Duration;

use sqlx::{AnyConnection, Row as _};

use super::op::{BoxFuture, Maintenance};

/// A rate limit: a token bucket of `burst` tokens earning one back every `every_us` µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests an idle bucket allows at once.
    pub burst: u32,
    /// Microseconds to earn one token back.
    pub every_us: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::per_second(100, 20)
    }
}

impl RateLimit {
    /// `burst` at once, then `per_second` a second.
    pub fn per_second(burst: u32, per_second: u32) -> Self {
        Self { burst, every_us: 1_000_000 / u64::from(per_second.max(1)) }
    }

    /// `burst` at once, then one every `every`.
    pub fn every(burst: u32, every: Duration) -> Self {
        Self { burst, every_us: (every.as_micros() as u64).max(1) }
    }

    /// The sustained rate, for messages.
    pub fn per_second_shown(self) -> String {
        let per_s = 1_000_000.0 / self.every_us.max(1) as f64;
        if per_s >= 1.0 { format!("{per_s:.0} per second") } else { format!("one every {:.0}s", 1.0 / per_s) }
    }

    /// Milli-tokens earned over `elapsed_ms`.
    fn earned_milli(self, elapsed_ms: i64) -> i64 {
        let earned = i128::from(elapsed_ms.max(0)) * 1_000_000 / i128::from(self.every_us.max(1));
        earned.min(i128::from(i64::MAX)) as i64
    }
}

/// Takes one token from `bucket`; `Err(seconds)` until the next one when it is empty.
pub async fn take_token(
    conn: &mut AnyConnection,
    bucket: &str,
    limit: RateLimit,
    now: i64,
) -> Result<Result<(), u64>, sqlx::Error> {
    let tokens = match available(conn, bucket, limit, now).await? {
        Ok(tokens) => tokens,
        Err(wait) => return Ok(Err(wait)),
    };
    sqlx::query(
        "INSERT INTO rate_buckets (bucket, tokens_milli, updated_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (bucket) DO UPDATE SET tokens_milli = excluded.tokens_milli, updated_at_ms = excluded.updated_at_ms",
    )
    .bind(bucket)
    .bind(tokens - 1000)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(Ok(()))
}

/// The milli-tokens in `bucket` now when there is at least one token, else `Err(seconds)` until
/// there is; takes nothing.
pub async fn available(
    conn: &mut AnyConnection,
    bucket: &str,
    limit: RateLimit,
    now: i64,
) -> Result<Result<i64, u64>, sqlx::Error> {
    let burst = i64::from(limit.burst.max(1)) * 1000;
    let row = sqlx::query("SELECT tokens_milli, updated_at_ms FROM rate_buckets WHERE bucket = $1")
        .bind(bucket)
        .fetch_optional(&mut *conn)
        .await?;
    let tokens = match row {
        None => burst,
        Some(row) => {
            let (tokens, at): (i64, i64) = (row.try_get("tokens_milli")?, row.try_get("updated_at_ms")?);
            tokens.saturating_add(limit.earned_milli(now - at)).min(burst)
        }
    };
    if tokens < 1000 {
        let wait_us = i128::from(1000 - tokens) * i128::from(limit.every_us) / 1000;
        return Ok(Err(((wait_us / 1000) as u64).div_ceil(1000).max(1)));
    }
    Ok(Ok(tokens))
}

/// Forgets buckets untouched for an hour: any bucket is full again by then, and a full bucket
/// is the same as none. Bounds the table against a flood of sources.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForgetIdleBuckets;

impl Maintenance for ForgetIdleBuckets {
    fn prune<'a>(&'a self, conn: &'a mut AnyConnection, now: i64) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query("DELETE FROM rate_buckets WHERE updated_at_ms < $1")
                .bind(now - 3600 * 1000)
                .execute(&mut *conn)
                .await
                .map(|_| ())
        })
    }
}
