//! A cache of what never changes about a session — its account, device and device key — keyed by
//! the SHA-256 of its token, so a request does not pay a database round trip to find them.
//!
//! What *can* change, whether the session is still live, is never cached: the writer checks it
//! in the same transaction that consumes the request's nonce and commits its audit row, before
//! any answer leaves. So a revocation committed by any replica refuses the very next request on
//! every replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ed25519_dalek::VerifyingKey;

use crate::db::SessionRow;

/// A session as authentication needs it: the row, and its device key already decompressed
/// (decompressing an Ed25519 point costs about as much as a third of a verification).
#[derive(Debug)]
pub struct KnownSession {
    pub row: SessionRow,
    /// `None` when the stored key is not a valid point: every signature then fails.
    pub device_key: Option<VerifyingKey>,
}

impl KnownSession {
    pub fn new(row: SessionRow) -> Self {
        let device_key = <[u8; 32]>::try_from(row.device_sign_public.as_slice())
            .ok()
            .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok());
        Self { row, device_key }
    }
}

/// More sessions than this and the cache starts over (sessions are few; this bounds memory
/// against a flood of valid tokens, not a workload).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct SessionCache(Arc<Mutex<HashMap<[u8; 32], Arc<KnownSession>>>>);

impl SessionCache {
    pub fn get(&self, token_hash: &[u8; 32]) -> Option<Arc<KnownSession>> {
        self.0.lock().expect("session cache lock").get(token_hash).cloned()
    }

    pub fn insert(&self, token_hash: [u8; 32], session: Arc<KnownSession>) {
        let mut map = self.0.lock().expect("session cache lock");
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(token_hash, session);
    }
}
