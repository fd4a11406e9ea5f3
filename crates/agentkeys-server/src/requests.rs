//! The approval queue in the database: pairing requests opened by daemons, access and tier
//! requests asked by agents, and the master's look-up, approval and denial of them by code.
//!
//! Codes carry 40 bits, live 10 minutes and are single use. Look-ups by code are guarded per
//! account: after [`SLOW_AFTER`] misses each further look-up must wait twice as long as the last,
//! and after [`LOCK_AFTER`] misses the account's look-ups are locked for [`LOCK_MS`] — the right
//! code included, so a guesser learns nothing while locked. Misses are forgotten after
//! [`FORGET_AFTER_MS`] without one; a hit does not reset them (anyone can open a pairing, so a
//! hit is cheap to arrange).

use agentkeys_proto::agents::{AgentSessionResponse, PendingRequest, RequestKind, Tier};
use agentkeys_proto::{ErrorCode, b64};
use sqlx::{AnyConnection, AnyPool, Row as _};

use crate::agents::{self, NewDevice, Wrap};
use crate::error::ApiError;
use crate::writer::Applied;

pub const SLOW_AFTER: i64 = 5;
pub const LOCK_AFTER: i64 = 10;
pub const LOCK_MS: i64 = 15 * 60 * 1000;
pub const FORGET_AFTER_MS: i64 = 60 * 60 * 1000;

/// A request row.
#[derive(Debug, Clone)]
pub struct RequestRow {
    pub id: String,
    pub code: String,
    pub kind: RequestKind,
    pub account_id: Option<String>,
    pub agent_id: Option<String>,
    pub label: String,
    pub scope: Vec<String>,
    pub tier: Option<Tier>,
    pub reason: Option<String>,
    pub device_sign_public: Option<Vec<u8>>,
    pub device_kx_public: Option<Vec<u8>>,
    pub token_hash: Option<Vec<u8>>,
    pub commitment: Option<Vec<u8>>,
    pub reveal: Option<Vec<u8>>,
    pub status: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub device_id: Option<String>,
    pub session_id: Option<String>,
}

const COLUMNS: &str = "id, code, kind, account_id, agent_id, label, scope, tier, reason, device_sign_public, \
                       device_kx_public, token_hash, commitment, reveal, status, created_at_ms, expires_at_ms, \
                       device_id, session_id";

