//! Private-file I/O: files only this user may read (refused otherwise, as ssh refuses loose
//! keys), written atomically so a crash leaves the old file or the new one whole, in 0700
//! directories, and the per-slot lock that serializes saves. The CLI's config file uses it too.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use zeroize::Zeroizing;

use super::types::SessionError;
use crate::random::{OsRandom, RandomSource as _};

/// The sealed session in each slot directory.
pub(super) const SESSION_FILE: &str = "session.enc";
/// The session's data key, when neither a keychain nor a passphrase keeps it.
pub(super) const KEY_FILE: &str = "session.key";
/// What the slot verified before (`agentkeys_core::integrity`): it goes when the slot is cleared.
pub const SEEN_FILE: &str = "seen.json";
/// The account audit chain's head the slot saw last (`agentkeys_core::chain`): it goes too.
pub const CHAIN_FILE: &str = "audit-head.json";

pub(super) fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SessionError + 'a {
    move |source| SessionError::Io { action, path: path.display().to_string(), source }
}

/// Reads a file that must be private to this user; `None` when it does not exist.
pub(super) fn read_private(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, SessionError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("cannot open", path)(e)),
    };
    let mode = file.metadata().map_err(io_err("cannot inspect", path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SessionError::LoosePermissions { path: path.display().to_string(), mode });
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes).map_err(io_err("cannot read", path))?;
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one whole:
/// a 0600 temp file in the same directory, fsync, rename over, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SessionError> {
    let dir = path.parent().expect("session files live in a directory");
    let suffix = hex::encode(OsRandom.array::<6>());
    let tmp = dir.join(format!(".{}.{suffix}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("cannot create", &tmp))?;
        file.write_all(bytes).map_err(io_err("cannot write", &tmp))?;
        file.sync_all().map_err(io_err("cannot sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("cannot replace", path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("cannot sync", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replaces `path` with `bytes` so that a reader sees the old file or the new one, without the
/// fsyncs of [`write_atomically`]: for what is rewritten on every request and costs only a
/// little memory if a power cut loses the newest copy.
pub fn replace_unsynced(path: &Path, bytes: &[u8]) -> Result<(), SessionError> {
    let dir = path.parent().expect("session files live in a directory");
    let suffix = hex::encode(OsRandom.array::<6>());
    let tmp = dir.join(format!(".{}.{suffix}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("cannot create", &tmp))
        .and_then(|mut file| file.write_all(bytes).map_err(io_err("cannot write", &tmp)))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err("cannot replace", path)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub(super) fn ensure_private_dir(dir: &Path) -> Result<(), SessionError> {
    fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("cannot set permissions on", dir))
}

/// Holds `dir`'s lock file exclusively until dropped: saves of one slot never interleave.
pub(super) fn lock(dir: &Path) -> Result<File, SessionError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("cannot open", &path))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io_err("cannot lock", &path)(e.into()))?;
    Ok(file)
}
