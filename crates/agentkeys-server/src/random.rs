//! Randomness is passed in, like time: the server draws every id, code and token through
//! [`Random`], so a test could substitute its own source.

use std::sync::Arc;

use crate::error::ApiError;

type Fill = dyn Fn(&mut [u8]) -> Result<(), String> + Send + Sync;

/// A source of random bytes; the operating system's by default.
#[derive(Clone)]
pub struct Random(Arc<Fill>);

impl std::fmt::Debug for Random {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Random")
    }
}

impl Default for Random {
    fn default() -> Self {
        Self::system()
    }
}

impl Random {
    pub fn system() -> Self {
        Self(Arc::new(|out| getrandom::fill(out).map_err(|e| e.to_string())))
    }

    pub fn from_fn(fill: impl Fn(&mut [u8]) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(fill))
    }

    pub fn bytes<const N: usize>(&self) -> Result<[u8; N], ApiError> {
        let mut out = [0u8; N];
        (self.0)(&mut out).map_err(ApiError::internal)?;
        Ok(out)
    }

    /// `N` random bytes as lowercase hex.
    pub fn hex<const N: usize>(&self) -> Result<String, ApiError> {
        Ok(hex::encode(self.bytes::<N>()?))
    }

    /// A new session id: `ses_` + 24 random hex digits.
    pub fn session_id(&self) -> Result<String, ApiError> {
        Ok(format!("ses_{}", self.hex::<12>()?))
    }
}
