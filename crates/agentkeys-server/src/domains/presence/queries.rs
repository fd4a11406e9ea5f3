//! The statements of the `presence_keys`, `presence_ceremonies` and `presence_attestation_roots`
//! tables.

use agentkeys_proto::ceremony::{CeremonyPurpose, CeremonyState, KeyKind};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};

use crate::db::parse_stored;

/// An enrolled presence key.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub kind: KeyKind,
    pub credential_id: Vec<u8>,
    /// The COSE key, as the authenticator gave it.
    pub public_key: Vec<u8>,
    pub sign_count: i64,
    pub aaguid: Vec<u8>,
    pub attestation_format: String,
    pub attestation_trust: String,
    pub attestation_subject: Option<String>,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
}

/// A ceremony: an assertion bound to one request, or an enrollment.
#[derive(Debug, Clone)]
pub struct CeremonyRow {
    pub id: String,
    pub account_id: String,
    pub device_id: String,
    pub purpose: CeremonyPurpose,
    pub state: CeremonyState,
    pub code: String,
    pub challenge: Vec<u8>,
    pub method: String,
    pub path: String,
    pub body_digest: Vec<u8>,
    pub operation: String,
    pub key_name: Option<String>,
    pub key_kind: Option<KeyKind>,
    pub key_id: Option<String>,
    pub reason: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub completed_at_ms: Option<i64>,
}

// Macros, not consts: the statements stay literals (`concat!`), as sqlx wants them.
macro_rules! key_columns {
    () => {
        "id, account_id, name, kind, credential_id, public_key, sign_count, aaguid, attestation_format, \
         attestation_trust, attestation_subject, created_at_ms, last_used_at_ms"
    };
}

macro_rules! ceremony_columns {
    () => {
        "id, account_id, device_id, purpose, state, code, challenge, method, path, body_digest, operation, key_name, \
         key_kind, key_id, reason, created_at_ms, expires_at_ms, completed_at_ms"
    };
}

fn key_row(row: &AnyRow) -> Result<KeyRow, sqlx::Error> {
    Ok(KeyRow {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        kind: parse_stored("presence_keys.kind", &row.try_get::<String, _>("kind")?, KeyKind::parse)?,
        credential_id: row.try_get("credential_id")?,
        public_key: row.try_get("public_key")?,
        sign_count: row.try_get("sign_count")?,
        aaguid: row.try_get("aaguid")?,
        attestation_format: row.try_get("attestation_format")?,
        attestation_trust: row.try_get("attestation_trust")?,
        attestation_subject: row.try_get("attestation_subject")?,
        created_at_ms: row.try_get("created_at_ms")?,
        last_used_at_ms: row.try_get("last_used_at_ms")?,
    })
}

