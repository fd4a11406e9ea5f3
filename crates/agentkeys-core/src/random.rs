//! Randomness is passed in, never reached for: production code uses [`OsRandom`], while tests and
//! the published test vectors use a seeded source so every byte of output is reproducible.

use sha2::{Digest, Sha256};

/// A source of random bytes.
pub trait RandomSource {
    /// Fills `dest` entirely.
    fn fill(&mut self, dest: &mut [u8]);

    /// Returns `N` fresh bytes.
    fn array<const N: usize>(&mut self) -> [u8; N]
    where
        Self: Sized,
    {
        let mut out = [0u8; N];
        self.fill(&mut out);
        out
    }
}

/// The operating system's CSPRNG (`getrandom(2)` on Linux).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, dest: &mut [u8]) {
        // The OS RNG failing is not recoverable: continuing would mean weak keys.
        getrandom::fill(dest).expect("the operating system's random number generator failed");
    }
}

/// A deterministic stream `SHA-256(seed || counter)`, for test vectors only.
#[derive(Debug, Clone)]
pub struct SeededRandom {
    seed: Vec<u8>,
    counter: u64,
}

impl SeededRandom {
    pub fn new(seed: &[u8]) -> Self {
        Self { seed: seed.to_vec(), counter: 0 }
    }
}

impl RandomSource for SeededRandom {
    fn fill(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let mut hasher = Sha256::new();
            hasher.update(&self.seed);
            hasher.update(self.counter.to_be_bytes());
            self.counter += 1;
            let block = hasher.finalize();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
}

/// Replays fixed bytes, in order: test vectors state every random input explicitly.
#[derive(Debug, Clone)]
pub struct FixedRandom {
    bytes: Vec<u8>,
    offset: usize,
}

impl FixedRandom {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, offset: 0 }
    }
}

impl RandomSource for FixedRandom {
    fn fill(&mut self, dest: &mut [u8]) {
        let end = self.offset + dest.len();
        assert!(end <= self.bytes.len(), "FixedRandom ran out of bytes");
        dest.copy_from_slice(&self.bytes[self.offset..end]);
        self.offset = end;
    }
}
