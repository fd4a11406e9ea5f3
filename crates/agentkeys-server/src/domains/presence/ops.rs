//! The presence domain's ops, and [`PresenceKeys`]: the presence policy the engine applies to
//! every critical operation. Every state change of a ceremony happens here, in the writer's
//! transaction, re-checking what the route verified against the read pool (the state, the
//! expiry, the sign counter), so two answers to one ceremony cannot both win.

use agentkeys_proto::ErrorCode;
use agentkeys_proto::ceremony::{CeremonyPurpose, CeremonyState, MAX_PRESENCE_KEYS};
use agentkeys_proto::critical::Critical;
use agentkeys_proto::presence::{PresenceClaim, PresenceMethod, PresenceRecord};
use sqlx::AnyConnection;

use super::queries::{self, CeremonyRow, KeyRow, RootRow, Transition};
use crate::domains::accounts::queries as accounts;
use crate::engine::op::{
    BoxFuture, CriticalFor, Ctx, Maintenance, Op, OpError, OwnerAsk, PresencePolicy, PresenceShown,
};
use crate::error::{ApiError, presence_required};

/// Ceremonies an account may have pending at once.
pub const MAX_PENDING: i64 = 8;

/// How long a ceremony is kept after it was created: long past its expiry, so that `presence`
/// answers say what became of one; the audit log keeps the rest.
pub const KEEP_MS: i64 = 24 * 60 * 60 * 1000;

/// Deletes ceremonies a day old.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prune;

impl Maintenance for Prune {
    fn prune<'a>(&'a self, conn: &'a mut AnyConnection, now: i64) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(queries::delete_old_ceremonies(conn, now - KEEP_MS))
    }
}

/// A ceremony that can no longer be completed, as its page and its poller are told.
pub fn ceremony_over(row: &CeremonyRow, now: i64) -> Option<ApiError> {
    let state = if row.state == CeremonyState::Pending && row.expires_at_ms <= now {
        CeremonyState::Expired
    } else {
        row.state
    };
    let why = match state {
        CeremonyState::Pending | CeremonyState::Completed | CeremonyState::Used => return None,
        CeremonyState::Expired => "expired before a presence key answered it".to_owned(),
        CeremonyState::Cancelled => "was cancelled".to_owned(),
        CeremonyState::Refused => {
            format!("was refused: {}", row.reason.as_deref().unwrap_or("the presence key's answer did not verify"))
        }
    };
    Some(ApiError::new(
        ErrorCode::Declined,
        format!("presence ceremony {} ({}) {why}", row.id, row.operation),
        "nothing was changed; run the command again and answer the new ceremony with an enrolled presence key",
    ))
}

/// Opens a ceremony: an assertion bound to one request, or an enrollment (critical itself: the
/// first key needs the local presence methods, later ones an assertion from an enrolled key).
#[derive(Debug, Clone)]
pub struct StartCeremony {
    pub ceremony: CeremonyRow,
}

impl Op for StartCeremony {
    type Output = ();

    fn critical(&self) -> Option<CriticalFor<'_>> {
        (self.ceremony.purpose == CeremonyPurpose::Enroll)
            .then_some(CriticalFor { op: Critical::PresenceEnroll, account_id: &self.ceremony.account_id })
    }

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        let account_id = &self.ceremony.account_id;
        if queries::pending_count(conn, account_id, cx.now_ms).await? >= MAX_PENDING {
            return Err(ApiError::rate_limited(
                format!("this account has {MAX_PENDING} presence ceremonies pending already"),
                "answer or cancel them (Ctrl-C in the waiting command), or wait two minutes for them to expire",
                120,
            )
            .into());
        }
        let keys = queries::keys(conn, account_id).await?;
        match self.ceremony.purpose {
            CeremonyPurpose::Assert if keys.is_empty() => {
                return Err(ApiError::not_found(
                    "this account has no presence key to answer a ceremony",
                    "enroll one with `agentkeys presence enroll`",
                )
                .into());
            }
            CeremonyPurpose::Assert => {}
            CeremonyPurpose::Enroll => {
                let name = self.ceremony.key_name.as_deref().unwrap_or_default();
                check_room(&keys, name)?;
            }
        }
        queries::insert_ceremony(conn, &self.ceremony).await?;
        Ok(())
    }
}

/// Refuses an enrollment the account has no room for, or whose name is taken.
fn check_room(keys: &[KeyRow], name: &str) -> Result<(), ApiError> {
    if keys.len() >= MAX_PRESENCE_KEYS {
        return Err(ApiError::new(
            ErrorCode::Denied,
            format!("this account has {MAX_PRESENCE_KEYS} presence keys, the most it may have"),
            "remove one first: `agentkeys presence remove <name>`",
        ));
    }
    if keys.iter().any(|k| k.name == name) {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("a presence key named '{name}' is enrolled already"),
            "pick another --name, or remove that key first",
        ));
    }
    Ok(())
}

