//! Pruning of releases that ran out of time (those that ran out of uses are deleted by the read
//! that took the last one).

use sqlx::AnyConnection;

use super::queries;
use crate::engine::op::{BoxFuture, Maintenance};

/// Deletes every release past its expiry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prune;

impl Maintenance for Prune {
    fn prune<'a>(&'a self, conn: &'a mut AnyConnection, now: i64) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(queries::delete_expired(conn, now))
    }
}
