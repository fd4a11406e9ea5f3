//! Agents in the database: creating them (with a link code), binding devices, scope and wraps,
//! tiers, aliases, revoke and teardown, and the agent's read of a credential. Every mutation is
//! an [`AgentOp`] that the writer applies in the batch transaction, so what an agent may read is
//! decided in the same transaction that answers it — a scope removal, a downgrade or a revocation
//! committed by any replica holds for the very next request everywhere.

use std::collections::BTreeSet;

use agentkeys_proto::agents::{AgentDevice, AgentSummary, Tier, agent_namespace};
use agentkeys_proto::types::VAULT_NAMESPACE;
use agentkeys_proto::{ErrorCode, b64};
use sqlx::{AnyConnection, AnyPool, Row as _};

use crate::db::CredentialRow;
use crate::error::ApiError;
use crate::writer::Applied;

/// A rate limit: a token bucket kept in the database, so every replica draws from the same one.
#[derive(Debug, Clone, Copy)]
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

/// A device and the data keys wrapped to it.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub device_id: String,
    pub sign_public: Vec<u8>,
    pub kx_public: Vec<u8>,
    pub certificate: Vec<u8>,
    pub session_id: String,
    pub token_hash: Vec<u8>,
}

/// A wrap as stored: `(namespace, service, version, device or link id, wrap)`.
#[derive(Debug, Clone)]
pub struct Wrap {
    pub namespace: String,
    pub service: String,
    pub version: i64,
    pub recipient: String,
    pub wrap: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct NewLink {
    pub link_id: String,
    pub sign_public: Vec<u8>,
    pub kx_public: Vec<u8>,
    pub certificate: Vec<u8>,
    pub expires_at_ms: i64,
    pub wraps: Vec<Wrap>,
}

/// An agent mutation or read, applied by the writer.
#[derive(Debug, Clone)]
pub enum AgentOp {
    Create { account_id: String, agent_id: String, label: String, tier: Tier, scope: Vec<String>, link: NewLink },
    RedeemLink { link_id: String, device: NewDevice, wraps: Vec<Wrap> },
    Scope { account_id: String, agent_id: String, add: Vec<String>, remove: Vec<String>, wraps: Vec<Wrap> },
    Tier { account_id: String, agent_id: String, tier: Tier },
    Alias { account_id: String, agent_id: String, alias: String },
    Revoke { account_id: String, agent_id: String },
    Teardown { account_id: String, agent_id: String },
    Read { account_id: String, agent_id: String, device_id: String, service: String, limit: RateLimit },
}

/// What an agent operation produced.
#[derive(Debug, Clone)]
pub enum AgentApplied {
    Created,
    /// A device was bound: the agent's session, as the daemon must save it.
    Bound {
        account_id: String,
        agent_id: String,
        label: String,
        tier: Tier,
        scope: Vec<String>,
    },
    Changed,
}

type OpResult = Result<Result<Applied, ApiError>, sqlx::Error>;

pub fn no_such_agent(agent: &str) -> ApiError {
    ApiError::not_found(format!("no agent '{agent}' in this account"), "list agents with `agentkeys agents`")
}

/// Agent labels and aliases follow the service-name rule: safe in ids, tables and shells.
pub fn validate_agent_name(what: &str, name: &str) -> Result<(), ApiError> {
    agentkeys_proto::names::validate_service_name(name)
        .map_err(|e| ApiError::bad_request(format!("invalid {what} {:?}: {e}", name.escape_debug().to_string())))
}

pub async fn apply(conn: &mut AnyConnection, op: &AgentOp, now: i64) -> OpResult {
    match op {
        AgentOp::Create { account_id, agent_id, label, tier, scope, link } => {
            create(conn, account_id, agent_id, label, *tier, scope, link, now).await
        }
        AgentOp::RedeemLink { link_id, device, wraps } => redeem_link(conn, link_id, device, wraps, now).await,
        AgentOp::Scope { account_id, agent_id, add, remove, wraps } => {
            let Some(status) = agent_status(conn, account_id, agent_id).await? else {
                return Ok(Err(no_such_agent(agent_id)));
            };
            if status == "torn_down" {
                return Ok(Err(torn_down(agent_id)));
            }
            change_scope(conn, account_id, agent_id, add, remove, wraps).await
        }
        AgentOp::Tier { account_id, agent_id, tier } => {
            let done = sqlx::query("UPDATE agents SET tier = $1 WHERE id = $2 AND account_id = $3")
                .bind(tier.as_str())
                .bind(agent_id)
                .bind(account_id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(if done == 1 { Ok(Applied::Agent(AgentApplied::Changed)) } else { Err(no_such_agent(agent_id)) })
        }
        AgentOp::Alias { account_id, agent_id, alias } => add_alias(conn, account_id, agent_id, alias).await,
        AgentOp::Revoke { account_id, agent_id } => {
            if agent_status(conn, account_id, agent_id).await?.is_none() {
                return Ok(Err(no_such_agent(agent_id)));
            }
            revoke(conn, account_id, agent_id, "revoked", now).await?;
            Ok(Ok(Applied::Agent(AgentApplied::Changed)))
        }
        AgentOp::Teardown { account_id, agent_id } => teardown(conn, account_id, agent_id, now).await,
        AgentOp::Read { account_id, agent_id, device_id, service, limit } => {
            read(conn, account_id, agent_id, device_id, service, *limit, now).await
        }
    }
}

fn torn_down(agent_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Revoked,
        format!("agent {agent_id} was torn down"),
        "create it again with `agentkeys agent create LABEL` or pair a daemon with that label",
    )
}

pub async fn agent_status(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT status FROM agents WHERE id = $1 AND account_id = $2")
        .bind(agent_id)
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| row.try_get("status"))
        .transpose()
}