/// Loads a ceremony that is still open, in the transaction.
/// The ceremony, if the page may still answer it. A refusal keeps the page's spent token (it is
/// reached without a session): posting to a closed ceremony costs what any other answer does.
async fn open_ceremony(conn: &mut AnyConnection, id: &str, now: i64) -> Result<CeremonyRow, OpError> {
    let row = queries::ceremony(conn, id).await?.ok_or_else(|| OpError::RefusedKeeping(no_such_ceremony(id)))?;
    match closed(&row, now) {
        Some(why) => Err(OpError::RefusedKeeping(why)),
        None => Ok(row),
    }
}

/// Why the page can no longer answer this ceremony, if it cannot: over, or answered already.
pub fn closed(row: &CeremonyRow, now: i64) -> Option<ApiError> {
    ceremony_over(row, now).or_else(|| (row.state != CeremonyState::Pending).then(|| already_answered(row)))
}

/// Moves the ceremony out of `pending`, or refuses (rolling back the op) when another answer
/// moved it first, on this replica or another.
async fn leave_pending(
    conn: &mut AnyConnection,
    row: &CeremonyRow,
    to: CeremonyState,
    what: Transition<'_>,
    now: i64,
) -> Result<(), OpError> {
    if queries::transition(conn, &row.id, CeremonyState::Pending, to, what, now).await? {
        Ok(())
    } else {
        Err(OpError::Refused(already_answered(row)))
    }
}

pub fn no_such_ceremony(id: &str) -> ApiError {
    ApiError::not_found(
        format!("no presence ceremony {id}"),
        "open the link the waiting command printed; run the command again if it gave up",
    )
}

pub fn already_answered(row: &CeremonyRow) -> ApiError {
    ApiError::new(
        ErrorCode::Denied,
        format!("presence ceremony {} ({}) was answered already: it is {}", row.id, row.operation, row.state.as_str()),
        "nothing is left to do on this page; a new operation gets a new ceremony",
    )
}

/// The master cancels its own pending ceremony (Ctrl-C in the waiting command).
#[derive(Debug, Clone)]
pub struct CancelCeremony {
    pub account_id: String,
    pub id: String,
}

impl Op for CancelCeremony {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        let row = queries::ceremony(conn, &self.id).await?.filter(|row| row.account_id == self.account_id);
        let row = row.ok_or_else(|| no_such_ceremony(&self.id))?;
        if row.state != CeremonyState::Pending {
            return Err(already_answered(&row).into());
        }
        queries::transition(
            conn,
            &row.id,
            CeremonyState::Pending,
            CeremonyState::Cancelled,
            Transition::default(),
            cx.now_ms,
        )
        .await?;
        Ok(())
    }
}

/// A pending ceremony that ran out of time, seen by its poller: marked expired and audited.
#[derive(Debug, Clone)]
pub struct ExpireCeremony {
    pub id: String,
}

impl Op for ExpireCeremony {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        let Some(row) = queries::ceremony(conn, &self.id).await? else {
            return Err(no_such_ceremony(&self.id).into());
        };
        queries::transition(
            conn,
            &row.id,
            CeremonyState::Pending,
            CeremonyState::Expired,
            Transition::default(),
            cx.now_ms,
        )
        .await?;
        let expired = CeremonyRow { state: CeremonyState::Expired, ..row };
        let error = ceremony_over(&expired, cx.now_ms).unwrap_or_else(|| already_answered(&expired));
        Err(OpError::RefusedKeeping(error))
    }
}

/// Refuses a ceremony whose answer did not verify (or whose key's counter went backwards):
/// it can no longer be completed, and the refusal stays, audited.
#[derive(Debug, Clone)]
pub struct RefuseCeremony {
    pub id: String,
    pub key_id: Option<String>,
    pub error: ApiError,
}

impl Op for RefuseCeremony {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        let row = open_ceremony(conn, &self.id, cx.now_ms).await?;
        let what = Transition { key_id: self.key_id.as_deref(), reason: Some(&self.error.message) };
        leave_pending(conn, &row, CeremonyState::Refused, what, cx.now_ms).await?;
        Err(OpError::RefusedKeeping(self.error.clone()))
    }
}

/// A verified assertion: the ceremony is completed, and the key's counter stored.
#[derive(Debug, Clone)]
pub struct CompleteAssertion {
    pub id: String,
    pub key_id: String,
    pub sign_count: i64,
}

