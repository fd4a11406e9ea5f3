//! What a session slot remembers of its account's audit chain (docs/protocol.md, "Account audit
//! chains"): the head it saw last, in `audit-head.json` beside the session. Each signed request
//! says which place that was; the answer must still have that place with the same hash, and its
//! head must not lie before it. A shorter chain (a cut tail, an older database put back) or
//! another hash there (a rewritten history) is refused as `INTEGRITY`, naming the places, unless
//! the user says the server was restored from a backup (`--accept-rollback`, reported to the
//! audit).
//!
//! The file is rewritten after every signed request, so it skips the fsyncs of the session's own
//! files: a power cut can lose the newest head, which only lets the next answer go unchecked
//! against it. Two processes of one slot at once may leave the older of their two heads; both
//! are places of the same chain, so that, too, only checks less. A long-lived process (the
//! daemon's `serve` and `mcp`) writes at most once per [`ChainMemory::writing_at_most_every`]
//! interval and keeps the newest head in memory meanwhile (saved when it ends): a write costs
//! more than the rest of a cached read, and a crash loses only the last interval's heads.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentkeys_proto::b64;
use agentkeys_proto::chain::ChainPlace;
use agentkeys_proto::grant::{IntegrityFinding, IntegrityReport};
use serde::{Deserialize, Serialize};

use crate::integrity::IntegrityError;
use crate::session::{CHAIN_FILE, replace_unsynced};

/// A slot's memory that cannot be read: written by something else, or damaged.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}, where this session remembers the audit head it saw: {reason}")]
pub struct MemoryError {
    pub path: String,
    pub reason: String,
}

impl MemoryError {
    pub fn hint(&self) -> String {
        format!("remove {} (the session then trusts the next head it sees) and retry", self.path)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    format: u32,
    account_id: String,
    seq: u64,
    hash: String,
}

const FORMAT: u32 = 1;

/// The audit head one session slot saw last.
#[derive(Debug)]
pub struct ChainMemory {
    path: Option<PathBuf>,
    account_id: String,
    /// Without a file (tests, one-off tools): what this process saw.
    in_memory: Mutex<Option<ChainPlace>>,
    accept_rollback: bool,
    /// With a file: write it at most this often, keeping newer heads in `in_memory` meanwhile.
    write_every: Option<Duration>,
    /// When this process last wrote the file.
    written_at: Mutex<Option<Instant>>,
}

impl ChainMemory {
    /// The memory of the slot in `slot_dir`, for `account_id`'s chain (a head saved for another
    /// account, after `init` made a new one in the slot, counts as none).
    pub fn open(slot_dir: &Path, account_id: &str) -> Self {
        Self::new(Some(slot_dir.join(CHAIN_FILE)), account_id)
    }

    /// A memory that lasts as long as this value.
    pub fn in_memory(account_id: &str) -> Self {
        Self::new(None, account_id)
    }

    fn new(path: Option<PathBuf>, account_id: &str) -> Self {
        Self {
            path,
            account_id: account_id.to_owned(),
            in_memory: Mutex::new(None),
            accept_rollback: false,
            write_every: None,
            written_at: Mutex::new(None),
        }
    }

    /// For a long-lived process: writes the file at most once per `interval` (the first head at
    /// once), keeps newer heads in memory meanwhile, and saves the newest when dropped.
    pub fn writing_at_most_every(mut self, interval: Duration) -> Self {
        self.write_every = Some(interval);
        self
    }

