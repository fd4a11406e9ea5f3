//! The credentials domain's ops: the owner's reads (answered together, one `SELECT` per batch),
//! new versions and removals, an agent's read, and [`store_wraps`] for the domains that hand data
//! keys to agent devices.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use agentkeys_policy::{Action, Outcome};

use agentkeys_proto::ErrorCode;
use agentkeys_proto::agents::{AgentStatus, REQUEST_TTL_MS, RecipientKind, RequestKind, Tier};
use agentkeys_proto::critical::Critical;
use agentkeys_proto::grant::FLAG_HIGH_VALUE;
use agentkeys_proto::namespace::Namespace;
use sqlx::AnyConnection;

use super::queries::{self, NewVersionRow, SealedVersion, StoredGrant, Wrap};
use crate::db::Backend;
use crate::domains::agents::queries as agents;
use crate::domains::links::queries as links;
use crate::domains::policy::ops::{self as policy, AgentAsk, Policies};
use crate::domains::releases::queries as releases;
use crate::domains::requests::queries as requests;
use crate::engine::op::{CriticalFor, Ctx, Op, OpError, OwnerAsk};
use crate::engine::ratelimit::{RateLimit, take_token};
use crate::error::{ApiError, credential_not_found, no_such_agent, session_revoked};

/// The account owner reads the newest version of a credential, wrapped to the account key.
#[derive(Debug, Clone)]
pub struct ReadCredential {
    pub account_id: String,
    pub namespace: Namespace,
    pub service: String,
    pub backend: Backend,
}

impl Op for ReadCredential {
    type Output = SealedVersion;
    const WRITES: bool = false;
    const TOGETHER: bool = true;

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<SealedVersion, OpError> {
        let mut all = Self::apply_together(&[self], conn, cx).await?;
        all.pop().unwrap_or_else(|| Err(credential_not_found(&self.service).into()))
    }

    async fn apply_together(
        ops: &[&Self],
        conn: &mut AnyConnection,
        _cx: Ctx,
    ) -> Result<Vec<Result<SealedVersion, OpError>>, sqlx::Error> {
        let Some(first) = ops.first() else { return Ok(Vec::new()) };
        let keys: Vec<(&str, String, &str)> =
            ops.iter().map(|op| (op.account_id.as_str(), op.namespace.as_stored(), op.service.as_str())).collect();
        let found = queries::newest_many(conn, first.backend, &keys).await?;
        Ok(ops
            .iter()
            .zip(found)
            .map(|(op, found)| found.ok_or_else(|| credential_not_found(&op.service).into()))
            .collect())
    }
}

/// What a new version or a removal committed.
#[derive(Debug, Clone, Copy)]
pub struct StoredVersion {
    pub version: i64,
    pub created_at_ms: i64,
}

/// An agent lists the names it may see (read from the read pool by the route): this decides,
/// by the policy's `list` rules, whether they are answered, and audits the listing.
#[derive(Debug)]
pub struct AgentList {
    pub account_id: String,
    pub agent_id: String,
    pub policies: Arc<Policies>,
    pub decided_by: OnceLock<String>,
}

impl Op for AgentList {
    type Output = ();
    const WRITES: bool = false;

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        // Without a policy there is nothing to decide: no look-up in the writer for a listing.
        if self.policies.current(conn, &self.account_id).await?.is_none() {
            return Ok(());
        }
        // An agent that is gone sees nothing to list: its session is refused before this.
        let Some(agent) = agents::get(conn, &self.account_id, &self.agent_id).await? else { return Ok(()) };
        let ask = AgentAsk {
            account_id: &self.account_id,
            agent_id: &self.agent_id,
            label: &agent.label,
            action: Action::List,
            service: None,
        };
        policy::refuse_if_denied(conn, &self.policies, ask, cx, &self.decided_by).await
    }

    fn audited_rule(&self) -> Option<String> {
        self.decided_by.get().cloned()
    }
}

