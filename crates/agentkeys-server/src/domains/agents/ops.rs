//! The agents domain's ops, and the steps other domains reuse: [`upsert_agent`] and
//! [`bind_device`] (a pairing approval, a redeemed link) and [`change_scope`] (an access approval).
//! Each runs in the writer's transaction, so what an agent may read is decided in the same
//! transaction that answers it — a scope removal, a downgrade or a revocation committed by any
//! replica holds for the very next request everywhere.

use agentkeys_proto::ErrorCode;
use agentkeys_proto::agents::{AgentStatus, RecipientKind, Tier};
use agentkeys_proto::critical::Critical;
use agentkeys_proto::namespace::Namespace;
use agentkeys_proto::types::ActorKind;
use sqlx::AnyConnection;

use super::queries;
use crate::domains::accounts::queries::{self as accounts, NewDevice};
use crate::domains::credentials::ops::{check_covered, check_current, store_wraps};
use crate::domains::credentials::queries::{self as credentials, Wrap};
use crate::domains::links::queries::{self as links, NewLink};
use crate::domains::releases::queries as releases;
use crate::domains::requests::queries as requests;
use crate::domains::statements::ops::{self as statements, NewStatement};
use agentkeys_policy::Action;

use crate::engine::op::{AskedAgent, CriticalFor, Ctx, Op, OpError, OwnerAsk};
use crate::error::{ApiError, agent_torn_down, no_such_agent};
use crate::sessions::{self, NewSession};

