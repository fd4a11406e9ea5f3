//! The recovery ops. Every check the route made against the read pool (the request's state, its
//! delay) is made again here, in the writer's transaction, so two completions cannot both win and
//! a denial committed first is never overtaken.

use agentkeys_proto::ErrorCode;
use agentkeys_proto::agents::RequestStatus;
use agentkeys_proto::critical::Critical;
use sqlx::AnyConnection;

use crate::domains::accounts::queries::{self as accounts, NewDevice};
use crate::domains::presence::queries as presence;
use crate::domains::requests::ops::open;
use crate::domains::requests::queries::{self as requests, NewRequest, RequestRow};
use crate::engine::op::{CriticalFor, Ctx, Op, OpError, OwnerAsk};
use crate::error::ApiError;
use crate::sessions::{self, NewSession};

/// Opens a recovery; refused while another one of the account is pending.
#[derive(Debug, Clone)]
pub struct OpenRecovery(pub NewRequest);

impl Op for OpenRecovery {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        let account_id = self.0.account_id.as_deref().unwrap_or_default();
        if let Some(pending) = requests::pending_account_recovery(&mut *conn, account_id, cx.now_ms).await? {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!(
                    "a recovery of this account is pending already (code {}; it can complete in {})",
                    pending.code,
                    crate::error::duration_text(
                        (pending.not_before_ms.unwrap_or(cx.now_ms) - cx.now_ms).max(0).div_euclid(1000)
                    )
                ),
                "complete that one on the machine that opened it (`agentkeys recover --complete`), or have a master \
                 device deny it (`agentkeys deny CODE`) and open a new one",
            )
            .into());
        }
        open(conn, &self.0, cx.now_ms).await
    }
}

/// Why a recovery cannot be completed now, if it cannot.
pub fn not_completable(row: &RequestRow, now: i64) -> Option<ApiError> {
    match row.status_at(now) {
        RequestStatus::Pending => {}
        RequestStatus::Denied => {
            return Some(ApiError::new(
                ErrorCode::Declined,
                format!(
                    "recovery {} was denied from a master device of the account (or its recovery key was rotated)",
                    row.code
                ),
                "nothing was changed; if it was yours, ask whoever holds a master device, or recover with the current \
                 recovery key",
            ));
        }
        RequestStatus::Expired => {
            return Some(ApiError::new(
                ErrorCode::Declined,
                format!("recovery {} expired: it was not completed within a week of its delay", row.code),
                "open a new one with `agentkeys recover`",
            ));
        }
        RequestStatus::Approved => {
            return Some(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("recovery {} was completed already", row.code),
                "this machine is a master device now: `agentkeys whoami`",
            ));
        }
    }
    let not_before = row.not_before_ms.unwrap_or(i64::MAX);
    if now < not_before {
        let left_s = (not_before - now).div_euclid(1000) + 1;
        return Some(ApiError::new(
            ErrorCode::Declined,
            format!(
                "recovery {} is still in its recovery delay: {} left",
                row.code,
                crate::error::duration_text(left_s)
            ),
            "wait, then run `agentkeys recover --complete` on this machine; any master device of the account can \
             deny it until then",
        ));
    }
    None
}

/// Completes a recovery: the new master device, its session and its wrap of the account key; with
/// `replace_presence_keys`, every presence key of the account is removed (they were lost).
#[derive(Debug, Clone)]
pub struct CompleteRecovery {
    pub recovery_id: String,
    pub device: NewDevice,
    pub session: NewSession,
    pub account_key_wrap: Vec<u8>,
    pub replace_presence_keys: bool,
}

/// What a completed recovery did.
#[derive(Debug, Clone)]
pub struct Completed {
    pub account_id: String,
    pub presence_keys_removed: u64,
}

impl Op for CompleteRecovery {
    type Output = Completed;

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<Completed, OpError> {
        let row = requests::find_by_id(&mut *conn, &self.recovery_id)
            .await?
            .filter(|row| row.kind == agentkeys_proto::agents::RequestKind::AccountRecovery)
            .ok_or_else(|| ApiError::not_found("no such recovery", "open one with `agentkeys recover`"))?;
        if let Some(why) = not_completable(&row, cx.now_ms) {
            return Err(why.into());
        }
        let account_id = row.account_id.clone().unwrap_or_default();
        if !accounts::insert_device(conn, &account_id, &self.device, cx.now_ms).await? {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("device {} is already registered", self.device.device_id),
                "open a new recovery with `agentkeys recover`: it makes a new key",
            )
            .into());
        }
        let recipient = accounts::device_recipient(&self.device.device_id);
        accounts::insert_key_wrap(conn, &account_id, &recipient, &self.account_key_wrap).await?;
        sessions::insert(conn, &account_id, &self.device.device_id, &self.session, cx.now_ms).await?;
        requests::approve_master(
            conn,
            &row.id,
            &account_id,
            &self.device.device_id,
            &self.session.session_id,
            cx.now_ms,
        )
        .await?;
        let presence_keys_removed =
            if self.replace_presence_keys { presence::delete_all_keys(conn, &account_id).await? } else { 0 };
        Ok(Completed { account_id, presence_keys_removed })
    }
}

/// Replaces the recovery key (critical); a recovery opened with the old one is denied.
#[derive(Debug, Clone)]
pub struct RotateRecoveryKey {
    pub account_id: String,
    pub wrap: Vec<u8>,
    pub recovery_sign_public: Vec<u8>,
}

impl Op for RotateRecoveryKey {
    type Output = ();

    fn critical(&self) -> Option<CriticalFor<'_>> {
        Some(CriticalFor { op: Critical::RecoveryKeyRotate, account_id: &self.account_id })
    }

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        accounts::replace_recovery_key(conn, &self.account_id, &self.wrap, &self.recovery_sign_public).await?;
        requests::deny_pending_account_recoveries(conn, &self.account_id, cx.now_ms).await?;
        Ok(())
    }
}

/// Sets the recovery delay; shortening it is critical. `shortens` is what the route saw; a change
/// made meanwhile that turns a lengthening into a shortening is refused, not applied unguarded.
#[derive(Debug, Clone)]
pub struct SetRecoveryDelay {
    pub account_id: String,
    pub delay_ms: i64,
    pub shortens: bool,
}

impl Op for SetRecoveryDelay {
    type Output = ();

    fn critical(&self) -> Option<CriticalFor<'_>> {
        self.shortens.then_some(CriticalFor { op: Critical::ConfigWeaken, account_id: &self.account_id })
    }

    async fn owner_ask(&self, _conn: &mut AnyConnection) -> Result<Option<OwnerAsk>, OpError> {
        Ok(Some(OwnerAsk::about(&self.account_id, agentkeys_policy::Action::ConfigSet)))
    }

    async fn apply(&self, conn: &mut AnyConnection, _cx: Ctx) -> Result<(), OpError> {
        let current = accounts::recovery_delay_ms(&mut *conn, &self.account_id).await?.unwrap_or_default();
        if self.delay_ms < current && !self.shortens {
            return Err(ApiError::new(
                ErrorCode::VersionConflict,
                "the recovery delay changed while this request was on its way",
                "run the command again",
            )
            .into());
        }
        accounts::set_recovery_delay_ms(conn, &self.account_id, self.delay_ms).await?;
        Ok(())
    }
}
