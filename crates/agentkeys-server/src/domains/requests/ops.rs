//! The queue's ops. Look-ups by code are guarded per account: after [`SLOW_AFTER`] misses each
//! further look-up must wait twice as long as the last, and after [`LOCK_AFTER`] misses the
//! account's look-ups are locked for [`LOCK_MS`] — the right code included, so a guesser learns
//! nothing while locked. Misses are forgotten after [`FORGET_AFTER_MS`] without one; a hit does
//! not reset them (anyone can open a pairing, so a hit is cheap to arrange).

use agentkeys_proto::ErrorCode;
use agentkeys_proto::agents::{AgentStatus, RequestKind, RequestStatus, Tier};
use agentkeys_proto::critical::Critical;
use agentkeys_proto::namespace::Namespace;
use sqlx::AnyConnection;

use super::queries::{self, LookupGuard, NewRequest, RequestRow};
use crate::domains::accounts::queries::{self as accounts, NewDevice};
use crate::domains::agents::ops::{NewAgentDevice, bind_device, change_scope, upsert_agent};
use crate::domains::agents::queries as agents;
use crate::domains::credentials::ops::{check_covered, check_release, store_wraps};
use crate::domains::credentials::queries as credentials;
use crate::domains::credentials::queries::Wrap;
use crate::domains::policy::ops as policy;
use crate::domains::releases::queries::{self as releases, NewRelease};
use crate::domains::statements::ops::{self as statements, NewStatement};
use crate::engine::op::{AskedAgent, BoxFuture, CriticalFor, Ctx, Maintenance, Op, OpError, OwnerAsk};
use crate::engine::ratelimit::{RateLimit, available, take_token};
use crate::error::ApiError;
use crate::sessions::{self, NewSession};

pub const SLOW_AFTER: i64 = 5;
pub const LOCK_AFTER: i64 = 10;
pub const LOCK_MS: i64 = 15 * 60 * 1000;
pub const FORGET_AFTER_MS: i64 = 60 * 60 * 1000;

/// How long a request is kept after it expired: time enough for a daemon to see its pairing's
/// answer, and for `requests` to say a code expired rather than that it never existed.
pub const KEEP_AFTER_EXPIRY_MS: i64 = 60 * 60 * 1000;

/// Deletes requests an hour past their expiry, decided or not (the audit log keeps what happened).
#[derive(Debug, Clone, Copy, Default)]
pub struct Prune;

impl Maintenance for Prune {
    fn prune<'a>(&'a self, conn: &'a mut AnyConnection, now: i64) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(queries::delete_expired(conn, now - KEEP_AFTER_EXPIRY_MS))
    }
}

/// Misses of code look-ups from every account together: a flood of throwaway accounts, each
/// under its own limit, still runs this dry; then every look-up waits, the right code included.
const LOOKUP_MISSES: RateLimit = RateLimit { burst: 200, every_us: 2_000_000 };
const LOOKUP_MISSES_BUCKET: &str = "lookup-misses";

/// Inserts a new request; a code collision (40 random bits) is refused for the client to retry.
pub async fn open(conn: &mut AnyConnection, new: &NewRequest, now: i64) -> Result<(), OpError> {
    if queries::insert(conn, new, now).await? {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::AlreadyExists, "the generated code is taken", "retry").into())
    }
}

/// An agent's ask for a service or a tier, decided by the policy's `request` rules.
#[derive(Debug)]
pub struct Ask {
    pub request: NewRequest,
    pub policies: std::sync::Arc<crate::domains::policy::ops::Policies>,
    /// The policy version and rule that decided it, for the audit row.
    pub decided_by: std::sync::OnceLock<String>,
}

