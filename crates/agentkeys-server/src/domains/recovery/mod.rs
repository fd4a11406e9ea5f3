//! Master recovery with the recovery key (PRODUCT.md §3): a new machine that proves it holds the
//! recovery key opens a request, which the server holds for the account's recovery delay while
//! every master device sees it in `requests` and may deny it; once the delay has passed the new
//! machine gets the account key's recovery wrap, certifies its own device key with the account
//! key it unwrapped, and becomes a master device (optionally removing the presence keys that
//! were lost). Also the rotation of the recovery key and the delay setting.
//!
//! The delay is what protects a stolen recovery key: it buys the owner time to deny. It cannot
//! protect a recovery key stolen together with the database, which holds the wrap it opens.
//! The rows are the approval queue's (`requests`, kind `account_recovery`).

pub mod ops;
pub mod routes;
