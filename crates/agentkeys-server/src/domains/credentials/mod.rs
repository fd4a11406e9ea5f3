//! Credentials: sealed versions (every version kept, a removal is a version without ciphertext)
//! and their data keys wrapped to agent devices; the owner's reads and writes and an agent's read.
//! Owns the `credential_versions` and `credential_wraps` tables.

pub mod ops;
pub mod queries;
pub mod routes;
