//! The accounts domain's ops: creating an account and changing its settings. The presence
//! policy those settings feed is the presence domain's ([`crate::domains::presence::ops`]).

use agentkeys_proto::ErrorCode;
use agentkeys_proto::critical::Critical;
use agentkeys_proto::devices::DeviceOrigin;
use agentkeys_proto::types::ActorKind;
use sqlx::AnyConnection;

use super::queries::{self, NewDevice};
use crate::engine::op::{CriticalFor, Ctx, Op, OpError, OwnerAsk};
use crate::error::ApiError;
use crate::sessions::{self, NewSession};

/// A new account with its first master device and that device's session.
#[derive(Debug, Clone)]
pub struct CreateAccount {
    pub account_id: String,
    pub sign_public: Vec<u8>,
    pub kx_public: Vec<u8>,
    pub recovery_sign_public: Vec<u8>,
    pub device: NewDevice,
    pub wrap_device: Vec<u8>,
    pub wrap_recovery: Vec<u8>,
    pub session: NewSession,
}

impl Op for CreateAccount {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        if !queries::insert_account(
            conn,
            &self.account_id,
            (&self.sign_public, &self.kx_public),
            &self.recovery_sign_public,
            cx.now_ms,
        )
        .await?
        {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("account {} already exists", self.account_id),
                "generate a new account key; a client never reuses one",
            )
            .into());
        }
        if !queries::insert_device(conn, &self.account_id, &self.device, cx.now_ms).await? {
            // The savepoint is rolled back, so the account row above goes too.
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("device {} is already registered", self.device.device_id),
                "generate a new device key; a client never reuses one",
            )
            .into());
        }
        let device_recipient = queries::device_recipient(&self.device.device_id);
        queries::insert_key_wrap(conn, &self.account_id, &device_recipient, &self.wrap_device).await?;
        queries::insert_key_wrap(conn, &self.account_id, queries::RECOVERY_RECIPIENT, &self.wrap_recovery).await?;
        sessions::insert(conn, &self.account_id, &self.device.device_id, &self.session, cx.now_ms).await?;
        Ok(())
    }
}

impl CreateAccount {
    pub fn master_device(
        device_id: String,
        label: String,
        sign_public: Vec<u8>,
        kx_public: Vec<u8>,
        certificate: Vec<u8>,
    ) -> NewDevice {
        NewDevice {
            device_id,
            kind: ActorKind::Master,
            label,
            sign_public,
            kx_public,
            certificate,
            agent_id: None,
            origin: Some(DeviceOrigin::Init),
        }
    }
}

/// Sets the account's presence requirement; turning it off is critical.
#[derive(Debug, Clone)]
pub struct SetRequirePresence {
    pub account_id: String,
    pub required: bool,
}

impl Op for SetRequirePresence {
    type Output = ();

    fn critical(&self) -> Option<CriticalFor<'_>> {
        (!self.required).then_some(CriticalFor { op: Critical::ConfigWeaken, account_id: &self.account_id })
    }

    async fn owner_ask(&self, _conn: &mut AnyConnection) -> Result<Option<OwnerAsk>, OpError> {
        Ok(Some(OwnerAsk::about(&self.account_id, agentkeys_policy::Action::ConfigSet)))
    }

    async fn apply(&self, conn: &mut AnyConnection, _cx: Ctx) -> Result<(), OpError> {
        queries::set_requires_presence(conn, &self.account_id, self.required).await?;
        Ok(())
    }
}
