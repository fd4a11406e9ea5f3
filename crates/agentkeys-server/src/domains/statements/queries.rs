//! The statements of the `account_statements` table.

use sqlx::{AnyConnection, AnyPool, Row as _};

/// One stored statement.
#[derive(Debug, Clone)]
pub struct StoredStatement {
    pub seq: i64,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The account's last statement, if it has one.
pub async fn last(conn: &mut AnyConnection, account_id: &str) -> Result<Option<StoredStatement>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT seq, payload, signature FROM account_statements WHERE account_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| stored(&row)).transpose()
}

/// Appends a statement; `false` when its number is taken already.
pub async fn insert(
    conn: &mut AnyConnection,
    account_id: &str,
    statement: &StoredStatement,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO account_statements (account_id, seq, payload, signature, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(account_id)
    .bind(statement.seq)
    .bind(&statement.payload)
    .bind(&statement.signature)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The number of the account's last statement (0 for none), and up to `limit` statements from
/// `from` on, in order.
pub async fn page(
    pool: &AnyPool,
    account_id: &str,
    from: i64,
    limit: i64,
) -> Result<(i64, Vec<StoredStatement>), sqlx::Error> {
    let head: Option<i64> = sqlx::query("SELECT MAX(seq) AS head FROM account_statements WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(pool)
        .await?
        .try_get("head")?;
    let rows = sqlx::query(
        "SELECT seq, payload, signature FROM account_statements WHERE account_id = $1 AND seq >= $2 \
         ORDER BY seq LIMIT $3",
    )
    .bind(account_id)
    .bind(from)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let statements = rows.iter().map(stored).collect::<Result<_, _>>()?;
    Ok((head.unwrap_or(0), statements))
}

fn stored(row: &sqlx::any::AnyRow) -> Result<StoredStatement, sqlx::Error> {
    Ok(StoredStatement {
        seq: row.try_get("seq")?,
        payload: row.try_get("payload")?,
        signature: row.try_get("signature")?,
    })
}
