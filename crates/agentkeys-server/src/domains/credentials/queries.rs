//! The statements of the `credential_versions` and `credential_wraps` tables.

use std::collections::HashMap;

use agentkeys_proto::namespace::Namespace;
use agentkeys_proto::types::VAULT_NAMESPACE;
use sqlx::{AnyConnection, AnyPool, Row as _};

use crate::db::{Backend, parse_stored};

/// A writer's signature on one wrap (docs/protocol.md, "Grants"): whom it granted the key to,
/// which master device signed, and the signature. The server stores and relays it; readers check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGrant {
    pub recipient: String,
    pub signer: String,
    pub signature: Vec<u8>,
}

/// The master device that signed a grant, as a reader needs it to check the certificate.
#[derive(Debug, Clone)]
pub struct SignerRow {
    pub device_id: String,
    pub label: String,
    pub sign_public: Vec<u8>,
    pub kx_public: Vec<u8>,
    pub certificate: Vec<u8>,
}

impl SignerRow {
    /// The signer columns a statement joined as `d` (`signer_*`); `None` when nothing matched.
    fn from_row(row: &sqlx::any::AnyRow, device_id: Option<String>) -> Result<Option<Self>, sqlx::Error> {
        let (Some(device_id), Some(label)) = (device_id, row.try_get::<Option<String>, _>("signer_label")?) else {
            return Ok(None);
        };
        Ok(Some(Self {
            device_id,
            label,
            sign_public: row.try_get("signer_sign_public")?,
            kx_public: row.try_get("signer_kx_public")?,
            certificate: row.try_get("signer_certificate")?,
        }))
    }
}

/// The columns of a version read with [`VERSION_JOINS`].
const VERSION_COLUMNS: &str = "c.version, c.ciphertext, c.data_key_wrap, c.created_at_ms, c.created_by, c.flags, \
    c.grant_signer, c.grant_signature, a.sign_public AS account_sign_public, d.label AS signer_label, \
    d.sign_public AS signer_sign_public, d.kx_public AS signer_kx_public, d.certificate AS signer_certificate";
/// The account (its signing key) and the master device that signed the account-key wrap.
const VERSION_JOINS: &str = "JOIN accounts a ON a.id = c.account_id \
    LEFT JOIN devices d ON d.id = c.grant_signer AND d.kind = 'master'";

/// One stored version of a credential (`ciphertext` is `None` for a removal).
#[derive(Debug, Clone)]
pub struct CredentialRow {
    pub version: i64,
    pub ciphertext: Option<Vec<u8>>,
    pub data_key_wrap: Option<Vec<u8>>,
    pub created_at_ms: i64,
    pub created_by: String,
    pub flags: i64,
    pub account_sign_public: Vec<u8>,
    /// The account-key wrap's grant and its signer; `None` for a first-wave (unsigned) version.
    pub grant: Option<(StoredGrant, Option<SignerRow>)>,
}

impl CredentialRow {
    fn from_row(row: &sqlx::any::AnyRow, account_id: &str) -> Result<Self, sqlx::Error> {
        let signer: Option<String> = row.try_get("grant_signer")?;
        let signature: Option<Vec<u8>> = row.try_get("grant_signature")?;
        let grant = match (signer, signature) {
            (Some(signer), Some(signature)) => {
                let device = SignerRow::from_row(row, Some(signer.clone()))?;
                Some((StoredGrant { recipient: account_id.to_owned(), signer, signature }, device))
            }
            _ => None,
        };
        Ok(Self {
            version: row.try_get("version")?,
            ciphertext: row.try_get("ciphertext")?,
            data_key_wrap: row.try_get("data_key_wrap")?,
            created_at_ms: row.try_get("created_at_ms")?,
            created_by: row.try_get("created_by")?,
            flags: row.try_get("flags")?,
            account_sign_public: row.try_get("account_sign_public")?,
            grant,
        })
    }

    /// The version as a reader gets it; `None` for a removal.
    pub fn sealed(self) -> Option<SealedVersion> {
        Some(SealedVersion {
            version: self.version,
            ciphertext: self.ciphertext?,
            data_key_wrap: self.data_key_wrap?,
            created_at_ms: self.created_at_ms,
            created_by: self.created_by,
            flags: self.flags,
            account_sign_public: self.account_sign_public,
            grant: self.grant,
            released: false,
        })
    }
}