/// Inserts the agent, or brings back one that was revoked or torn down under the same label (its
/// id is derived from the label, so it is the same agent). An active agent is refused.
pub async fn upsert_agent(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    label: &str,
    tier: Tier,
    status: &str,
    now: i64,
) -> Result<Result<(), ApiError>, sqlx::Error> {
    let alias_taken = sqlx::query("SELECT 1 AS taken FROM agent_aliases WHERE account_id = $1 AND alias = $2")
        .bind(account_id)
        .bind(label)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if alias_taken {
        return Ok(Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("'{label}' is already an alias of another agent"),
            "pick another label: `<agent>` must name one agent everywhere",
        )));
    }
    match agent_status(conn, account_id, agent_id).await?.as_deref() {
        None => {
            sqlx::query(
                "INSERT INTO agents (id, account_id, label, tier, status, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(agent_id)
            .bind(account_id)
            .bind(label)
            .bind(tier.as_str())
            .bind(status)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        Some("revoked" | "torn_down") => {
            sqlx::query("UPDATE agents SET status = $1, tier = $2 WHERE id = $3")
                .bind(status)
                .bind(tier.as_str())
                .bind(agent_id)
                .execute(&mut *conn)
                .await?;
        }
        Some(_) => {
            return Ok(Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("an agent labelled '{label}' already exists"),
                format!(
                    "pick another label, or `agentkeys teardown {label}` first; to give it another machine, pair \
                     that daemon with the same label"
                ),
            )));
        }
    }
    Ok(Ok(()))
}

