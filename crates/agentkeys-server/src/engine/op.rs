//! What the writer applies: an [`Op`] is one domain's unit of work — a typed output, whether it
//! is critical (and for which account), and how it applies inside the batch's transaction. The
//! engine knows no domain: each domain defines its own ops, and each request's op comes back to
//! its handler as that op's own output type, never as a shared enum.

use std::future::Future;
use std::pin::Pin;

use agentkeys_proto::critical::Critical;
use agentkeys_proto::presence::{PresenceClaim, PresenceRecord};
use sqlx::AnyConnection;

use crate::error::ApiError;

/// A boxed future, for the engine's type-erased calls.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What every op is applied with: the batch's one clock reading.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub now_ms: i64,
}

/// Why an op did not produce its output.
#[derive(Debug)]
pub enum OpError {
    /// Refused: everything the op wrote is rolled back.
    Refused(ApiError),
    /// Refused, but what it wrote stays (a spent rate-limit token, a counted miss), so that a
    /// refusal costs a guesser as much as a success.
    RefusedKeeping(ApiError),
    /// The database failed this op; its writes are rolled back and the rest of the batch goes on.
    Db(sqlx::Error),
}

impl From<sqlx::Error> for OpError {
    fn from(error: sqlx::Error) -> Self {
        OpError::Db(error)
    }
}

impl From<ApiError> for OpError {
    fn from(error: ApiError) -> Self {
        OpError::Refused(error)
    }
}

impl OpError {
    /// Whether the op's writes are kept.
    pub fn keeps_writes(&self) -> bool {
        matches!(self, OpError::RefusedKeeping(_))
    }

    /// The answer the request gets.
    pub fn into_api(self) -> ApiError {
        match self {
            OpError::Refused(error) | OpError::RefusedKeeping(error) => error,
            OpError::Db(error) => error.into(),
        }
    }
}

/// A critical operation (PRODUCT.md §5) and the account whose policy governs it.
#[derive(Debug, Clone, Copy)]
pub struct CriticalFor<'a> {
    pub op: Critical,
    pub account_id: &'a str,
}

/// An owner's operation as the account's policy is asked about it (its `require_presence`
/// rules, README "Policy"): the action, and the agent and services it concerns.
#[derive(Debug, Clone)]
pub struct OwnerAsk {
    pub account_id: String,
    pub action: agentkeys_policy::Action,
    pub agent: Option<AskedAgent>,
    /// The services it concerns, each decided (the strongest decision wins); empty for none.
    pub services: Vec<String>,
}

impl OwnerAsk {
    /// An operation about no agent and no service.
    pub fn about(account_id: &str, action: agentkeys_policy::Action) -> Self {
        Self { account_id: account_id.to_owned(), action, agent: None, services: Vec::new() }
    }

    /// The same, about the agent `agent_id`.
    pub fn agent(mut self, agent_id: &str) -> Self {
        self.agent = Some(AskedAgent { id: agent_id.to_owned(), label: None });
        self
    }

    /// The same, about `services`.
    pub fn services(mut self, services: impl IntoIterator<Item = String>) -> Self {
        self.services = services.into_iter().collect();
        self
    }
}

/// The agent an owner's operation concerns: by id (looked up with its aliases), with the label
/// it will have when it does not exist yet (`agent create`, a pairing).
#[derive(Debug, Clone)]
pub struct AskedAgent {
    pub id: String,
    pub label: Option<String>,
}

/// What a `require_presence` rule demands of an owner's operation it matched.
#[derive(Debug, Clone)]
pub struct RuleDemand {
    /// The rule, as the audit and the error name it (`v3:name`).
    pub rule: String,
    /// The answer when no presence (or a skipped one) was shown.
    pub refusal: ApiError,
}

/// The request a signed job came from, as its signature covers it: what a presence ceremony is
/// bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBinding {
    pub method: String,
    /// The path and query without `presence=`.
    pub path: String,
    pub body_digest: [u8; 32],
}

/// How a request says presence was shown, and the request itself.
#[derive(Debug, Clone, Copy)]
pub struct PresenceShown<'a> {
    pub claim: Option<&'a PresenceClaim>,
    pub request: Option<&'a RequestBinding>,
}