impl Op for Ask {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        let request = &self.request;
        if let (Some(account_id), Some(agent_id)) = (&request.account_id, &request.agent_id) {
            let ask = policy::AgentAsk {
                account_id,
                agent_id,
                label: &request.label,
                action: agentkeys_policy::Action::Request,
                service: request.scope.first().map(String::as_str),
            };
            policy::refuse_if_denied(conn, &self.policies, ask, cx, &self.decided_by).await?;
        }
        open(conn, request, cx.now_ms).await
    }

    fn audited_rule(&self) -> Option<String> {
        self.decided_by.get().cloned()
    }
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

/// Finds a pending request by code for `account_id`, counting misses against the account. A
/// refusal keeps what it wrote (the miss is recorded).
async fn guarded_find(
    conn: &mut AnyConnection,
    account_id: &str,
    code: &str,
    find: Find,
    now: i64,
) -> Result<RequestRow, OpError> {
    let mut guard = queries::lookup_guard(conn, account_id).await?;
    if now - guard.last_failure_ms > FORGET_AFTER_MS && guard.locked_until_ms <= now {
        guard.failures = 0;
    }
    let wait_until = if guard.locked_until_ms > now {
        guard.locked_until_ms
    } else if guard.failures >= SLOW_AFTER {
        guard.last_failure_ms + 1000 * (1i64 << (guard.failures - SLOW_AFTER + 1).min(10))
    } else {
        0
    };
    if wait_until > now {
        let seconds = ((wait_until - now) as u64).div_ceil(1000);
        return Err(OpError::RefusedKeeping(ApiError::rate_limited(
            format!(
                "too many look-ups of codes that do not exist from this account ({}); look-ups are paused",
                guard.failures
            ),
            format!("wait {seconds}s, then type the code exactly as the daemon shows it"),
            seconds,
        )));
    }
    if let Err(seconds) = available(conn, LOOKUP_MISSES_BUCKET, LOOKUP_MISSES, now).await? {
        return Err(OpError::RefusedKeeping(ApiError::rate_limited(
            "too many look-ups of codes that do not exist on this server; look-ups are paused for every account",
            format!("wait {seconds}s, then type the code exactly as the daemon shows it"),
            seconds,
        )));
    }
    if let Some(row) = queries::find_pending(conn, code, account_id, find == Find::OrUnclaimed, now).await? {
        return Ok(row);
    }
    // The account's own request, decided already (two master devices approving at once: the
    // first wins) or expired: said as such, and no miss, since the account knows its codes.
    if let Some(row) = queries::find_own(conn, code, account_id).await? {
        let status = row.status_at(now);
        // No open request by that code (exit 5, as before), said precisely.
        return Err(OpError::RefusedKeeping(ApiError::not_found(
            format!("request {code} is {status} already: nothing was changed"),
            match status {
                RequestStatus::Expired => "the agent asks again when it needs it; see `agentkeys requests`".to_owned(),
                _ => "another master device (or an earlier command) decided it; `agentkeys usage` shows who".to_owned(),
            },
        )));
    }
    let _ = take_token(conn, LOOKUP_MISSES_BUCKET, LOOKUP_MISSES, now).await?;
    let failures = guard.failures + 1;
    let locked_until_ms = if failures >= LOCK_AFTER { now + LOCK_MS } else { 0 };
    queries::set_lookup_guard(conn, account_id, LookupGuard { failures, last_failure_ms: now, locked_until_ms })
        .await?;
    Err(OpError::RefusedKeeping(not_found(code)))
}

/// The master looks a request up by code; the first account to look a pairing up claims it: it
/// then shows in that account's `requests`, and no other account can approve it.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub account_id: String,
    pub code: String,
}

impl Op for Lookup {
    type Output = RequestRow;

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<RequestRow, OpError> {
        let row = guarded_find(conn, &self.account_id, &self.code, Find::OrUnclaimed, cx.now_ms).await?;
        if row.account_id.is_none() {
            queries::claim(conn, &row.id, &self.account_id).await?;
        }
        Ok(row)
    }
}

