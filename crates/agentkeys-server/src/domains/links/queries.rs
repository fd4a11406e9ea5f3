//! The statements of the `links` and `link_wraps` tables.

use std::collections::BTreeSet;

use agentkeys_proto::agents::{AgentStatus, Tier};
use agentkeys_proto::namespace::Namespace;
use sqlx::{AnyConnection, AnyPool, Row as _};

use crate::db::parse_stored;
use crate::domains::credentials::queries::{SignerRow, StoredGrant, Wrap, grant_from_row};

/// A link code's key as the server keeps it: the public halves, certified by the account key,
/// and the scope's data keys wrapped to it (each [`Wrap::recipient`] is the link id).
#[derive(Debug, Clone)]
pub struct NewLink {
    pub link_id: String,
    pub sign_public: Vec<u8>,
    pub kx_public: Vec<u8>,
    pub certificate: Vec<u8>,
    /// The link key's signature over the account's signing key.
    pub account_binding: Vec<u8>,
    pub expires_at_ms: i64,
    pub wraps: Vec<Wrap>,
}

pub async fn insert(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    link: &NewLink,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO links (id, account_id, agent_id, sign_public, kx_public, certificate, created_at_ms, expires_at_ms, \
         account_binding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&link.link_id)
    .bind(account_id)
    .bind(agent_id)
    .bind(&link.sign_public)
    .bind(&link.kx_public)
    .bind(&link.certificate)
    .bind(now)
    .bind(link.expires_at_ms)
    .bind(&link.account_binding)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

pub async fn insert_wrap(conn: &mut AnyConnection, link_id: &str, wrap: &Wrap) -> Result<(), sqlx::Error> {
    upsert(conn, link_id, wrap, false).await
}

/// Stores the newest data key of a credential for a pending link code, replacing an older one.
pub async fn upsert_wrap(conn: &mut AnyConnection, wrap: &Wrap) -> Result<(), sqlx::Error> {
    upsert(conn, &wrap.recipient, wrap, true).await
}

async fn upsert(conn: &mut AnyConnection, link_id: &str, wrap: &Wrap, replace: bool) -> Result<(), sqlx::Error> {
    let grant = wrap.grant.as_ref();
    let on_conflict = if replace {
        " ON CONFLICT (link_id, namespace, service) DO UPDATE SET version = excluded.version, wrap = excluded.wrap, \
         grant_recipient = excluded.grant_recipient, grant_signer = excluded.grant_signer, \
         grant_signature = excluded.grant_signature"
    } else {
        ""
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO link_wraps (link_id, namespace, service, version, wrap, grant_recipient, grant_signer, \
         grant_signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8){on_conflict}"
    )))
    .bind(link_id)
    .bind(wrap.namespace.as_stored())
    .bind(&wrap.service)
    .bind(wrap.version)
    .bind(&wrap.wrap)
    .bind(grant.map(|g| g.recipient.as_str()))
    .bind(grant.map(|g| g.signer.as_str()))
    .bind(grant.map(|g| g.signature.as_slice()))
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// A link with its agent, as a redemption checks it.
#[derive(Debug, Clone)]
pub struct LinkState {
    pub account_id: String,
    pub agent_id: String,
    pub label: String,
    pub tier: Tier,
    pub status: AgentStatus,
    pub expires_at_ms: i64,
    pub redeemed: bool,
}

pub async fn state(conn: &mut AnyConnection, link_id: &str) -> Result<Option<LinkState>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT l.account_id, l.agent_id, l.expires_at_ms, l.redeemed_at_ms, a.label, a.tier, a.status \
         FROM links l JOIN agents a ON a.id = l.agent_id WHERE l.id = $1",
    )
    .bind(link_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(LinkState {
        account_id: row.try_get("account_id")?,
        agent_id: row.try_get("agent_id")?,
        label: row.try_get("label")?,
        tier: parse_stored("agents.tier", &row.try_get::<String, _>("tier")?, Tier::parse)?,
        status: parse_stored("agents.status", &row.try_get::<String, _>("status")?, AgentStatus::parse)?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        redeemed: row.try_get::<Option<i64>, _>("redeemed_at_ms")?.is_some(),
    }))
}

/// The versions the link code carries a wrap for: `(namespace, service, version)`.
pub async fn wrapped_versions(
    conn: &mut AnyConnection,
    link_id: &str,
) -> Result<BTreeSet<(Namespace, String, i64)>, sqlx::Error> {
    sqlx::query("SELECT namespace, service, version FROM link_wraps WHERE link_id = $1")
        .bind(link_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            let namespace =
                parse_stored("link_wraps.namespace", &row.try_get::<String, _>("namespace")?, Namespace::parse)?;
            Ok((namespace, row.try_get("service")?, row.try_get("version")?))
        })
        .collect()
}