#[allow(clippy::too_many_arguments)]
async fn create(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    label: &str,
    tier: Tier,
    scope: &[String],
    link: &NewLink,
    now: i64,
) -> OpResult {
    if let Err(error) = upsert_agent(conn, account_id, agent_id, label, tier, "pending", now).await? {
        return Ok(Err(error));
    }
    sqlx::query("DELETE FROM agent_scope WHERE agent_id = $1").bind(agent_id).execute(&mut *conn).await?;
    for service in scope {
        insert_scope(conn, agent_id, service).await?;
    }
    sqlx::query(
        "INSERT INTO links (id, account_id, agent_id, sign_public, kx_public, certificate, created_at_ms, expires_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&link.link_id)
    .bind(account_id)
    .bind(agent_id)
    .bind(&link.sign_public)
    .bind(&link.kx_public)
    .bind(&link.certificate)
    .bind(now)
    .bind(link.expires_at_ms)
    .execute(&mut *conn)
    .await?;
    for wrap in &link.wraps {
        if let Err(error) = check_current(conn, account_id, wrap).await? {
            return Ok(Err(error));
        }
        sqlx::query("INSERT INTO link_wraps (link_id, namespace, service, version, wrap) VALUES ($1, $2, $3, $4, $5)")
            .bind(&link.link_id)
            .bind(&wrap.namespace)
            .bind(&wrap.service)
            .bind(wrap.version)
            .bind(&wrap.wrap)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Ok(Applied::Agent(AgentApplied::Created)))
}

async fn insert_scope(conn: &mut AnyConnection, agent_id: &str, service: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO agent_scope (agent_id, service) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(agent_id)
        .bind(service)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// A wrap must be for the credential's current version: an older one would leave the agent
/// unable to open what it reads. The client re-reads and retries on this conflict.
async fn check_current(
    conn: &mut AnyConnection,
    account_id: &str,
    wrap: &Wrap,
) -> Result<Result<(), ApiError>, sqlx::Error> {
    let current: Option<i64> = sqlx::query(
        "SELECT MAX(version) AS v FROM credential_versions WHERE account_id = $1 AND namespace = $2 AND service = $3",
    )
    .bind(account_id)
    .bind(&wrap.namespace)
    .bind(&wrap.service)
    .fetch_one(&mut *conn)
    .await?
    .try_get("v")?;
    if current == Some(wrap.version) {
        return Ok(Ok(()));
    }
    let mut error = ApiError::new(
        ErrorCode::VersionConflict,
        format!("'{}' changed while its key was being wrapped (now at version {})", wrap.service, current.unwrap_or(0)),
        "retry; the client re-wraps the current version",
    );
    error.current_version = current.map(|v| v as u64);
    Ok(Err(error))
}

/// Stores wraps for one device after checking each is for a current version.
pub async fn insert_device_wraps(
    conn: &mut AnyConnection,
    account_id: &str,
    wraps: &[Wrap],
) -> Result<Result<(), ApiError>, sqlx::Error> {
    for wrap in wraps {
        if let Err(error) = check_current(conn, account_id, wrap).await? {
            return Ok(Err(error));
        }
        sqlx::query(
            "INSERT INTO credential_wraps (account_id, namespace, service, version, device_id, wrap) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (account_id, namespace, service, version, device_id) DO UPDATE SET wrap = excluded.wrap",
        )
        .bind(account_id)
        .bind(&wrap.namespace)
        .bind(&wrap.service)
        .bind(wrap.version)
        .bind(&wrap.recipient)
        .bind(&wrap.wrap)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Ok(()))
}

/// Inserts an agent device and its session.
pub async fn insert_device(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    label: &str,
    device: &NewDevice,
    now: i64,
) -> Result<Result<(), ApiError>, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO devices (id, account_id, kind, label, sign_public, kx_public, certificate, created_at_ms, agent_id) \
         VALUES ($1, $2, 'agent', $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(&device.device_id)
    .bind(account_id)
    .bind(label)
    .bind(&device.sign_public)
    .bind(&device.kx_public)
    .bind(&device.certificate)
    .bind(now)
    .bind(agent_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("device {} is already registered", device.device_id),
            "generate a new device key; a daemon never reuses one",
        )));
    }
    sqlx::query(
        "INSERT INTO sessions (id, account_id, device_id, token_hash, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&device.session_id)
    .bind(account_id)
    .bind(&device.device_id)
    .bind(&device.token_hash)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(Ok(()))
}

pub async fn scope_of(conn: &mut AnyConnection, agent_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT service FROM agent_scope WHERE agent_id = $1 ORDER BY service")
        .bind(agent_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get("service"))
        .collect()
}

