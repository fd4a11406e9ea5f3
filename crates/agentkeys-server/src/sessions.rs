//! Sessions: the `sessions` table's statements, and a cache of what never changes about a session
//! — its account, device and device key — keyed by the SHA-256 of its token, so a request does
//! not pay a database round trip to find them.
//!
//! What *can* change, whether the session is still live, is never cached: the writer checks it
//! in the same transaction that consumes the request's nonce and commits its audit row, before
//! any answer leaves. So a revocation committed by any replica refuses the very next request on
//! every replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentkeys_proto::types::ActorKind;
use ed25519_dalek::VerifyingKey;
use sqlx::{AnyConnection, AnyPool, Row as _};

use crate::db::parse_stored;

/// A session joined with its device.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub session_id: String,
    pub account_id: String,
    pub device_id: String,
    pub token_hash: Vec<u8>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub device_label: String,
    pub device_kind: ActorKind,
    pub device_sign_public: Vec<u8>,
    /// Set for agent devices.
    pub agent_id: Option<String>,
}

/// The session whose token hashes to `token_hash`, with its device.
pub async fn find(pool: &AnyPool, token_hash: &[u8]) -> Result<Option<SessionRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT s.id, s.account_id, s.device_id, s.token_hash, s.created_at_ms, s.revoked_at_ms, \
                d.label, d.kind, d.sign_public, d.agent_id \
         FROM sessions s JOIN devices d ON d.id = s.device_id WHERE s.token_hash = $1",
    )
    .bind(token_hash.to_vec())
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(SessionRow {
            session_id: r.try_get("id")?,
            account_id: r.try_get("account_id")?,
            device_id: r.try_get("device_id")?,
            token_hash: r.try_get("token_hash")?,
            created_at_ms: r.try_get("created_at_ms")?,
            revoked_at_ms: r.try_get("revoked_at_ms")?,
            device_label: r.try_get("label")?,
            device_kind: parse_stored("devices.kind", &r.try_get::<String, _>("kind")?, ActorKind::parse)?,
            device_sign_public: r.try_get("sign_public")?,
            agent_id: r.try_get("agent_id")?,
        })
    })
    .transpose()
}

/// A new session of a device; the server keeps only the token's hash.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session_id: String,
    pub token_hash: Vec<u8>,
}

/// Opens a session for `device_id`.
pub async fn insert(
    conn: &mut AnyConnection,
    account_id: &str,
    device_id: &str,
    session: &NewSession,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, account_id, device_id, token_hash, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&session.session_id)
    .bind(account_id)
    .bind(device_id)
    .bind(&session.token_hash)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Ends every live session of every device of `agent_id`.
pub async fn revoke_for_agent(conn: &mut AnyConnection, agent_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sessions SET revoked_at_ms = $1 WHERE revoked_at_ms IS NULL \
         AND device_id IN (SELECT id FROM devices WHERE agent_id = $2)",
    )
    .bind(now)
    .bind(agent_id)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Ends every live session of one device.
pub async fn revoke_for_device(conn: &mut AnyConnection, device_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET revoked_at_ms = $1 WHERE revoked_at_ms IS NULL AND device_id = $2")
        .bind(now)
        .bind(device_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// A session as authentication needs it: the row, and its device key already decompressed
/// (decompressing an Ed25519 point costs about as much as a third of a verification).
#[derive(Debug)]
pub struct KnownSession {
    pub row: SessionRow,
    /// `None` when the stored key is not a valid point: every signature then fails.
    pub device_key: Option<VerifyingKey>,
}

impl KnownSession {
    pub fn new(row: SessionRow) -> Self {
        let device_key = <[u8; 32]>::try_from(row.device_sign_public.as_slice())
            .ok()
            .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok());
        Self { row, device_key }
    }
}

/// More sessions than this and the cache starts over (sessions are few; this bounds memory
/// against a flood of valid tokens, not a workload).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct SessionCache(Arc<Mutex<HashMap<[u8; 32], Arc<KnownSession>>>>);

impl SessionCache {
    pub fn get(&self, token_hash: &[u8; 32]) -> Option<Arc<KnownSession>> {
        self.0.lock().expect("session cache lock").get(token_hash).cloned()
    }

    pub fn insert(&self, token_hash: [u8; 32], session: Arc<KnownSession>) {
        let mut map = self.0.lock().expect("session cache lock");
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(token_hash, session);
    }
}
