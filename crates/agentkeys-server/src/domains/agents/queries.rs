//! The statements of the `agents`, `agent_scope` and `agent_aliases` tables, and of the agent
//! rows of `devices`.

use std::collections::HashMap;

use agentkeys_proto::agents::{AgentDevice, AgentStatus, AgentSummary, RecipientKind, Tier};
use agentkeys_proto::b64;
use agentkeys_proto::namespace::Namespace;
use sqlx::{AnyConnection, AnyPool, Row as _};

use crate::db::parse_stored;

fn tier(row: &sqlx::any::AnyRow) -> Result<Tier, sqlx::Error> {
    parse_stored("agents.tier", &row.try_get::<String, _>("tier")?, Tier::parse)
}

fn status_of(row: &sqlx::any::AnyRow) -> Result<AgentStatus, sqlx::Error> {
    parse_stored("agents.status", &row.try_get::<String, _>("status")?, AgentStatus::parse)
}

/// An agent as its policy needs it.
#[derive(Debug, Clone)]
pub struct AgentRow {
    pub label: String,
    pub tier: Tier,
    pub status: AgentStatus,
}

pub async fn get(conn: &mut AnyConnection, account_id: &str, agent_id: &str) -> Result<Option<AgentRow>, sqlx::Error> {
    sqlx::query("SELECT label, tier, status FROM agents WHERE id = $1 AND account_id = $2")
        .bind(agent_id)
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| Ok(AgentRow { label: row.try_get("label")?, tier: tier(&row)?, status: status_of(&row)? }))
        .transpose()
}

pub async fn status(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
) -> Result<Option<AgentStatus>, sqlx::Error> {
    Ok(get(conn, account_id, agent_id).await?.map(|agent| agent.status))
}