async fn redeem_link(
    conn: &mut AnyConnection,
    link_id: &str,
    device: &NewDevice,
    wraps: &[Wrap],
    now: i64,
) -> OpResult {
    let link = sqlx::query(
        "SELECT l.account_id, l.agent_id, l.expires_at_ms, l.redeemed_at_ms, a.label, a.tier, a.status \
         FROM links l JOIN agents a ON a.id = l.agent_id WHERE l.id = $1",
    )
    .bind(link_id)
    .fetch_optional(&mut *conn)
    .await?;
    let gone = || {
        ApiError::new(
            ErrorCode::Declined,
            "this link code was already used, has expired, or was cancelled",
            "ask the account owner for a new one: `agentkeys agent create LABEL`",
        )
    };
    let Some(link) = link else { return Ok(Err(gone())) };
    let account_id: String = link.try_get("account_id")?;
    let agent_id: String = link.try_get("agent_id")?;
    let label: String = link.try_get("label")?;
    let status: String = link.try_get("status")?;
    let tier = Tier::parse(&link.try_get::<String, _>("tier")?).unwrap_or(Tier::Safe);
    if link.try_get::<Option<i64>, _>("redeemed_at_ms")?.is_some()
        || link.try_get::<i64, _>("expires_at_ms")? < now
        || !matches!(status.as_str(), "pending" | "active")
    {
        return Ok(Err(gone()));
    }
    let linked: BTreeSet<(String, String, i64)> =
        sqlx::query("SELECT namespace, service, version FROM link_wraps WHERE link_id = $1")
            .bind(link_id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("namespace")?, row.try_get("service")?, row.try_get("version")?)))
            .collect::<Result<_, sqlx::Error>>()?;
    if wraps.iter().any(|w| !linked.contains(&(w.namespace.clone(), w.service.clone(), w.version))) {
        return Ok(Err(ApiError::bad_request("a re-wrapped key is for a credential the link code did not carry")));
    }
    if let Err(error) = insert_device(conn, &account_id, &agent_id, &label, device, now).await? {
        return Ok(Err(error));
    }
    for wrap in wraps {
        sqlx::query(
            "INSERT INTO credential_wraps (account_id, namespace, service, version, device_id, wrap) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&account_id)
        .bind(&wrap.namespace)
        .bind(&wrap.service)
        .bind(wrap.version)
        .bind(&device.device_id)
        .bind(&wrap.wrap)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("UPDATE links SET redeemed_at_ms = $1 WHERE id = $2")
        .bind(now)
        .bind(link_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM link_wraps WHERE link_id = $1").bind(link_id).execute(&mut *conn).await?;
    sqlx::query("UPDATE agents SET status = 'active' WHERE id = $1").bind(&agent_id).execute(&mut *conn).await?;
    let scope = scope_of(conn, &agent_id).await?;
    Ok(Ok(Applied::Agent(AgentApplied::Bound { account_id, agent_id, label, tier, scope })))
}

async fn change_scope(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    add: &[String],
    remove: &[String],
    wraps: &[Wrap],
) -> OpResult {
    let devices: BTreeSet<String> = active_devices(conn, agent_id).await?.into_iter().collect();
    if let Some(stray) = wraps.iter().find(|w| !devices.contains(&w.recipient) || w.namespace != VAULT_NAMESPACE) {
        return Ok(Err(ApiError::bad_request(format!(
            "a wrap is addressed to {} in {}, which is not an active device of this agent in the vault",
            stray.recipient, stray.namespace
        ))));
    }
    for service in remove {
        sqlx::query("DELETE FROM agent_scope WHERE agent_id = $1 AND service = $2")
            .bind(agent_id)
            .bind(service)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "DELETE FROM credential_wraps WHERE account_id = $1 AND namespace = $2 AND service = $3 \
             AND device_id IN (SELECT id FROM devices WHERE agent_id = $4)",
        )
        .bind(account_id)
        .bind(VAULT_NAMESPACE)
        .bind(service)
        .bind(agent_id)
        .execute(&mut *conn)
        .await?;
    }
    for service in add {
        insert_scope(conn, agent_id, service).await?;
    }
    if let Err(error) = insert_device_wraps(conn, account_id, wraps).await? {
        return Ok(Err(error));
    }
    Ok(Ok(Applied::Agent(AgentApplied::Changed)))
}

async fn active_devices(conn: &mut AnyConnection, agent_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT id FROM devices WHERE agent_id = $1 AND revoked_at_ms IS NULL")
        .bind(agent_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get("id"))
        .collect()
}

async fn add_alias(conn: &mut AnyConnection, account_id: &str, agent_id: &str, alias: &str) -> OpResult {
    if agent_status(conn, account_id, agent_id).await?.is_none() {
        return Ok(Err(no_such_agent(agent_id)));
    }
    let taken = sqlx::query(
        "SELECT 1 AS taken FROM agents WHERE account_id = $1 AND (label = $2 OR id = $2) \
         UNION ALL SELECT 1 AS taken FROM agent_aliases WHERE account_id = $1 AND alias = $2",
    )
    .bind(account_id)
    .bind(alias)
    .fetch_optional(&mut *conn)
    .await?;
    if taken.is_some() {
        return Ok(Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("'{alias}' already names an agent in this account"),
            "pick another alias; see `agentkeys agents`",
        )));
    }
    sqlx::query("INSERT INTO agent_aliases (account_id, alias, agent_id) VALUES ($1, $2, $3)")
        .bind(account_id)
        .bind(alias)
        .bind(agent_id)
        .execute(&mut *conn)
        .await?;
    Ok(Ok(Applied::Agent(AgentApplied::Changed)))
}

