//! The single writer. Every decided request ends here as a [`Job`]: its nonce (the replay check),
//! its mutation if it has one, and its audit row. A task owns the one write connection and
//! commits jobs in batches — one transaction, one fsync, however many requests are waiting — which
//! is what lets a hash-chained audit row per read keep up with thousands of reads a second.
//!
//! A job's reply is sent only after its batch commits, so an acknowledged write is durable and a
//! replayed nonce is refused before the response leaves. Each mutation runs in a savepoint, so
//! one failing job (a version conflict) never takes the rest of its batch down. Every batch first
//! locks the `audit_head` row, which serializes writers across replicas on one PostgreSQL.

use std::collections::{BTreeSet, HashSet};

use agentkeys_proto::ErrorCode;
use agentkeys_proto::presence::PresenceMethod;
use sqlx::{AnyConnection, Connection as _, Row as _};
use tokio::sync::{mpsc, oneshot};

use crate::agents::{AgentApplied, AgentOp, Wrap};
use crate::audit::{AuditDraft, AuditRow, outcome_for};
use crate::clock::Clock;
use crate::db::{Backend, CredentialRow, Db};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::requests::{RequestOp, RequestRow};

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;
/// How often expired nonces are deleted.
const PRUNE_EVERY_MS: i64 = 30_000;
/// Nonces are kept this long past their expiry, so replicas whose clocks disagree by up to this
/// much never prune a nonce another replica would still accept.
const PRUNE_MARGIN_MS: i64 = 300_000;

/// A nonce to consume: refused if this session used it before.
#[derive(Debug, Clone)]
pub struct NonceRecord {
    pub session_id: String,
    pub nonce: String,
    pub expires_at_ms: i64,
}

/// What a job does in the database besides consuming its nonce and appending its audit row.
#[derive(Debug, Clone)]
pub enum Operation {
    None,
    /// Read the newest version of a credential; batched with the other reads of the batch.
    ReadCredential {
        account_id: String,
        namespace: String,
        service: String,
    },
    CreateAccount(Box<NewAccount>),
    PutCredential(NewVersion),
    RemoveCredential {
        account_id: String,
        namespace: String,
        service: String,
        removed_by: String,
    },
    Agent(Box<AgentOp>),
    Request(Box<RequestOp>),
    /// The account's server-side policy (`PUT /v1/account/settings`).
    AccountSettings {
        account_id: String,
        require_presence_for_critical: bool,
    },
}

/// The rows of a new account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub account_id: String,
    pub sign_public: Vec<u8>,
    pub kx_public: Vec<u8>,
    pub device_id: String,
    pub device_label: String,
    pub device_sign_public: Vec<u8>,
    pub device_kx_public: Vec<u8>,
    pub device_certificate: Vec<u8>,
    pub wrap_device: Vec<u8>,
    pub wrap_recovery: Vec<u8>,
    pub session_id: String,
    pub token_hash: Vec<u8>,
}

/// A new sealed version of a credential.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub account_id: String,
    pub namespace: String,
    pub service: String,
    pub version: i64,
    pub ciphertext: Vec<u8>,
    pub data_key_wrap: Vec<u8>,
    pub created_by: String,
    /// The data key wrapped to every agent device that may read the service; the set must be
    /// exactly [`crate::agents::recipients`] at commit time.
    pub wraps: Vec<Wrap>,
}

/// What a committed job did.
#[derive(Debug, Clone)]
pub enum Applied {
    Nothing,
    Credential(CredentialRow),
    /// What an agent read, with the data key wrapped to its device.
    AgentCredential {
        namespace: String,
        row: CredentialRow,
    },
    Account,
    Version {
        version: i64,
        created_at_ms: i64,
    },
    Agent(AgentApplied),
    Request(Box<RequestRow>),
    /// Refused, but what the operation wrote stays (a spent rate-limit token, a counted miss):
    /// the savepoint commits and the job answers with the error.
    Refused(ApiError),
}