/// A live (not removed) version with the data key wrapped for its reader, and that wrap's grant.
#[derive(Debug, Clone)]
pub struct SealedVersion {
    pub version: i64,
    pub ciphertext: Vec<u8>,
    pub data_key_wrap: Vec<u8>,
    pub created_at_ms: i64,
    pub created_by: String,
    pub flags: i64,
    pub account_sign_public: Vec<u8>,
    pub grant: Option<(StoredGrant, Option<SignerRow>)>,
    /// Served through a release (one approved use or span): the reader keeps no copy.
    pub released: bool,
}

/// A data key wrapped to one recipient (an agent device, or a link key), for one version, with
/// the grant its writer signed (`None` only for first-wave rows).
#[derive(Debug, Clone)]
pub struct Wrap {
    pub namespace: Namespace,
    pub service: String,
    pub version: i64,
    pub recipient: String,
    pub wrap: Vec<u8>,
    pub grant: Option<StoredGrant>,
}

/// The columns that store a wrap's grant, bound in this order after the wrap's own.
fn grant_binds(grant: &Option<StoredGrant>) -> (Option<&str>, Option<&str>, Option<&[u8]>) {
    match grant {
        Some(g) => (Some(g.recipient.as_str()), Some(g.signer.as_str()), Some(g.signature.as_slice())),
        None => (None, None, None),
    }
}

/// A wrap's grant from its `grant_*` columns.
pub fn grant_from_row(row: &sqlx::any::AnyRow) -> Result<Option<StoredGrant>, sqlx::Error> {
    let recipient: Option<String> = row.try_get("grant_recipient")?;
    let signer: Option<String> = row.try_get("grant_signer")?;
    let signature: Option<Vec<u8>> = row.try_get("grant_signature")?;
    Ok(match (recipient, signer, signature) {
        (Some(recipient), Some(signer), Some(signature)) => Some(StoredGrant { recipient, signer, signature }),
        _ => None,
    })
}

/// The newest version of a credential, removed or not.
pub async fn newest(
    conn: &mut AnyConnection,
    account_id: &str,
    namespace: &Namespace,
    service: &str,
) -> Result<Option<CredentialRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VERSION_COLUMNS} FROM credential_versions c {VERSION_JOINS} \
         WHERE c.account_id = $1 AND c.namespace = $2 AND c.service = $3 ORDER BY c.version DESC LIMIT 1"
    )))
    .bind(account_id)
    .bind(namespace.as_stored())
    .bind(service)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| CredentialRow::from_row(&row, account_id))
    .transpose()
}

/// The newest live version of each `(account, namespace, service)`, in one statement; `None`
/// where there is none or it was removed.
pub async fn newest_many(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &[(&str, String, &str)],
) -> Result<Vec<Option<SealedVersion>>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let tuples: Vec<String> = (0..keys.len()).map(|i| backend.row_placeholders(3 * i + 1, 3)).collect();
    let sql = format!(
        "SELECT c.account_id, c.namespace, c.service, {VERSION_COLUMNS} FROM credential_versions c {VERSION_JOINS} \
         WHERE (c.account_id, c.namespace, c.service) IN ({}) AND c.version = ( \
             SELECT MAX(m.version) FROM credential_versions m \
             WHERE m.account_id = c.account_id AND m.namespace = c.namespace AND m.service = c.service)",
        tuples.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for (account, namespace, service) in keys {
        query = query.bind(*account).bind(namespace.as_str()).bind(*service);
    }
    let mut found = HashMap::new();
    for row in query.fetch_all(&mut *conn).await? {
        let key: (String, String, String) =
            (row.try_get("account_id")?, row.try_get("namespace")?, row.try_get("service")?);
        let version = CredentialRow::from_row(&row, &key.0)?;
        found.insert(key, version);
    }
    // One batch may read the same credential many times: every one of them gets it.
    Ok(keys
        .iter()
        .map(|(a, n, s)| {
            found.get(&((*a).to_owned(), n.clone(), (*s).to_owned())).cloned().and_then(CredentialRow::sealed)
        })
        .collect())
}

