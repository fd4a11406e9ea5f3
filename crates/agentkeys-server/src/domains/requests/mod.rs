//! The one approval queue: pairing requests opened by daemons, access and tier requests asked by
//! agents, and the master's look-up, approval and denial of them by code. Owns the `requests` and
//! `lookup_guards` tables.
//!
//! Codes carry 40 bits, live 10 minutes and are single use. Look-ups by code are guarded per
//! account (see [`ops`]).

pub mod ops;
pub mod queries;
pub mod routes;