fn ceremony_row(row: &AnyRow) -> Result<CeremonyRow, sqlx::Error> {
    let key_kind: Option<String> = row.try_get("key_kind")?;
    Ok(CeremonyRow {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        device_id: row.try_get("device_id")?,
        purpose: parse_stored(
            "presence_ceremonies.purpose",
            &row.try_get::<String, _>("purpose")?,
            CeremonyPurpose::parse,
        )?,
        state: parse_stored("presence_ceremonies.state", &row.try_get::<String, _>("state")?, CeremonyState::parse)?,
        code: row.try_get("code")?,
        challenge: row.try_get("challenge")?,
        method: row.try_get("method")?,
        path: row.try_get("path")?,
        body_digest: row.try_get("body_digest")?,
        operation: row.try_get("operation")?,
        key_name: row.try_get("key_name")?,
        key_kind: key_kind.map(|k| parse_stored("presence_ceremonies.key_kind", &k, KeyKind::parse)).transpose()?,
        key_id: row.try_get("key_id")?,
        reason: row.try_get("reason")?,
        created_at_ms: row.try_get("created_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        completed_at_ms: row.try_get("completed_at_ms")?,
    })
}

/// The account's presence keys, oldest first.
pub async fn keys(conn: &mut AnyConnection, account_id: &str) -> Result<Vec<KeyRow>, sqlx::Error> {
    let sql =
        concat!("SELECT ", key_columns!(), " FROM presence_keys WHERE account_id = $1 ORDER BY created_at_ms, id");
    sqlx::query(sql).bind(account_id).fetch_all(&mut *conn).await?.iter().map(key_row).collect()
}

/// Whether a key with this id (derived from its credential id) is enrolled in any account: a
/// credential answers for one account only.
pub async fn key_exists(conn: &mut AnyConnection, key_id: &str) -> Result<bool, sqlx::Error> {
    let row =
        sqlx::query("SELECT COUNT(*) AS n FROM presence_keys WHERE id = $1").bind(key_id).fetch_one(&mut *conn).await?;
    Ok(sqlx::Row::get::<i64, _>(&row, "n") > 0)
}

/// How many presence keys the account has: with one or more, every critical operation needs a
/// ceremony.
pub async fn key_count(conn: &mut AnyConnection, account_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM presence_keys WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")
}

pub async fn insert_key(conn: &mut AnyConnection, key: &KeyRow) -> Result<(), sqlx::Error> {
    let sql = concat!(
        "INSERT INTO presence_keys (",
        key_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    );
    sqlx::query(sql)
        .bind(&key.id)
        .bind(&key.account_id)
        .bind(&key.name)
        .bind(key.kind.as_str())
        .bind(&key.credential_id)
        .bind(&key.public_key)
        .bind(key.sign_count)
        .bind(&key.aaguid)
        .bind(&key.attestation_format)
        .bind(&key.attestation_trust)
        .bind(&key.attestation_subject)
        .bind(key.created_at_ms)
        .bind(key.last_used_at_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

pub async fn delete_key(conn: &mut AnyConnection, account_id: &str, key_id: &str) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM presence_keys WHERE account_id = $1 AND id = $2")
        .bind(account_id)
        .bind(key_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(deleted == 1)
}

/// Deletes every presence key of the account (a recovery replacing lost ones); how many.
pub async fn delete_all_keys(conn: &mut AnyConnection, account_id: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM presence_keys WHERE account_id = $1")
        .bind(account_id)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// Stores a verified assertion's counter, only if it still advances what is stored (a
/// concurrent assertion of a cloned key cannot both pass); `false` when it does not.
pub async fn advance_counter(
    conn: &mut AnyConnection,
    key_id: &str,
    sign_count: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE presence_keys SET sign_count = $1, last_used_at_ms = $2 \
         WHERE id = $3 AND (sign_count < $4 OR (sign_count = 0 AND $5 = 0))",
    )
    .bind(sign_count)
    .bind(now)
    .bind(key_id)
    .bind(sign_count)
    .bind(sign_count)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

pub async fn insert_ceremony(conn: &mut AnyConnection, ceremony: &CeremonyRow) -> Result<(), sqlx::Error> {
    let sql = concat!(
        "INSERT INTO presence_ceremonies (",
        ceremony_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
    );
    sqlx::query(sql)
        .bind(&ceremony.id)
        .bind(&ceremony.account_id)
        .bind(&ceremony.device_id)
        .bind(ceremony.purpose.as_str())
        .bind(ceremony.state.as_str())
        .bind(&ceremony.code)
        .bind(&ceremony.challenge)
        .bind(&ceremony.method)
        .bind(&ceremony.path)
        .bind(&ceremony.body_digest)
        .bind(&ceremony.operation)
        .bind(&ceremony.key_name)
        .bind(ceremony.key_kind.map(KeyKind::as_str))
        .bind(&ceremony.key_id)
        .bind(&ceremony.reason)
        .bind(ceremony.created_at_ms)
        .bind(ceremony.expires_at_ms)
        .bind(ceremony.completed_at_ms)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

pub async fn ceremony(conn: &mut AnyConnection, id: &str) -> Result<Option<CeremonyRow>, sqlx::Error> {
    let sql = concat!("SELECT ", ceremony_columns!(), " FROM presence_ceremonies WHERE id = $1");
    sqlx::query(sql).bind(id).fetch_optional(&mut *conn).await?.as_ref().map(ceremony_row).transpose()
}

/// Ceremonies of the account still pending and unexpired: bounded, so a session cannot fill the
/// table.
pub async fn pending_count(conn: &mut AnyConnection, account_id: &str, now: i64) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "SELECT COUNT(*) AS n FROM presence_ceremonies WHERE account_id = $1 AND state = 'pending' \
         AND expires_at_ms > $2",
    )
    .bind(account_id)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")
}

/// What a ceremony's move from `from` to `to` records.
#[derive(Debug, Clone, Default)]
pub struct Transition<'a> {
    pub key_id: Option<&'a str>,
    pub reason: Option<&'a str>,
}

/// Moves a ceremony from `from` to `to`; `false` when it was not in `from` (another request
/// moved it first). Leaving `pending` stamps the completion time.
pub async fn transition(
    conn: &mut AnyConnection,
    id: &str,
    from: CeremonyState,
    to: CeremonyState,
    what: Transition<'_>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE presence_ceremonies SET state = $1, key_id = COALESCE($2, key_id), reason = COALESCE($3, reason), \
         completed_at_ms = COALESCE(completed_at_ms, $4) WHERE id = $5 AND state = $6",
    )
    .bind(to.as_str())
    .bind(what.key_id)
    .bind(what.reason)
    .bind(now)
    .bind(id)
    .bind(from.as_str())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Deletes ceremonies created before `before` (the audit log keeps what they were).
pub async fn delete_old_ceremonies(conn: &mut AnyConnection, before: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM presence_ceremonies WHERE created_at_ms < $1")
        .bind(before)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// The DER certificates of the attestation roots the account restricts enrollment to.
pub async fn attestation_roots(conn: &mut AnyConnection, account_id: &str) -> Result<Vec<Vec<u8>>, sqlx::Error> {
    sqlx::query("SELECT certificate FROM presence_attestation_roots WHERE account_id = $1 ORDER BY fingerprint")
        .bind(account_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get("certificate"))
        .collect()
}

/// A listed attestation root.
#[derive(Debug, Clone)]
pub struct RootRow {
    pub fingerprint: Vec<u8>,
    pub certificate: Vec<u8>,
    pub subject: String,
}

/// Replaces the account's attestation roots (none: any authenticator may enroll).
pub async fn replace_attestation_roots(
    conn: &mut AnyConnection,
    account_id: &str,
    roots: &[RootRow],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM presence_attestation_roots WHERE account_id = $1")
        .bind(account_id)
        .execute(&mut *conn)
        .await?;
    for root in roots {
        sqlx::query(
            "INSERT INTO presence_attestation_roots (account_id, fingerprint, certificate, subject) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(account_id)
        .bind(&root.fingerprint)
        .bind(&root.certificate)
        .bind(&root.subject)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
