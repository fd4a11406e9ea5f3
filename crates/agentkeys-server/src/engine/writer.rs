//! The single writer. Every decided request ends here as a job: its nonce (the replay check), its
//! [`Op`], and its audit row. A task owns the one write connection and commits jobs in batches —
//! one transaction, one fsync, however many requests are waiting — which is what lets a
//! hash-chained audit row per read keep up with thousands of reads a second.
//!
//! A job's reply is sent only after its batch commits, so an acknowledged write is durable and a
//! replayed nonce is refused before the response leaves. Each writing op runs in a savepoint, so
//! one failing job (a version conflict) never takes the rest of its batch down. Every batch first
//! locks the `audit_head` row, which serializes writers across replicas on one PostgreSQL. Each
//! audit row of an account also takes the next place in that account's chain, and the request
//! learns the head after its row (a [`HeadSlot`]) once the batch is durable.
//!
//! The writer knows no domain: a job carries its op behind the object-safe [`Pending`], which
//! applies it and sends the op's own typed output to the handler that submitted it.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use agentkeys_proto::ErrorCode;
use agentkeys_proto::critical::Critical;
use agentkeys_proto::presence::{PresenceClaim, PresenceMethod, PresenceRecord};
use sqlx::{AnyConnection, Connection as _, Row as _};
use tokio::sync::{mpsc, oneshot};

use super::audit::{AuditDraft, AuditRow, HeadAnswer, HeadSlot, next_account_hash, outcome_for};
use super::op::{
    BoxFuture, CriticalFor, Ctx, Maintenance, Op, OpError, OwnerRules, PresencePolicy, PresenceShown, RequestBinding,
};
use crate::clock::Clock;
use crate::db::{Backend, Db};
use crate::error::{ApiError, replayed, session_revoked, shutting_down};
use crate::metrics::Metrics;

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

/// Everything about a request besides its op: the nonce to consume (none for unsigned routes),
/// how presence was shown (for the presence policy and the audit), its audit row's draft, and
/// where to tell it its account chain's head (signed requests).
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub nonce: Option<NonceRecord>,
    pub presence: Option<PresenceClaim>,
    /// The signed request (signed routes only), which a presence ceremony binds.
    pub request: Option<RequestBinding>,
    pub audit: AuditDraft,
    pub head: Option<Arc<HeadSlot>>,
}

/// A job as the writer sees it, whatever its op.
trait Pending: Send + Any {
    fn submission(&self) -> &Submission;
    /// `Some` when the op is decided and answered together with the others of its type.
    fn together(&self) -> Option<TypeId>;
    /// Whether the job still waits for its result (it was decided and nothing refused it).
    fn open(&self) -> bool;
    /// Whether its op writes (and so runs in a savepoint).
    fn writes(&self) -> bool;
    /// Checks the owner's rules and presence and applies the op, storing its result;
    /// `Ok(true)` when its writes stay.
    fn apply<'a>(
        &'a mut self,
        conn: &'a mut AnyConnection,
        hooks: &'a Hooks,
        cx: Ctx,
    ) -> BoxFuture<'a, Result<bool, sqlx::Error>>;
    /// Applies this job's op together with `others`, all of this job's type.
    fn apply_group<'a>(
        &'a mut self,
        others: Vec<&'a mut Box<dyn Pending>>,
        conn: &'a mut AnyConnection,
        cx: Ctx,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>>;
    /// Answers with `error` instead of applying.
    fn refuse(&mut self, error: ApiError);
    fn code(&self) -> Option<ErrorCode>;
    fn audited_namespace(&self) -> Option<String>;
    /// Whether the job gets an audit row ([`Op::audited`]).
    fn audited(&self) -> bool;
    /// What the audit row records about presence.
    fn presence_record(&self) -> Option<PresenceRecord>;
    /// The policy rule that decided the job ([`Op::audited_rule`]).
    fn policy_rule(&self) -> Option<String>;
    /// Sends the result, or the batch's failure.
    fn reply(self: Box<Self>, batch: Result<(), ApiError>);
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

struct Job<O: Op> {
    submission: Submission,
    decision: Result<O, ApiError>,
    result: Option<Result<O::Output, ApiError>>,
    /// Presence as the policy established it (the key that answered a ceremony).
    established: Option<PresenceRecord>,
    /// The `require_presence` rule that matched the owner's operation (`v3:name`).
    demanded_by: Option<String>,
    reply: oneshot::Sender<Result<O::Output, ApiError>>,
}

