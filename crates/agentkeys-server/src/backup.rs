//! `agentkeys-server backup --to FILE` and `restore --from FILE --data-dir DIR` (PRODUCT.md §8)
//! for the SQLite database. A backup is SQLite's `VACUUM INTO`: a consistent snapshot taken in
//! one read transaction while the server keeps serving (WAL: writers go on), written to a
//! temporary file beside the target, checked (`PRAGMA integrity_check` and the audit chain),
//! made durable, and only then renamed into place — so a backup killed halfway leaves no file
//! that looks like one, and never touches the live database. A restore checks the file the same
//! way before it copies it in, and refuses to overwrite a data directory that holds anything
//! without `--force`. PostgreSQL is backed up with its own tools (`pg_dump`; README).
//!
//! The snapshot holds only what the database holds: ciphertext, key wraps, public keys, hashes.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::db;

/// What a checked backup holds, for the command's report.
#[derive(Debug)]
pub struct Checked {
    pub rows: i64,
    pub accounts: usize,
    pub head_hex: String,
}

/// A temporary sibling of `path`: same directory (so the rename is atomic), a name no one else
/// uses.
fn sibling(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "agentkeys.db".into());
    path.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

fn sync_dir(path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot make the directory {} durable", dir.display()))
}

/// Opens the SQLite file at `path` read-only and checks it: SQLite's own integrity check, the
/// schema's migrations, and the audit chain end to end.
pub async fn check_file(path: &Path) -> anyhow::Result<Checked> {
    sqlx::any::install_default_drivers();
    if !path.is_file() {
        bail!("{} is not a file", path.display());
    }
    let url = format!("sqlite://{}?mode=ro", path.display());
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .with_context(|| format!("{} is not a SQLite database", path.display()))?;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .with_context(|| format!("{} is not a readable SQLite database (truncated or corrupted?)", path.display()))?;
    if integrity != "ok" {
        bail!("{} fails SQLite's integrity check: {integrity}", path.display());
    }
    let migrations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .with_context(|| format!("{} is a SQLite database but not an AgentKeys one", path.display()))?;
    if migrations == 0 {
        bail!("{} holds no AgentKeys schema", path.display());
    }
    let report = crate::engine::audit::verify_chain(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("the audit chain in {} does not verify: {e}", path.display()))?;
    pool.close().await;
    Ok(Checked { rows: report.rows, accounts: report.accounts, head_hex: hex::encode(&report.head_hash) })
}

/// Snapshots the SQLite database at `database_url` into `to`.
pub async fn backup(database_url: &str, to: &Path, force: bool) -> anyhow::Result<Checked> {
    use sqlx::Connection as _;
    let Some(live) = db::sqlite_path(database_url) else {
        bail!(
            "backup takes SQLite databases; back PostgreSQL up with its own tools: pg_dump --format=custom \
             --file=FILE DATABASE_URL (README, \"Backup and restore\")"
        );
    };
    if !live.is_file() {
        bail!(
            "there is no database at {}: pass the --data-dir (or --database-url) of the server to back up",
            live.display()
        );
    }
    if to.exists() && !force {
        bail!("{} exists: pick another --to, or add --force to replace it", to.display());
    }
    let partial = sibling(to, "partial");
    let _ = std::fs::remove_file(&partial);
    let result = async {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=ro", live.display()))
            .await
            .with_context(|| format!("cannot open the database at {}", live.display()))?;
        let target = partial.to_str().context("the backup path is not UTF-8")?.to_owned();
        sqlx::query("VACUUM INTO $1").bind(target).execute(&mut conn).await.with_context(|| {
            format!("cannot write the backup next to {} (is the directory writable, the disk full?)", to.display())
        })?;
        conn.close().await.ok();
        std::fs::File::open(&partial).and_then(|f| f.sync_all()).context("cannot make the backup durable")?;
        let checked = check_file(&partial).await?;
        std::fs::rename(&partial, to).with_context(|| format!("cannot move the backup to {}", to.display()))?;
        sync_dir(to)?;
        Ok(checked)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Copies a checked backup into `data_dir` as its database.
pub async fn restore(from: &Path, data_dir: &Path, force: bool) -> anyhow::Result<Checked> {
    let checked = check_file(from).await.context("refusing to restore it")?;
    let occupied = std::fs::read_dir(data_dir).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if occupied && !force {
        bail!(
            "{} is not empty: restoring would replace its database; pick an empty --data-dir, or add --force",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", data_dir.display()))?;
    }
    let target = db::sqlite_path(&db::sqlite_url_for(data_dir)).context("the data dir's database path")?;
    let partial = sibling(&target, "restoring");
    std::fs::copy(from, &partial)
        .with_context(|| format!("cannot copy {} into {}", from.display(), data_dir.display()))?;
    std::fs::File::open(&partial).and_then(|f| f.sync_all()).context("cannot make the restored copy durable")?;
    // The old database's write-ahead log belongs to the old file: it must not be replayed onto
    // the restored one.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", target.display()));
    }
    std::fs::rename(&partial, &target).with_context(|| format!("cannot move the copy to {}", target.display()))?;
    sync_dir(&target)?;
    Ok(checked)
}