impl Op for CompleteAssertion {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        let row = open_ceremony(conn, &self.id, cx.now_ms).await?;
        if !queries::advance_counter(conn, &self.key_id, self.sign_count, cx.now_ms).await? {
            let error = possibly_cloned(self.sign_count);
            let what = Transition { key_id: Some(&self.key_id), reason: Some(&error.message) };
            leave_pending(conn, &row, CeremonyState::Refused, what, cx.now_ms).await?;
            return Err(OpError::RefusedKeeping(error));
        }
        let what = Transition { key_id: Some(&self.key_id), reason: None };
        leave_pending(conn, &row, CeremonyState::Completed, what, cx.now_ms).await
    }
}

/// The refusal of an assertion whose sign counter did not advance.
pub fn possibly_cloned(received: i64) -> ApiError {
    ApiError::new(
        ErrorCode::Denied,
        format!(
            "the presence key's sign counter ({received}) did not advance past the one stored: \
             the key may have been cloned"
        ),
        "check who holds a copy of this key; remove it with `agentkeys presence remove` and enroll a new one",
    )
}

/// A verified registration: the key is enrolled and the ceremony completed.
#[derive(Debug, Clone)]
pub struct CompleteEnrollment {
    pub id: String,
    pub key: KeyRow,
}

impl Op for CompleteEnrollment {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        let row = open_ceremony(conn, &self.id, cx.now_ms).await?;
        let keys = queries::keys(conn, &self.key.account_id).await?;
        // The enrollment was allowed by the keys of the moment it was opened (none: this
        // machine's word; some: an assertion from one). A key enrolled since must answer for any
        // further one, so an enrollment opened before the account's first key cannot add a
        // second after it.
        if keys.iter().any(|k| k.created_at_ms >= row.created_at_ms) {
            let error = ApiError::new(
                ErrorCode::PresenceRequired,
                "a presence key was enrolled after this enrollment was opened, so that key must allow this one",
                "run `agentkeys presence enroll` again: it asks an enrolled key first",
            );
            let what = Transition { key_id: None, reason: Some(&error.message) };
            leave_pending(conn, &row, CeremonyState::Refused, what, cx.now_ms).await?;
            return Err(OpError::RefusedKeeping(error));
        }
        check_room(&keys, &self.key.name)?;
        let taken = keys.iter().any(|k| k.credential_id == self.key.credential_id)
            || queries::key_exists(conn, &self.key.id).await?;
        if taken {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                "this authenticator's credential is enrolled already",
                "use another authenticator, or see `agentkeys presence list`",
            )
            .into());
        }
        queries::insert_key(conn, &self.key).await?;
        let what = Transition { key_id: Some(&self.key.id), reason: None };
        leave_pending(conn, &row, CeremonyState::Completed, what, cx.now_ms).await
    }
}

/// Removes a presence key (critical: with keys enrolled, an assertion is needed). Removing the
/// last one turns the server's requirement of a ceremony off.
#[derive(Debug, Clone)]
pub struct RemoveKey {
    pub account_id: String,
    pub key_id: String,
}

impl Op for RemoveKey {
    type Output = ();

    fn critical(&self) -> Option<CriticalFor<'_>> {
        Some(CriticalFor { op: Critical::PresenceRemove, account_id: &self.account_id })
    }

    async fn apply(&self, conn: &mut AnyConnection, _cx: Ctx) -> Result<(), OpError> {
        if !queries::delete_key(conn, &self.account_id, &self.key_id).await? {
            return Err(ApiError::not_found(
                format!("no presence key {}", self.key_id),
                "see the enrolled keys with `agentkeys presence list`",
            )
            .into());
        }
        Ok(())
    }
}

/// Replaces the attestation roots enrollment is restricted to (critical: a change may loosen it).
#[derive(Debug, Clone)]
pub struct SetAttestationRoots {
    pub account_id: String,
    pub roots: Vec<RootRow>,
}

impl Op for SetAttestationRoots {
    type Output = ();

    fn critical(&self) -> Option<CriticalFor<'_>> {
        Some(CriticalFor { op: Critical::ConfigWeaken, account_id: &self.account_id })
    }

    async fn owner_ask(&self, _conn: &mut AnyConnection) -> Result<Option<OwnerAsk>, OpError> {
        Ok(Some(OwnerAsk::about(&self.account_id, agentkeys_policy::Action::ConfigSet)))
    }

    async fn apply(&self, conn: &mut AnyConnection, _cx: Ctx) -> Result<(), OpError> {
        queries::replace_attestation_roots(conn, &self.account_id, &self.roots).await?;
        Ok(())
    }
}

/// The server's presence policy (PRODUCT.md §5, K11). A request that names a ceremony must
/// consume a completed, unexpired, unused assertion ceremony of this account bound to exactly
/// this request; once the account has a presence key, nothing else will do. Without keys, the
/// account's `require-presence` setting refuses a critical operation whose presence was skipped
/// or not reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct PresenceKeys;