struct Job {
    nonce: Option<NonceRecord>,
    decision: Result<Operation, ApiError>,
    audit: AuditDraft,
    reply: oneshot::Sender<Result<Applied, ApiError>>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer on its own thread and runtime, so its statements never wait in the
    /// request handlers' run queue. It opens its connection through `db` (again if the database
    /// drops it), and stops once every handle is dropped and the last batch is committed.
    pub fn spawn(db: Db, clock: Clock, metrics: Metrics) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        let thread = std::thread::Builder::new().name("agentkeys-writer".into()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(run(db, rx, clock, metrics)),
                Err(error) => tracing::error!(%error, "cannot start the writer's runtime"),
            }
        })?;
        Ok((Self { jobs }, thread))
    }

    /// Commits a decided request and returns its final result: the decision itself, or
    /// `REPLAYED_NONCE`, or a database failure.
    pub async fn submit(
        &self,
        nonce: Option<NonceRecord>,
        decision: Result<Operation, ApiError>,
        audit: AuditDraft,
    ) -> Result<Applied, ApiError> {
        let (reply, answer) = oneshot::channel();
        let shutting_down = || {
            ApiError::new(
                ErrorCode::Unavailable,
                "the server is shutting down",
                "retry against another replica or after restart",
            )
        };
        self.jobs.send(Job { nonce, decision, audit, reply }).await.map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())?
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<Job>, clock: Clock, metrics: Metrics) {
    let mut conn = db.connect_writer().await.inspect_err(|e| tracing::error!(error = %e, "writer cannot connect")).ok();
    let mut last_prune = i64::MIN;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if conn.is_none() {
            conn =
                db.connect_writer().await.inspect_err(|e| tracing::error!(error = %e, "writer cannot reconnect")).ok();
        }
        let now = clock.now_ms();
        let started = std::time::Instant::now();
        let prune = now.saturating_sub(last_prune) >= PRUNE_EVERY_MS;
        let result = match conn.as_mut() {
            Some(conn) => apply_batch(conn, db.backend, &batch, now, prune).await,
            None => Err(sqlx::Error::PoolClosed),
        };
        match result {
            Ok(results) => {
                if prune {
                    last_prune = now;
                }
                metrics.record_batch(batch.len(), started.elapsed());
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(error) => {
                let failure = ApiError::from(error);
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(failure.clone()));
                }
                // A connection the database dropped is reopened before the next batch.
                if let Some(current) = conn.as_mut()
                    && current.ping().await.is_err()
                {
                    tracing::warn!("the writer's database connection was lost; reconnecting");
                    conn = None;
                }
            }
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

async fn apply_batch(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &[Job],
    now: i64,
    prune: bool,
) -> Result<Vec<Result<Applied, ApiError>>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let head =
        sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash").fetch_one(&mut *tx).await?;
    let mut seq: i64 = head.try_get("seq")?;
    let mut prev_hash: Vec<u8> = head.try_get("hash")?;
    if prune {
        sqlx::query("DELETE FROM nonces WHERE expires_at_ms < $1")
            .bind(now - PRUNE_MARGIN_MS)
            .execute(&mut *tx)
            .await?;
    }
    // Revocation is checked here, in the transaction that answers, never from a cache; a nonce
    // is fresh when its session is live, it was never used, and it is not repeated in the batch.
    let (live, used) = sessions_and_used_nonces(&mut tx, backend, batch).await?;
    let mut seen = HashSet::new();
    let fresh: Vec<bool> = batch
        .iter()
        .map(|job| {
            job.nonce.as_ref().is_none_or(|n| {
                live.contains(&n.session_id)
                    && !used.contains(&(n.session_id.clone(), n.nonce.clone()))
                    && seen.insert((&n.session_id, &n.nonce))
            })
        })
        .collect();
    let new_nonces: Vec<&NonceRecord> =
        batch.iter().zip(&fresh).filter(|(_, fresh)| **fresh).filter_map(|(job, _)| job.nonce.as_ref()).collect();

    let decisions: Vec<Result<&Operation, ApiError>> = batch
        .iter()
        .zip(fresh)
        .map(|(job, nonce_fresh)| match &job.nonce {
            Some(nonce) if !live.contains(&nonce.session_id) => Err(crate::auth::session_revoked()),
            _ if !nonce_fresh => Err(replayed()),
            _ => job.decision.as_ref().map_err(Clone::clone),
        })
        .collect();

    // Writes apply first, in arrival order, then every read of the batch in one statement; the
    // audit rows are appended in that same order, so the chain records what each request saw.
    let is_read = |d: &Result<&Operation, ApiError>| matches!(d, Ok(Operation::ReadCredential { .. }));
    let mut results: Vec<Option<Result<Applied, ApiError>>> = vec![None; batch.len()];
    let mut order = Vec::with_capacity(batch.len());
    for (i, decision) in decisions.iter().enumerate() {
        if is_read(decision) {
            continue;
        }
        results[i] = Some(match decision {
            Ok(Operation::None) => Ok(Applied::Nothing),
            // A write runs in a savepoint, so a refused one — or one the database rejects —
            // fails alone and leaves the rest of the batch to commit.
            Ok(operation) => {
                let mut savepoint = tx.begin().await?;
                let presence = batch[i].audit.presence.as_deref();
                match apply_operation(&mut savepoint, operation, presence, now).await.unwrap_or_else(|e| Err(e.into()))
                {
                    Ok(Applied::Refused(error)) => {
                        savepoint.commit().await?;
                        Err(error)
                    }
                    Ok(applied) => {
                        savepoint.commit().await?;
                        Ok(applied)
                    }
                    Err(error) => {
                        savepoint.rollback().await?;
                        Err(error)
                    }
                }
            }
            Err(error) => Err(error.clone()),
        });
        order.push(i);
    }
    let reads: Vec<usize> = (0..batch.len()).filter(|&i| is_read(&decisions[i])).collect();
    let found = read_credentials(&mut tx, backend, reads.iter().map(|&i| &decisions[i])).await?;
    for (&i, row) in reads.iter().zip(found) {
        results[i] = Some(match (row, &decisions[i]) {
            (Some(row), _) => Ok(Applied::Credential(row)),
            (None, Ok(Operation::ReadCredential { service, .. })) => Err(crate::api::credential_not_found(service)),
            (None, _) => unreachable!("only reads are in `reads`"),
        });
        order.push(i);
    }

    let mut rows = Vec::with_capacity(batch.len());
    for &i in &order {
        let job = &batch[i];
        let code = results[i].as_ref().and_then(|r| r.as_ref().err()).map(|e| e.code);
        seq += 1;
        let mut row = AuditRow {
            seq,
            ts_ms: now,
            account_id: job.audit.account_id.clone(),
            actor: job.audit.actor.clone(),
            session_id: job.audit.session_id.clone(),
            action: job.audit.action.to_owned(),
            // An agent's read names the namespace it was actually served from.
            namespace: match &results[i] {
                Some(Ok(Applied::AgentCredential { namespace, .. })) => Some(namespace.clone()),
                _ => job.audit.namespace.clone(),
            },
            service: job.audit.service.clone(),
            outcome: outcome_for(code).as_str().to_owned(),
            code: code.map(|c| c.as_str().to_owned()),
            presence: job.audit.presence.clone(),
            prev_hash,
            hash: Vec::new(),
        };
        row.hash = row.compute_hash().to_vec();
        prev_hash = row.hash.clone();
        rows.push(row);
    }
    write_tail(&mut tx, backend, &new_nonces, &rows, seq, &prev_hash).await?;
    tx.commit().await?;
    Ok(results.into_iter().map(|r| r.expect("every job has a result")).collect())
}