/// A new sealed version of a credential, with its data key wrapped to every agent device that
/// may read it.
#[derive(Debug, Clone)]
pub struct PutVersion {
    pub account_id: String,
    pub namespace: Namespace,
    pub service: String,
    pub version: i64,
    pub ciphertext: Vec<u8>,
    pub data_key_wrap: Vec<u8>,
    pub created_by: String,
    pub flags: i64,
    /// The grant of the account-key wrap (signed by the writer; readers check it).
    pub grant: StoredGrant,
    /// Must be exactly [`agents::recipients`] at commit time; none for a high-value version.
    pub wraps: Vec<Wrap>,
    /// What the route saw: this version marks or clears high-value (critical). A change made
    /// meanwhile that makes the route wrong is refused, never applied unguarded.
    pub changes_high_value: bool,
}

/// The owner's `store` or `rm` of `service`, as the policy sees it: about the agent whose
/// private namespace it is, if it is one.
fn owner_ask(account_id: &str, action: Action, namespace: &Namespace, service: &str) -> OwnerAsk {
    let ask = OwnerAsk::about(account_id, action).services([service.to_owned()]);
    match namespace.agent_id() {
        Some(agent_id) => ask.agent(agent_id),
        None => ask,
    }
}

/// Whether stored flags mark a high-value credential.
pub fn is_high_value(flags: i64) -> bool {
    flags & i64::from(FLAG_HIGH_VALUE) != 0
}

/// A write to an agent's namespace needs that agent, in this account, not torn down.
async fn check_owner(conn: &mut AnyConnection, account_id: &str, namespace: &Namespace) -> Result<(), OpError> {
    let Some(agent_id) = namespace.agent_id() else { return Ok(()) };
    match agents::status(conn, account_id, agent_id).await? {
        Some(status) if status != AgentStatus::TornDown => Ok(()),
        _ => Err(no_such_agent(agent_id).into()),
    }
}

impl Op for PutVersion {
    type Output = StoredVersion;

    fn critical(&self) -> Option<CriticalFor<'_>> {
        self.changes_high_value.then_some(CriticalFor { op: Critical::HighValueChange, account_id: &self.account_id })
    }

    async fn owner_ask(&self, _conn: &mut AnyConnection) -> Result<Option<OwnerAsk>, OpError> {
        Ok(Some(owner_ask(&self.account_id, Action::Store, &self.namespace, &self.service)))
    }

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<StoredVersion, OpError> {
        check_owner(conn, &self.account_id, &self.namespace).await?;
        let newest = queries::newest(conn, &self.account_id, &self.namespace, &self.service).await?;
        let current = newest.as_ref().map_or(0, |row| row.version);
        // A removal marker keeps the mark of what it removed.
        let was_high_value = newest.as_ref().is_some_and(|row| is_high_value(row.flags));
        let high_value = is_high_value(self.flags);
        if (was_high_value != high_value) != self.changes_high_value {
            return Err(ApiError::version_conflict(
                format!("whether '{}' is high-value changed while this store was on its way", self.service),
                "run the command again",
                Some(current),
            )
            .into());
        }
        if self.version != current + 1 {
            return Err(ApiError::version_conflict(
                format!(
                    "version {} of '{}' cannot be created: the current version is {current}",
                    self.version, self.service
                ),
                format!("seal again as version {}", current + 1),
                Some(current),
            )
            .into());
        }
        let row = NewVersionRow {
            account_id: &self.account_id,
            namespace: &self.namespace,
            service: &self.service,
            version: self.version,
            ciphertext: Some(&self.ciphertext),
            data_key_wrap: Some(&self.data_key_wrap),
            created_by: &self.created_by,
            flags: self.flags,
            grant: Some((&self.grant.signer, &self.grant.signature)),
        };
        queries::insert_version(conn, &row, cx.now_ms).await?;
        releases::delete_older(conn, &self.account_id, &self.namespace, &self.service, self.version).await?;
        if high_value {
            // Never pre-wrapped: only a release, approved use by use, carries its key to an agent.
            if !self.wraps.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "'{}' is high-value: its data key is never wrapped to agents ahead of a release; send no agent_wraps",
                    self.service
                ))
                .into());
            }
            queries::delete_agent_wraps_of(conn, &self.account_id, &self.namespace, &self.service).await?;
            return Ok(StoredVersion { version: self.version, created_at_ms: cx.now_ms });
        }
        // Every agent that may read the service gets the new data key, or the write fails:
        // a version some reader cannot open would silently cut that agent off. A pending link
        // code's key is one of them: the daemon that redeems it re-wraps what it carries.
        let recipients = agents::recipients(conn, &self.account_id, &self.namespace, &self.service, cx.now_ms).await?;
        let required: BTreeSet<&str> = recipients.iter().map(|r| r.device_id.as_str()).collect();
        let given: BTreeSet<&str> = self.wraps.iter().map(|w| w.recipient.as_str()).collect();
        if required != given || given.len() != self.wraps.len() {
            return Err(ApiError::version_conflict(
                format!("the agents that may read '{}' changed while it was being stored", self.service),
                "retry; the client re-reads the recipients and wraps again",
                Some(current),
            )
            .into());
        }
        for wrap in &self.wraps {
            let to_link = recipients.iter().any(|r| r.device_id == wrap.recipient && r.kind == RecipientKind::Link);
            if to_link {
                links::upsert_wrap(conn, wrap).await?;
            } else {
                queries::upsert_wrap(conn, &self.account_id, wrap).await?;
            }
        }
        Ok(StoredVersion { version: self.version, created_at_ms: cx.now_ms })
    }
}