/// A new version row; `ciphertext` and `data_key_wrap` are `None` for a removal.
#[derive(Debug, Clone)]
pub struct NewVersionRow<'a> {
    pub account_id: &'a str,
    pub namespace: &'a Namespace,
    pub service: &'a str,
    pub version: i64,
    pub ciphertext: Option<&'a [u8]>,
    pub data_key_wrap: Option<&'a [u8]>,
    pub created_by: &'a str,
    pub flags: i64,
    /// The account-key wrap's grant: `(signer, signature)`; `None` for a removal.
    pub grant: Option<(&'a str, &'a [u8])>,
}

pub async fn insert_version(conn: &mut AnyConnection, row: &NewVersionRow<'_>, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO credential_versions (account_id, namespace, service, version, ciphertext, data_key_wrap, \
         created_at_ms, created_by, flags, grant_signer, grant_signature) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(row.account_id)
    .bind(row.namespace.as_stored())
    .bind(row.service)
    .bind(row.version)
    .bind(row.ciphertext)
    .bind(row.data_key_wrap)
    .bind(now)
    .bind(row.created_by)
    .bind(row.flags)
    .bind(row.grant.map(|(signer, _)| signer))
    .bind(row.grant.map(|(_, signature)| signature))
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Stores a wrap for a device, replacing one it had for the same version.
pub async fn upsert_wrap(conn: &mut AnyConnection, account_id: &str, wrap: &Wrap) -> Result<(), sqlx::Error> {
    let (grant_recipient, grant_signer, grant_signature) = grant_binds(&wrap.grant);
    sqlx::query(
        "INSERT INTO credential_wraps (account_id, namespace, service, version, device_id, wrap, grant_recipient, \
         grant_signer, grant_signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (account_id, namespace, service, version, device_id) DO UPDATE SET wrap = excluded.wrap, \
         grant_recipient = excluded.grant_recipient, grant_signer = excluded.grant_signer, \
         grant_signature = excluded.grant_signature",
    )
    .bind(account_id)
    .bind(wrap.namespace.as_stored())
    .bind(&wrap.service)
    .bind(wrap.version)
    .bind(&wrap.recipient)
    .bind(&wrap.wrap)
    .bind(grant_recipient)
    .bind(grant_signer)
    .bind(grant_signature)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// The data key of one version wrapped to `device_id`, if it has one, with its grant and signer.
pub async fn wrap_for(
    conn: &mut AnyConnection,
    account_id: &str,
    namespace: &Namespace,
    service: &str,
    version: i64,
    device_id: &str,
) -> Result<Option<(Vec<u8>, Option<(StoredGrant, Option<SignerRow>)>)>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT w.wrap, w.grant_recipient, w.grant_signer, w.grant_signature, d.label AS signer_label, \
                d.sign_public AS signer_sign_public, d.kx_public AS signer_kx_public, \
                d.certificate AS signer_certificate \
         FROM credential_wraps w LEFT JOIN devices d ON d.id = w.grant_signer AND d.kind = 'master' \
         WHERE w.account_id = $1 AND w.namespace = $2 AND w.service = $3 AND w.version = $4 AND w.device_id = $5",
    )
    .bind(account_id)
    .bind(namespace.as_stored())
    .bind(service)
    .bind(version)
    .bind(device_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let grant = match grant_from_row(&row)? {
        Some(grant) => {
            let signer = SignerRow::from_row(&row, Some(grant.signer.clone()))?;
            Some((grant, signer))
        }
        None => None,
    };
    Ok(Some((row.try_get("wrap")?, grant)))
}

/// A master device of the account, as the signer of grants.
pub async fn signer(
    conn: &mut AnyConnection,
    account_id: &str,
    device_id: &str,
) -> Result<Option<SignerRow>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT label AS signer_label, sign_public AS signer_sign_public, kx_public AS signer_kx_public, \
                certificate AS signer_certificate FROM devices WHERE id = $1 AND account_id = $2 AND kind = 'master'",
    )
    .bind(device_id)
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    SignerRow::from_row(&row, Some(device_id.to_owned()))
}

/// Deletes every wrap of a vault service held by a device of `agent_id` (its scope lost it).
pub async fn delete_vault_wraps_of_agent(
    conn: &mut AnyConnection,
    account_id: &str,
    service: &str,
    agent_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM credential_wraps WHERE account_id = $1 AND namespace = $2 AND service = $3 \
         AND device_id IN (SELECT id FROM devices WHERE agent_id = $4)",
    )
    .bind(account_id)
    .bind(VAULT_NAMESPACE)
    .bind(service)
    .bind(agent_id)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Deletes what only `agent_id` could read: every wrap to its devices, and every version of its