impl<O: Op> Pending for Job<O> {
    fn submission(&self) -> &Submission {
        &self.submission
    }

    fn together(&self) -> Option<TypeId> {
        (O::TOGETHER && self.open()).then(TypeId::of::<Self>)
    }

    fn open(&self) -> bool {
        self.result.is_none() && self.decision.is_ok()
    }

    fn writes(&self) -> bool {
        O::WRITES
    }

    fn apply<'a>(
        &'a mut self,
        conn: &'a mut AnyConnection,
        hooks: &'a Hooks,
        cx: Ctx,
    ) -> BoxFuture<'a, Result<bool, sqlx::Error>> {
        Box::pin(async move {
            if self.result.is_some() {
                return Ok(false);
            }
            let op = match &self.decision {
                Ok(op) => op,
                Err(error) => {
                    self.result = Some(Err(error.clone()));
                    return Ok(false);
                }
            };
            // In the op's own transaction, so a requirement switched on (or a rule set) holds at
            // once on every replica.
            let claim = self.submission.presence.as_ref();
            let demanded = match op.owner_ask(conn).await {
                Ok(Some(ask)) => hooks.rules.demand(conn, &ask, cx).await.map(|demand| demand.map(|d| (d, ask))),
                Ok(None) => Ok(None),
                Err(refusal) => Err(refusal),
            };
            let checked = match demanded {
                Err(refusal) => Err(refusal),
                // A rule's presence cannot be skipped, whatever the account's setting.
                Ok(Some((demand, _))) if claim.is_none_or(|claim| claim.method() == PresenceMethod::Skipped) => {
                    self.demanded_by = Some(demand.rule);
                    Err(OpError::Refused(demand.refusal))
                }
                Ok(demanded) => {
                    let rule_critical = demanded.as_ref().map(|(demand, ask)| {
                        self.demanded_by = Some(demand.rule.clone());
                        CriticalFor { op: Critical::PolicyRule, account_id: &ask.account_id }
                    });
                    match op.critical().or(rule_critical) {
                        Some(critical) => {
                            let shown = PresenceShown { claim, request: self.submission.request.as_ref() };
                            hooks.presence.check(conn, critical, shown, cx).await
                        }
                        None => Ok(None),
                    }
                }
            };
            let outcome = match checked {
                Ok(established) => {
                    let outcome = op.apply(conn, cx).await;
                    // A ceremony consumed by an op that failed is given back with its savepoint.
                    self.established = established.filter(|_| outcome.is_ok());
                    outcome
                }
                Err(refusal) => Err(refusal),
            };
            let keep = outcome.as_ref().map_or_else(OpError::keeps_writes, |_| true);
            self.result = Some(outcome.map_err(OpError::into_api));
            Ok(keep)
        })
    }

    fn apply_group<'a>(
        &'a mut self,
        others: Vec<&'a mut Box<dyn Pending>>,
        conn: &'a mut AnyConnection,
        cx: Ctx,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let mut members: Vec<&mut Job<O>> = vec![self];
            for other in others {
                // Grouped by `TypeId::of::<Job<O>>()`, so every member is a `Job<O>`.
                members.push(other.as_any_mut().downcast_mut::<Job<O>>().expect("a group holds one job type"));
            }
            let results = {
                let ops: Vec<&O> = members.iter().filter_map(|job| job.decision.as_ref().ok()).collect();
                O::apply_together(&ops, conn, cx).await?
            };
            for (job, result) in members.into_iter().zip(results) {
                job.result = Some(result.map_err(OpError::into_api));
            }
            Ok(())
        })
    }

    fn refuse(&mut self, error: ApiError) {
        self.result = Some(Err(error));
    }

    fn code(&self) -> Option<ErrorCode> {
        self.result.as_ref().and_then(|r| r.as_ref().err()).map(|e| e.code)
    }

    fn audited_namespace(&self) -> Option<String> {
        match &self.result {
            Some(Ok(output)) => O::audited_namespace(output),
            _ => None,
        }
    }

    fn audited(&self) -> bool {
        self.decision.as_ref().map_or(true, Op::audited)
    }

    fn presence_record(&self) -> Option<PresenceRecord> {
        self.established
            .clone()
            .or_else(|| self.submission.presence.as_ref().map(|claim| PresenceRecord::local(claim.method())))
    }

    fn policy_rule(&self) -> Option<String> {
        self.demanded_by.clone().or_else(|| self.decision.as_ref().ok().and_then(Op::audited_rule))
    }

    fn reply(self: Box<Self>, batch: Result<(), ApiError>) {
        let answer = match batch {
            Ok(()) => self.result.unwrap_or_else(|| Err(ApiError::internal("a job left its batch without a result"))),
            Err(failure) => Err(failure),
        };
        let _ = self.reply.send(answer);
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// What the domains give the writer, which knows none of them: the presence policy of critical
/// operations, the account policy's rules for the owner's operations, and the housekeeping of
/// their tables.
#[derive(Debug, Clone)]
pub struct Hooks {
    pub presence: Arc<dyn PresencePolicy>,
    pub rules: Arc<dyn OwnerRules>,
    pub maintenance: Vec<Arc<dyn Maintenance>>,
}

/// Handle to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Pending>>,
}