impl RequestRow {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        let scope: String = row.try_get("scope")?;
        Ok(Self {
            id: row.try_get("id")?,
            code: row.try_get("code")?,
            kind: RequestKind::parse(&row.try_get::<String, _>("kind")?).unwrap_or(RequestKind::Access),
            account_id: row.try_get("account_id")?,
            agent_id: row.try_get("agent_id")?,
            label: row.try_get("label")?,
            scope: scope.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            tier: row.try_get::<Option<String>, _>("tier")?.as_deref().and_then(Tier::parse),
            reason: row.try_get("reason")?,
            device_sign_public: row.try_get("device_sign_public")?,
            device_kx_public: row.try_get("device_kx_public")?,
            token_hash: row.try_get("token_hash")?,
            commitment: row.try_get("commitment")?,
            reveal: row.try_get("reveal")?,
            status: row.try_get("status")?,
            created_at_ms: row.try_get("created_at_ms")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
            device_id: row.try_get("device_id")?,
            session_id: row.try_get("session_id")?,
        })
    }

    /// `pending` turns into `expired` once its time is up.
    pub fn status_at(&self, now: i64) -> &str {
        if self.status == "pending" && self.expires_at_ms < now { "expired" } else { &self.status }
    }

    pub fn to_pending(&self) -> PendingRequest {
        PendingRequest {
            code: self.code.clone(),
            kind: self.kind,
            label: self.label.clone(),
            agent_id: self.agent_id.clone(),
            scope: self.scope.clone(),
            tier: self.tier,
            reason: self.reason.clone(),
            device_sign_public: self.device_sign_public.as_ref().map(b64::encode),
            device_kx_public: self.device_kx_public.as_ref().map(b64::encode),
            commitment: self.commitment.as_ref().map(b64::encode),
            reveal: self.reveal.as_ref().map(b64::encode),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// A new request of any kind.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: String,
    pub code: String,
    pub kind: RequestKind,
    pub account_id: Option<String>,
    pub agent_id: Option<String>,
    pub label: String,
    pub scope: Vec<String>,
    pub tier: Option<Tier>,
    pub reason: Option<String>,
    pub device_sign_public: Option<Vec<u8>>,
    pub device_kx_public: Option<Vec<u8>>,
    pub token_hash: Option<Vec<u8>>,
    pub poll_hash: Option<Vec<u8>>,
    pub commitment: Option<Vec<u8>>,
    pub expires_at_ms: i64,
}

/// What the master grants when approving.
#[derive(Debug, Clone)]
pub enum Grant {
    /// A pairing: the device as the master certified it (keys compared with the request's).
    Pairing {
        agent_id: String,
        device: NewDevice,
        scope: Vec<String>,
        wraps: Vec<Wrap>,
    },
    Access {
        scope: Vec<String>,
        wraps: Vec<Wrap>,
    },
    Tier,
}

/// A queue operation, applied by the writer.
#[derive(Debug, Clone)]
pub enum RequestOp {
    Open(Box<NewRequest>),
    Lookup {
        account_id: String,
        code: String,
    },
    Approve {
        account_id: String,
        code: String,
        grant: Option<Box<Grant>>,
    },
    Deny {
        account_id: String,
        code: String,
    },
    /// The daemon reveals its OTP nonce; only once, only after a master claimed the code.
    Reveal {
        pairing_id: String,
        nonce: Vec<u8>,
    },
}

type OpResult = Result<Result<Applied, ApiError>, sqlx::Error>;

pub async fn apply(conn: &mut AnyConnection, op: &RequestOp, now: i64) -> OpResult {
    match op {
        RequestOp::Open(new) => open(conn, new, now).await,
        RequestOp::Lookup { account_id, code } => {
            match guarded_find(conn, account_id, code, Find::OrUnclaimed, now).await? {
                Ok(row) => {
                    if row.account_id.is_none() {
                        // The first account to look a pairing up claims it: it then shows in that
                        // account's `requests`, and no other account can approve it.
                        sqlx::query("UPDATE requests SET account_id = $1 WHERE id = $2 AND account_id IS NULL")
                            .bind(account_id)
                            .bind(&row.id)
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(Ok(Applied::Request(Box::new(row))))
                }
                Err(error) => Ok(Ok(Applied::Refused(error))),
            }
        }
        RequestOp::Approve { account_id, code, grant } => {
            let row = match guarded_find(conn, account_id, code, Find::Claimed, now).await? {
                Ok(row) => row,
                Err(error) => return Ok(Ok(Applied::Refused(error))),
            };
            let Some(grant) = grant else {
                return Ok(Err(ApiError::bad_request("the approval does not carry what this kind of request needs")));
            };
            approve(conn, account_id, row, grant, now).await
        }
        RequestOp::Reveal { pairing_id, nonce } => {
            let done = sqlx::query(
                "UPDATE requests SET reveal = $1 WHERE id = $2 AND kind = 'pairing' AND status = 'pending' \
                 AND account_id IS NOT NULL AND reveal IS NULL",
            )
            .bind(nonce)
            .bind(pairing_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(if done == 1 {
                Ok(Applied::Nothing)
            } else {
                Err(ApiError::new(
                    ErrorCode::Declined,
                    "this pairing cannot take a reveal now: it is not claimed yet, was already revealed, or is over",
                    "keep polling; reveal once the status says claimed",
                ))
            })
        }
        RequestOp::Deny { account_id, code } => {
            let row = match guarded_find(conn, account_id, code, Find::OrUnclaimed, now).await? {
                Ok(row) => row,
                Err(error) => return Ok(Ok(Applied::Refused(error))),
            };
            decide(conn, &row.id, account_id, "denied", now).await?;
            Ok(Ok(Applied::Request(Box::new(RequestRow { status: "denied".into(), ..row }))))
        }
    }
}

/// Pairing requests need no account, so anyone can open one: a server-wide bucket keeps a flood
/// of them from filling the table.
const PAIRING_OPENS: agents::RateLimit = agents::RateLimit { burst: 60, per_second: 2 };

async fn open(conn: &mut AnyConnection, new: &NewRequest, now: i64) -> OpResult {
    if new.kind == RequestKind::Pairing
        && let Err(retry_after) = agents::take_token(conn, "pairing-opens", PAIRING_OPENS, now).await?
    {
        let mut error = ApiError::new(
            ErrorCode::RateLimited,
            "too many pairing requests are open on this server right now",
            format!("retry in {retry_after}s"),
        );
        error.retry_after_s = Some(retry_after);
        return Ok(Err(error));
    }
    let inserted = sqlx::query(
        "INSERT INTO requests (id, code, kind, account_id, agent_id, label, scope, tier, reason, device_sign_public, \
         device_kx_public, token_hash, poll_hash, commitment, status, created_at_ms, expires_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'pending', $15, $16) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&new.id)
    .bind(&new.code)
    .bind(new.kind.as_str())
    .bind(&new.account_id)
    .bind(&new.agent_id)
    .bind(&new.label)
    .bind(new.scope.join(","))
    .bind(new.tier.map(|t| t.as_str()))
    .bind(&new.reason)
    .bind(&new.device_sign_public)
    .bind(&new.device_kx_public)
    .bind(&new.token_hash)
    .bind(&new.poll_hash)
    .bind(&new.commitment)
    .bind(now)
    .bind(new.expires_at_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(if inserted == 1 {
        Ok(Applied::Nothing)
    } else {
        // 40 random bits collided with a stored code: vanishingly rare, and the client retries.
        Err(ApiError::new(ErrorCode::AlreadyExists, "the generated code is taken", "retry"))
    })
}

fn not_found(code: &str) -> ApiError {
    ApiError::not_found(
        format!("no open request with code {code}"),
        "check the code on the daemon's screen (codes expire after 10 minutes); see open ones with `agentkeys requests`",
    )
}

/// Which requests a code may find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Find {
    /// Only the account's own (its agents' asks, pairings it claimed): approval needs a look-up first.
    Claimed,
    /// Also a pairing no account has claimed yet (look-up, deny).
    OrUnclaimed,
}

/// Finds a pending request by code for `account_id`, counting misses against the account. An
/// `Err` must be committed (the miss is recorded).
async fn guarded_find(
    conn: &mut AnyConnection,
    account_id: &str,
    code: &str,
    find: Find,
    now: i64,
) -> Result<Result<RequestRow, ApiError>, sqlx::Error> {
    let guard =
        sqlx::query("SELECT failures, last_failure_ms, locked_until_ms FROM lookup_guards WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(&mut *conn)
            .await?;
    let (mut failures, last_failure, locked_until) = match guard {
        Some(row) => (
            row.try_get::<i64, _>("failures")?,
            row.try_get::<i64, _>("last_failure_ms")?,
            row.try_get::<i64, _>("locked_until_ms")?,
        ),
        None => (0, 0, 0),
    };
    if now - last_failure > FORGET_AFTER_MS && locked_until <= now {
        failures = 0;
    }
    let wait_until = if locked_until > now {
        locked_until
    } else if failures >= SLOW_AFTER {
        last_failure + 1000 * (1i64 << (failures - SLOW_AFTER + 1).min(10))
    } else {
        0
    };
    if wait_until > now {
        let seconds = ((wait_until - now) as u64).div_ceil(1000);
        let mut error = ApiError::new(
            ErrorCode::RateLimited,
            format!("too many look-ups of codes that do not exist from this account ({failures}); look-ups are paused"),
            format!("wait {seconds}s, then type the code exactly as the daemon shows it"),
        );
        error.retry_after_s = Some(seconds);
        return Ok(Err(error));
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM requests WHERE code = $1 AND status = 'pending' AND expires_at_ms >= $2 \
         AND (account_id = $3 OR (account_id IS NULL AND kind = 'pairing' AND $4 = 1))"
    )))
    .bind(code)
    .bind(now)
    .bind(account_id)
    .bind(i64::from(find == Find::OrUnclaimed))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return Ok(Ok(RequestRow::from_row(&row)?));
    }
    failures += 1;
    let locked_until = if failures >= LOCK_AFTER { now + LOCK_MS } else { 0 };
    sqlx::query(
        "INSERT INTO lookup_guards (account_id, failures, last_failure_ms, locked_until_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (account_id) DO UPDATE SET failures = excluded.failures, last_failure_ms = excluded.last_failure_ms, \
         locked_until_ms = excluded.locked_until_ms",
    )
    .bind(account_id)
    .bind(failures)
    .bind(now)
    .bind(locked_until)
    .execute(&mut *conn)
    .await?;
    Ok(Err(not_found(code)))
}

async fn decide(
    conn: &mut AnyConnection,
    id: &str,
    account_id: &str,
    status: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE requests SET status = $1, decided_at_ms = $2, account_id = $3 WHERE id = $4")
        .bind(status)
        .bind(now)
        .bind(account_id)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

async fn approve(conn: &mut AnyConnection, account_id: &str, row: RequestRow, grant: &Grant, now: i64) -> OpResult {
    let mismatch = || {
        ApiError::bad_request(format!(
            "request {} is a {} request; the approval is for another kind",
            row.code,
            row.kind.as_str()
        ))
    };
    match (row.kind, grant) {
        (RequestKind::Pairing, Grant::Pairing { agent_id, device, scope, wraps }) => {
            // The master certified the keys it was shown; they must be the keys of this request.
            if row.device_sign_public.as_deref() != Some(device.sign_public.as_slice())
                || row.device_kx_public.as_deref() != Some(device.kx_public.as_slice())
                || row.token_hash.as_deref() != Some(device.token_hash.as_slice())
            {
                return Ok(Err(ApiError::bad_request(
                    "the approved device keys are not the ones this pairing request carries",
                )));
            }
            if let Err(error) =
                agents::upsert_agent(conn, account_id, agent_id, &row.label, Tier::Standard, "active", now).await?
            {
                // An existing agent of that label gains this device: re-pairing a new machine (the
                // master was told so before approving). One still waiting for its link code is
                // active from now on.
                if error.code != ErrorCode::AlreadyExists
                    || agents::agent_status(conn, account_id, agent_id).await?.is_none()
                {
                    return Ok(Err(error));
                }
                sqlx::query("UPDATE agents SET status = 'active' WHERE id = $1 AND status = 'pending'")
                    .bind(agent_id)
                    .execute(&mut *conn)
                    .await?;
            }
            if let Err(error) = agents::insert_device(conn, account_id, agent_id, &row.label, device, now).await? {
                return Ok(Err(error));
            }
            for service in scope {
                sqlx::query("INSERT INTO agent_scope (agent_id, service) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(agent_id)
                    .bind(service)
                    .execute(&mut *conn)
                    .await?;
            }
            if wraps.iter().any(|w| w.recipient != device.device_id) {
                return Ok(Err(ApiError::bad_request("every wrap of a pairing approval must be for the new device")));
            }
            if let Err(error) = agents::insert_device_wraps(conn, account_id, wraps).await? {
                return Ok(Err(error));
            }
            sqlx::query(
                "UPDATE requests SET status = 'approved', decided_at_ms = $1, account_id = $2, agent_id = $3, \
                 device_id = $4, session_id = $5 WHERE id = $6",
            )
            .bind(now)
            .bind(account_id)
            .bind(agent_id)
            .bind(&device.device_id)
            .bind(&device.session_id)
            .bind(&row.id)
            .execute(&mut *conn)
            .await?;
            Ok(Ok(Applied::Request(Box::new(RequestRow {
                status: "approved".into(),
                agent_id: Some(agent_id.clone()),
                ..row
            }))))
        }
        (RequestKind::Access, Grant::Access { scope, wraps }) => {
            let Some(agent_id) = row.agent_id.clone() else { return Ok(Err(mismatch())) };
            let outcome = agents::apply(
                conn,
                &agents::AgentOp::Scope {
                    account_id: account_id.to_owned(),
                    agent_id,
                    add: scope.clone(),
                    remove: Vec::new(),
                    wraps: wraps.clone(),
                },
                now,
            )
            .await?;
            if let Err(error) = outcome {
                return Ok(Err(error));
            }
            decide(conn, &row.id, account_id, "approved", now).await?;
            Ok(Ok(Applied::Request(Box::new(RequestRow { status: "approved".into(), ..row }))))
        }
        (RequestKind::Tier, Grant::Tier) => {
            let (Some(agent_id), Some(tier)) = (row.agent_id.clone(), row.tier) else { return Ok(Err(mismatch())) };
            sqlx::query("UPDATE agents SET tier = $1 WHERE id = $2 AND account_id = $3")
                .bind(tier.as_str())
                .bind(&agent_id)
                .bind(account_id)
                .execute(&mut *conn)
                .await?;
            decide(conn, &row.id, account_id, "approved", now).await?;
            Ok(Ok(Applied::Request(Box::new(RequestRow { status: "approved".into(), ..row }))))
        }
        _ => Ok(Err(mismatch())),
    }
}

/// A request by code, unguarded: for the handler to prepare an approval. The writer finds it
/// again, guarded, before anything changes.
pub async fn find_by_code(pool: &AnyPool, code: &str) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM requests WHERE code = $1")))
        .bind(code)
        .fetch_optional(pool)
        .await?
        .map(|row| RequestRow::from_row(&row))
        .transpose()
}

/// The account's pending requests (its agents' asks, and pairings it has looked up).
pub async fn pending_for(pool: &AnyPool, account_id: &str, now: i64) -> Result<Vec<RequestRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM requests WHERE account_id = $1 AND status = 'pending' AND expires_at_ms >= $2 \
         ORDER BY created_at_ms"
    )))
    .bind(account_id)
    .bind(now)
    .fetch_all(pool)
    .await?
    .iter()
    .map(RequestRow::from_row)
    .collect()
}