/// Marks the code used and deletes what it carried.
pub async fn mark_redeemed(conn: &mut AnyConnection, link_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE links SET redeemed_at_ms = $1 WHERE id = $2")
        .bind(now)
        .bind(link_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM link_wraps WHERE link_id = $1").bind(link_id).execute(&mut *conn).await.map(|_| ())
}

/// Expires the agent's unused codes now.
pub async fn expire_unredeemed_of_agent(conn: &mut AnyConnection, agent_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE links SET expires_at_ms = $1 WHERE agent_id = $2 AND redeemed_at_ms IS NULL AND expires_at_ms > $1",
    )
    .bind(now)
    .bind(agent_id)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Deletes what the agent's pending link codes carry of one credential (its scope lost it).
pub async fn delete_wrap_of_agent(
    conn: &mut AnyConnection,
    agent_id: &str,
    namespace: &Namespace,
    service: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM link_wraps WHERE namespace = $1 AND service = $2 \
         AND link_id IN (SELECT id FROM links WHERE agent_id = $3)",
    )
    .bind(namespace.as_stored())
    .bind(service)
    .bind(agent_id)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

pub async fn delete_wraps_of_agent(conn: &mut AnyConnection, agent_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM link_wraps WHERE link_id IN (SELECT id FROM links WHERE agent_id = $1)")
        .bind(agent_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// The link key and its certificate, as a redemption verifies them.
#[derive(Debug, Clone)]
pub struct LinkKeys {
    pub account_id: String,
    pub agent_id: String,
    pub sign_public: [u8; 32],
    pub kx_public: [u8; 32],
    pub account_signature: [u8; 64],
}

fn fixed<const N: usize>(row: &sqlx::any::AnyRow, column: &'static str) -> Result<[u8; N], sqlx::Error> {
    row.try_get::<Vec<u8>, _>(column)?
        .try_into()
        .map_err(|_| sqlx::Error::Decode(format!("links.{column} has the wrong length").into()))
}

pub async fn keys(pool: &AnyPool, link_id: &str) -> Result<Option<LinkKeys>, sqlx::Error> {
    let Some(row) =
        sqlx::query("SELECT account_id, agent_id, sign_public, kx_public, certificate FROM links WHERE id = $1")
            .bind(link_id)
            .fetch_optional(pool)
            .await?
    else {
        return Ok(None);
    };
    Ok(Some(LinkKeys {
        account_id: row.try_get("account_id")?,
        agent_id: row.try_get("agent_id")?,
        sign_public: fixed(&row, "sign_public")?,
        kx_public: fixed(&row, "kx_public")?,
        account_signature: fixed(&row, "certificate")?,
    }))
}

/// What `GET /v1/links/{id}` shows of a usable code.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub account_id: String,
    pub account_sign_public: Vec<u8>,
    pub agent_id: String,
    pub label: String,
    pub tier: Tier,
    pub certificate: Vec<u8>,
    pub account_binding: Option<Vec<u8>>,
    pub expires_at_ms: i64,
    pub redeemed: bool,
    pub wraps: Vec<LinkWrap>,
}

/// One key a link code carries, with its grant and the grant's signer.
#[derive(Debug, Clone)]
pub struct LinkWrap {
    pub namespace: String,
    pub service: String,
    pub version: i64,
    pub wrap: Vec<u8>,
    pub grant: Option<(StoredGrant, Option<SignerRow>)>,
}

pub async fn info(pool: &AnyPool, link_id: &str) -> Result<Option<LinkInfo>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let Some(row) = sqlx::query(
        "SELECT l.account_id, l.agent_id, l.certificate, l.account_binding, l.expires_at_ms, l.redeemed_at_ms, \
                a.label, a.tier, c.sign_public AS account_sign FROM links l JOIN agents a ON a.id = l.agent_id \
         JOIN accounts c ON c.id = l.account_id WHERE l.id = $1",
    )
    .bind(link_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let account_id: String = row.try_get("account_id")?;
    // A link's keys are granted by one master device or a few: each is looked up once.
    let mut signers = std::collections::HashMap::new();
    let mut wraps = Vec::new();
    for w in sqlx::query(
        "SELECT namespace, service, version, wrap, grant_recipient, grant_signer, grant_signature FROM link_wraps \
         WHERE link_id = $1",
    )
    .bind(link_id)
    .fetch_all(&mut *conn)
    .await?
    {
        let grant = match grant_from_row(&w)? {
            Some(grant) => {
                if !signers.contains_key(&grant.signer) {
                    let signer =
                        crate::domains::credentials::queries::signer(&mut conn, &account_id, &grant.signer).await?;
                    signers.insert(grant.signer.clone(), signer);
                }
                let signer = signers[&grant.signer].clone();
                Some((grant, signer))
            }
            None => None,
        };
        wraps.push(LinkWrap {
            namespace: w.try_get("namespace")?,
            service: w.try_get("service")?,
            version: w.try_get("version")?,
            wrap: w.try_get("wrap")?,
            grant,
        });
    }
    Ok(Some(LinkInfo {
        account_id,
        account_sign_public: row.try_get("account_sign")?,
        agent_id: row.try_get("agent_id")?,
        label: row.try_get("label")?,
        tier: parse_stored("agents.tier", &row.try_get::<String, _>("tier")?, Tier::parse)?,
        certificate: row.try_get("certificate")?,
        account_binding: row.try_get("account_binding")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        redeemed: row.try_get::<Option<i64>, _>("redeemed_at_ms")?.is_some(),
        wraps,
    }))
}

/// Deletes every link code that expired before `before`, and its wraps.
pub async fn delete_expired(conn: &mut AnyConnection, before: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM link_wraps WHERE link_id IN (SELECT id FROM links WHERE expires_at_ms < $1)")
        .bind(before)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM links WHERE expires_at_ms < $1").bind(before).execute(&mut *conn).await.map(|_| ())
}