/// Ends every session and device of the agent, its open requests and unused link codes.
async fn revoke(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    status: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE agents SET status = $1 WHERE id = $2 AND account_id = $3")
        .bind(status)
        .bind(agent_id)
        .bind(account_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE sessions SET revoked_at_ms = $1 WHERE revoked_at_ms IS NULL \
         AND device_id IN (SELECT id FROM devices WHERE agent_id = $2)",
    )
    .bind(now)
    .bind(agent_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE devices SET revoked_at_ms = $1 WHERE agent_id = $2 AND revoked_at_ms IS NULL")
        .bind(now)
        .bind(agent_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE requests SET status = 'denied', decided_at_ms = $1 WHERE agent_id = $2 AND status = 'pending'")
        .bind(now)
        .bind(agent_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE links SET expires_at_ms = $1 WHERE agent_id = $2 AND redeemed_at_ms IS NULL AND expires_at_ms > $1",
    )
    .bind(now)
    .bind(agent_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Revoke, then delete what only this agent could read: its private credentials (every version)
/// and every data key wrapped to its devices or link codes. The audit log keeps what happened.
async fn teardown(conn: &mut AnyConnection, account_id: &str, agent_id: &str, now: i64) -> OpResult {
    if agent_status(conn, account_id, agent_id).await?.is_none() {
        return Ok(Err(no_such_agent(agent_id)));
    }
    revoke(conn, account_id, agent_id, "torn_down", now).await?;
    for sql in [
        "DELETE FROM credential_wraps WHERE device_id IN (SELECT id FROM devices WHERE agent_id = $1)",
        "DELETE FROM link_wraps WHERE link_id IN (SELECT id FROM links WHERE agent_id = $1)",
        "DELETE FROM agent_scope WHERE agent_id = $1",
        "DELETE FROM agent_aliases WHERE agent_id = $1",
    ] {
        sqlx::query(sql).bind(agent_id).execute(&mut *conn).await?;
    }
    for sql in [
        "DELETE FROM credential_wraps WHERE account_id = $1 AND namespace = $2",
        "DELETE FROM credential_versions WHERE account_id = $1 AND namespace = $2",
    ] {
        sqlx::query(sql).bind(account_id).bind(agent_namespace(agent_id)).execute(&mut *conn).await?;
    }
    Ok(Ok(Applied::Agent(AgentApplied::Changed)))
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

/// The newest version of a credential, removed or not.
async fn newest(
    conn: &mut AnyConnection,
    account_id: &str,
    namespace: &str,
    service: &str,
) -> Result<Option<CredentialRow>, sqlx::Error> {
    sqlx::query(
        "SELECT version, ciphertext, data_key_wrap, created_at_ms, created_by FROM credential_versions \
         WHERE account_id = $1 AND namespace = $2 AND service = $3 ORDER BY version DESC LIMIT 1",
    )
    .bind(account_id)
    .bind(namespace)
    .bind(service)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| CredentialRow::from_row(&row))
    .transpose()
}

/// An agent reads a credential: its private one first, else the vault's if the service is in
/// its scope — and either way only through a data key wrapped to this very device. Everything
/// after the rate-limit check is answered through [`Applied::Refused`], so a refused read still
/// spends its token and guessing names costs as much as reading them.
async fn read(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    device_id: &str,
    service: &str,
    limit: RateLimit,
    now: i64,
) -> OpResult {
    if let Err(retry_after) = take_token(conn, &format!("read:{agent_id}"), limit, now).await? {
        let mut error = ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "agent {agent_id} is over its read rate ({} per second, bursts of {})",
                limit.per_second, limit.burst
            ),
            format!("retry in {retry_after}s; cache the value for the length of a task instead of re-reading it"),
        );
        error.retry_after_s = Some(retry_after);
        return Ok(Ok(Applied::Refused(error)));
    }
    let refuse = |error: ApiError| Ok(Ok(Applied::Refused(error)));
    let agent = sqlx::query("SELECT label, tier, status FROM agents WHERE id = $1 AND account_id = $2")
        .bind(agent_id)
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(agent) = agent else { return refuse(no_such_agent(agent_id)) };
    let label: String = agent.try_get("label")?;
    if agent.try_get::<String, _>("status")? != "active" {
        return refuse(crate::auth::session_revoked());
    }
    if Tier::parse(&agent.try_get::<String, _>("tier")?).unwrap_or(Tier::Safe) < Tier::Standard {
        return refuse(ApiError::new(
            ErrorCode::Denied,
            format!("agent {label} is at tier safe: it sees credential names, never values"),
            format!("ask the account owner: agentkeys agent upgrade {label} --tier standard"),
        ));
    }
    let private = agent_namespace(agent_id);
    let (namespace, row) = match newest(conn, account_id, &private, service).await? {
        Some(row) if row.ciphertext.is_some() => (private, row),
        _ => {
            let in_scope = sqlx::query("SELECT 1 AS yes FROM agent_scope WHERE agent_id = $1 AND service = $2")
                .bind(agent_id)
                .bind(service)
                .fetch_optional(&mut *conn)
                .await?
                .is_some();
            if !in_scope {
                return refuse(out_of_scope(conn, agent_id, &label, service, now).await?);
            }
            match newest(conn, account_id, VAULT_NAMESPACE, service).await? {
                Some(row) if row.ciphertext.is_some() => (VAULT_NAMESPACE.to_owned(), row),
                _ => {
                    return refuse(ApiError::not_found(
                        format!("no credential named '{service}'"),
                        format!("ask the account owner to store it: agentkeys store {service}"),
                    ));
                }
            }
        }
    };
    let wrap: Option<Vec<u8>> = sqlx::query(
        "SELECT wrap FROM credential_wraps WHERE account_id = $1 AND namespace = $2 AND service = $3 \
         AND version = $4 AND device_id = $5",
    )
    .bind(account_id)
    .bind(&namespace)
    .bind(service)
    .bind(row.version)
    .bind(device_id)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.try_get("wrap"))
    .transpose()?;
    let Some(wrap) = wrap else {
        return refuse(ApiError::new(
            ErrorCode::Denied,
            format!("'{service}' version {} has no key wrapped for this device of agent {label}", row.version),
            format!("the account owner re-wraps it with: agentkeys scope {label} --add {service}"),
        ));
    };
    Ok(Ok(Applied::AgentCredential { namespace, row: CredentialRow { data_key_wrap: Some(wrap), ..row } }))
}

/// The refusal for a service outside the agent's scope: `APPROVAL_REQUIRED` naming the request
/// when the agent already asked for it, else `DENIED` saying how to ask.
async fn out_of_scope(
    conn: &mut AnyConnection,
    agent_id: &str,
    label: &str,
    service: &str,
    now: i64,
) -> Result<ApiError, sqlx::Error> {
    let pending: Option<String> = sqlx::query(
        "SELECT code FROM requests WHERE agent_id = $1 AND kind = 'access' AND status = 'pending' \
         AND scope = $2 AND expires_at_ms > $3 ORDER BY created_at_ms DESC LIMIT 1",
    )
    .bind(agent_id)
    .bind(service)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| row.try_get("code"))
    .transpose()?;
    Ok(match pending {
        Some(code) => ApiError::new(
            ErrorCode::ApprovalRequired,
            format!("agent {label} asked for '{service}' (request {code}); the account owner has not decided yet"),
            format!("wait for the owner to run: agentkeys approve {code}"),
        ),
        None => ApiError::new(
            ErrorCode::Denied,
            format!("agent {label} has no access to '{service}'"),
            format!("agentkeys scope {label} --add {service} (or ask for it with the request_access tool)"),
        ),
    })
}

