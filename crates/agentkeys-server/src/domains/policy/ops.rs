//! Setting a policy (an op, critical when it weakens the version it replaces), and deciding a
//! request by the policy in force, in the deciding op's own transaction: the version is read
//! there (so a policy set on another replica holds at once), and its compiled rules come from a
//! cache keyed by version (so 200 rules cost no parsing per read). An agent's read asks
//! [`decide`]; the owner's operations are asked by the writer, through [`OwnerPolicy`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentkeys_policy::{Action, AgentNames, Input, Outcome, Policy, RateWindow};
use agentkeys_proto::ErrorCode;
use agentkeys_proto::critical::Critical;
use agentkeys_proto::policy::{SetPolicyResponse, rule_ref};
use sqlx::AnyConnection;

use super::queries::{self, StoredPolicy};
use crate::db::parse_stored;
use crate::domains::agents::queries as agents;
use crate::engine::op::{AskedAgent, BoxFuture, CriticalFor, Ctx, Op, OpError, OwnerAsk, OwnerRules, RuleDemand};
use crate::error::ApiError;

/// Compiled policies by account, each with the version it was compiled from.
#[derive(Debug, Default)]
pub struct Policies {
    compiled: Mutex<HashMap<String, (i64, Arc<Policy>)>>,
}

impl Policies {
    /// The policy in force for the account and its version; `None` when none was ever set.
    pub async fn current(
        &self,
        conn: &mut AnyConnection,
        account_id: &str,
    ) -> Result<Option<(i64, Arc<Policy>)>, sqlx::Error> {
        let version = queries::current_version(conn, account_id).await?;
        if version == 0 {
            return Ok(None);
        }
        if let Some((cached, policy)) = self.lock().get(account_id)
            && *cached == version
        {
            return Ok(Some((version, policy.clone())));
        }
        let Some(stored) = queries::get(conn, account_id, version).await? else {
            return Err(sqlx::Error::RowNotFound);
        };
        // The server stored only text it had validated: anything else is a damaged store.
        let policy = Arc::new(parse_stored("policies.text", &stored.text, |text| Policy::parse(text).ok())?);
        self.lock().insert(account_id.to_owned(), (version, policy.clone()));
        Ok(Some((version, policy)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, Arc<Policy>)>> {
        self.compiled.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An agent's request, as the policy is asked about it.
#[derive(Debug, Clone, Copy)]
pub struct AgentAsk<'a> {
    pub account_id: &'a str,
    pub agent_id: &'a str,
    pub label: &'a str,
    pub action: Action,
    pub service: Option<&'a str>,
}

/// What the policy decided, and by which rule (`None` when no rule matched).
#[derive(Debug, Clone)]
pub struct Verdict {
    pub outcome: Outcome,
    pub version: i64,
    pub rule: Option<String>,
}

impl Verdict {
    /// How the audit row names the policy version and the rule that decided.
    pub fn audited(&self) -> String {
        rule_ref(self.version as u64, self.rule.as_deref())
    }

    /// The refusal of a request a `deny` rule matched.
    pub fn denial(&self, ask: &AgentAsk<'_>) -> ApiError {
        let rule = self.rule.as_deref().unwrap_or("?");
        let what = match ask.service {
            Some(service) => format!("{} '{service}'", ask.action),
            None => ask.action.to_string(),
        };
        ApiError::new(
            ErrorCode::Denied,
            format!(
                "rule {rule} of the account's policy (version {}) denies agent {} to {what}",
                self.version, ask.label
            ),
            "the account owner decides: `agentkeys policy show` shows the rule, `agentkeys policy set FILE` changes it",
        )
    }
}

/// Decides an agent's request by the policy in force; `None` when the account has none.
pub async fn decide(
    conn: &mut AnyConnection,
    policies: &Policies,
    ask: AgentAsk<'_>,
    cx: Ctx,
) -> Result<Option<Verdict>, sqlx::Error> {
    let Some((version, policy)) = policies.current(conn, ask.account_id).await? else { return Ok(None) };
    let at = jiff::Timestamp::from_millisecond(cx.now_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let unaliased = Input {
        action: ask.action,
        agent: Some(AgentNames { id: ask.agent_id, label: ask.label, aliases: &[] }),
        service: ask.service,
        at,
    };
    let aliases = if policy.needs_aliases(&unaliased) {
        agents::aliases_of(conn, ask.account_id, ask.agent_id).await?
    } else {
        Vec::new()
    };
    let input =
        Input { agent: Some(AgentNames { id: ask.agent_id, label: ask.label, aliases: &aliases }), ..unaliased };
    let mut uses: Vec<(RateWindow, u64)> = Vec::new();
    for window in policy.rate_windows(&input) {
        let count = match ask.service {
            Some(service) => queries::reads_since(conn, ask.agent_id, service, cx.now_ms - window.millis()).await?,
            None => 0,
        };
        uses.push((window, count));
    }
    let decision =
        policy.decide(&input, |window| uses.iter().find(|(w, _)| *w == window).map_or(0, |(_, count)| *count));
    Ok(Some(Verdict { outcome: decision.outcome, version, rule: decision.rule.map(|rule| rule.name().to_owned()) }))
}

/// Decides an agent's `list` or `request` by the policy in force: a `deny` refuses it, naming
/// the rule (recorded in `decided_by` for the audit either way); other effects do not apply.
pub async fn refuse_if_denied(
    conn: &mut AnyConnection,
    policies: &Policies,
    ask: AgentAsk<'_>,
    cx: Ctx,
    decided_by: &std::sync::OnceLock<String>,
) -> Result<(), OpError> {
    let Some(verdict) = decide(conn, policies, ask, cx).await? else { return Ok(()) };
    let _ = decided_by.set(verdict.audited());
    match verdict.outcome {
        Outcome::Deny => Err(OpError::Refused(verdict.denial(&ask))),
        Outcome::Allow | Outcome::RequireApproval | Outcome::RequirePresence => Ok(()),
    }
}

/// The policy's `require_presence` rules for the owner's operations, as the writer asks them.
#[derive(Debug)]
pub struct OwnerPolicy(pub Arc<Policies>);

impl OwnerRules for OwnerPolicy {
    fn demand<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        ask: &'a OwnerAsk,
        cx: Ctx,
    ) -> BoxFuture<'a, Result<Option<RuleDemand>, OpError>> {
        Box::pin(async move {
            let Some((version, policy)) = self.0.current(conn, &ask.account_id).await? else { return Ok(None) };
            let (id, label, aliases) = match &ask.agent {
                None => (None, None, Vec::new()),
                Some(AskedAgent { id, label: new_label }) => {
                    // An agent that exists is named by its label and aliases; one being created
                    // by the label it will have; an agent of another account (the op refuses it)
                    // by its id alone.
                    let label = agents::get(conn, &ask.account_id, id).await?.map(|agent| agent.label);
                    let names_agents = policy.rules().iter().any(|rule| rule.source().agents.is_some());
                    let aliases = if names_agents && label.is_some() {
                        agents::aliases_of(conn, &ask.account_id, id).await?
                    } else {
                        Vec::new()
                    };
                    (Some(id.as_str()), label.or_else(|| new_label.clone()), aliases)
                }
            };
            let agent = id.map(|id| AgentNames { id, label: label.as_deref().unwrap_or(id), aliases: &aliases });
            let at = jiff::Timestamp::from_millisecond(cx.now_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let services: Vec<Option<&str>> = match ask.services.as_slice() {
                [] => vec![None],
                services => services.iter().map(|service| Some(service.as_str())).collect(),
            };
            for service in services {
                let input = Input { action: ask.action, agent, service, at };
                // Rates are an agent's: no rule on an owner's operation has one.
                let decision = policy.decide(&input, |_| 0);
                let (Outcome::RequirePresence, Some(rule)) = (decision.outcome, decision.rule) else { continue };
                let name = rule.name();
                let what = match (service, &label) {
                    (Some(service), _) => format!("{} of '{service}'", ask.action),
                    (None, Some(label)) => format!("{} of agent {label}", ask.action),
                    (None, None) => ask.action.to_string(),
                };
                let rule_ref = rule_ref(version as u64, Some(name));
                let refusal = ApiError::presence_for_rule(
                    rule_ref.clone(),
                    format!(
                        "rule {name} of the account's policy (version {version}) requires presence for {what}, and \
                         none was shown (a skipped check does not count)"
                    ),
                    "run it with the agentkeys CLI and confirm in person (not with --no-biometric or \
                     AGENTKEYS_BIOMETRIC=off): it asks, then sends the request again",
                );
                return Ok(Some(RuleDemand { rule: rule_ref, refusal }));
            }
            Ok(None)
        })
    }
}

/// Sets a new version of the account's policy, replacing `base_version`.
#[derive(Debug, Clone)]
pub struct SetPolicy {
    pub account_id: String,
    pub device_id: String,
    pub text: String,
    pub base_version: i64,
    /// What the new text changes from `base_version` (compared by the route); weakening makes
    /// the op critical.
    pub changes: agentkeys_policy::change::Changes,
}

impl Op for SetPolicy {
    type Output = SetPolicyResponse;

    fn critical(&self) -> Option<CriticalFor<'_>> {
        (!self.changes.weakens.is_empty())
            .then_some(CriticalFor { op: Critical::PolicyWeaken, account_id: &self.account_id })
    }

    async fn owner_ask(&self, _conn: &mut AnyConnection) -> Result<Option<OwnerAsk>, OpError> {
        Ok(Some(OwnerAsk::about(&self.account_id, Action::PolicySet)))
    }

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<SetPolicyResponse, OpError> {
        let current = queries::current_version(conn, &self.account_id).await?;
        if current != self.base_version {
            return Err(ApiError::new(
                ErrorCode::VersionConflict,
                format!(
                    "the policy is at version {current} now, not {}: another device set it meanwhile",
                    self.base_version
                ),
                "compare with it (`agentkeys policy show`) and run `agentkeys policy set FILE` again",
            )
            .into());
        }
        let version = current + 1;
        let stored = StoredPolicy {
            version,
            text: self.text.clone(),
            created_at_ms: cx.now_ms,
            created_by: self.device_id.clone(),
        };
        queries::insert(conn, &self.account_id, &stored).await?;
        let changes = &self.changes;
        Ok(SetPolicyResponse {
            version: version as u64,
            added: changes.added.clone(),
            removed: changes.removed.clone(),
            changed: changes.changed.clone(),
            weakens: changes.weakens.clone(),
        })
    }
}