    /// Takes a shorter or rewritten chain as the server's new truth (a restore from a backup).
    pub fn accepting_rollback(mut self, accept: bool) -> Self {
        self.accept_rollback = accept;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ChainPlace>> {
        self.in_memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The head this slot saw last, if any: the file's, or a later one this process has not
    /// written yet.
    pub fn seen(&self) -> Result<Option<ChainPlace>, MemoryError> {
        let on_disk = self.on_disk()?;
        let unsaved = *self.lock();
        Ok(match (on_disk, unsaved) {
            (Some(disk), Some(mine)) if mine.seq > disk.seq => Some(mine),
            (None, mine) => mine,
            (disk, _) => disk,
        })
    }

    fn on_disk(&self) -> Result<Option<ChainPlace>, MemoryError> {
        let Some(path) = &self.path else { return Ok(None) };
        let bad = |reason: String| MemoryError { path: path.display().to_string(), reason };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(e.to_string())),
        };
        let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if stored.format != FORMAT {
            return Err(bad(format!("format {} is not one this version knows ({FORMAT})", stored.format)));
        }
        if stored.account_id != self.account_id {
            return Ok(None);
        }
        let hash =
            b64::decode_array(&stored.hash).ok_or_else(|| bad("its hash is not 32 bytes of base64url".into()))?;
        Ok(Some(ChainPlace { seq: stored.seq, hash }))
    }

    /// Checks an answer against the head seen before its request was sent (`before`): `head` is
    /// the answer's head (`None` if it carried none), `at` its hash at `before`'s place (`None`
    /// if it did not say, `Some(None)` if the chain has no such place). Remembers the answer's
    /// head when it is accepted; returns what `--accept-rollback` took, for the audit.
    pub fn check(
        &self,
        before: Option<ChainPlace>,
        head: Option<ChainPlace>,
        at: Option<Option<[u8; 32]>>,
    ) -> Result<Option<IntegrityReport>, IntegrityError> {
        let Some(head) = head else { return Err(IntegrityError::AuditHeadMissing) };
        let refusal = before.and_then(|before| match at {
            Some(Some(hash)) if hash == before.hash && head.seq >= before.seq => None,
            _ if head.seq < before.seq => Some(IntegrityError::AuditShorter { seen: before.seq, now: head.seq }),
            _ => Some(IntegrityError::AuditForked { seen: before.seq }),
        });
        let accepted = match refusal {
            Some(refusal) if !self.accept_rollback => return Err(refusal),
            Some(refusal) => Some(IntegrityReport {
                finding: IntegrityFinding::RollbackAccepted,
                version: Some(head.seq),
                ..refusal.report()
            }),
            None => None,
        };
        self.remember(head, accepted.is_some());
        Ok(accepted)
    }

    /// Saves `head` unless another process of the slot saved a later place meanwhile (or
    /// `replace`: the user accepted a rollback, and `head` is the new truth).
    fn remember(&self, head: ChainPlace, replace: bool) {
        let Some(path) = &self.path else {
            let mut seen = self.lock();
            if replace || seen.is_none_or(|seen| seen.seq < head.seq) {
                *seen = Some(head);
            }
            return;
        };
        if !replace && self.seen().ok().flatten().is_some_and(|seen| seen.seq >= head.seq) {
            return;
        }
        if let Some(interval) = self.write_every {
            let mut written_at = self.written_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !replace && written_at.is_some_and(|at| at.elapsed() < interval) {
                *self.lock() = Some(head);
                return;
            }
            *written_at = Some(Instant::now());
        }
        *self.lock() = None;
        self.write(path, head);
    }