/// The agent devices a new version of `namespace/service` must be wrapped to: every active
/// device of every active agent with the service in scope (vault), or of the one agent that owns
/// the namespace.
pub async fn recipients(
    conn: &mut AnyConnection,
    account_id: &str,
    namespace: &str,
    service: &str,
) -> Result<Vec<AgentDevice>, sqlx::Error> {
    let owner = namespace.strip_prefix("agent:").unwrap_or("");
    let rows = sqlx::query(
        "SELECT d.id, d.agent_id, d.sign_public, d.kx_public, d.certificate, d.created_at_ms FROM devices d \
         JOIN agents a ON a.id = d.agent_id \
         WHERE a.account_id = $1 AND a.status = 'active' AND d.revoked_at_ms IS NULL AND ( \
             ($2 = 'vault' AND EXISTS (SELECT 1 FROM agent_scope s WHERE s.agent_id = a.id AND s.service = $3)) \
             OR a.id = $4) \
         ORDER BY d.id",
    )
    .bind(account_id)
    .bind(namespace)
    .bind(service)
    .bind(owner)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|row| device_from_row(row, false)).collect()
}

fn device_from_row(row: &sqlx::any::AnyRow, revoked: bool) -> Result<AgentDevice, sqlx::Error> {
    Ok(AgentDevice {
        device_id: row.try_get("id")?,
        agent_id: row.try_get("agent_id")?,
        sign_public: b64::encode(row.try_get::<Vec<u8>, _>("sign_public")?),
        kx_public: b64::encode(row.try_get::<Vec<u8>, _>("kx_public")?),
        certificate: b64::encode(row.try_get::<Vec<u8>, _>("certificate")?),
        created_at_ms: row.try_get("created_at_ms")?,
        revoked,
    })
}