/// One unit of work, applied by the writer in its batch's transaction.
pub trait Op: Send + Sync + Sized + 'static {
    /// What the handler gets back once the batch has committed.
    type Output: Send + 'static;

    /// Whether the op writes: one that does not runs without a savepoint.
    const WRITES: bool = true;

    /// Whether ops of this type are answered together, after the batch's other ops, by one
    /// [`Op::apply_together`] call (a multi-key `SELECT` instead of one query each).
    const TOGETHER: bool = false;

    /// `Some` when the op is critical: the engine then checks the account's presence policy in
    /// the same transaction, before the op applies.
    fn critical(&self) -> Option<CriticalFor<'_>> {
        None
    }

    /// The owner's operation as the account's policy sees it, when its rules may govern it;
    /// asked in the op's savepoint before it applies (an approval reads its request's agent).
    fn owner_ask(&self, _conn: &mut AnyConnection) -> impl Future<Output = Result<Option<OwnerAsk>, OpError>> + Send {
        async { Ok(None) }
    }

    /// Applies the op. Runs in a savepoint of the batch's transaction when [`Op::WRITES`].
    fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> impl Future<Output = Result<Self::Output, OpError>> + Send;

    /// Applies several ops of this type at once; only called when [`Op::TOGETHER`]. A database
    /// failure here fails the whole batch.
    fn apply_together(
        ops: &[&Self],
        conn: &mut AnyConnection,
        cx: Ctx,
    ) -> impl Future<Output = Result<Vec<Result<Self::Output, OpError>>, sqlx::Error>> + Send {
        async move {
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                out.push(op.apply(conn, cx).await);
            }
            Ok(out)
        }
    }

    /// The namespace the audit row names, when the output decides it (an agent's read names the
    /// namespace it was served from).
    fn audited_namespace(_output: &Self::Output) -> Option<String> {
        None
    }

    /// The policy that decided the op (`v3:name` or `v3`, [`agentkeys_proto::policy::rule_ref`]),
    /// asked after it applied: the op records it while applying.
    fn audited_rule(&self) -> Option<String> {
        None
    }

    /// Whether the request gets an audit row, asked after it applied. Every request does, but
    /// anonymous refusals, which are counted instead (one row per source per minute).
    fn audited(&self) -> bool {
        true
    }
}

/// The op of a request that changes nothing: only its nonce is consumed and its audit row
/// appended, in the same transaction as every other request's.
#[derive(Debug, Clone, Copy)]
pub struct Record;

impl Op for Record {
    type Output = ();
    const WRITES: bool = false;

    async fn apply(&self, _conn: &mut AnyConnection, _cx: Ctx) -> Result<(), OpError> {
        Ok(())
    }
}

/// Housekeeping the writer runs in a batch's transaction every 30 s: deleting what has expired.
/// Each table's owner supplies its own.
pub trait Maintenance: Send + Sync + std::fmt::Debug {
    fn prune<'a>(&'a self, conn: &'a mut AnyConnection, now: i64) -> BoxFuture<'a, Result<(), sqlx::Error>>;
}

/// Decides whether a critical operation may proceed for an account, given how presence was
/// shown, in the op's own savepoint (so a ceremony it consumes is given back if the op fails).
/// Returns what the audit row records about presence when the check established it (the
/// presence key that answered). Supplied by the presence domain; the engine only calls it.
pub trait PresencePolicy: Send + Sync + std::fmt::Debug {
    fn check<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        critical: CriticalFor<'a>,
        shown: PresenceShown<'a>,
        cx: Ctx,
    ) -> BoxFuture<'a, Result<Option<PresenceRecord>, OpError>>;
}

/// Decides what the account's policy demands of an owner's operation, in the op's savepoint:
/// `Some` when a `require_presence` rule matched it. Supplied by the policy domain.
pub trait OwnerRules: Send + Sync + std::fmt::Debug {
    fn demand<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        ask: &'a OwnerAsk,
        cx: Ctx,
    ) -> BoxFuture<'a, Result<Option<RuleDemand>, OpError>>;
}