pub async fn insert(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    label: &str,
    tier: Tier,
    status: AgentStatus,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agents (id, account_id, label, tier, status, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(agent_id)
    .bind(account_id)
    .bind(label)
    .bind(tier.as_str())
    .bind(status.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Sets status and tier of an agent that exists (bringing back a revoked one).
pub async fn revive(
    conn: &mut AnyConnection,
    agent_id: &str,
    tier: Tier,
    status: AgentStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE agents SET status = $1, tier = $2 WHERE id = $3")
        .bind(status.as_str())
        .bind(tier.as_str())
        .bind(agent_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

pub async fn set_status(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    status: AgentStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE agents SET status = $1 WHERE id = $2 AND account_id = $3")
        .bind(status.as_str())
        .bind(agent_id)
        .bind(account_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// An agent still waiting for its link code becomes active (a device joined it).
pub async fn activate_pending(conn: &mut AnyConnection, agent_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE agents SET status = $1 WHERE id = $2 AND status = $3")
        .bind(AgentStatus::Active.as_str())
        .bind(agent_id)
        .bind(AgentStatus::Pending.as_str())
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Sets the tier; `false` when no such agent is in the account.
pub async fn set_tier(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    tier: Tier,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE agents SET tier = $1 WHERE id = $2 AND account_id = $3")
        .bind(tier.as_str())
        .bind(agent_id)
        .bind(account_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(done == 1)
}

/// Whether `name` is an alias of some agent of the account.
pub async fn is_alias(conn: &mut AnyConnection, account_id: &str, name: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 AS taken FROM agent_aliases WHERE account_id = $1 AND alias = $2")
        .bind(account_id)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
}

/// The agent `name` names in the account (its id, label or alias), if any.
pub async fn resolve_name(
    conn: &mut AnyConnection,
    account_id: &str,
    name: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query(
        "SELECT id AS agent_id FROM agents WHERE account_id = $1 AND (id = $2 OR label = $2) \
         UNION ALL SELECT agent_id FROM agent_aliases WHERE account_id = $1 AND alias = $2",
    )
    .bind(account_id)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| row.try_get("agent_id"))
    .transpose()
}

/// Whether `name` already names an agent of the account (as id, label or alias).
pub async fn names_an_agent(conn: &mut AnyConnection, account_id: &str, name: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT 1 AS taken FROM agents WHERE account_id = $1 AND (label = $2 OR id = $2) \
         UNION ALL SELECT 1 AS taken FROM agent_aliases WHERE account_id = $1 AND alias = $2",
    )
    .bind(account_id)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?
    .is_some())
}

/// The agent's aliases (a rule's `agents` glob matches them as well as its id and label).
pub async fn aliases_of(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT alias FROM agent_aliases WHERE account_id = $1 AND agent_id = $2")
        .bind(account_id)
        .bind(agent_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|row| row.try_get("alias")).collect()
}

pub async fn insert_alias(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    alias: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO agent_aliases (account_id, alias, agent_id) VALUES ($1, $2, $3)")
        .bind(account_id)
        .bind(alias)
        .bind(agent_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

pub async fn in_scope(conn: &mut AnyConnection, agent_id: &str, service: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 AS yes FROM agent_scope WHERE agent_id = $1 AND service = $2")
        .bind(agent_id)
        .bind(service)
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
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

pub async fn add_scope(conn: &mut AnyConnection, agent_id: &str, service: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO agent_scope (agent_id, service) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(agent_id)
        .bind(service)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

pub async fn remove_scope(conn: &mut AnyConnection, agent_id: &str, service: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM agent_scope WHERE agent_id = $1 AND service = $2")
        .bind(agent_id)
        .bind(service)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Forgets the agent's scope and aliases (teardown; `agent create` again starts from its new scope).
pub async fn clear_scope(conn: &mut AnyConnection, agent_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM agent_scope WHERE agent_id = $1").bind(agent_id).execute(&mut *conn).await.map(|_| ())
}

pub async fn clear_aliases(conn: &mut AnyConnection, agent_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM agent_aliases WHERE agent_id = $1").bind(agent_id).execute(&mut *conn).await.map(|_| ())
}

/// The agent's devices that are not revoked.
pub async fn active_devices(conn: &mut AnyConnection, agent_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT id FROM devices WHERE agent_id = $1 AND revoked_at_ms IS NULL")
        .bind(agent_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get("id"))
        .collect()
}

pub async fn revoke_devices(conn: &mut AnyConnection, agent_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE devices SET revoked_at_ms = $1 WHERE agent_id = $2 AND revoked_at_ms IS NULL")
        .bind(now)
        .bind(agent_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

fn device_from_row(row: &sqlx::any::AnyRow) -> Result<AgentDevice, sqlx::Error> {
    Ok(AgentDevice {
        device_id: row.try_get("id")?,
        kind: RecipientKind::Device,
        agent_id: row.try_get("agent_id")?,
        sign_public: b64::encode(row.try_get::<Vec<u8>, _>("sign_public")?),
        kx_public: b64::encode(row.try_get::<Vec<u8>, _>("kx_public")?),
        certificate: b64::encode(row.try_get::<Vec<u8>, _>("certificate")?),
        created_at_ms: row.try_get("created_at_ms")?,
        revoked: row.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some(),
    })
}

/// A pending link code as a recipient: its key receives data keys until a daemon redeems it.
fn link_from_row(row: &sqlx::any::AnyRow) -> Result<AgentDevice, sqlx::Error> {
    Ok(AgentDevice {
        device_id: row.try_get("id")?,
        kind: RecipientKind::Link,
        agent_id: row.try_get("agent_id")?,
        sign_public: b64::encode(row.try_get::<Vec<u8>, _>("sign_public")?),
        kx_public: b64::encode(row.try_get::<Vec<u8>, _>("kx_public")?),
        certificate: b64::encode(row.try_get::<Vec<u8>, _>("certificate")?),
        created_at_ms: row.try_get("created_at_ms")?,
        revoked: false,
    })
}

/// What a new version of `namespace/service` must be wrapped to: every active device of every
/// active agent with the service in scope (vault), or of the one agent that owns the namespace —
/// and the key of every link code minted for such an agent and not redeemed yet, so a credential
/// stored between `agent create` and `link` reaches the linked device too.
pub async fn recipients(
    conn: &mut AnyConnection,
    account_id: &str,
    namespace: &Namespace,
    service: &str,
    now: i64,
) -> Result<Vec<AgentDevice>, sqlx::Error> {
    let reads = "($2 = 'vault' AND EXISTS (SELECT 1 FROM agent_scope s WHERE s.agent_id = a.id AND s.service = $3)) \
                 OR a.id = $4";
    let devices = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT d.id, d.agent_id, d.sign_public, d.kx_public, d.certificate, d.created_at_ms, d.revoked_at_ms \
         FROM devices d JOIN agents a ON a.id = d.agent_id \
         WHERE a.account_id = $1 AND a.status = 'active' AND d.revoked_at_ms IS NULL AND ({reads}) ORDER BY d.id"
    )))
    .bind(account_id)
    .bind(namespace.as_stored())
    .bind(service)
    .bind(namespace.agent_id().unwrap_or(""))
    .fetch_all(&mut *conn)
    .await?;
    let links = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT l.id, l.agent_id, l.sign_public, l.kx_public, l.certificate, l.created_at_ms FROM links l \
         JOIN agents a ON a.id = l.agent_id \
         WHERE a.account_id = $1 AND a.status IN ('pending', 'active') AND l.redeemed_at_ms IS NULL \
         AND l.expires_at_ms >= $5 AND ({reads}) ORDER BY l.id"
    )))
    .bind(account_id)
    .bind(namespace.as_stored())
    .bind(service)
    .bind(namespace.agent_id().unwrap_or(""))
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    devices.iter().map(device_from_row).chain(links.iter().map(link_from_row)).collect()
}

/// Everything that receives one agent's data keys: its active devices and its pending link codes.
pub async fn agent_recipients(
    conn: &mut AnyConnection,
    agent_id: &str,
    now: i64,
) -> Result<Vec<AgentDevice>, sqlx::Error> {
    let devices = sqlx::query(
        "SELECT id, agent_id, sign_public, kx_public, certificate, created_at_ms, revoked_at_ms FROM devices \
         WHERE agent_id = $1 AND revoked_at_ms IS NULL ORDER BY id",
    )
    .bind(agent_id)
    .fetch_all(&mut *conn)
    .await?;
    let links = sqlx::query(
        "SELECT id, agent_id, sign_public, kx_public, certificate, created_at_ms FROM links \
         WHERE agent_id = $1 AND redeemed_at_ms IS NULL AND expires_at_ms >= $2 ORDER BY id",
    )
    .bind(agent_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    devices.iter().map(device_from_row).chain(links.iter().map(link_from_row)).collect()
}

/// Every agent of the account with its aliases, scope, devices, pending link codes and when it
/// was last seen: six statements whatever the number of agents.
pub async fn list(pool: &AnyPool, account_id: &str, now: i64) -> Result<Vec<AgentSummary>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut aliases: HashMap<String, Vec<String>> = HashMap::new();
    for row in sqlx::query("SELECT agent_id, alias FROM agent_aliases WHERE account_id = $1 ORDER BY alias")
        .bind(account_id)
        .fetch_all(&mut *conn)
        .await?
    {
        aliases.entry(row.try_get("agent_id")?).or_default().push(row.try_get("alias")?);
    }
    let mut scopes: HashMap<String, Vec<String>> = HashMap::new();
    for row in sqlx::query(
        "SELECT s.agent_id, s.service FROM agent_scope s JOIN agents a ON a.id = s.agent_id \
         WHERE a.account_id = $1 ORDER BY s.service",
    )
    .bind(account_id)
    .fetch_all(&mut *conn)
    .await?
    {
        scopes.entry(row.try_get("agent_id")?).or_default().push(row.try_get("service")?);
    }
    let mut devices: HashMap<String, Vec<AgentDevice>> = HashMap::new();
    for row in sqlx::query(
        "SELECT id, agent_id, sign_public, kx_public, certificate, created_at_ms, revoked_at_ms FROM devices \
         WHERE account_id = $1 AND agent_id IS NOT NULL ORDER BY created_at_ms, id",
    )
    .bind(account_id)
    .fetch_all(&mut *conn)
    .await?
    {
        let device = device_from_row(&row)?;
        devices.entry(device.agent_id.clone()).or_default().push(device);
    }
    let mut links: HashMap<String, Vec<AgentDevice>> = HashMap::new();
    for row in sqlx::query(
        "SELECT id, agent_id, sign_public, kx_public, certificate, created_at_ms FROM links \
         WHERE account_id = $1 AND redeemed_at_ms IS NULL AND expires_at_ms >= $2 ORDER BY created_at_ms, id",
    )
    .bind(account_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?
    {
        let link = link_from_row(&row)?;
        links.entry(link.agent_id.clone()).or_default().push(link);
    }
    let mut last_seen: HashMap<String, i64> = HashMap::new();
    for row in sqlx::query(
        "SELECT d.agent_id, MAX(l.ts_ms) AS seen FROM audit_log l JOIN devices d ON d.id = l.actor \
         WHERE d.account_id = $1 AND d.agent_id IS NOT NULL GROUP BY d.agent_id",
    )
    .bind(account_id)
    .fetch_all(&mut *conn)
    .await?
    {
        if let Some(seen) = row.try_get::<Option<i64>, _>("seen")? {
            last_seen.insert(row.try_get("agent_id")?, seen);
        }
    }
    let agents =
        sqlx::query("SELECT id, label, tier, status, created_at_ms FROM agents WHERE account_id = $1 ORDER BY label")
            .bind(account_id)
            .fetch_all(&mut *conn)
            .await?;
    agents
        .iter()
        .map(|agent| {
            let agent_id: String = agent.try_get("id")?;
            Ok(AgentSummary {
                aliases: aliases.remove(&agent_id).unwrap_or_default(),
                scope: scopes.remove(&agent_id).unwrap_or_default(),
                devices: devices.remove(&agent_id).unwrap_or_default(),
                links: links.remove(&agent_id).unwrap_or_default(),
                last_seen_ms: last_seen.get(&agent_id).copied(),
                label: agent.try_get("label")?,
                tier: tier(agent)?,
                status: status_of(agent)?,
                created_at_ms: agent.try_get("created_at_ms")?,
                agent_id,
            })
        })
        .collect()
}

/// An agent's label, tier and scope, for `whoami`.
pub async fn identity(pool: &AnyPool, agent_id: &str) -> Result<Option<(String, Tier, Vec<String>)>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let Some(row) =
        sqlx::query("SELECT label, tier FROM agents WHERE id = $1").bind(agent_id).fetch_optional(&mut *conn).await?
    else {
        return Ok(None);
    };
    Ok(Some((row.try_get("label")?, tier(&row)?, scope_of(&mut conn, agent_id).await?)))
}

/// An agent's tier by id alone (the pairing's daemon has no account to name).
pub async fn tier_of(pool: &AnyPool, agent_id: &str) -> Result<Option<Tier>, sqlx::Error> {
    sqlx::query("SELECT tier FROM agents WHERE id = $1")
        .bind(agent_id)
        .fetch_optional(pool)
        .await?
        .map(|row| tier(&row))
        .transpose()
}