impl std::fmt::Debug for dyn Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("action", &self.submission().audit.action).finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer on its own thread and runtime, so its statements never wait in the
    /// request handlers' run queue. It opens its connection through `db` (again if the database
    /// drops it), and stops once every handle is dropped and the last batch is committed.
    pub fn spawn(
        db: Db,
        clock: Clock,
        metrics: Metrics,
        hooks: Hooks,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        let thread = std::thread::Builder::new().name("agentkeys-writer".into()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(run(db, rx, clock, metrics, hooks)),
                Err(error) => tracing::error!(%error, "cannot start the writer's runtime"),
            }
        })?;
        Ok((Self { jobs }, thread))
    }

    /// Commits a decided request and returns its op's output, or the decision's refusal, or
    /// `REPLAYED_NONCE` / `REVOKED`, or a database failure.
    pub async fn submit<O: Op>(
        &self,
        submission: Submission,
        decision: Result<O, ApiError>,
    ) -> Result<O::Output, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Pending> =
            Box::new(Job { submission, decision, result: None, established: None, demanded_by: None, reply });
        self.jobs.send(job).await.map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())?
    }
}

/// The account heads this writer moved, and the server chain's head its last batch committed.
/// Account heads move only with rows of the server chain, under its locked head, so while that
/// head is still the one this writer left, no other writer (another replica) appended and these
/// heads are the database's: a batch then asks the database only for accounts it does not hold
/// and for places before a head.
#[derive(Debug, Default)]
struct HeadCache {
    global_seq: i64,
    heads: HashMap<String, (i64, Vec<u8>)>,
}

/// The most accounts a writer keeps heads of; past it the cache starts again.
const MAX_CACHED_HEADS: usize = 100_000;

