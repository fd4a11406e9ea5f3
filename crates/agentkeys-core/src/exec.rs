//! Starting a program with credentials in its environment without the plaintext ever passing
//! through this process's heap (PRODUCT.md §7, issue 6).
//!
//! `std::process::Command::env` would copy every value into heap `CString`s in the parent before
//! `fork`. Instead the values stay in [`SecretMemory`]; the parent prepares everything that is
//! not secret (argv, the plain environment, the candidate paths, the `envp` pointer array) and a
//! private scratch mapping it never writes; after `fork`, the child copies `VAR=value` from the
//! secret memory into its own copy of the scratch pages and calls `execve` itself (from
//! `pre_exec`), so only the child — about to be replaced by the program — ever assembles them.
//! std still does the rest: the fork, stdio, the working directory, the process group, and
//! reporting a failed exec to the parent.
#![allow(unsafe_code, reason = "pre_exec and execve: code between fork and exec, which has no safe API")]

use std::ffi::{CString, OsStr, OsString, c_char};
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::sync::Arc;

use crate::secret_mem::{Scratch, SecretMemory};

/// Environment variables whose values are credentials, each in its own secret memory (shared
/// with the daemon's cache when it has one).
#[derive(Debug, Default)]
pub struct SecretEnv {
    vars: Vec<(String, Arc<SecretMemory>)>,
}

impl SecretEnv {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, var: String, value: Arc<SecretMemory>) {
        self.vars.push((var, value));
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|(var, _)| var.as_str())
    }

    pub fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.vars.iter().map(|(_, value)| value.as_slice())
    }
}

/// What the child needs between `fork` and `exec`, all prepared in the parent.
struct Prepared {
    /// Where to look for the program, in `execvp` order.
    candidates: Vec<CString>,
    _argv: Vec<CString>,
    _plain_env: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    /// For each secret variable: its `VAR=` prefix, its value, and where in `scratch` it goes.
    secrets: Vec<(Vec<u8>, Arc<SecretMemory>, usize)>,
    scratch: Scratch,
    new_session: bool,
}

// SAFETY: the raw pointers point into the CStrings and the scratch mapping this value owns; they
// are only dereferenced in the forked child, where no other thread exists.
unsafe impl Send for Prepared {}
// SAFETY: as above; the parent never reads or writes through them.
unsafe impl Sync for Prepared {}

fn c_string(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} contains a NUL byte")))
}

/// Where `execvp` would look for `program` with this `PATH`.
fn candidates(program: &OsStr, path: Option<&OsStr>) -> io::Result<Vec<CString>> {
    let bytes = program.as_bytes();
    if bytes.contains(&b'/') {
        return Ok(vec![c_string(bytes, "the program path")?]);
    }
    if bytes.is_empty() {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    let path = path.map_or(b"/usr/local/bin:/usr/bin:/bin".as_slice(), OsStr::as_bytes);
    path.split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b".".as_slice() } else { dir };
            let mut full = dir.to_vec();
            full.push(b'/');
            full.extend_from_slice(bytes);
            c_string(&full, "a PATH entry")
        })
        .collect()
}

/// Makes `command` exec `program` with `args`, the `plain` environment, and `secrets` on top
/// (a secret variable replaces a plain one of the same name). The rest of `command` (stdio,
/// working directory, process group) is used as usual. With `new_session`, the child starts a
/// session of its own (`setsid`): for a command run for another process, so no terminal this
/// process may have can stop it with SIGTTIN/SIGTTOU.
pub fn with_secret_env(
    command: &mut std::process::Command,
    program: &OsStr,
    args: &[OsString],
    plain: &[(OsString, OsString)],
    secrets: &SecretEnv,
    new_session: bool,
) -> io::Result<()> {
    let argv: Vec<CString> = std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|arg| c_string(arg.as_bytes(), "an argument"))
        .collect::<io::Result<_>>()?;
    let secret_names: Vec<&str> = secrets.names().collect();
    let mut path = None;
    let mut plain_env = Vec::with_capacity(plain.len());
    for (key, value) in plain {
        if key == "PATH" {
            path = Some(value.as_os_str());
        }
        if secret_names.iter().any(|name| OsStr::new(name) == key) {
            continue;
        }
        let mut entry = key.as_bytes().to_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        plain_env.push(c_string(&entry, "an environment variable")?);
    }
    for (var, value) in &secrets.vars {
        if value.as_slice().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the credential for {var} contains a NUL byte, which an environment variable cannot hold"),
            ));
        }
    }
    let candidates = candidates(program, path)?;
    let scratch_len: usize = secrets.vars.iter().map(|(var, value)| var.len() + 1 + value.len() + 1).sum();
    let scratch = Scratch::new(scratch_len)?;
    let mut secret_entries = Vec::with_capacity(secrets.len());
    let mut envp_ptrs: Vec<*const c_char> = plain_env.iter().map(|e| e.as_ptr()).collect();
    let mut offset = 0;
    for (var, value) in &secrets.vars {
        let mut prefix = var.as_bytes().to_vec();
        prefix.push(b'=');
        // The pointer is into the scratch pages, which only the child fills.
        envp_ptrs.push(scratch.ptr.as_ptr().wrapping_add(offset).cast::<c_char>().cast_const());
        let len = prefix.len() + value.len() + 1;
        secret_entries.push((prefix, Arc::clone(value), offset));
        offset += len;
    }
    envp_ptrs.push(std::ptr::null());
    let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let prepared = Prepared {
        candidates,
        _argv: argv,
        _plain_env: plain_env,
        argv_ptrs,
        envp_ptrs,
        secrets: secret_entries,
        scratch,
        new_session,
    };
    // SAFETY: the closure runs in the forked child, where only async-signal-safe work is allowed:
    // it copies bytes into memory mapped before the fork and calls execve; it never allocates or
    // takes a lock.
    unsafe { command.pre_exec(move || exec_in_child(&prepared)) };
    Ok(())
}

