//! Time is passed in: the server reads the clock only through [`Clock`], so tests can move it
//! (stale timestamps, nonce expiry) without sleeping.

use std::sync::Arc;

/// Milliseconds since the Unix epoch.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock(now_ms={})", self.now_ms())
    }
}

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        }))
    }

    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}
