//! The one storage layer over SQLite and PostgreSQL (PRODUCT.md §8), through sqlx's `Any` driver:
//! the same SQL text runs on both (positional `$N` parameters, `ON CONFLICT`, `RETURNING`), and
//! only the migrations differ. Reads go through a pool; all writes go through the single
//! connection owned by [`crate::engine::writer`]. The SQL of each domain lives with that domain.
//!
//! Everything replicas must agree on (sessions, nonces, versions, the audit chain) lives here, so
//! any number of servers on one PostgreSQL database behave as one.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions as _, Connection as _};

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

/// The file a SQLite URL names; `None` for PostgreSQL and for an in-memory database.
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
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
}

/// Reads a stored enum value; a value this version does not know is an error (the request fails
/// and the server log names the column), never a default.
pub fn parse_stored<T>(
    column: &'static str,
    text: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, sqlx::Error> {
    parse(text).ok_or_else(|| sqlx::Error::Decode(format!("unknown value {text:?} stored in {column}").into()))
}
