//! The single writer. Every decided request ends here as a [`Job`]: its nonce (the replay check),
//! its mutation if it has one, and its audit row. A task owns the one write connection and
//! commits jobs in batches — one transaction, one fsync, however many requests are waiting — which
//! is what lets a hash-chained audit row per read keep up with thousands of reads a second.
//!
//! A job's reply is sent only after its batch commits, so an acknowledged write is durable and a
//! replayed nonce is refused before the response leaves. Each mutation runs in a savepoint, so
//! one failing job (a version conflict) never takes the rest of its batch down. Every batch first
//! locks the `audit_head` row, which serializes writers across replicas on one PostgreSQL.

use agentkeys_proto::ErrorCode;
use sqlx::{AnyConnection, Connection as _, Row as _};
use tokio::sync::{mpsc, oneshot};

use crate::audit::{AuditDraft, AuditRow, outcome_for};
use crate::clock::Clock;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;
/// How often expired nonces are deleted.
const PRUNE_EVERY_MS: i64 = 30_000;

/// A nonce to consume: refused if this session used it before.
#[derive(Debug, Clone)]
pub struct NonceRecord {
    pub session_id: String,
    pub nonce: String,
    pub expires_at_ms: i64,
}

/// A state change a job makes.
#[derive(Debug, Clone)]
pub enum Mutation {
    None,
    CreateAccount(Box<NewAccount>),
    PutCredential(NewVersion),
    RemoveCredential { account_id: String, namespace: String, service: String, removed_by: String },
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
}

/// What a committed job changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Nothing,
    Account,
    Version { version: i64, created_at_ms: i64 },
}

struct Job {
    nonce: Option<NonceRecord>,
    decision: Result<Mutation, ApiError>,
    audit: AuditDraft,
    reply: oneshot::Sender<Result<Applied, ApiError>>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on `conn`. It stops when every handle is dropped.
    pub fn spawn(conn: AnyConnection, clock: Clock, metrics: Metrics) -> (Self, tokio::task::JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        let task = tokio::spawn(run(conn, rx, clock, metrics));
        (Self { jobs }, task)
    }

    /// Commits a decided request and returns its final result: the decision itself, or
    /// `REPLAYED_NONCE`, or a database failure.
    pub async fn submit(
        &self,
        nonce: Option<NonceRecord>,
        decision: Result<Mutation, ApiError>,
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

async fn run(mut conn: AnyConnection, mut rx: mpsc::Receiver<Job>, clock: Clock, metrics: Metrics) {
    let mut last_prune = i64::MIN;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let now = clock.now_ms();
        let prune = now.saturating_sub(last_prune) >= PRUNE_EVERY_MS;
        match apply_batch(&mut conn, &batch, now, prune).await {
            Ok(results) => {
                if prune {
                    last_prune = now;
                }
                metrics.record_batch(batch.len());
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(error) => {
                let failure = ApiError::from(error);
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(failure.clone()));
                }
            }
        }
    }
    let _ = conn.close().await;
}

async fn apply_batch(
    conn: &mut AnyConnection,
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
        sqlx::query("DELETE FROM nonces WHERE expires_at_ms < $1").bind(now).execute(&mut *tx).await?;
    }
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let decision = match &job.nonce {
            Some(nonce) => consume_nonce(&mut tx, nonce).await?,
            None => Ok(()),
        }
        .and_then(|()| job.decision.clone());
        let applied = match decision {
            Ok(mutation) => {
                let mut savepoint = tx.begin().await?;
                let outcome = apply_mutation(&mut savepoint, &mutation, now).await?;
                if outcome.is_ok() {
                    savepoint.commit().await?;
                } else {
                    savepoint.rollback().await?;
                }
                outcome
            }
            Err(error) => Err(error),
        };
        let code = applied.as_ref().err().map(|e| e.code);
        seq += 1;
        let mut row = AuditRow {
            seq,
            ts_ms: now,
            account_id: job.audit.account_id.clone(),
            actor: job.audit.actor.clone(),
            session_id: job.audit.session_id.clone(),
            action: job.audit.action.to_owned(),
            namespace: job.audit.namespace.clone(),
            service: job.audit.service.clone(),
            outcome: outcome_for(code).as_str().to_owned(),
            code: code.map(|c| c.as_str().to_owned()),
            prev_hash,
            hash: Vec::new(),
        };
        row.hash = row.compute_hash().to_vec();
        insert_audit_row(&mut tx, &row).await?;
        prev_hash = row.hash;
        results.push(applied);
    }
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(prev_hash)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(results)
}

async fn consume_nonce(conn: &mut AnyConnection, nonce: &NonceRecord) -> Result<Result<(), ApiError>, sqlx::Error> {
    let inserted =
        sqlx::query("INSERT INTO nonces (session_id, nonce, expires_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(&nonce.session_id)
            .bind(&nonce.nonce)
            .bind(nonce.expires_at_ms)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    Ok(if inserted == 1 {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::ReplayedNonce,
            "this request's nonce was already used: the request is a replay",
            "send a freshly signed request; the AgentKeys clients do this on every call",
        ))
    })
}

async fn insert_audit_row(conn: &mut AnyConnection, row: &AuditRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (seq, ts_ms, account_id, actor, session_id, action, namespace, service, outcome, code, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(row.seq)
    .bind(row.ts_ms)
    .bind(&row.account_id)
    .bind(&row.actor)
    .bind(&row.session_id)
    .bind(&row.action)
    .bind(&row.namespace)
    .bind(&row.service)
    .bind(&row.outcome)
    .bind(&row.code)
    .bind(&row.prev_hash)
    .bind(&row.hash)
    .execute(&mut *conn)
    .await?;
    Ok(())
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

async fn apply_mutation(
    conn: &mut AnyConnection,
    mutation: &Mutation,
    now: i64,
) -> Result<Result<Applied, ApiError>, sqlx::Error> {
    match mutation {
        Mutation::None => Ok(Ok(Applied::Nothing)),
        Mutation::CreateAccount(account) => create_account(conn, account, now).await,
        Mutation::PutCredential(new) => {
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
            Ok(Ok(Applied::Version { version: new.version, created_at_ms: now }))
        }
        Mutation::RemoveCredential { account_id, namespace, service, removed_by } => {
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
    sqlx::query(
        "INSERT INTO devices (id, account_id, kind, label, sign_public, kx_public, certificate, created_at_ms) \
         VALUES ($1, $2, 'master', $3, $4, $5, $6, $7)",
    )
    .bind(&a.device_id)
    .bind(&a.account_id)
    .bind(&a.device_label)
    .bind(&a.device_sign_public)
    .bind(&a.device_kx_public)
    .bind(&a.device_certificate)
    .bind(now)
    .execute(&mut *conn)
    .await?;
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