/// Every agent of the account with its aliases, scope, devices and when it was last seen.
pub async fn list(pool: &AnyPool, account_id: &str) -> Result<Vec<AgentSummary>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let agents =
        sqlx::query("SELECT id, label, tier, status, created_at_ms FROM agents WHERE account_id = $1 ORDER BY label")
            .bind(account_id)
            .fetch_all(&mut *conn)
            .await?;
    let mut out = Vec::with_capacity(agents.len());
    for agent in &agents {
        let agent_id: String = agent.try_get("id")?;
        let aliases = sqlx::query("SELECT alias FROM agent_aliases WHERE agent_id = $1 ORDER BY alias")
            .bind(&agent_id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.try_get("alias"))
            .collect::<Result<_, _>>()?;
        let devices = sqlx::query(
            "SELECT id, agent_id, sign_public, kx_public, certificate, created_at_ms, revoked_at_ms FROM devices \
             WHERE agent_id = $1 ORDER BY created_at_ms",
        )
        .bind(&agent_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| device_from_row(row, row.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some()))
        .collect::<Result<Vec<_>, _>>()?;
        let last_seen_ms: Option<i64> = sqlx::query(
            "SELECT MAX(l.ts_ms) AS seen FROM audit_log l WHERE l.actor IN (SELECT id FROM devices WHERE agent_id = $1)",
        )
        .bind(&agent_id)
        .fetch_one(&mut *conn)
        .await?
        .try_get("seen")?;
        out.push(AgentSummary {
            scope: scope_of(&mut conn, &agent_id).await?,
            agent_id,
            label: agent.try_get("label")?,
            aliases,
            tier: Tier::parse(&agent.try_get::<String, _>("tier")?).unwrap_or(Tier::Safe),
            status: agent.try_get("status")?,
            devices,
            created_at_ms: agent.try_get("created_at_ms")?,
            last_seen_ms,
        });
    }
    Ok(out)
}

/// An agent's label, tier and scope, for `whoami`.
pub async fn identity(pool: &AnyPool, agent_id: &str) -> Result<Option<(String, Tier, Vec<String>)>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let Some(row) =
        sqlx::query("SELECT label, tier FROM agents WHERE id = $1").bind(agent_id).fetch_optional(&mut *conn).await?
    else {
        return Ok(None);
    };
    let tier = Tier::parse(&row.try_get::<String, _>("tier")?).unwrap_or(Tier::Safe);
    Ok(Some((row.try_get("label")?, tier, scope_of(&mut conn, agent_id).await?)))
}

/// The names an agent may see: its private credentials and the vault's in its scope, as
/// `(namespace, service, version, updated_at)`. Names only; any tier may list.
pub async fn credentials_visible_to(
    pool: &AnyPool,
    account_id: &str,
    agent_id: &str,
) -> Result<Vec<(String, String, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT c.namespace, c.service, c.version, c.created_at_ms FROM credential_versions c \
         WHERE c.account_id = $1 AND c.ciphertext IS NOT NULL \
         AND (c.namespace = $2 OR (c.namespace = 'vault' AND EXISTS \
              (SELECT 1 FROM agent_scope s WHERE s.agent_id = $3 AND s.service = c.service))) \
         AND c.version = (SELECT MAX(m.version) FROM credential_versions m \
              WHERE m.account_id = c.account_id AND m.namespace = c.namespace AND m.service = c.service) \
         ORDER BY c.service, c.namespace",
    )
    .bind(account_id)
    .bind(agent_namespace(agent_id))
    .bind(agent_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((r.try_get("namespace")?, r.try_get("service")?, r.try_get("version")?, r.try_get("created_at_ms")?))
        })
        .collect()
}
