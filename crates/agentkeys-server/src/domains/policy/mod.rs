//! The account's policy (PRODUCT.md §3 "policy"): its versions, their replacement (critical when
//! it weakens), the explanation of an audit row, and the evaluation other domains call in their
//! op's transaction ([`ops::decide`]). The language is the `agentkeys-policy` crate's, the same
//! one the CLI tests a policy with.

pub mod ops;
pub mod queries;
pub mod routes;
