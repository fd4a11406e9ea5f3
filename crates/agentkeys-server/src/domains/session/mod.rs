//! The caller's own view: who its session is (`GET /v1/session`) and what the account's sessions
//! did (`GET /v1/audit`, the usage log). Reads only; it owns no table.

pub mod queries;
pub mod routes;
