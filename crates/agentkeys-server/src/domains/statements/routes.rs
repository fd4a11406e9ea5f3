//! `GET /v1/account/statements`: the account's statement log, read by master devices. Statements
//! are appended by the changes they belong to (`super::ops::append_all`), never on their own.

use agentkeys_proto::statement::{AccountStatement, STATEMENTS_PAGE, StatementLog, StatementsQuery};
use agentkeys_proto::{ErrorBody, b64};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::queries;
use crate::engine::audit::Subject;
use crate::error::ApiError;
use crate::http::action::signed;
use crate::http::decode;
use crate::http::signed::Signed;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(signed("statement.list", routes!(list_statements)))
}

/// The account's statements from `from` on (at most 256 per answer), with the log's last number.
#[utoipa::path(get, path = "/v1/account/statements", tag = "session", params(StatementsQuery),
    responses((status = 200, body = StatementLog), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_statements(
    State(state): State<AppState>,
    query: Result<Query<StatementsQuery>, QueryRejection>,
    signed: Signed,
) -> Result<Json<StatementLog>, ApiError> {
    let caller = &signed.caller;
    let from = caller.require_master().and_then(|()| decode::query(query)).and_then(|q| {
        let from = q.from.unwrap_or(1);
        i64::try_from(from)
            .ok()
            .filter(|from| *from >= 1)
            .ok_or_else(|| ApiError::bad_request("from is a statement number, 1 to 2^63 - 1"))
    });
    let from = match from {
        Ok(from) => from,
        Err(error) => return Err(caller.refuse(&state, error).await),
    };
    let limit = i64::try_from(STATEMENTS_PAGE).expect("a small page");
    let (head, rows) = queries::page(&state.db.reads, &caller.account_id, from, limit).await?;
    caller.record(&state, Subject::default()).await?;
    Ok(Json(StatementLog {
        head: u64::try_from(head).unwrap_or(0),
        statements: rows
            .into_iter()
            .map(|row| AccountStatement {
                seq: u64::try_from(row.seq).unwrap_or(0),
                payload: b64::encode(row.payload),
                signature: b64::encode(row.signature),
            })
            .collect(),
    }))
}