/// The child's side: fill its copy of the scratch pages, then exec the first candidate that
/// exists. Returns only on failure, with the errno std passes to the parent.
fn exec_in_child(prepared: &Prepared) -> io::Result<()> {
    // SAFETY: setsid is async-signal-safe; it fails only for a group leader, which a freshly
    // forked child is not.
    if prepared.new_session && unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    let base = prepared.scratch.ptr.as_ptr();
    for (prefix, value, offset) in &prepared.secrets {
        let value = value.as_slice();
        // SAFETY: the offsets were laid out in the parent to fit inside the scratch mapping,
        // which is private: these writes land in the child's copy only.
        unsafe {
            let at = base.add(*offset);
            std::ptr::copy_nonoverlapping(prefix.as_ptr(), at, prefix.len());
            std::ptr::copy_nonoverlapping(value.as_ptr(), at.add(prefix.len()), value.len());
            *at.add(prefix.len() + value.len()) = 0;
        }
    }
    let mut error = io::Error::from_raw_os_error(libc::ENOENT);
    let mut denied = false;
    for candidate in &prepared.candidates {
        // SAFETY: every pointer is to a NUL-terminated string that lives until exec, and both
        // arrays end with a null pointer.
        unsafe { libc::execve(candidate.as_ptr(), prepared.argv_ptrs.as_ptr(), prepared.envp_ptrs.as_ptr()) };
        error = io::Error::last_os_error();
        match error.raw_os_error() {
            // As execvp: keep looking, and report a permission problem over "not found".
            Some(libc::ENOENT | libc::ENOTDIR) => {}
            Some(libc::EACCES) => denied = true,
            _ => break,
        }
    }
    // The exec failed: wipe the child's copy before std exits it.
    // SAFETY: the whole scratch mapping is this child's private copy.
    unsafe {
        for i in 0..prepared.scratch.len {
            std::ptr::write_volatile(base.add(i), 0);
        }
    }
    if denied && error.raw_os_error() == Some(libc::ENOENT) {
        return Err(io::Error::from_raw_os_error(libc::EACCES));
    }
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_env(pairs: &[(&str, &[u8])]) -> SecretEnv {
        let mut env = SecretEnv::new();
        for (var, value) in pairs {
            env.push((*var).to_owned(), Arc::new(SecretMemory::copy_of(value).unwrap()));
        }
        env
    }

    #[test]
    fn the_child_sees_plain_and_secret_variables() {
        let plain: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), std::env::var_os("PATH").unwrap_or_default()),
            ("KEEP".into(), "plain".into()),
            ("TOKEN".into(), "overridden".into()),
        ];
        let secrets = secret_env(&[("TOKEN", b"sk-secret-1"), ("OTHER", b"two")]);
        let mut command = std::process::Command::new("sh");
        let args = ["-c".into(), "printf '%s|%s|%s' \"$KEEP\" \"$TOKEN\" \"$OTHER\"".into()];
        with_secret_env(&mut command, OsStr::new("sh"), &args, &plain, &secrets, false).unwrap();
        let output = command.output().unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout), "plain|sk-secret-1|two");
    }

    #[test]
    fn a_missing_program_is_not_found_and_a_directory_is_denied() {
        let plain = vec![("PATH".into(), OsString::from("/nonexistent:/usr/bin"))];
        let secrets = secret_env(&[("A", b"x")]);
        let mut command = std::process::Command::new("no-such-program-here");
        with_secret_env(&mut command, OsStr::new("no-such-program-here"), &[], &plain, &secrets, false).unwrap();
        assert_eq!(command.spawn().unwrap_err().kind(), io::ErrorKind::NotFound);
        let mut command = std::process::Command::new("/");
        with_secret_env(&mut command, OsStr::new("/"), &[], &plain, &secrets, true).unwrap();
        assert_eq!(command.spawn().unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    }
}