impl PresencePolicy for PresenceKeys {
    fn check<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        critical: CriticalFor<'a>,
        shown: PresenceShown<'a>,
        cx: Ctx,
    ) -> BoxFuture<'a, Result<Option<PresenceRecord>, OpError>> {
        Box::pin(async move {
            if let Some(PresenceClaim::Ceremony(id)) = shown.claim {
                return consume(conn, critical, id, shown, cx).await.map(Some);
            }
            // The CLI always reports presence for a store that says `--high-value[=false]`; one
            // that says nothing yet changes the mark (a credential stored again after `rm`) did
            // not mean to.
            if critical.op == Critical::HighValueChange && shown.claim.is_none() {
                return Err(ApiError::new(
                    ErrorCode::PresenceRequired,
                    "this store changes whether the credential is high-value without saying so (it was high-value \
                     when it was removed)",
                    "store it with --high-value to keep the mark, or --high-value=false to clear it (critical)",
                )
                .into());
            }
            // Likewise `policy set` shows presence whenever it weakens the version it compared
            // with; one that did not think so compared with another version.
            if critical.op == Critical::PolicyWeaken && shown.claim.is_none() {
                return Err(ApiError::new(
                    ErrorCode::PresenceRequired,
                    "this policy removes or loosens a restricting rule of the version it replaces, and no presence \
                     was shown",
                    "run `agentkeys policy set FILE`: it shows what weakens and asks for presence (critical)",
                )
                .into());
            }
            if queries::key_count(conn, critical.account_id).await? > 0 {
                return Err(ceremony_required(critical, shown.claim).into());
            }
            let method = shown.claim.map(PresenceClaim::method);
            if method.is_none_or(|m| m == PresenceMethod::Skipped)
                && accounts::requires_presence(conn, critical.account_id).await?
            {
                return Err(presence_required().into());
            }
            Ok(None)
        })
    }
}

fn ceremony_required(critical: CriticalFor<'_>, claim: Option<&PresenceClaim>) -> ApiError {
    let shown = match claim {
        Some(claim) => format!("with presence={}", claim.to_query_value()),
        None => "without presence".to_owned(),
    };
    ApiError::new(
        ErrorCode::PresenceRequired,
        format!(
            "this account has a presence key, so the server itself must verify presence for {} operations; \
             this one came {shown}",
            critical.op.as_str()
        ),
        "run it with the agentkeys CLI: it opens a presence ceremony (POST /v1/presence/ceremonies) for this exact \
         request, you answer it with your presence key on the server's page, and the request is sent again with \
         presence=webauthn:<ceremony id>",
    )
}

/// Marks the ceremony used, if it may answer this request; else says why not.
async fn consume(
    conn: &mut AnyConnection,
    critical: CriticalFor<'_>,
    id: &str,
    shown: PresenceShown<'_>,
    cx: Ctx,
) -> Result<PresenceRecord, OpError> {
    let refuse = |why: String| -> OpError {
        ApiError::new(
            ErrorCode::PresenceRequired,
            format!("presence ceremony {id} cannot answer this {} operation: {why}", critical.op.as_str()),
            "run the command again with the agentkeys CLI: it opens a new ceremony bound to this exact request",
        )
        .into()
    };
    let row = queries::ceremony(conn, id).await?.filter(|row| row.account_id == critical.account_id);
    let Some(row) = row else {
        return Err(refuse("this account has no such ceremony".into()));
    };
    if row.purpose != CeremonyPurpose::Assert {
        return Err(refuse("it enrolls a key; it does not answer a request".into()));
    }
    match row.state {
        CeremonyState::Completed => {}
        CeremonyState::Used => return Err(refuse("it was used already (each ceremony answers one request)".into())),
        CeremonyState::Pending if row.expires_at_ms > cx.now_ms => {
            return Err(refuse("no presence key has answered it yet".into()));
        }
        other => return Err(refuse(format!("it is {}", other.as_str()))),
    }
    if row.expires_at_ms <= cx.now_ms {
        return Err(refuse("it expired".into()));
    }
    let bound = shown.request.is_some_and(|request| {
        request.method == row.method && request.path == row.path && request.body_digest[..] == row.body_digest[..]
    });
    if !bound {
        return Err(refuse(format!("it was opened for another request ({} {})", row.method, row.path)));
    }
    let key_id = row.key_id.clone().ok_or_else(|| refuse("no key is recorded as having answered it".into()))?;
    if !queries::transition(conn, id, CeremonyState::Completed, CeremonyState::Used, Transition::default(), cx.now_ms)
        .await?
    {
        return Err(refuse("it was used already (each ceremony answers one request)".into()));
    }
    Ok(PresenceRecord { method: PresenceMethod::Webauthn, key_id: Some(key_id) })
}
