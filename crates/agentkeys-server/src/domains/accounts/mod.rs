//! Accounts: creating one with its first master device, and the account's server-side settings
//! (the presence domain's policy reads them). Owns the `accounts`,
//! `devices` and `account_key_wraps` tables (agents add their devices through [`queries`]).

pub mod ops;
pub mod queries;
pub mod routes;
