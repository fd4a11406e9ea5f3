//! Releases of high-value credentials (PRODUCT.md §3, per-use approval): a data key the owner
//! wrapped to one agent device for a number of reads or a time. The credentials domain serves
//! them from an agent's read, the requests domain stores them when a release request is
//! approved. Owns the `releases` table; it has no routes of its own.

pub mod ops;
pub mod queries;
