//! Link codes: what a code leads to, and its redemption by a daemon that has no session yet.
//! Owns the `links` and `link_wraps` tables (rows created by `agent create`, in the agents domain).

pub mod ops;
pub mod queries;
pub mod routes;