    fn write(&self, path: &Path, head: ChainPlace) {
        let stored =
            Stored { format: FORMAT, account_id: self.account_id.clone(), seq: head.seq, hash: b64::encode(head.hash) };
        // A slot without its directory (a session not saved yet) has nothing to remember into;
        // a failed write costs only memory.
        if path.parent().is_some_and(Path::is_dir) {
            let _ = replace_unsynced(path, &serde_json::to_vec(&stored).expect("plain data"));
        }
    }
}

impl Drop for ChainMemory {
    /// Saves a head kept in memory by [`ChainMemory::writing_at_most_every`], unless another
    /// process of the slot saved a later one.
    fn drop(&mut self) {
        let Some(path) = self.path.clone() else { return };
        let Some(unsaved) = self.lock().take() else { return };
        if self.on_disk().ok().flatten().is_none_or(|disk| disk.seq < unsaved.seq) {
            self.write(&path, unsaved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(seq: u64, byte: u8) -> ChainPlace {
        ChainPlace { seq, hash: [byte; 32] }
    }

    #[test]
    fn a_slot_refuses_a_shorter_or_rewritten_chain_and_remembers_what_it_takes() {
        let dir = tempfile::tempdir().unwrap();
        let memory = ChainMemory::open(dir.path(), "acc_1");
        assert_eq!(memory.seen().unwrap(), None);
        memory.check(None, Some(place(5, 5)), None).unwrap();
        let seen = memory.seen().unwrap();
        assert_eq!(seen, Some(place(5, 5)));
        memory.check(seen, Some(place(9, 9)), Some(Some([5; 32]))).unwrap();
        let seen = ChainMemory::open(dir.path(), "acc_1").seen().unwrap();
        assert_eq!(seen, Some(place(9, 9)), "another process of the slot sees it");
        assert!(matches!(
            memory.check(seen, Some(place(4, 4)), Some(None)),
            Err(IntegrityError::AuditShorter { seen: 9, now: 4 })
        ));
        assert!(matches!(
            memory.check(seen, Some(place(12, 1)), Some(Some([8; 32]))),
            Err(IntegrityError::AuditForked { seen: 9 })
        ));
        assert!(matches!(memory.check(seen, Some(place(12, 1)), None), Err(IntegrityError::AuditForked { .. })));
        assert!(matches!(memory.check(seen, None, None), Err(IntegrityError::AuditHeadMissing)));
        assert_eq!(memory.seen().unwrap(), Some(place(9, 9)), "nothing refused is remembered");
        assert_eq!(ChainMemory::open(dir.path(), "acc_other").seen().unwrap(), None, "another account's chain");
    }

    #[test]
    fn an_accepted_rollback_becomes_the_new_mark_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        ChainMemory::open(dir.path(), "acc_1").check(None, Some(place(9, 9)), None).unwrap();
        let accepting = ChainMemory::open(dir.path(), "acc_1").accepting_rollback(true);
        let seen = accepting.seen().unwrap();
        let report = accepting.check(seen, Some(place(4, 4)), Some(None)).unwrap().expect("reported");
        assert_eq!(
            (report.finding, report.version, report.seen),
            (IntegrityFinding::RollbackAccepted, Some(4), Some(9))
        );
        assert_eq!(ChainMemory::open(dir.path(), "acc_1").seen().unwrap(), Some(place(4, 4)));
    }

    #[test]
    fn a_long_lived_process_writes_at_most_once_per_interval_and_saves_the_rest_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let memory = ChainMemory::open(dir.path(), "acc_1").writing_at_most_every(Duration::from_secs(3600));
        memory.check(None, Some(place(5, 5)), None).unwrap();
        let other = || ChainMemory::open(dir.path(), "acc_1").seen().unwrap();
        assert_eq!(other(), Some(place(5, 5)), "the first head is written at once");
        memory.check(Some(place(5, 5)), Some(place(7, 7)), Some(Some([5; 32]))).unwrap();
        assert_eq!(other(), Some(place(5, 5)), "the next waits for the interval");
        assert_eq!(memory.seen().unwrap(), Some(place(7, 7)), "but this process checks against it");
        assert!(memory.check(Some(place(7, 7)), Some(place(6, 6)), Some(None)).is_err());
        drop(memory);
        assert_eq!(other(), Some(place(7, 7)), "saved when the process ends");
    }

    #[test]
    fn a_damaged_memory_is_an_error_that_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CHAIN_FILE), b"{not json").unwrap();
        let error = ChainMemory::open(dir.path(), "acc_1").seen().unwrap_err();
        assert!(error.hint().contains(CHAIN_FILE), "{}", error.hint());
    }
}