/// Where a pairing stands, for the daemon that opened it.
#[derive(Debug)]
pub struct PairingState {
    pub status: String,
    pub claimed: bool,
    pub revealed: bool,
    pub commitment: Option<Vec<u8>>,
    pub session: Option<AgentSessionResponse>,
}

/// Where a pairing stands, for the daemon polling it with its poll secret.
pub async fn pairing_status(
    pool: &AnyPool,
    pairing_id: &str,
    poll_hash: &[u8],
    now: i64,
) -> Result<Option<PairingState>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, poll_hash FROM requests WHERE id = $1 AND kind = 'pairing'"
    )))
    .bind(pairing_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: Option<Vec<u8>> = row.try_get("poll_hash")?;
    let matches = stored.is_some_and(|s| bool::from(subtle::ConstantTimeEq::ct_eq(s.as_slice(), poll_hash)));
    if !matches {
        return Ok(None);
    }
    let request = RequestRow::from_row(&row)?;
    let status = request.status_at(now).to_owned();
    let session = match (&request.account_id, &request.agent_id, &request.device_id, &request.session_id) {
        (Some(account_id), Some(agent_id), Some(device_id), Some(session_id)) if status == "approved" => {
            let agent = sqlx::query("SELECT tier FROM agents WHERE id = $1").bind(agent_id).fetch_one(pool).await?;
            let mut conn = pool.acquire().await?;
            Some(AgentSessionResponse {
                account_id: account_id.clone(),
                agent_id: agent_id.clone(),
                label: request.label.clone(),
                device_id: device_id.clone(),
                session_id: session_id.clone(),
                tier: Tier::parse(&agent.try_get::<String, _>("tier")?).unwrap_or(Tier::Standard),
                scope: agents::scope_of(&mut conn, agent_id).await?,
            })
        }
        _ => None,
    };
    Ok(Some(PairingState {
        claimed: request.account_id.is_some(),
        revealed: request.reveal.is_some(),
        commitment: request.commitment.clone(),
        status,
        session,
    }))
}
