//! Account statements: the log of the master's signed decisions about who may receive keys
//! (`agentkeys_proto::statement`). The server keeps it in order and links each statement to the
//! one before, and checks the account key's signature so that it stores nothing the account did
//! not say; it never acts on a statement, and a client trusts one only after checking it itself.
//! Owns the `account_statements` table; the changes that append to it call [`ops::append_all`].

pub mod ops;
pub mod queries;
pub mod routes;