/// Removes a credential: a version without ciphertext becomes its newest; history is kept.
#[derive(Debug, Clone)]
pub struct RemoveCredential {
    pub account_id: String,
    pub namespace: Namespace,
    pub service: String,
    pub removed_by: String,
}

impl Op for RemoveCredential {
    type Output = StoredVersion;

    async fn owner_ask(&self, _conn: &mut AnyConnection) -> Result<Option<OwnerAsk>, OpError> {
        Ok(Some(owner_ask(&self.account_id, Action::Rm, &self.namespace, &self.service)))
    }

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<StoredVersion, OpError> {
        let newest = queries::newest(conn, &self.account_id, &self.namespace, &self.service).await?;
        let Some((current, flags)) = newest.filter(|row| row.ciphertext.is_some()).map(|row| (row.version, row.flags))
        else {
            return Err(credential_not_found(&self.service).into());
        };
        let row = NewVersionRow {
            account_id: &self.account_id,
            namespace: &self.namespace,
            service: &self.service,
            version: current + 1,
            ciphertext: None,
            data_key_wrap: None,
            created_by: &self.removed_by,
            // The marker keeps the mark: storing the credential again without it is a change of
            // it (critical), not a new credential.
            flags: flags & i64::from(agentkeys_proto::grant::FLAG_HIGH_VALUE),
            grant: None,
        };
        queries::insert_version(conn, &row, cx.now_ms).await?;
        Ok(StoredVersion { version: current + 1, created_at_ms: cx.now_ms })
    }
}

/// An agent reads a credential: its private one first, else the vault's if the service is in
/// its scope — and either way only through a data key wrapped to this very device. Everything
/// after the rate-limit check is refused keeping the spent token, so guessing names costs as
/// much as reading them.
#[derive(Debug, Clone)]
pub struct AgentRead {
    pub account_id: String,
    pub agent_id: String,
    pub device_id: String,
    pub service: String,
    pub limit: RateLimit,
    /// The release request this read opens if the credential is high-value and nothing released
    /// it to this device yet (its id and code drawn by the route: randomness is passed in).
    pub release: ReleaseAsk,
    pub policies: Arc<Policies>,
    /// The policy rule that decided the read, for its audit row (set while applying).
    pub decided_by: OnceLock<String>,
}

/// A release request a read may open.
#[derive(Debug, Clone)]
pub struct ReleaseAsk {
    pub id: String,
    pub code: String,
    /// The agent's stated reason (MCP `reason`), shown to the owner.
    pub reason: Option<String>,
}

