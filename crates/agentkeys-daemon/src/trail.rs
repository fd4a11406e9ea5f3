//! The daemon's own audit trail (PRODUCT.md §3, §7): one JSON line per event — a credential
//! fetched from the server, delivered to the agent, dropped from memory, evicted from a cache, or
//! denied — in `trail.jsonl` in the session's 0700 slot directory. Never a value: only the event,
//! the agent, the service, the way it went (`mcp`, `run`, `fd`) and the outcome. The server's
//! log says what was fetched; this one says what the daemon did with it.
//!
//! Appends are one `write` on an `O_APPEND` file under an exclusive lock, so a `serve` daemon and
//! a `run` of the same session interleave whole lines. At [`MAX_BYTES`] the file rotates to
//! `trail.jsonl.1` (…`.3`); older lines go. Writing is best effort: a full disk costs the trail a
//! line (with a warning), never the agent its credential.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The size at which the trail rotates.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// Rotated files kept besides the current one.
pub const KEEP: usize = 3;
const FILE: &str = "trail.jsonl";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Fetch,
    Deliver,
    Drop,
    Evict,
    Deny,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Fetch => "fetch",
            Event::Deliver => "deliver",
            Event::Drop => "drop",
            Event::Evict => "evict",
            Event::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Mcp,
    Run,
    Fd,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Mcp => "mcp",
            Via::Run => "run",
            Via::Fd => "fd",
        }
    }
}

/// The trail of one session.
#[derive(Debug, Clone)]
pub struct Trail {
    dir: PathBuf,
    agent: String,
    max_bytes: u64,
}

impl Trail {
    /// The trail in the session's slot directory `dir`, for `agent`.
    pub fn new(dir: impl Into<PathBuf>, agent: impl Into<String>) -> Self {
        Self { dir: dir.into(), agent: agent.into(), max_bytes: MAX_BYTES }
    }

    /// Rotates at `max_bytes` instead (tests).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Appends one event; a failure is logged, never returned.
    pub fn record(&self, event: Event, service: &str, via: Via, outcome: &str) {
        self.record_all(service, via, &[(event, outcome)]);
    }

    /// Appends several events about one service in one write (one open and lock on the hot
    /// path of `get_credential`, instead of one per event).
    pub fn record_all(&self, service: &str, via: Via, events: &[(Event, &str)]) {
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let mut lines = String::new();
        for (event, outcome) in events {
            let line = serde_json::json!({
                "ts": ts,
                "event": event.as_str(),
                "agent": self.agent,
                "service": service,
                "via": via.as_str(),
                "outcome": outcome,
            });
            lines.push_str(&format!("{line}\n"));
        }
        if let Err(error) = self.append(&lines) {
            tracing::warn!("the daemon's trail in {} lost {} event(s): {error}", self.dir.display(), events.len());
        }
    }

    fn append(&self, line: &str) -> std::io::Result<()> {
        let path = self.path();
        let mut file = OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        // Another process may have rotated while we waited for the lock: write to the file now
        // at the path, not to the one we opened.
        let current = fs::metadata(&path)?;
        let opened = file.metadata()?;
        if std::os::unix::fs::MetadataExt::ino(&current) != std::os::unix::fs::MetadataExt::ino(&opened) {
            drop(file);
            return self.append(line);
        }
        if opened.len() + line.len() as u64 > self.max_bytes && opened.len() > 0 {
            for n in (1..KEEP).rev() {
                let _ = fs::rename(rotated(&path, n), rotated(&path, n + 1));
            }
            fs::rename(&path, rotated(&path, 1))?;
            drop(file);
            return self.append(line);
        }
        file.write_all(line.as_bytes())
    }

    /// Records a fetch from the server: `fetch` when it answered with the value, `deny` when it
    /// refused (scope, tier, revoked, rate limit, not found), `fetch` with the error otherwise.
    pub fn record_read(&self, service: &str, via: Via, read: Result<(), Option<agentkeys_proto::ErrorCode>>) {
        use agentkeys_proto::ErrorCode;
        match read {
            Ok(()) => self.record(Event::Fetch, service, via, "ok"),
            Err(Some(
                code @ (ErrorCode::Denied
                | ErrorCode::Revoked
                | ErrorCode::RateLimited
                | ErrorCode::NotFound
                | ErrorCode::ApprovalRequired),
            )) => self.record(Event::Deny, service, via, code.as_str()),
            Err(Some(code)) => self.record(Event::Fetch, service, via, code.as_str()),
            Err(None) => self.record(Event::Fetch, service, via, "error"),
        }
    }

    /// How many events of each kind the kept files hold.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        let path = self.path();
        for file in std::iter::once(path.clone()).chain((1..=KEEP).map(|n| rotated(&path, n))) {
            let Ok(text) = fs::read_to_string(&file) else { continue };
            for line in text.lines() {
                if let Some(event) = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["event"].as_str().map(str::to_owned))
                {
                    *counts.entry(event).or_insert(0) += 1;
                }
            }
        }
        counts
    }
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_append_as_json_lines_and_rotate_keeping_three() {
        let dir = tempfile::tempdir().unwrap();
        let trail = Trail::new(dir.path(), "ag_x").with_max_bytes(600);
        for _ in 0..40 {
            trail.record(Event::Fetch, "openai", Via::Mcp, "ok");
            trail.record(Event::Deny, "github", Via::Run, "DENIED");
        }
        let first: serde_json::Value =
            serde_json::from_str(fs::read_to_string(trail.path()).unwrap().lines().next().unwrap()).unwrap();
        assert_eq!(first["agent"], "ag_x");
        assert!(first["ts"].as_str().unwrap().ends_with('Z'));
        for n in 1..=KEEP {
            assert!(rotated(&trail.path(), n).exists(), "rotated file {n}");
        }
        assert!(!rotated(&trail.path(), KEEP + 1).exists(), "only {KEEP} kept");
        for file in std::iter::once(trail.path()).chain((1..=KEEP).map(|n| rotated(&trail.path(), n))) {
            assert!(fs::metadata(&file).unwrap().len() <= 600);
        }
        let counts = trail.counts();
        assert_eq!(counts["fetch"], counts["deny"], "whole lines only: {counts:?}");
        let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(trail.path()).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }
}
