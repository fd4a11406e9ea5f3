//! Token buckets kept in the database, so every replica draws from the same one. Taken inside an
//! op, in the writer's transaction: a bucket is read and written by one writer at a time.

use sqlx::{AnyConnection, Row as _};

/// A rate limit: a token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests an idle bucket allows at once.
    pub burst: u32,
    /// Requests per second it earns back.
    pub per_second: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { burst: 100, per_second: 20 }
    }
}

/// Takes one token from `bucket`; `Err(seconds)` until the next one when it is empty.
pub async fn take_token(
    conn: &mut AnyConnection,
    bucket: &str,
    limit: RateLimit,
    now: i64,
) -> Result<Result<(), u64>, sqlx::Error> {
    let burst = i64::from(limit.burst.max(1)) * 1000;
    let per_second = i64::from(limit.per_second.max(1));
    let row = sqlx::query("SELECT tokens_milli, updated_at_ms FROM rate_buckets WHERE bucket = $1")
        .bind(bucket)
        .fetch_optional(&mut *conn)
        .await?;
    let tokens = match row {
        None => burst,
        Some(row) => {
            let (tokens, at): (i64, i64) = (row.try_get("tokens_milli")?, row.try_get("updated_at_ms")?);
            // milli-tokens earned = elapsed ms × per_second / 1000 × 1000.
            (tokens + (now - at).max(0).saturating_mul(per_second)).min(burst)
        }
    };
    if tokens < 1000 {
        let wait_ms = (1000 - tokens) / per_second;
        return Ok(Err((wait_ms as u64).div_ceil(1000).max(1)));
    }
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