/// Inserts the agent, or brings back one that was revoked or torn down under the same label (its
/// id is derived from the label, so it is the same agent). An existing live agent is refused
/// with `ALREADY_EXISTS`.
pub async fn upsert_agent(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    label: &str,
    tier: Tier,
    status: AgentStatus,
    now: i64,
) -> Result<(), OpError> {
    if queries::is_alias(conn, account_id, label).await? {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("'{label}' is already an alias of another agent"),
            "pick another label: `<agent>` must name one agent everywhere",
        )
        .into());
    }
    match queries::status(conn, account_id, agent_id).await? {
        None => queries::insert(conn, account_id, agent_id, label, tier, status, now).await?,
        Some(AgentStatus::Revoked | AgentStatus::TornDown) => queries::revive(conn, agent_id, tier, status).await?,
        Some(AgentStatus::Pending | AgentStatus::Active) => {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("an agent labelled '{label}' already exists"),
                format!(
                    "pick another label, or `agentkeys teardown {label}` first; to give it another machine, pair \
                     that daemon with the same label"
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// A device of an agent, as the master (pairing) or the link key (link code) certified it, with
/// the session the daemon will use.
#[derive(Debug, Clone)]
pub struct NewAgentDevice {
    pub device_id: String,
    pub sign_public: Vec<u8>,
    pub kx_public: Vec<u8>,
    pub certificate: Vec<u8>,
    pub session: NewSession,
}

/// Registers an agent device and opens its session.
pub async fn bind_device(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    label: &str,
    device: &NewAgentDevice,
    now: i64,
) -> Result<(), OpError> {
    let row = NewDevice {
        device_id: device.device_id.clone(),
        kind: ActorKind::Agent,
        label: label.to_owned(),
        sign_public: device.sign_public.clone(),
        kx_public: device.kx_public.clone(),
        certificate: device.certificate.clone(),
        agent_id: Some(agent_id.to_owned()),
        origin: None,
    };
    if !accounts::insert_device(conn, account_id, &row, now).await? {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("device {} is already registered", device.device_id),
            "generate a new device key; a daemon never reuses one",
        )
        .into());
    }
    sessions::insert(conn, account_id, &device.device_id, &device.session, now).await?;
    Ok(())
}

/// Adds and removes services of an agent's scope: added services come with their current data
/// key wrapped to each of the agent's active devices and pending link codes — all of them, as
/// they are in this transaction, so one that joined while the change was prepared is not left
/// without; removed ones lose every wrap.
pub async fn change_scope(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    add: &[String],
    remove: &[String],
    wraps: &[Wrap],
    now: i64,
) -> Result<(), OpError> {
    let recipients = queries::agent_recipients(conn, agent_id, now).await?;
    let known = |id: &str| recipients.iter().find(|r| r.device_id == id);
    if let Some(stray) = wraps.iter().find(|w| known(&w.recipient).is_none() || w.namespace != Namespace::Vault) {
        return Err(ApiError::bad_request(format!(
            "a wrap is addressed to {} in {}, which is not an active device or pending link code of this agent in \
             the vault",
            stray.recipient, stray.namespace
        ))
        .into());
    }
    let added: Vec<(Namespace, String)> = add.iter().map(|s| (Namespace::Vault, s.clone())).collect();
    let ids: Vec<String> = recipients.iter().map(|r| r.device_id.clone()).collect();
    check_covered(conn, account_id, &added, &ids, wraps).await?;
    for service in remove {
        queries::remove_scope(conn, agent_id, service).await?;
        credentials::delete_vault_wraps_of_agent(conn, account_id, service, agent_id).await?;
        links::delete_wrap_of_agent(conn, agent_id, &Namespace::Vault, service).await?;
        crate::domains::releases::queries::delete_of_agent_service(conn, agent_id, service).await?;
    }
    for service in add {
        queries::add_scope(conn, agent_id, service).await?;
    }
    let (to_links, to_devices): (Vec<Wrap>, Vec<Wrap>) =
        wraps.iter().cloned().partition(|w| known(&w.recipient).is_some_and(|r| r.kind == RecipientKind::Link));
    store_wraps(conn, account_id, &to_devices).await?;
    for wrap in &to_links {
        check_current(conn, account_id, wrap).await?;
        links::upsert_wrap(conn, wrap).await?;
    }
    Ok(())
}

/// Ends every session and device of the agent, its open requests and unused link codes.
async fn end(
    conn: &mut AnyConnection,
    account_id: &str,
    agent_id: &str,
    status: AgentStatus,
    now: i64,
) -> Result<(), OpError> {
    if queries::status(conn, account_id, agent_id).await?.is_none() {
        return Err(no_such_agent(agent_id).into());
    }
    queries::set_status(conn, account_id, agent_id, status).await?;
    sessions::revoke_for_agent(conn, agent_id, now).await?;
    queries::revoke_devices(conn, agent_id, now).await?;
    requests::deny_pending_of_agent(conn, agent_id, now).await?;
    links::expire_unredeemed_of_agent(conn, agent_id, now).await?;
    releases::delete_of_agent(conn, agent_id).await?;
    Ok(())
}

/// A new agent with its scope and the link code's key (which receives the scope's data keys).
#[derive(Debug, Clone)]
pub struct CreateAgent {
    pub account_id: String,
    pub agent_id: String,
    pub label: String,
    pub tier: Tier,
    pub scope: Vec<String>,
    pub link: NewLink,
    /// The account's statements of this change (`crate::domains::statements`).
    pub statements: Vec<NewStatement>,
}

impl Op for CreateAgent {
    type Output = ();

    fn critical(&self) -> Option<CriticalFor<'_>> {
        Some(CriticalFor { op: Critical::AgentCreate, account_id: &self.account_id })
    }

    async fn owner_ask(&self, _conn: &mut AnyConnection) -> Result<Option<OwnerAsk>, OpError> {
        let agent = AskedAgent { id: self.agent_id.clone(), label: Some(self.label.clone()) };
        let ask = OwnerAsk::about(&self.account_id, Action::AgentCreate).services(self.scope.clone());
        Ok(Some(OwnerAsk { agent: Some(agent), ..ask }))
    }

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        let (account_id, agent_id) = (self.account_id.as_str(), self.agent_id.as_str());
        statements::append_all(conn, account_id, &self.statements, cx.now_ms).await?;
        upsert_agent(conn, account_id, agent_id, &self.label, self.tier, AgentStatus::Pending, cx.now_ms).await?;
        queries::clear_scope(conn, agent_id).await?;
        for service in &self.scope {
            queries::add_scope(conn, agent_id, service).await?;
        }
        links::insert(conn, account_id, agent_id, &self.link, cx.now_ms).await?;
        for wrap in &self.link.wraps {
            check_current(conn, account_id, wrap).await?;
            links::insert_wrap(conn, &self.link.link_id, wrap).await?;
        }
        // Every credential of the scope that exists reaches the link's key (one stored while this
        // was prepared included).
        let scope: Vec<(Namespace, String)> = self.scope.iter().map(|s| (Namespace::Vault, s.clone())).collect();
        check_covered(conn, account_id, &scope, std::slice::from_ref(&self.link.link_id), &self.link.wraps).await?;
        Ok(())
    }
}

/// Adds and removes services; widening is critical.
#[derive(Debug, Clone)]
pub struct ChangeScope {
    pub account_id: String,
    pub agent_id: String,
    pub add: Vec<String>,
    pub remove: Vec<String>,
    pub wraps: Vec<Wrap>,
    /// The account's statements of this change (`crate::domains::statements`).
    pub statements: Vec<NewStatement>,
}

impl Op for ChangeScope {
    type Output = ();

