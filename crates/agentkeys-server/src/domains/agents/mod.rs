//! Agents: creating them (with a link code), their scope and the data keys wrapped for it, tiers,
//! aliases, revoke and teardown, and the device list a new credential version is wrapped to.
//! Owns the `agents`, `agent_scope` and `agent_aliases` tables and the agent rows of `devices`.

pub mod ops;
pub mod queries;
pub mod routes;