impl Op for AgentRead {
    /// The namespace it was served from, and the version wrapped to the agent's device.
    type Output = (Namespace, SealedVersion);

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(Namespace, SealedVersion), OpError> {
        let (agent_id, service) = (self.agent_id.as_str(), self.service.as_str());
        if let Err(retry_after) = take_token(conn, &format!("read:{agent_id}"), self.limit, cx.now_ms).await? {
            return Err(ApiError::rate_limited(
                format!(
                    "agent {agent_id} is over its read rate ({}, bursts of {})",
                    self.limit.per_second_shown(),
                    self.limit.burst
                ),
                format!("retry in {retry_after}s; cache the value for the length of a task instead of re-reading it"),
                retry_after,
            )
            .into());
        }
        let refuse = |error: ApiError| OpError::RefusedKeeping(error);
        let Some(agent) = agents::get(conn, &self.account_id, agent_id).await? else {
            return Err(refuse(no_such_agent(agent_id)));
        };
        if agent.status != AgentStatus::Active {
            return Err(refuse(session_revoked()));
        }
        let label = agent.label.as_str();
        if agent.tier < Tier::Standard {
            return Err(refuse(ApiError::new(
                ErrorCode::Denied,
                format!("agent {label} is at tier safe: it sees credential names, never values"),
                format!("ask the account owner: agentkeys agent upgrade {label} --tier standard"),
            )));
        }
        let private = Namespace::Agent(agent_id.to_owned());
        let (namespace, row) = match queries::newest(conn, &self.account_id, &private, service).await? {
            Some(row) if row.ciphertext.is_some() => (private, row),
            _ => {
                if !agents::in_scope(conn, agent_id, service).await? {
                    let pending = requests::pending_access_code(conn, agent_id, service, cx.now_ms).await?;
                    return Err(refuse(out_of_scope(label, service, pending)));
                }
                match queries::newest(conn, &self.account_id, &Namespace::Vault, service).await? {
                    Some(row) if row.ciphertext.is_some() => (Namespace::Vault, row),
                    _ => {
                        return Err(refuse(ApiError::not_found(
                            format!("no credential named '{service}'"),
                            format!("ask the account owner to store it: agentkeys store {service}"),
                        )));
                    }
                }
            }
        };
        let ask =
            AgentAsk { account_id: &self.account_id, agent_id, label, action: Action::Read, service: Some(service) };
        let verdict = policy::decide(conn, &self.policies, ask, cx).await?;
        // Rules narrow what scope gave (checked above): a `deny` refuses, `require_approval`
        // makes the read a release, as a high-value credential's always is.
        let mut needs_release = is_high_value(row.flags);
        if let Some(verdict) = verdict {
            let _ = self.decided_by.set(verdict.audited());
            match verdict.outcome {
                Outcome::Deny => return Err(refuse(verdict.denial(&ask))),
                Outcome::RequireApproval => needs_release = true,
                Outcome::Allow | Outcome::RequirePresence => {}
            }
        }
        if needs_release {
            return self.release(conn, cx, namespace, row, label).await;
        }
        let wrap = queries::wrap_for(conn, &self.account_id, &namespace, service, row.version, &self.device_id).await?;
        let sealed = match (wrap, row.sealed()) {
            // The reader gets its own wrap, and that wrap's grant (not the account key's).
            (Some((wrap, grant)), Some(sealed)) => SealedVersion { data_key_wrap: wrap, grant, ..sealed },
            (None, Some(sealed)) => {
                return Err(refuse(ApiError::new(
                    ErrorCode::Denied,
                    format!(
                        "'{service}' version {} has no key wrapped for this device of agent {label}",
                        sealed.version
                    ),
                    format!("the account owner re-wraps it with: agentkeys scope {label} --add {service}"),
                )));
            }
            (_, None) => return Err(refuse(credential_not_found(service))),
        };
        Ok((namespace, sealed))
    }

    fn audited_namespace((namespace, _): &Self::Output) -> Option<String> {
        Some(namespace.as_stored())
    }

    fn audited_rule(&self) -> Option<String> {
        self.decided_by.get().cloned()
    }
}

