//! What every domain's routes share at the HTTP boundary: [`action`] names a route's audit action
//! where the route is declared, [`signed`] authenticates `/v1` requests and commits them through
//! the writer, [`chain`] answers each signed request with its account's audit head, [`decode`] turns paths, queries, bodies and base64url fields into checked values,
//! and [`door`] admits or counts the requests of routes without a session.

pub mod action;
pub mod chain;
pub mod decode;
pub mod door;
pub mod signed;
