//! The anonymous door of a route without a session ([`crate::anonymous`]): an accepted request's
//! op is admitted through its door's buckets; a refused one is counted there instead of audited
//! row by row, and shows in the metrics.

use crate::anonymous::{Admitted, Door, Refused, Source};
use crate::engine::audit::AuditDraft;
use crate::engine::op::Op;
use crate::engine::writer::Submission;
use crate::error::ApiError;
use crate::state::AppState;

/// Commits `op` behind `door` with its audit row.
pub async fn admit<O: Op>(
    state: &AppState,
    source: Source,
    door: Door,
    audit: AuditDraft,
    op: O,
) -> Result<O::Output, ApiError> {
    let admitted = Admitted { source, door, limits: state.limits.anonymous, op };
    let result = state.writer.submit(Submission { audit, ..Submission::default() }, Ok(admitted)).await;
    if let Err(error) = &result {
        state.metrics.record_anonymous_refusal(door.as_str(), error.code.as_str());
    }
    result
}

/// Counts a refused request at `door` and returns the answer: `error`, or `RATE_LIMITED` once
/// the source (or the whole server) is over the door's limit.
pub async fn refuse(state: &AppState, source: Source, door: Door, action: &'static str, error: ApiError) -> ApiError {
    let refused = Refused::new(source, door, state.limits.anonymous, error.clone());
    let submission = Submission { audit: AuditDraft { action, ..AuditDraft::default() }, ..Submission::default() };
    let answer = match state.writer.submit(submission, Ok(refused)).await {
        Err(answer) => answer,
        Ok(()) => error,
    };
    state.metrics.record_anonymous_refusal(door.as_str(), answer.code.as_str());
    answer
}