async fn run(db: Db, mut rx: mpsc::Receiver<Box<dyn Pending>>, clock: Clock, metrics: Metrics, hooks: Hooks) {
    let mut conn = db.connect_writer().await.inspect_err(|e| tracing::error!(error = %e, "writer cannot connect")).ok();
    let mut cache = HeadCache::default();
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
            Some(conn) => apply_batch(conn, db.backend, &mut batch, &hooks, now, prune, &mut cache).await,
            None => Err(sqlx::Error::PoolClosed),
        };
        let outcome = match result {
            Ok(heads) => {
                for (i, answer) in heads {
                    if let Some(slot) = &batch[i].submission().head {
                        slot.answer(answer);
                    }
                }
                if prune {
                    last_prune = now;
                }
                metrics.record_batch(batch.len(), started.elapsed());
                Ok(())
            }
            Err(error) => {
                cache = HeadCache::default();
                let failure = ApiError::from(error);
                // A connection the database dropped is reopened before the next batch.
                if let Some(current) = conn.as_mut()
                    && current.ping().await.is_err()
                {
                    tracing::warn!("the writer's database connection was lost; reconnecting");
                    conn = None;
                }
                Err(failure)
            }
        };
        for job in batch.drain(..) {
            job.reply(outcome.clone());
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

async fn apply_batch(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &mut [Box<dyn Pending>],
    hooks: &Hooks,
    now: i64,
    prune: bool,
    cache: &mut HeadCache,
) -> Result<Vec<(usize, HeadAnswer)>, sqlx::Error> {
    let cx = Ctx { now_ms: now };
    let mut tx = conn.begin().await?;
    let head =
        sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash").fetch_one(&mut *tx).await?;
    let mut seq: i64 = head.try_get("seq")?;
    let mut prev_hash: Vec<u8> = head.try_get("hash")?;
    if cache.global_seq != seq || cache.heads.len() > MAX_CACHED_HEADS {
        *cache = HeadCache::default();
    }
    if prune {
        sqlx::query("DELETE FROM nonces WHERE expires_at_ms < $1")
            .bind(now - PRUNE_MARGIN_MS)
            .execute(&mut *tx)
            .await?;
        // Each in a savepoint: housekeeping that fails is logged and retried next time, and
        // never fails the batch it rides with.
        for chore in &hooks.maintenance {
            let mut savepoint = tx.begin().await?;
            match chore.prune(&mut savepoint, now).await {
                Ok(()) => savepoint.commit().await?,
                Err(error) => {
                    tracing::warn!(%error, chore = ?chore, "housekeeping failed; it is retried in 30 s");
                    savepoint.rollback().await?;
                }
            }
        }
    }
    // Revocation is checked here, in the transaction that answers, never from a cache; a nonce
    // is fresh when its session is live, it was never used, and it is not repeated in the batch.
    let nonces: Vec<&NonceRecord> = batch.iter().filter_map(|job| job.submission().nonce.as_ref()).collect();
    let (live, used) = sessions_and_used_nonces(&mut tx, backend, &nonces).await?;
    let mut seen = HashSet::new();
    let mut new_nonces = Vec::new();
    let mut refusals = Vec::new();
    for (i, job) in batch.iter().enumerate() {
        let Some(nonce) = &job.submission().nonce else { continue };
        if !live.contains(&nonce.session_id) {
            refusals.push((i, session_revoked()));
        } else if used.contains(&(nonce.session_id.clone(), nonce.nonce.clone()))
            || !seen.insert((nonce.session_id.clone(), nonce.nonce.clone()))
        {
            refusals.push((i, replayed()));
        } else {
            new_nonces.push(nonce.clone());
        }
    }
    for (i, error) in refusals {
        batch[i].refuse(error);
    }

    // Ops apply first, in arrival order, then each group of ops answered together; the audit rows
    // are appended in that same order, so the chain records what each request saw.
    let mut order = Vec::with_capacity(batch.len());
    for (i, job) in batch.iter_mut().enumerate() {
        if job.together().is_some() {
            continue;
        }
        if job.open() && job.writes() {
            // A write runs in a savepoint, so a refused one — or one the database rejects —
            // fails alone and leaves the rest of the batch to commit.
            let mut savepoint = tx.begin().await?;
            if job.apply(&mut savepoint, hooks, cx).await? {
                savepoint.commit().await?;
            } else {
                savepoint.rollback().await?;
            }
        } else {
            // A read, or a job refused before its op (a replay, a revoked session, its handler's
            // decision): nothing to roll back.
            job.apply(&mut tx, hooks, cx).await?;
        }
        order.push(i);
    }
    let mut groups: Vec<(TypeId, Vec<usize>)> = Vec::new();
    for (i, job) in batch.iter().enumerate() {
        if let Some(group) = job.together() {
            match groups.iter_mut().find(|(id, _)| *id == group) {
                Some((_, members)) => members.push(i),
                None => groups.push((group, vec![i])),
            }
        }
    }
    for (_, members) in groups {
        let mut jobs: Vec<&mut Box<dyn Pending>> =
            batch.iter_mut().enumerate().filter(|(i, _)| members.contains(i)).map(|(_, job)| job).collect();
        let first = jobs.remove(0);
        first.apply_group(jobs, &mut tx, cx).await?;
        order.extend(members);
    }

    let (mut account_heads, at_seen) = account_places(&mut tx, backend, batch, &order, &cache.heads).await?;
    let mut answers = Vec::new();
    let mut rows = Vec::with_capacity(batch.len());
    for &i in &order {
        let job = &batch[i];
        if !job.audited() {
            continue;
        }
        let draft = &job.submission().audit;
        let code = job.code();
        seq += 1;
        let mut row = AuditRow {
            seq,
            ts_ms: now,
            account_id: draft.account_id.clone(),
            actor: draft.actor.clone(),
            session_id: draft.session_id.clone(),
            action: draft.action.to_owned(),
            namespace: job.audited_namespace().or_else(|| draft.subject.namespace.clone()),
            service: draft.subject.service.clone(),
            outcome: outcome_for(code),
            code,
            presence: job.presence_record(),
            policy_rule: job.policy_rule(),
            prev_hash,
            hash: Vec::new(),
            account_seq: None,
            account_hash: None,
        };
        row.hash = row.compute_hash().to_vec();
        prev_hash = row.hash.clone();
        if let Some(account) = &row.account_id {
            let (place, hash) = account_heads.entry(account.clone()).or_insert_with(|| (0, vec![0; 32]));
            *place += 1;
            *hash = next_account_hash(hash, *place, &row.hash);
            row.account_seq = Some(*place);
            row.account_hash = Some(hash.clone());
            if let Some(slot) = &job.submission().head {
                let seen = slot.seen.map(|seen| at_seen.get(&(account.clone(), seen)).cloned());
                answers.push((
                    i,
                    HeadAnswer {
                        head: agentkeys_proto::chain::ChainPlace {
                            seq: *place as u64,
                            hash: hash.as_slice().try_into().expect("32-byte hash"),
                        },
                        at_seen: seen.flatten().and_then(|hash| hash.as_slice().try_into().ok()),
                    },
                ));
            }
        }
        rows.push(row);
    }
    // Every head in the map is of an account that got a row in this batch.
    let touched: Vec<(&String, &(i64, Vec<u8>))> = account_heads.iter().collect();
    write_tail(&mut tx, backend, &new_nonces, &rows, seq, &prev_hash, &touched).await?;
    // Cleared first: a commit that fails leaves the cache empty, never ahead of the database.
    let moved = std::mem::take(cache);
    tx.commit().await?;
    *cache = HeadCache { global_seq: seq, heads: moved.heads };
    cache.heads.extend(account_heads);
    Ok(answers)
}

/// The head of each account chain the batch appends to, and the hash of each place its requests
/// said they saw — from `cached` heads (valid ones, see [`HeadCache`]) where it can, and for the
/// rest one query for both.
#[allow(clippy::type_complexity)]
async fn account_places(
    conn: &mut AnyConnection,
    backend: Backend,
    batch: &[Box<dyn Pending>],
    order: &[usize],
    cached: &HashMap<String, (i64, Vec<u8>)>,
) -> Result<(HashMap<String, (i64, Vec<u8>)>, HashMap<(String, i64), Vec<u8>>), sqlx::Error> {
    // Sets, not lists: a batch of 512 jobs of one account asks for its head once.
    let mut accounts = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    let (mut heads, mut at) = (HashMap::new(), HashMap::new());
    for &i in order {
        let job = &batch[i];
        let Some(account) = job.submission().audit.account_id.as_ref().filter(|_| job.audited()) else { continue };
        let head = cached.get(account);
        match head {
            Some(head) => {
                heads.insert(account.clone(), head.clone());
            }
            None => {
                accounts.insert(account.clone());
            }
        }
        if let Some(place) = job.submission().head.as_ref().and_then(|slot| slot.seen) {
            match head {
                // The place the client saw is the head: its hash is the head's.
                Some((seq, hash)) if *seq == place => {
                    at.insert((account.clone(), place), hash.clone());
                }
                _ => {
                    seen.insert((account.clone(), place));
                }
            }
        }
    }
    if accounts.is_empty() && seen.is_empty() {
        return Ok((heads, at));
    }
    // `IN ()` is not SQL: an empty set of accounts asks for none.
    let accounts: Vec<String> = if accounts.is_empty() { vec![String::new()] } else { accounts.into_iter().collect() };
    let mut sql = format!(
        "SELECT 'head' AS kind, account_id, seq, hash FROM account_audit_heads WHERE account_id IN {}",
        backend.row_placeholders(1, accounts.len())
    );
    if !seen.is_empty() {
        let pairs: Vec<String> =
            (0..seen.len()).map(|i| backend.row_placeholders(accounts.len() + 2 * i + 1, 2)).collect();
        sql.push_str(&format!(
            " UNION ALL SELECT 'at' AS kind, account_id, account_seq AS seq, account_hash AS hash FROM audit_log \
             WHERE (account_id, account_seq) IN ({})",
            pairs.join(", ")
        ));
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for account in &accounts {
        query = query.bind(account.clone());
    }
    for (account, place) in &seen {
        query = query.bind(account.clone()).bind(*place);
    }
    for row in query.fetch_all(&mut *conn).await? {
        let account: String = row.try_get("account_id")?;
        let place: i64 = row.try_get("seq")?;
        let hash: Vec<u8> = row.try_get("hash")?;
        // A stored hash of another length is an error, never a chain started afresh.
        if hash.len() != 32 {
            return Err(sqlx::Error::Decode(
                format!("account {account}'s audit chain has a {}-byte hash", hash.len()).into(),
            ));
        }
        if row.try_get::<String, _>("kind")? == "head" {
            heads.insert(account, (place, hash));
        } else {
            at.insert((account, place), hash);
        }
    }
    Ok((heads, at))
}

/// Which of the batch's sessions are live (exist, not revoked), and which of its nonces were
/// used before — one query for both.
async fn sessions_and_used_nonces(
    conn: &mut AnyConnection,
    backend: Backend,
    nonces: &[&NonceRecord],
) -> Result<(HashSet<String>, HashSet<(String, String)>), sqlx::Error> {
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
    for nonce in nonces {
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
    nonces: &[NonceRecord],
    rows: &[AuditRow],
    seq: i64,
    head_hash: &[u8],
    account_heads: &[(&String, &(i64, Vec<u8>))],
) -> Result<(), sqlx::Error> {
    let nonce_sql = (!nonces.is_empty()).then(|| {
        let values: Vec<String> = (0..nonces.len()).map(|i| backend.row_placeholders(3 * i + 1, 3)).collect();
        format!("INSERT INTO nonces (session_id, nonce, expires_at_ms) VALUES {}", values.join(", "))
    });
    let audit_sql = (!rows.is_empty()).then(|| {
        let values: Vec<String> = (0..rows.len()).map(|i| backend.row_placeholders(16 * i + 1, 16)).collect();
        format!(
            "INSERT INTO audit_log (seq, ts_ms, account_id, actor, session_id, action, namespace, service, outcome, \
             code, presence, policy_rule, prev_hash, hash, account_seq, account_hash) VALUES {}",
            values.join(", ")
        )
    });
    let heads_sql = (!account_heads.is_empty()).then(|| {
        let values: Vec<String> = (0..account_heads.len()).map(|i| backend.row_placeholders(3 * i + 1, 3)).collect();
        format!(
            "INSERT INTO account_audit_heads (account_id, seq, hash) VALUES {} \
             ON CONFLICT (account_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            values.join(", ")
        )
    });
    let bind_heads = |mut query: AnyQuery<'static>| {
        for (account, (place, hash)) in account_heads {
            query = query.bind((*account).clone()).bind(*place).bind(hash.clone());
        }
        query
    };
    let head_sql = format!(
        "UPDATE audit_head SET seq = {}, hash = {} WHERE id = 1",
        backend.placeholder(1),
        backend.placeholder(2)
    );
    let bind_head = |query: AnyQuery<'static>| query.bind(seq).bind(head_hash.to_vec());
    match backend {
        Backend::Sqlite => {
            let sql: Vec<&str> =
                [nonce_sql.as_deref(), audit_sql.as_deref(), heads_sql.as_deref(), Some(head_sql.as_str())]
                    .into_iter()
                    .flatten()
                    .collect();
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.join(";\n"))).persistent(false);
            if nonce_sql.is_some() {
                query = bind_nonces(query, nonces);
            }
            bind_head(bind_heads(bind_rows(query, rows))).execute(&mut *conn).await?;
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
            if let Some(sql) = heads_sql {
                bind_heads(sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false)).execute(&mut *conn).await?;
            }
            bind_head(sqlx::query(sqlx::AssertSqlSafe(head_sql))).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

fn bind_nonces(mut query: AnyQuery<'static>, nonces: &[NonceRecord]) -> AnyQuery<'static> {
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
            .bind(row.outcome.as_str())
            .bind(row.code.map(ErrorCode::as_str))
            .bind(row.presence.as_ref().map(PresenceRecord::to_text))
            .bind(row.policy_rule.clone())
            .bind(row.prev_hash.clone())
            .bind(row.hash.clone())
            .bind(row.account_seq)
            .bind(row.account_hash.clone());
    }
    query
}