/// private namespace.
pub async fn delete_agent_private(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM credential_wraps WHERE device_id IN (SELECT id FROM devices WHERE agent_id = $1)")
        .bind(agent_id)
        .execute(&mut *conn)
        .await?;
    let private = Namespace::Agent(agent_id.to_owned()).as_stored();
    for sql in [
        "DELETE FROM credential_wraps WHERE account_id = $1 AND namespace = $2",
        "DELETE FROM credential_versions WHERE account_id = $1 AND namespace = $2",
    ] {
        sqlx::query(sql).bind(account_id).bind(&private).execute(&mut *conn).await?;
    }
    Ok(())
}

/// One line of a listing: `(namespace, service, version, updated_at)`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub namespace: Namespace,
    pub service: String,
    pub version: i64,
    pub updated_at_ms: i64,
}

fn listed(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<Listed>, sqlx::Error> {
    rows.iter()
        .map(|r| {
            Ok(Listed {
                namespace: parse_stored(
                    "credential_versions.namespace",
                    &r.try_get::<String, _>("namespace")?,
                    Namespace::parse,
                )?,
                service: r.try_get("service")?,
                version: r.try_get("version")?,
                updated_at_ms: r.try_get("created_at_ms")?,
            })
        })
        .collect()
}

/// The current (not removed) credentials of an account.
pub async fn list(pool: &AnyPool, account_id: &str) -> Result<Vec<Listed>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT c.namespace, c.service, c.version, c.created_at_ms FROM credential_versions c \
         WHERE c.account_id = $1 AND c.ciphertext IS NOT NULL AND c.version = ( \
             SELECT MAX(m.version) FROM credential_versions m \
             WHERE m.account_id = c.account_id AND m.namespace = c.namespace AND m.service = c.service) \
         ORDER BY c.namespace, c.service",
    )
    .bind(account_id)
    .fetch_all(pool)
    .await?;
    listed(rows)
}

/// The names an agent may see: its private credentials and the vault's in its scope. Names
/// only; any tier may list.
pub async fn list_visible_to(pool: &AnyPool, account_id: &str, agent_id: &str) -> Result<Vec<Listed>, sqlx::Error> {
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
    .bind(Namespace::Agent(agent_id.to_owned()).as_stored())
    .bind(agent_id)
    .fetch_all(pool)
    .await?;
    listed(rows)
}

/// The services of `namespace` whose newest version is live (not removed).
pub async fn services_in(
    conn: &mut AnyConnection,
    account_id: &str,
    namespace: &Namespace,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query(
        "SELECT c.service FROM credential_versions c WHERE c.account_id = $1 AND c.namespace = $2 \
         AND c.ciphertext IS NOT NULL AND c.version = (SELECT MAX(m.version) FROM credential_versions m \
             WHERE m.account_id = c.account_id AND m.namespace = c.namespace AND m.service = c.service) \
         ORDER BY c.service",
    )
    .bind(account_id)
    .bind(namespace.as_stored())
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| row.try_get("service"))
    .collect()
}

/// How many versions (removals included) a credential has had.
pub async fn history_len(
    pool: &AnyPool,
    account_id: &str,
    namespace: &Namespace,
    service: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "SELECT COUNT(*) AS n FROM credential_versions WHERE account_id = $1 AND namespace = $2 AND service = $3",
    )
    .bind(account_id)
    .bind(namespace.as_stored())
    .bind(service)
    .fetch_one(pool)
    .await?
    .try_get("n")
}

/// Deletes every wrap of a credential to agent devices and link codes, all versions: it was
/// marked high-value, and from now on only releases carry its key.
pub async fn delete_agent_wraps_of(
    conn: &mut AnyConnection,
    account_id: &str,
    namespace: &Namespace,
    service: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM credential_wraps WHERE account_id = $1 AND namespace = $2 AND service = $3")
        .bind(account_id)
        .bind(namespace.as_stored())
        .bind(service)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "DELETE FROM link_wraps WHERE namespace = $1 AND service = $2 \
         AND link_id IN (SELECT id FROM links WHERE account_id = $3)",
    )
    .bind(namespace.as_stored())
    .bind(service)
    .bind(account_id)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}