/// The newest live version of each requested credential, in one statement; `None` where there
/// is none or it was removed.
async fn read_credentials<'a>(
    conn: &mut AnyConnection,
    backend: Backend,
    reads: impl Iterator<Item = &'a Result<&'a Operation, ApiError>>,
) -> Result<Vec<Option<CredentialRow>>, sqlx::Error> {
    let keys: Vec<(&str, &str, &str)> = reads
        .map(|d| match d {
            Ok(Operation::ReadCredential { account_id, namespace, service }) => {
                (account_id.as_str(), namespace.as_str(), service.as_str())
            }
            _ => unreachable!("only reads are passed"),
        })
        .collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let tuples: Vec<String> = (0..keys.len()).map(|i| backend.row_placeholders(3 * i + 1, 3)).collect();
    let sql = format!(
        "SELECT c.account_id, c.namespace, c.service, c.version, c.ciphertext, c.data_key_wrap, c.created_at_ms, \
                c.created_by FROM credential_versions c \
         WHERE (c.account_id, c.namespace, c.service) IN ({}) AND c.version = ( \
             SELECT MAX(m.version) FROM credential_versions m \
             WHERE m.account_id = c.account_id AND m.namespace = c.namespace AND m.service = c.service)",
        tuples.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for (account, namespace, service) in &keys {
        query = query.bind(*account).bind(*namespace).bind(*service);
    }
    let mut found = std::collections::HashMap::new();
    for row in query.fetch_all(&mut *conn).await? {
        let key: (String, String, String) =
            (row.try_get("account_id")?, row.try_get("namespace")?, row.try_get("service")?);
        found.insert(key, CredentialRow::from_row(&row)?);
    }
    Ok(keys
        .iter()
        .map(|(a, n, s)| {
            found
                .get(&((*a).to_owned(), (*n).to_owned(), (*s).to_owned()))
                .filter(|row| row.ciphertext.is_some())
                .cloned()
        })
        .collect())
}

fn replayed() -> ApiError {
    ApiError::new(
        ErrorCode::ReplayedNonce,
        "this request's nonce was already used: the request is a replay",
        "send a freshly signed request; the AgentKeys clients do this on every call",
    )
}

/// Which of the batch's sessions are live (exist, not revoked), and which of its nonces were
/// used before — one query for both.
async fn sessions_and_used_nonces(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &[Job],
) -> Result<(HashSet<String>, HashSet<(String, String)>), sqlx::Error> {
    let nonces: Vec<&NonceRecord> = batch.iter().filter_map(|job| job.nonce.as_ref()).collect();
    if nonces.is_empty() {
        return Ok(Default::default());
    }
    let sessions: Vec<&str> =
        nonces.iter().map(|n| n.session_id.as_str()).collect::<HashSet<_>>().into_iter().collect();
    let pairs: Vec<String> =
        (0..nonces.len()).map(|i| backend.row_placeholders(sessions.len() + 2 * i + 1, 2)).collect();
    let sql = format!(
        "SELECT 'live' AS kind, id AS session_id, '' AS nonce FROM sessions WHERE revoked_at_ms IS NULL AND id IN {} \
         UNION ALL SELECT 'used' AS kind, session_id, nonce FROM nonces WHERE (session_id, nonce) IN ({})",
        backend.row_placeholders(1, sessions.len()),
        pairs.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for id in &sessions {
        query = query.bind(*id);
    }
    for nonce in &nonces {
        query = query.bind(&nonce.session_id).bind(&nonce.nonce);
    }
    let (mut live, mut used) = (HashSet::new(), HashSet::new());
    for row in query.fetch_all(&mut *conn).await? {
        let session: String = row.try_get("session_id")?;
        if row.try_get::<String, _>("kind")? == "live" {
            live.insert(session);
        } else {
            used.insert((session, row.try_get("nonce")?));
        }
    }
    Ok((live, used))
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// The end of every batch: insert its fresh nonces, append its audit rows, move the chain head.
/// On SQLite the three go down as one multi-statement call, since each call costs two thread
/// hand-offs in sqlx's SQLite driver; PostgreSQL takes prepared statements one at a time.
async fn write_tail(
    conn: &mut AnyConnection,
    backend: Backend,
    nonces: &[&NonceRecord],
    rows: &[AuditRow],
    seq: i64,
    head_hash: &[u8],
) -> Result<(), sqlx::Error> {
    let nonce_sql = (!nonces.is_empty()).then(|| {
        let values: Vec<String> = (0..nonces.len()).map(|i| backend.row_placeholders(3 * i + 1, 3)).collect();
        format!("INSERT INTO nonces (session_id, nonce, expires_at_ms) VALUES {}", values.join(", "))
    });
    let audit_sql = (!rows.is_empty()).then(|| {
        let values: Vec<String> = (0..rows.len()).map(|i| backend.row_placeholders(13 * i + 1, 13)).collect();
        format!(
            "INSERT INTO audit_log (seq, ts_ms, account_id, actor, session_id, action, namespace, service, outcome, \
             code, presence, prev_hash, hash) VALUES {}",
            values.join(", ")
        )
    });
    let head_sql = format!(
        "UPDATE audit_head SET seq = {}, hash = {} WHERE id = 1",
        backend.placeholder(1),
        backend.placeholder(2)
    );
    let bind_head = |query: AnyQuery<'static>| query.bind(seq).bind(head_hash.to_vec());
    match backend {
        Backend::Sqlite => {
            let sql: Vec<&str> =
                [nonce_sql.as_deref(), audit_sql.as_deref(), Some(head_sql.as_str())].into_iter().flatten().collect();
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.join(";\n"))).persistent(false);
            if nonce_sql.is_some() {
                query = bind_nonces(query, nonces);
            }
            bind_head(bind_rows(query, rows)).execute(&mut *conn).await?;
        }
        Backend::Postgres => {
            if let Some(sql) = nonce_sql {
                bind_nonces(sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false), nonces)
                    .execute(&mut *conn)
                    .await?;
            }
            if let Some(sql) = audit_sql {
                bind_rows(sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false), rows).execute(&mut *conn).await?;
            }
            bind_head(sqlx::query(sqlx::AssertSqlSafe(head_sql))).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

fn bind_nonces(mut query: AnyQuery<'static>, nonces: &[&NonceRecord]) -> AnyQuery<'static> {
    for nonce in nonces {
        query = query.bind(nonce.session_id.clone()).bind(nonce.nonce.clone()).bind(nonce.expires_at_ms);
    }
    query
}

fn bind_rows(mut query: AnyQuery<'static>, rows: &[AuditRow]) -> AnyQuery<'static> {
    for row in rows {
        query = query
            .bind(row.seq)
            .bind(row.ts_ms)
            .bind(row.account_id.clone())
            .bind(row.actor.clone())
            .bind(row.session_id.clone())
            .bind(row.action.clone())
            .bind(row.namespace.clone())
            .bind(row.service.clone())
            .bind(row.outcome.clone())
            .bind(row.code.clone())
            .bind(row.presence.clone())
            .bind(row.prev_hash.clone())
            .bind(row.hash.clone());
    }
    query
}

async fn current_version(
    conn: &mut AnyConnection,
    account_id: &str,
    namespace: &str,
    service: &str,
) -> Result<(i64, bool), sqlx::Error> {
    let row = sqlx::query(
        "SELECT version, data_key_wrap FROM credential_versions \
         WHERE account_id = $1 AND namespace = $2 AND service = $3 ORDER BY version DESC LIMIT 1",
    )
    .bind(account_id)
    .bind(namespace)
    .bind(service)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        None => Ok((0, true)),
        Some(row) => Ok((row.try_get("version")?, row.try_get::<Option<Vec<u8>>, _>("data_key_wrap")?.is_none())),
    }
}

/// The account whose policy governs `operation` when it is critical (PRODUCT.md §5): approving
/// a request, creating, upgrading, revoking or tearing down an agent, widening a scope, and
/// turning the presence requirement off.
fn critical_for(operation: &Operation) -> Option<&str> {
    match operation {
        Operation::Agent(op) => match op.as_ref() {
            AgentOp::Create { account_id, .. }
            | AgentOp::Tier { account_id, .. }
            | AgentOp::Revoke { account_id, .. }
            | AgentOp::Teardown { account_id, .. } => Some(account_id),
            AgentOp::Scope { account_id, add, .. } if !add.is_empty() => Some(account_id),
            _ => None,
        },
        Operation::Request(op) => match op.as_ref() {
            RequestOp::Approve { account_id, .. } => Some(account_id),
            _ => None,
        },
        Operation::AccountSettings { account_id, require_presence_for_critical: false } => Some(account_id),
        _ => None,
    }
}

/// The answer to a critical operation made without presence, on an account that requires it.
pub fn presence_required() -> ApiError {
    ApiError::new(
        ErrorCode::Denied,
        "this account requires the human's presence for critical operations, and this one was made without it \
         (--no-biometric, AGENTKEYS_BIOMETRIC=off, or a client that does not report it)",
        "run it again without --no-biometric and confirm in person (fingerprint, password or typed confirmation); \
         in person, `agentkeys config set require-presence off` lifts the requirement",
    )
}

/// Whether `account_id` requires presence for critical operations (its server-side setting).
pub async fn requires_presence(conn: &mut AnyConnection, account_id: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT require_presence_for_critical AS required FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<i64, _>("required")? != 0,
        None => false,
    })
}

async fn apply_operation(
    conn: &mut AnyConnection,
    mutation: &Operation,
    presence: Option<&str>,
    now: i64,
) -> Result<Result<Applied, ApiError>, sqlx::Error> {
    // In the writer's transaction, so a requirement switched on holds at once on every replica.
    if let Some(account_id) = critical_for(mutation)
        && presence.is_none_or(|p| p == PresenceMethod::Skipped.as_str())
        && requires_presence(conn, account_id).await?
    {
        return Ok(Err(presence_required()));
    }
    match mutation {
        Operation::AccountSettings { account_id, require_presence_for_critical } => {
            sqlx::query("UPDATE accounts SET require_presence_for_critical = $1 WHERE id = $2")
                .bind(i64::from(*require_presence_for_critical))
                .bind(account_id)
                .execute(&mut *conn)
                .await?;
            Ok(Ok(Applied::Nothing))
        }
        Operation::None => Ok(Ok(Applied::Nothing)),
        Operation::ReadCredential { .. } => unreachable!("reads are batched in apply_batch"),
        Operation::CreateAccount(account) => create_account(conn, account, now).await,
        Operation::Agent(op) => crate::agents::apply(conn, op, now).await,
        Operation::Request(op) => crate::requests::apply(conn, op, now).await,
        Operation::PutCredential(new) => {
            if let Some(error) = unknown_owner(conn, &new.account_id, &new.namespace).await? {
                return Ok(Err(error));
            }
            let (current, _) = current_version(conn, &new.account_id, &new.namespace, &new.service).await?;
            if new.version != current + 1 {
                let mut error = ApiError::new(
                    ErrorCode::VersionConflict,
                    format!(
                        "version {} of '{}' cannot be created: the current version is {current}",
                        new.version, new.service
                    ),
                    format!("seal again as version {}", current + 1),
                );
                error.current_version = Some(current as u64);
                return Ok(Err(error));
            }
            sqlx::query(
                "INSERT INTO credential_versions (account_id, namespace, service, version, ciphertext, data_key_wrap, created_at_ms, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&new.account_id)
            .bind(&new.namespace)
            .bind(&new.service)
            .bind(new.version)
            .bind(&new.ciphertext)
            .bind(&new.data_key_wrap)
            .bind(now)
            .bind(&new.created_by)
            .execute(&mut *conn)
            .await?;
            // Every agent that may read the service gets the new data key, or the write fails:
            // a version some reader cannot open would silently cut that agent off.
            let required: BTreeSet<String> =
                crate::agents::recipients(conn, &new.account_id, &new.namespace, &new.service)
                    .await?
                    .into_iter()
                    .map(|d| d.device_id)
                    .collect();
            let given: BTreeSet<String> = new.wraps.iter().map(|w| w.recipient.clone()).collect();
            if required != given || given.len() != new.wraps.len() {
                let mut error = ApiError::new(
                    ErrorCode::VersionConflict,
                    format!("the agents that may read '{}' changed while it was being stored", new.service),
                    "retry; the client re-reads the recipients and wraps again",
                );
                error.current_version = Some(current as u64);
                return Ok(Err(error));
            }
            for wrap in &new.wraps {
                sqlx::query(
                    "INSERT INTO credential_wraps (account_id, namespace, service, version, device_id, wrap) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&new.account_id)
                .bind(&new.namespace)
                .bind(&new.service)
                .bind(new.version)
                .bind(&wrap.recipient)
                .bind(&wrap.wrap)
                .execute(&mut *conn)
                .await?;
            }
            Ok(Ok(Applied::Version { version: new.version, created_at_ms: now }))
        }
        Operation::RemoveCredential { account_id, namespace, service, removed_by } => {
            let (current, removed) = current_version(conn, account_id, namespace, service).await?;
            if removed {
                return Ok(Err(crate::api::credential_not_found(service)));
            }
            sqlx::query(
                "INSERT INTO credential_versions (account_id, namespace, service, version, ciphertext, data_key_wrap, created_at_ms, created_by) \
                 VALUES ($1, $2, $3, $4, NULL, NULL, $5, $6)",
            )
            .bind(account_id)
            .bind(namespace)
            .bind(service)
            .bind(current + 1)
            .bind(now)
            .bind(removed_by)
            .execute(&mut *conn)
            .await?;
            Ok(Ok(Applied::Version { version: current + 1, created_at_ms: now }))
        }
    }
}

/// A write to an agent's namespace needs that agent, in this account, not torn down.
async fn unknown_owner(
    conn: &mut AnyConnection,
    account_id: &str,
    namespace: &str,
) -> Result<Option<ApiError>, sqlx::Error> {
    let Some(agent_id) = namespace.strip_prefix("agent:") else { return Ok(None) };
    let known = sqlx::query("SELECT 1 AS yes FROM agents WHERE id = $1 AND account_id = $2 AND status <> 'torn_down'")
        .bind(agent_id)
        .bind(account_id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    Ok((!known).then(|| crate::agents::no_such_agent(agent_id)))
}

async fn create_account(
    conn: &mut AnyConnection,
    a: &NewAccount,
    now: i64,
) -> Result<Result<Applied, ApiError>, sqlx::Error> {
    let inserted = sqlx::query("INSERT INTO accounts (id, sign_public, kx_public, created_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
        .bind(&a.account_id)
        .bind(&a.sign_public)
        .bind(&a.kx_public)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if inserted == 0 {
        return Ok(Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("account {} already exists", a.account_id),
            "generate a new account key; a client never reuses one",
        )));
    }
    let inserted = sqlx::query(
        "INSERT INTO devices (id, account_id, kind, label, sign_public, kx_public, certificate, created_at_ms) \
         VALUES ($1, $2, 'master', $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(&a.device_id)
    .bind(&a.account_id)
    .bind(&a.device_label)
    .bind(&a.device_sign_public)
    .bind(&a.device_kx_public)
    .bind(&a.device_certificate)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        // The savepoint is rolled back, so the account row above goes too.
        return Ok(Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("device {} is already registered", a.device_id),
            "generate a new device key; a client never reuses one",
        )));
    }
    for (recipient, wrap) in
        [(format!("device:{}", a.device_id), &a.wrap_device), ("recovery".to_owned(), &a.wrap_recovery)]
    {
        sqlx::query("INSERT INTO account_key_wraps (account_id, recipient, wrap) VALUES ($1, $2, $3)")
            .bind(&a.account_id)
            .bind(recipient)
            .bind(wrap)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(
        "INSERT INTO sessions (id, account_id, device_id, token_hash, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&a.session_id)
    .bind(&a.account_id)
    .bind(&a.device_id)
    .bind(&a.token_hash)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(Ok(Applied::Account))
}