/// What the master grants when approving.
#[derive(Debug, Clone)]
pub enum Grant {
    /// A pairing: the device as the master certified it (keys compared with the request's).
    Pairing {
        agent_id: String,
        device: NewAgentDevice,
        scope: Vec<String>,
        wraps: Vec<Wrap>,
    },
    Access {
        scope: Vec<String>,
        wraps: Vec<Wrap>,
    },
    Tier,
    /// A device join: the new master device as the account key certified it, its session, and
    /// the account key wrapped to it.
    Device {
        device: NewDevice,
        session: NewSession,
        account_key_wrap: Vec<u8>,
    },
    /// An agent's replacement machine: its device certified for the agent the request names,
    /// every key the agent may read wrapped to it, and whether the old devices stay.
    Recovery {
        agent_id: String,
        device: NewAgentDevice,
        wraps: Vec<Wrap>,
        keep_old: bool,
    },
    /// A release of a high-value credential: its current data key wrapped to the asking device,
    /// for `uses` reads (`None`: any number) within `for_ms`.
    Release {
        wrap: Wrap,
        uses: Option<i64>,
        for_ms: i64,
    },
}

/// Approves a request by code. Without a grant (the handler found no request of this account
/// under the code) it still runs the guarded look-up, so the miss is counted.
#[derive(Debug, Clone)]
pub struct Approve {
    pub account_id: String,
    pub code: String,
    pub grant: Option<Box<Grant>>,
    /// The account's statements of this approval (the grant of its scope).
    pub statements: Vec<NewStatement>,
    /// The policies, for a release of a credential that is not high-value: approved only while
    /// a rule still requires approval for that read (the policy at decision time decides).
    pub policies: std::sync::Arc<crate::domains::policy::ops::Policies>,
}

impl Op for Approve {
    type Output = RequestRow;

    fn critical(&self) -> Option<CriticalFor<'_>> {
        Some(CriticalFor { op: Critical::Approve, account_id: &self.account_id })
    }

    /// The agent and services of the request, as the approval grants them. A code of no
    /// request here asks nothing: the op refuses it, counting the miss.
    async fn owner_ask(&self, conn: &mut AnyConnection) -> Result<Option<OwnerAsk>, OpError> {
        let Some(row) = queries::find_by_code(&mut *conn, &self.code)
            .await?
            .filter(|row| row.account_id.as_deref().is_none_or(|account| account == self.account_id))
        else {
            return Ok(None);
        };
        let by_id = |id: &str| AskedAgent { id: id.to_owned(), label: None };
        // A new device of an existing agent (a pairing under its label, a recovery) gets every
        // key of its scope: those services are what the approval gives.
        let (agent, services) = match self.grant.as_deref() {
            Some(Grant::Pairing { agent_id, scope, .. }) => {
                let mut services = agents::scope_of(conn, agent_id).await?;
                services.extend(scope.iter().cloned());
                services.sort();
                services.dedup();
                (Some(AskedAgent { id: agent_id.clone(), label: Some(row.label.clone()) }), services)
            }
            Some(Grant::Access { scope, .. }) => (row.agent_id.as_deref().map(by_id), scope.clone()),
            Some(Grant::Recovery { agent_id, .. }) => (Some(by_id(agent_id)), agents::scope_of(conn, agent_id).await?),
            _ => (row.agent_id.as_deref().map(by_id), row.scope.clone()),
        };
        Ok(Some(OwnerAsk { agent, services, ..OwnerAsk::about(&self.account_id, agentkeys_policy::Action::Approve) }))
    }

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<RequestRow, OpError> {
        let row = guarded_find(conn, &self.account_id, &self.code, Find::Claimed, cx.now_ms).await?;
        let Some(grant) = &self.grant else {
            return Err(ApiError::bad_request("the approval does not carry what this kind of request needs").into());
        };
        statements::append_all(conn, &self.account_id, &self.statements, cx.now_ms).await?;
        approve(conn, &self.account_id, row, grant, &self.policies, cx).await
    }
}