impl AgentRead {
    /// A high-value read: one use of a release to this very device, or `APPROVAL_REQUIRED` with
    /// the code of the release request (the pending one, or one this read opens).
    async fn release(
        &self,
        conn: &mut AnyConnection,
        cx: Ctx,
        namespace: Namespace,
        row: queries::CredentialRow,
        label: &str,
    ) -> Result<(Namespace, SealedVersion), OpError> {
        let service = self.service.as_str();
        let Some(sealed) = row.sealed() else { return Err(OpError::RefusedKeeping(credential_not_found(service))) };
        if let Some((wrap, grant)) =
            releases::take(conn, &self.device_id, &namespace, service, sealed.version, cx.now_ms).await?
        {
            let signer = queries::signer(conn, &self.account_id, &grant.signer).await?;
            return Ok((
                namespace,
                SealedVersion { data_key_wrap: wrap, grant: Some((grant, signer)), released: true, ..sealed },
            ));
        }
        let code = match requests::pending_release_code(conn, &self.device_id, &namespace, service, cx.now_ms).await? {
            Some(code) => code,
            None => {
                let ask = &self.release;
                let new = requests::NewRequest {
                    id: ask.id.clone(),
                    code: ask.code.clone(),
                    kind: RequestKind::Release,
                    account_id: Some(self.account_id.clone()),
                    agent_id: Some(self.agent_id.clone()),
                    label: label.to_owned(),
                    scope: vec![service.to_owned()],
                    tier: None,
                    reason: ask.reason.clone(),
                    device_id: Some(self.device_id.clone()),
                    namespace: Some(namespace.clone()),
                    device_sign_public: None,
                    device_kx_public: None,
                    token_hash: None,
                    poll_hash: None,
                    commitment: None,
                    expires_at_ms: cx.now_ms + REQUEST_TTL_MS,
                    not_before_ms: None,
                };
                // A code collision (40 random bits) is refused for the agent to read again.
                if !requests::insert(conn, &new, cx.now_ms).await? {
                    let taken = ApiError::new(ErrorCode::AlreadyExists, "the generated request code is taken", "retry");
                    return Err(OpError::RefusedKeeping(taken));
                }
                ask.code.clone()
            }
        };
        Err(OpError::RefusedKeeping(ApiError::approval_required(
            &code,
            format!("'{service}' is high-value: each use needs the account owner's approval (request {code})"),
            format!("wait for the owner to run `agentkeys approve {code}`, then read again"),
        )))
    }
}

/// The refusal for a service outside the agent's scope: `APPROVAL_REQUIRED` naming the request
/// when the agent already asked for it, else `DENIED` saying how to ask.
fn out_of_scope(label: &str, service: &str, pending: Option<String>) -> ApiError {
    match pending {
        Some(code) => ApiError::approval_required(
            &code,
            format!("agent {label} asked for '{service}' (request {code}); the account owner has not decided yet"),
            format!("wait for the owner to run: agentkeys approve {code}"),
        ),
        None => ApiError::new(
            ErrorCode::Denied,
            format!("agent {label} has no access to '{service}'"),
            format!("agentkeys scope {label} --add {service} (or ask for it with the request_access tool)"),
        ),
    }
}

/// A wrap must be for the credential's newest version: an older one would leave the agent
/// unable to open what it reads. The client re-reads and retries on this conflict. A high-value
/// version is refused here: its key reaches an agent only through a release ([`check_release`]).
pub async fn check_current(conn: &mut AnyConnection, account_id: &str, wrap: &Wrap) -> Result<(), OpError> {
    if check_release(conn, account_id, wrap).await? {
        return Err(ApiError::bad_request(format!(
            "'{}' is high-value: its key reaches an agent only through an approved release, never a standing wrap",
            wrap.service
        ))
        .into());
    }
    Ok(())
}

/// Checks that a wrap is for the newest version, as [`check_current`] does, and says whether
/// that version is high-value.
pub async fn check_release(conn: &mut AnyConnection, account_id: &str, wrap: &Wrap) -> Result<bool, OpError> {
    let newest = queries::newest(conn, account_id, &wrap.namespace, &wrap.service).await?;
    let current = newest.as_ref().filter(|row| row.ciphertext.is_some()).map_or(0, |row| row.version);
    if current > 0 && current == wrap.version {
        return Ok(newest.is_some_and(|row| is_high_value(row.flags)));
    }
    Err(ApiError::version_conflict(
        format!("'{}' changed while its key was being wrapped (now at version {current})", wrap.service),
        "retry; the client re-wraps the current version",
        (current > 0).then_some(current),
    )
    .into())
}

