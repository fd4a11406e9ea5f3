//! Master devices (PRODUCT.md §3): the list, with each device's last use, and the revocation of
//! one. A device joins through the approval queue (a pairing of kind `device`, in the requests
//! domain) or a recovery (the recovery domain); the rows are the accounts domain's `devices`.

pub mod ops;
pub mod queries;
pub mod routes;