async fn approve(
    conn: &mut AnyConnection,
    account_id: &str,
    row: RequestRow,
    grant: &Grant,
    policies: &crate::domains::policy::ops::Policies,
    cx: Ctx,
) -> Result<RequestRow, OpError> {
    let now = cx.now_ms;
    let mismatch = || {
        OpError::from(ApiError::bad_request(format!(
            "request {} is a {} request; the approval is for another kind",
            row.code,
            row.kind.as_str()
        )))
    };
    match (row.kind, grant) {
        (RequestKind::Pairing, Grant::Pairing { agent_id, device, scope, wraps }) => {
            // The master certified the keys it was shown; they must be the keys of this request.
            if row.device_sign_public.as_deref() != Some(device.sign_public.as_slice())
                || row.device_kx_public.as_deref() != Some(device.kx_public.as_slice())
                || row.token_hash.as_deref() != Some(device.session.token_hash.as_slice())
            {
                return Err(ApiError::bad_request(
                    "the approved device keys are not the ones this pairing request carries",
                )
                .into());
            }
            // An existing agent of that label gains this device: re-pairing a new machine (the
            // master was told so before approving). One still waiting for its link code is active
            // from now on.
            if let Err(error) =
                upsert_agent(conn, account_id, agent_id, &row.label, Tier::Standard, AgentStatus::Active, now).await
            {
                let exists = matches!(&error, OpError::Refused(e) if e.code == ErrorCode::AlreadyExists);
                if !exists || agents::status(conn, account_id, agent_id).await?.is_none() {
                    return Err(error);
                }
                agents::activate_pending(conn, agent_id).await?;
            }
            bind_device(conn, account_id, agent_id, &row.label, device, now).await?;
            for service in scope {
                agents::add_scope(conn, agent_id, service).await?;
            }
            if wraps.iter().any(|w| w.recipient != device.device_id) {
                return Err(ApiError::bad_request("every wrap of a pairing approval must be for the new device").into());
            }
            store_wraps(conn, account_id, wraps).await?;
            // The new device must open everything its agent may read now: the whole scope (an
            // existing agent's included, widened while this approval was prepared or not) and
            // the agent's private credentials.
            let mut readable: Vec<(Namespace, String)> =
                agents::scope_of(conn, agent_id).await?.into_iter().map(|s| (Namespace::Vault, s)).collect();
            let private = Namespace::Agent(agent_id.clone());
            for service in credentials::services_in(conn, account_id, &private).await? {
                readable.push((private.clone(), service));
            }
            check_covered(conn, account_id, &readable, std::slice::from_ref(&device.device_id), wraps).await?;
            queries::approve_pairing(
                conn,
                &row.id,
                account_id,
                agent_id,
                &device.device_id,
                &device.session.session_id,
                now,
            )
            .await?;
            Ok(RequestRow { status: RequestStatus::Approved, agent_id: Some(agent_id.clone()), ..row })
        }
        (RequestKind::Access, Grant::Access { scope, wraps }) => {
            let Some(agent_id) = row.agent_id.clone() else { return Err(mismatch()) };
            match agents::status(conn, account_id, &agent_id).await? {
                None => return Err(crate::error::no_such_agent(&agent_id).into()),
                Some(AgentStatus::TornDown) => return Err(crate::error::agent_torn_down(&agent_id).into()),
                Some(_) => change_scope(conn, account_id, &agent_id, scope, &[], wraps, now).await?,
            }
            queries::decide(conn, &row.id, account_id, RequestStatus::Approved, now).await?;
            Ok(RequestRow { status: RequestStatus::Approved, ..row })
        }
        (RequestKind::Device, Grant::Device { device, session, account_key_wrap }) => {
            if row.device_sign_public.as_deref() != Some(device.sign_public.as_slice())
                || row.device_kx_public.as_deref() != Some(device.kx_public.as_slice())
                || row.token_hash.as_deref() != Some(session.token_hash.as_slice())
            {
                return Err(ApiError::bad_request("the approved device keys are not the ones this join request carries")
                    .into());
            }
            if !accounts::insert_device(conn, account_id, device, now).await? {
                return Err(ApiError::new(
                    ErrorCode::AlreadyExists,
                    format!("device {} is already registered", device.device_id),
                    "run `agentkeys device join` again on the new machine: it makes a new key",
                )
                .into());
            }
            let recipient = accounts::device_recipient(&device.device_id);
            accounts::insert_key_wrap(conn, account_id, &recipient, account_key_wrap).await?;
            sessions::insert(conn, account_id, &device.device_id, session, now).await?;
            queries::approve_master(conn, &row.id, account_id, &device.device_id, &session.session_id, now).await?;
            Ok(RequestRow { status: RequestStatus::Approved, ..row })
        }
        (RequestKind::Recovery, Grant::Recovery { agent_id, device, wraps, keep_old }) => {
            if row.device_sign_public.as_deref() != Some(device.sign_public.as_slice())
                || row.device_kx_public.as_deref() != Some(device.kx_public.as_slice())
                || row.token_hash.as_deref() != Some(device.session.token_hash.as_slice())
            {
                return Err(ApiError::bad_request(
                    "the approved device keys are not the ones this recovery request carries",
                )
                .into());
            }
            let Some(agent) = agents::get(conn, account_id, agent_id).await? else {
                return Err(crate::error::no_such_agent(agent_id).into());
            };
            // The agent the replacement machine named, by id, label or alias.
            if agents::resolve_name(conn, account_id, &row.label).await?.as_deref() != Some(agent_id.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "recovery {} names agent {:?}, which is not {agent_id}",
                    row.code, row.label
                ))
                .into());
            }
            match agent.status {
                AgentStatus::Active | AgentStatus::Pending => {}
                AgentStatus::TornDown => {
                    return Err(ApiError::new(
                        ErrorCode::Denied,
                        format!("agent {} was torn down: its private credentials are gone, nothing is left to recover", agent.label),
                        format!("pair the machine anew: `agentkeys-daemon pair --label {}`", agent.label),
                    )
                    .into());
                }
                AgentStatus::Revoked => {
                    return Err(ApiError::new(
                        ErrorCode::Denied,
                        format!("agent {} was revoked, so it is not recovered", agent.label),
                        format!(
                            "pair the machine anew (`agentkeys-daemon pair --label {}`): pairing under its label \
                             brings the agent back, which is a decision of its own",
                            agent.label
                        ),
                    )
                    .into());
                }
            }
            if agent.status == AgentStatus::Pending {
                agents::activate_pending(conn, agent_id).await?;
            }
            let old = agents::active_devices(conn, agent_id).await?;
            bind_device(conn, account_id, agent_id, &agent.label, device, now).await?;
            if !keep_old {
                for old in &old {
                    sessions::revoke_for_device(conn, old, now).await?;
                    accounts::revoke_device(conn, account_id, old, now).await?;
                    releases::delete_of_device(conn, old).await?;
                }
            }
            if wraps.iter().any(|w| w.recipient != device.device_id) {
                return Err(ApiError::bad_request("every wrap of a recovery approval must be for the new device").into());
            }
            store_wraps(conn, account_id, wraps).await?;
            let mut readable: Vec<(Namespace, String)> =
                agents::scope_of(conn, agent_id).await?.into_iter().map(|s| (Namespace::Vault, s)).collect();
            let private = Namespace::Agent(agent_id.clone());
            for service in credentials::services_in(conn, account_id, &private).await? {
                readable.push((private.clone(), service));
            }
            check_covered(conn, account_id, &readable, std::slice::from_ref(&device.device_id), wraps).await?;
            queries::approve_pairing(
                conn,
                &row.id,
                account_id,
                agent_id,
                &device.device_id,
                &device.session.session_id,
                now,
            )
            .await?;
            Ok(RequestRow { status: RequestStatus::Approved, agent_id: Some(agent_id.clone()), ..row })
        }
        (RequestKind::Release, Grant::Release { wrap, uses, for_ms }) => {
            let Some(agent_id) = row.agent_id.clone() else { return Err(mismatch()) };
            // Revoking or tearing the agent down denies its pending asks, so this is the case of a
            // device replaced (agent recovery) meanwhile, or an agent ended in this very batch.
            match agents::status(conn, account_id, &agent_id).await? {
                Some(AgentStatus::Active) => {}
                Some(AgentStatus::TornDown) => return Err(crate::error::agent_torn_down(&agent_id).into()),
                _ => return Err(crate::error::no_such_agent(&agent_id).into()),
            }
            if !agents::active_devices(conn, &agent_id).await?.contains(&wrap.recipient) {
                return Err(ApiError::new(
                    ErrorCode::Denied,
                    format!("device {} of agent {} that asked for this release was revoked", wrap.recipient, row.label),
                    "nothing was released; the agent's current device asks again when it reads",
                )
                .into());
            }
            if !check_release(conn, account_id, wrap).await? {
                let ask = policy::AgentAsk {
                    account_id,
                    agent_id: &agent_id,
                    label: &row.label,
                    action: agentkeys_policy::Action::Read,
                    service: Some(&wrap.service),
                };
                let verdict = policy::decide(conn, policies, ask, cx).await?;
                if verdict.is_none_or(|verdict| verdict.outcome != agentkeys_policy::Outcome::RequireApproval) {
                    return Err(ApiError::new(
                        ErrorCode::Denied,
                        format!(
                            "'{}' is not high-value and no policy rule requires approval for it now: agents in its \
                             scope read it without a release",
                            wrap.service
                        ),
                        format!("deny this request (`agentkeys deny {}`); the scope decides who reads it", row.code),
                    )
                    .into());
                }
            }
            let release = NewRelease {
                request_id: row.id.clone(),
                agent_id,
                wrap: wrap.clone(),
                uses: *uses,
                expires_at_ms: now + for_ms,
            };
            releases::insert(conn, account_id, &release, now).await?;
            queries::decide(conn, &row.id, account_id, RequestStatus::Approved, now).await?;
            Ok(RequestRow { status: RequestStatus::Approved, ..row })
        }
        (RequestKind::AccountRecovery, _) => Err(ApiError::new(
            ErrorCode::Denied,
            format!("request {} is a recovery with the recovery key: it is not approved, it waits out its delay", row.code),
            "deny it if it is not yours (`agentkeys deny CODE`); to add a machine you hold, use `agentkeys device join` \
             there and approve that instead",
        )
        .into()),
        (RequestKind::Tier, Grant::Tier) => {
            let (Some(agent_id), Some(tier)) = (row.agent_id.clone(), row.tier) else { return Err(mismatch()) };
            agents::set_tier(conn, account_id, &agent_id, tier).await?;
            queries::decide(conn, &row.id, account_id, RequestStatus::Approved, now).await?;
            Ok(RequestRow { status: RequestStatus::Approved, ..row })
        }
        _ => Err(mismatch()),
    }
}

/// Denies a request by code (a pairing no account claimed yet included).
#[derive(Debug, Clone)]
pub struct Deny {
    pub account_id: String,
    pub code: String,
}

impl Op for Deny {
    type Output = RequestRow;

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<RequestRow, OpError> {
        let row = guarded_find(conn, &self.account_id, &self.code, Find::OrUnclaimed, cx.now_ms).await?;
        queries::decide(conn, &row.id, &self.account_id, RequestStatus::Denied, cx.now_ms).await?;
        Ok(RequestRow { status: RequestStatus::Denied, ..row })
    }
}
