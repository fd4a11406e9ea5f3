//! Opening a pairing request, and revealing its OTP nonce.

use agentkeys_proto::ErrorCode;
use sqlx::AnyConnection;

use crate::domains::requests::ops::open;
use crate::domains::requests::queries::{self as requests, NewRequest};
use crate::engine::op::{Ctx, Op, OpError};
use crate::error::ApiError;

/// Opens a pairing request. Anyone can: the route admits it through the anonymous door
/// (`crate::anonymous`), limited per source and in total.
#[derive(Debug, Clone)]
pub struct OpenPairing(pub NewRequest);

impl Op for OpenPairing {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        open(conn, &self.0, cx.now_ms).await
    }
}

/// The daemon reveals its OTP nonce; only once, only after a master claimed the code.
#[derive(Debug, Clone)]
pub struct Reveal {
    pub pairing_id: String,
    pub nonce: Vec<u8>,
}

impl Op for Reveal {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, _cx: Ctx) -> Result<(), OpError> {
        if requests::reveal(conn, &self.pairing_id, &self.nonce).await? {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Declined,
                "this pairing cannot take a reveal now: it is not claimed yet, was already revealed, or is over",
                "keep polling; reveal once the status says claimed",
            )
            .into())
        }
    }
}
