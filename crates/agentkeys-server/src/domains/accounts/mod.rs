//! Accounts: creating one with its first master device, the account's server-side settings, and
//! the presence policy those settings define for every critical operation. Owns the `accounts`,
//! `devices` and `account_key_wraps` tables (agents add their devices through [`queries`]).

pub mod ops;
pub mod queries;
pub mod routes;
