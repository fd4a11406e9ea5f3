//! The one storage layer over SQLite and PostgreSQL (PRODUCT.md §8), through sqlx's `Any` driver:
//! the same SQL text runs on both (positional `$N` parameters, `ON CONFLICT`, `RETURNING`), and
//! only the migrations differ. Reads go through a pool; all writes go through the single
//! connection owned by [`crate::writer`].
//!
//! Everything replicas must agree on (sessions, nonces, versions, the audit chain) lives here, so
//! any number of servers on one PostgreSQL database behave as one.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions as _, Connection as _, Row as _};

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            anyhow::bail!("unsupported --database-url scheme: use sqlite://PATH or postgres://USER@HOST/DB")
        }
    }
}

impl Backend {
    /// Placeholders for one row of `width` values starting at parameter `first` (1-based), for
    /// statements built at run time. SQLite gets anonymous `?`: it resolves each named `$N` with a
    /// linear scan, which makes a wide multi-row statement quadratic to parse.
    pub fn row_placeholders(self, first: usize, width: usize) -> String {
        let list: Vec<String> = (first..first + width).map(|n| self.placeholder(n)).collect();
        format!("({})", list.join(", "))
    }

    /// Parameter `n` (1-based) of a statement built at run time.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Backend::Sqlite => "?".to_owned(),
            Backend::Postgres => format!("${n}"),
        }
    }
}

/// The default database: `agentkeys.db` in the data directory, created on first start.
pub fn sqlite_url_for(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("agentkeys.db").display())
}

/// The database URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Connections to the database: a read pool, and how to open the writer's own connection.
#[derive(Clone)]
pub struct Db {
    pub backend: Backend,
    pub reads: AnyPool,
    /// Kept to reopen the writer's connection; holds the URL's password, so `Debug` skips it.
    options: AnyConnectOptions,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("backend", &self.backend).field("reads", &self.reads).finish_non_exhaustive()
    }
}

async fn sqlite_pragmas(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    // WAL lets readers run beside the writer; FULL makes every commit durable on power loss, which
    // the batched writer makes affordable; the busy timeout covers the WAL checkpoint.
    for pragma in [
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = FULL",
        "PRAGMA busy_timeout = 5000",
        "PRAGMA foreign_keys = ON",
    ] {
        sqlx::query(pragma).execute(&mut *conn).await?;
    }
    Ok(())
}

impl Db {
    /// Connects and runs the migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let redacted = redact_url(url);
        let options: AnyConnectOptions =
            url.parse().map_err(|e| anyhow::anyhow!("invalid --database-url {redacted}: {e}"))?;
        let options = options.disable_statement_logging();
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(5));
        if backend == Backend::Sqlite {
            pool_options = pool_options.after_connect(|conn, _meta| Box::pin(sqlite_pragmas(conn)));
        }
        let reads = pool_options.connect_lazy_with(options.clone());
        let db = Self { backend, reads, options };
        let mut conn = db
            .connect_writer()
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to the database at {redacted}: {e}"))?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&mut conn).await,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&mut conn).await,
        }
        .map_err(|e| anyhow::anyhow!("database migration failed on {redacted}: {e}"))?;
        conn.close().await?;
        Ok(db)
    }

    /// Opens a connection for the writer (SQLite gets its pragmas); also used to reconnect.
    pub async fn connect_writer(&self) -> Result<AnyConnection, sqlx::Error> {
        let mut conn = self.options.connect().await?;
        if self.backend == Backend::Sqlite {
            sqlite_pragmas(&mut conn).await?;
        }
        Ok(conn)
    }

    /// `SELECT 1`, for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.reads).await.map(|_| ())
    }

    pub async fn find_session(&self, token_hash: &[u8]) -> Result<Option<SessionRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT s.id, s.account_id, s.device_id, s.token_hash, s.created_at_ms, s.revoked_at_ms, \
                    d.label, d.kind, d.sign_public, d.agent_id \
             FROM sessions s JOIN devices d ON d.id = s.device_id WHERE s.token_hash = $1",
        )
        .bind(token_hash.to_vec())
        .fetch_optional(&self.reads)
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
                device_kind: r.try_get("kind")?,
                device_sign_public: r.try_get("sign_public")?,
                agent_id: r.try_get("agent_id")?,
            })
        })
        .transpose()
    }

    /// The current (not removed) credentials of an account: `(namespace, service, version, at)`.
    pub async fn list_credentials(&self, account_id: &str) -> Result<Vec<(String, String, i64, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT c.namespace, c.service, c.version, c.created_at_ms FROM credential_versions c \
             WHERE c.account_id = $1 AND c.ciphertext IS NOT NULL AND c.version = ( \
                 SELECT MAX(m.version) FROM credential_versions m \
                 WHERE m.account_id = c.account_id AND m.namespace = c.namespace AND m.service = c.service) \
             ORDER BY c.namespace, c.service",
        )
        .bind(account_id)
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok((r.try_get("namespace")?, r.try_get("service")?, r.try_get("version")?, r.try_get("created_at_ms")?))
            })
            .collect()
    }

    /// How many versions (removals included) a credential has had.
    pub async fn history_len(&self, account_id: &str, namespace: &str, service: &str) -> Result<i64, sqlx::Error> {
        sqlx::query(
            "SELECT COUNT(*) AS n FROM credential_versions WHERE account_id = $1 AND namespace = $2 AND service = $3",
        )
        .bind(account_id)
        .bind(namespace)
        .bind(service)
        .fetch_one(&self.reads)
        .await?
        .try_get("n")
    }

    /// An account's audit rows, oldest first.
    pub async fn audit_for_account(
        &self,
        account_id: &str,
        since_ms: i64,
        service: Option<&str>,
        agent: Option<&str>,
        limit: i64,
    ) -> Result<Vec<crate::audit::AuditRow>, sqlx::Error> {
        // Newest `limit` rows, returned oldest first.
        let rows = sqlx::query(
            "SELECT * FROM (SELECT seq, ts_ms, account_id, actor, session_id, action, namespace, service, outcome, code, \
                    presence, prev_hash, hash FROM audit_log \
                    WHERE account_id = $1 AND ts_ms >= $2 AND ($3 = '' OR service = $4) \
                    AND ($5 = '' OR actor IN (SELECT id FROM devices WHERE agent_id = $6)) \
                    ORDER BY seq DESC LIMIT $7) recent ORDER BY seq ASC",
        )
        .bind(account_id)
        .bind(since_ms)
        .bind(service.unwrap_or(""))
        .bind(service.unwrap_or(""))
        .bind(agent.unwrap_or(""))
        .bind(agent.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(crate::audit::AuditRow::from_row).collect()
    }
}

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
    pub device_kind: String,
    pub device_sign_public: Vec<u8>,
    /// Set for agent devices.
    pub agent_id: Option<String>,
}

/// One stored version of a credential (`ciphertext` is `None` for a removal).
#[derive(Debug, Clone)]
pub struct CredentialRow {
    pub version: i64,
    pub ciphertext: Option<Vec<u8>>,
    pub data_key_wrap: Option<Vec<u8>>,
    pub created_at_ms: i64,
    pub created_by: String,
}

impl CredentialRow {
    pub fn from_row(row: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            version: row.try_get("version")?,
            ciphertext: row.try_get("ciphertext")?,
            data_key_wrap: row.try_get("data_key_wrap")?,
            created_at_ms: row.try_get("created_at_ms")?,
            created_by: row.try_get("created_by")?,
        })
    }
}