/// Stores wraps to agent devices, each checked to be for a current version.
pub async fn store_wraps(conn: &mut AnyConnection, account_id: &str, wraps: &[Wrap]) -> Result<(), OpError> {
    for wrap in wraps {
        check_current(conn, account_id, wrap).await?;
        queries::upsert_wrap(conn, account_id, wrap).await?;
    }
    Ok(())
}

/// Refuses (`VERSION_CONFLICT`, for the client to wrap again) unless every one of `recipients`
/// holds a wrap of the newest version of every one of `credentials` that exists: what an agent
/// may read after a grant must reach each of its devices and pending link codes, even one that
/// joined while the grant was being prepared.
pub async fn check_covered(
    conn: &mut AnyConnection,
    account_id: &str,
    credentials: &[(Namespace, String)],
    recipients: &[String],
    wraps: &[Wrap],
) -> Result<(), OpError> {
    for (namespace, service) in credentials {
        let current = queries::newest(conn, account_id, namespace, service).await?;
        // A high-value credential is never pre-wrapped: nobody needs its key before a release.
        let standing = current.filter(|row| row.ciphertext.is_some() && !is_high_value(row.flags));
        let Some(version) = standing.map(|row| row.version) else { continue };
        let missing = recipients.iter().find(|recipient| {
            !wraps.iter().any(|w| {
                &w.recipient == *recipient && w.namespace == *namespace && &w.service == service && w.version == version
            })
        });
        if let Some(missing) = missing {
            return Err(ApiError::version_conflict(
                format!("{missing} has no key for '{service}' version {version}: the agent's devices or its credentials changed while this was prepared"),
                "retry; the client reads the agent's devices again and wraps to each",
                Some(version),
            )
            .into());
        }
    }
    Ok(())
}

/// Longest id a grant names (account, device and link ids are 24–25 characters).
const GRANT_ID_MAX: usize = 64;

/// A grant as a client sent it, checked for shape only: readers verify the signature.
pub fn decode_grant(grant: Option<&agentkeys_proto::grant::Grant>) -> Result<StoredGrant, ApiError> {
    let grant = grant.ok_or_else(|| {
        ApiError::bad_request("every wrap needs its writer's grant (docs/protocol.md, \"Grants\"); upgrade the client")
    })?;
    if grant.recipient.is_empty()
        || grant.recipient.len() > GRANT_ID_MAX
        || grant.signer.is_empty()
        || grant.signer.len() > GRANT_ID_MAX
    {
        return Err(ApiError::bad_request("a grant names its recipient and signer by id"));
    }
    let signature = crate::http::decode::bounded("grant.signature", &grant.signature, 64, 64)?;
    Ok(StoredGrant { recipient: grant.recipient.clone(), signer: grant.signer.clone(), signature })
}

/// The wraps a request carries, decoded for an op: each for the vault or `agent_id`'s private
/// namespace, and addressed to `recipient` (a device or link id) when one is given.
pub fn decode_wraps(
    wraps: &[agentkeys_proto::agents::DeviceWrap],
    agent_id: &str,
    recipient: Option<&str>,
) -> Result<Vec<Wrap>, ApiError> {
    let private = Namespace::Agent(agent_id.to_owned());
    wraps
        .iter()
        .map(|w| {
            let namespace =
                Namespace::parse(&w.namespace).filter(|ns| *ns == Namespace::Vault || *ns == private).ok_or_else(
                    || ApiError::bad_request(format!("a wrap names namespace {:?}, not this agent's", w.namespace)),
                )?;
            if recipient.is_some_and(|r| r != w.device_id) {
                return Err(ApiError::bad_request("a wrap is addressed to another device"));
            }
            agentkeys_proto::names::validate_service_name(&w.service)
                .map_err(|e| ApiError::bad_request(format!("wrap service: {e}")))?;
            let wrap = crate::http::decode::bounded(
                "wrap",
                &w.wrap,
                crate::http::decode::DATA_KEY_WRAP_LEN,
                crate::http::decode::DATA_KEY_WRAP_LEN,
            )?;
            let version = i64::try_from(w.version).map_err(|_| ApiError::bad_request("wrap version out of range"))?;
            let grant = Some(decode_grant(w.grant.as_ref())?);
            Ok(Wrap { namespace, service: w.service.clone(), version, recipient: w.device_id.clone(), wrap, grant })
        })
        .collect()
}
