//! Presence keys (PRODUCT.md §2, §5 K11): the master's WebAuthn credentials, the ceremonies
//! that enroll them and that bind one verified assertion to one critical request, the page a
//! browser completes them on, and [`ops::PresenceKeys`], the policy the engine applies to every
//! critical operation. Owns the `presence_keys`, `presence_ceremonies` and
//! `presence_attestation_roots` tables.

pub mod models;
pub mod ops;
pub mod page;
pub mod queries;
pub mod routes;