    fn critical(&self) -> Option<CriticalFor<'_>> {
        (!self.add.is_empty()).then_some(CriticalFor { op: Critical::ScopeWiden, account_id: &self.account_id })
    }

    /// Adding services is `scope.add`, each service decided; removing one is not governed.
    async fn owner_ask(&self, _conn: &mut AnyConnection) -> Result<Option<OwnerAsk>, OpError> {
        Ok((!self.add.is_empty()).then(|| {
            OwnerAsk::about(&self.account_id, Action::ScopeAdd).agent(&self.agent_id).services(self.add.clone())
        }))
    }

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        match queries::status(conn, &self.account_id, &self.agent_id).await? {
            None => Err(no_such_agent(&self.agent_id).into()),
            Some(AgentStatus::TornDown) => Err(agent_torn_down(&self.agent_id).into()),
            Some(_) => {
                statements::append_all(conn, &self.account_id, &self.statements, cx.now_ms).await?;
                change_scope(conn, &self.account_id, &self.agent_id, &self.add, &self.remove, &self.wraps, cx.now_ms)
                    .await
            }
        }
    }
}

/// Sets an agent's tier; any change of tier is critical.
#[derive(Debug, Clone)]
pub struct SetTier {
    pub account_id: String,
    pub agent_id: String,
    pub tier: Tier,
}

impl Op for SetTier {
    type Output = ();

    fn critical(&self) -> Option<CriticalFor<'_>> {
        Some(CriticalFor { op: Critical::AgentUpgrade, account_id: &self.account_id })
    }

    async fn owner_ask(&self, _conn: &mut AnyConnection) -> Result<Option<OwnerAsk>, OpError> {
        Ok(Some(OwnerAsk::about(&self.account_id, Action::AgentUpgrade).agent(&self.agent_id)))
    }

    async fn apply(&self, conn: &mut AnyConnection, _cx: Ctx) -> Result<(), OpError> {
        if queries::set_tier(conn, &self.account_id, &self.agent_id, self.tier).await? {
            Ok(())
        } else {
            Err(no_such_agent(&self.agent_id).into())
        }
    }
}

/// Gives an agent another name, unique in the account.
#[derive(Debug, Clone)]
pub struct AddAlias {
    pub account_id: String,
    pub agent_id: String,
    pub alias: String,
}

impl Op for AddAlias {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, _cx: Ctx) -> Result<(), OpError> {
        if queries::status(conn, &self.account_id, &self.agent_id).await?.is_none() {
            return Err(no_such_agent(&self.agent_id).into());
        }
        if queries::names_an_agent(conn, &self.account_id, &self.alias).await? {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("'{}' already names an agent in this account", self.alias),
                "pick another alias; see `agentkeys agents`",
            )
            .into());
        }
        queries::insert_alias(conn, &self.account_id, &self.agent_id, &self.alias).await?;
        Ok(())
    }
}

/// Ends every session of the agent.
#[derive(Debug, Clone)]
pub struct Revoke {
    pub account_id: String,
    pub agent_id: String,
    /// The account's statements of this change (`crate::domains::statements`).
    pub statements: Vec<NewStatement>,
}

impl Op for Revoke {
    type Output = ();

    fn critical(&self) -> Option<CriticalFor<'_>> {
        Some(CriticalFor { op: Critical::Revoke, account_id: &self.account_id })
    }

    async fn owner_ask(&self, _conn: &mut AnyConnection) -> Result<Option<OwnerAsk>, OpError> {
        Ok(Some(OwnerAsk::about(&self.account_id, Action::Revoke).agent(&self.agent_id)))
    }

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        statements::append_all(conn, &self.account_id, &self.statements, cx.now_ms).await?;
        end(conn, &self.account_id, &self.agent_id, AgentStatus::Revoked, cx.now_ms).await
    }
}

/// Revokes, then deletes what only this agent could read: its private credentials (every
/// version) and every data key wrapped to its devices or link codes. The audit log keeps what
/// happened.
#[derive(Debug, Clone)]
pub struct Teardown {
    pub account_id: String,
    pub agent_id: String,
    /// The account's statements of this change (`crate::domains::statements`).
    pub statements: Vec<NewStatement>,
}

impl Op for Teardown {
    type Output = ();

    fn critical(&self) -> Option<CriticalFor<'_>> {
        Some(CriticalFor { op: Critical::Teardown, account_id: &self.account_id })
    }

    async fn owner_ask(&self, _conn: &mut AnyConnection) -> Result<Option<OwnerAsk>, OpError> {
        Ok(Some(OwnerAsk::about(&self.account_id, Action::Teardown).agent(&self.agent_id)))
    }

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        let (account_id, agent_id) = (self.account_id.as_str(), self.agent_id.as_str());
        statements::append_all(conn, account_id, &self.statements, cx.now_ms).await?;
        end(conn, account_id, agent_id, AgentStatus::TornDown, cx.now_ms).await?;
        credentials::delete_agent_private(conn, account_id, agent_id).await?;
        links::delete_wraps_of_agent(conn, agent_id).await?;
        queries::clear_scope(conn, agent_id).await?;
        queries::clear_aliases(conn, agent_id).await?;
        Ok(())
    }
}
