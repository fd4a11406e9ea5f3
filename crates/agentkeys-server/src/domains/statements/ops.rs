//! Appending to an account's statement log, inside the transaction of the change a statement
//! belongs to (agent creation, scope change, approval, revocation, teardown): each statement of
//! this account, signed by its key, numbered one past the log's last and linked to it. The server
//! checks this so that its log holds only what the account said, in order; it never acts on one.

use agentkeys_proto::statement::{AccountStatement, MAX_STATEMENT_BYTES, Statement, statement_hash};
use sqlx::AnyConnection;

use super::queries::{self, StoredStatement};
use crate::domains::accounts::queries as accounts;
use crate::engine::op::OpError;
use crate::error::ApiError;
use crate::http::decode;

/// The most statements one change carries.
pub const MAX_STATEMENTS_PER_CHANGE: usize = 8;

/// A statement that parsed, to be appended once its signature and place are checked.
#[derive(Debug, Clone)]
pub struct NewStatement {
    pub statement: Statement,
    pub payload: Vec<u8>,
    pub signature: [u8; 64],
}

/// Decodes and parses the statements a request carries (`400` for anything malformed).
pub fn decode_statements(account_id: &str, wire: &[AccountStatement]) -> Result<Vec<NewStatement>, ApiError> {
    if wire.len() > MAX_STATEMENTS_PER_CHANGE {
        return Err(ApiError::bad_request(format!("statements: at most {MAX_STATEMENTS_PER_CHANGE} per change")));
    }
    wire.iter()
        .map(|entry| {
            let payload = decode::bounded("statements[].payload", &entry.payload, 1, MAX_STATEMENT_BYTES)?;
            let signature: [u8; 64] = decode::exact("statements[].signature", &entry.signature)?;
            let statement =
                Statement::parse(&payload).map_err(|e| ApiError::bad_request(format!("statements[].payload: {e}")))?;
            if statement.account_id != account_id {
                return Err(ApiError::bad_request("statements[]: a statement is for another account"));
            }
            if statement.seq != entry.seq || i64::try_from(entry.seq).is_err() {
                return Err(ApiError::bad_request("statements[].seq is not the number its payload signs"));
            }
            Ok(NewStatement { statement, payload, signature })
        })
        .collect()
}

/// Appends `statements` to the account's log, in order: each signed by the account key, and
/// following the log's last statement. A log that moved on (another master device appended
/// first) is `VERSION_CONFLICT` with its head, and the whole change rolls back.
pub async fn append_all(
    conn: &mut AnyConnection,
    account_id: &str,
    statements: &[NewStatement],
    now: i64,
) -> Result<(), OpError> {
    if statements.is_empty() {
        return Ok(());
    }
    let Some(account_key) = accounts::sign_public(&mut *conn, account_id).await? else {
        return Err(ApiError::internal("a session's account has no key").into());
    };
    let last = queries::last(conn, account_id).await?;
    let (mut head, mut head_hash) = match &last {
        Some(last) => (last.seq, statement_hash(&last.payload)),
        None => (0, [0; 32]),
    };
    for new in statements {
        if !decode::ed25519_ok(&account_key, &new.payload, &new.signature) {
            return Err(ApiError::bad_request("statements[].signature does not verify with the account key").into());
        }
        let seq = i64::try_from(new.statement.seq).unwrap_or(i64::MAX);
        let moved = || {
            ApiError::version_conflict(
                format!(
                    "the account's statement log is at number {head}, and this change's statement does not follow it"
                ),
                "read the log again (`GET /v1/account/statements`) and sign the change's statements after its head",
                Some(head),
            )
        };
        if seq != head + 1 || new.statement.prev != head_hash {
            return Err(moved().into());
        }
        let stored = StoredStatement { seq, payload: new.payload.clone(), signature: new.signature.to_vec() };
        if !queries::insert(conn, account_id, &stored, now).await? {
            return Err(moved().into());
        }
        (head, head_hash) = (seq, statement_hash(&new.payload));
    }
    Ok(())
}
