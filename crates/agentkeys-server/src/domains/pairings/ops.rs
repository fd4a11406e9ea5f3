//! Opening a pairing request, and revealing its OTP nonce.

use agentkeys_proto::ErrorCode;
use sqlx::AnyConnection;

use crate::domains::requests::ops::open;
use crate::domains::requests::queries::{self as requests, NewRequest};
use crate::engine::op::{Ctx, Op, OpError};
use crate::engine::ratelimit::{RateLimit, take_token};
use crate::error::ApiError;

/// Pairing requests need no account, so anyone can open one: a server-wide bucket keeps a flood
/// of them from filling the table.
const PAIRING_OPENS: RateLimit = RateLimit { burst: 60, per_second: 2 };

#[derive(Debug, Clone)]
pub struct OpenPairing(pub NewRequest);

impl Op for OpenPairing {
    type Output = ();

    async fn apply(&self, conn: &mut AnyConnection, cx: Ctx) -> Result<(), OpError> {
        if let Err(retry_after) = take_token(conn, "pairing-opens", PAIRING_OPENS, cx.now_ms).await? {
            return Err(ApiError::rate_limited(
                "too many pairing requests are open on this server right now",
                format!("retry in {retry_after}s"),
                retry_after,
            )
            .into());
        }
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
