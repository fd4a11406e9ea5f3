//! Memory for plaintext credentials that nothing else can read (PRODUCT.md §7).
//!
//! The best kind is `memfd_secret(2)`: pages removed from the kernel's direct map, so neither
//! another process (ptrace, `/proc/<pid>/mem`), nor a core dump, nor the kernel itself by accident
//! can read them; only this process's mapping can. Where the kernel lacks it, the fallback is
//! anonymous pages that are `mlock`ed (never swapped) and `MADV_DONTDUMP` (never in a core dump),
//! and [`Protection::Reduced`] says so, for `status` to report. Either way the pages are wiped
//! before they are unmapped.
//!
//! `AGENTKEYS_SECRET_MEMORY=fallback` forces the fallback (for tests, and for kernels where
//! `memfd_secret` misbehaves).
//!
//! This is one of the two modules allowed `unsafe` outside the platform crates (with
//! [`crate::exec`]): it maps and unmaps memory by hand, which no safe wrapper does for
//! `memfd_secret`. Every `unsafe` block says why it holds.
#![allow(unsafe_code, reason = "maps, wipes and unmaps memory that no safe crate can allocate")]

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};
use std::ptr::NonNull;
use std::sync::OnceLock;

use rustix::mm::{Advice, MapFlags, ProtFlags};
use zeroize::Zeroizing;

/// The environment variable that forces the fallback.
pub const FORCE_FALLBACK_ENV: &str = "AGENTKEYS_SECRET_MEMORY";

/// How well a region is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    /// `memfd_secret`: unreadable outside this process's own mapping.
    Secret,
    /// Fallback: `mlock`ed and excluded from core dumps, but readable by the kernel and by a
    /// process allowed to ptrace this one.
    Reduced,
}

impl Protection {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Secret => "memfd_secret (unreadable by other processes and the kernel)",
            Self::Reduced => "REDUCED: mlock + MADV_DONTDUMP (memfd_secret unavailable)",
        }
    }
}

/// Whether this process gets `memfd_secret` memory, probed once.
pub fn protection() -> Protection {
    static PROBED: OnceLock<Protection> = OnceLock::new();
    *PROBED.get_or_init(|| {
        if std::env::var_os(FORCE_FALLBACK_ENV).is_some_and(|v| v == "fallback") {
            return Protection::Reduced;
        }
        // A descriptor is not enough: mapping it is what the kernel may refuse.
        match SecretMemory::map_secret(1, page_size()) {
            Ok(_) => Protection::Secret,
            Err(_) => Protection::Reduced,
        }
    })
}

/// `memfd_secret(FD_CLOEXEC)`; `ENOSYS` where the kernel lacks or disables it.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn memfd_secret() -> io::Result<OwnedFd> {
    // SAFETY: memfd_secret takes one flags argument and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn memfd_secret() -> io::Result<OwnedFd> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Says once on stderr that a region got the fallback although `memfd_secret` works here (core
/// has no logger of its own).
fn warn_reduced(error: &io::Error) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "Warning: memfd_secret memory refused ({error}); this credential is held in locked memory instead \
             (reduced protection). Raise the locked-memory limit (ulimit -l, LimitMEMLOCK=) to restore it."
        );
    });
}

fn page_size() -> usize {
    rustix::param::page_size()
}

/// A writable region of secret memory, wiped and unmapped on drop. Not `Clone`: one owner.
pub struct SecretMemory {
    ptr: NonNull<u8>,
    /// What is mapped (whole pages, at least one).
    mapped: usize,
    /// What the caller asked for.
    len: usize,
    protection: Protection,
    /// The `memfd_secret` descriptor, kept only while the mapping lives.
    _fd: Option<OwnedFd>,
}

// SAFETY: the region is plain memory owned by this value; `&SecretMemory` only reads it and
// `&mut SecretMemory` is exclusive, so sharing and sending follow Rust's usual rules.
unsafe impl Send for SecretMemory {}
// SAFETY: as above.
unsafe impl Sync for SecretMemory {}

impl std::fmt::Debug for SecretMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretMemory").field("len", &self.len).field("protection", &self.protection).finish()
    }
}

impl SecretMemory {
    /// A zeroed region of `len` bytes, of the best protection this process can get now: a
    /// `memfd_secret` mapping the kernel refuses (its pages count as locked memory, so
    /// RLIMIT_MEMLOCK can run out) falls back to locked pages, and says so.
    pub fn new(len: usize) -> io::Result<Self> {
        let mapped = len.max(1).div_ceil(page_size()) * page_size();
        if protection() == Protection::Secret {
            match Self::map_secret(len, mapped) {
                Ok(memory) => return Ok(memory),
                Err(error) => {
                    warn_reduced(&error);
                }
            }
        }
        Self::map_locked(len, mapped)
    }

    /// A region holding a copy of `bytes`.
    pub fn copy_of(bytes: &[u8]) -> io::Result<Self> {
        let mut memory = Self::new(bytes.len())?;
        memory.as_mut_slice().copy_from_slice(bytes);
        Ok(memory)
    }

    fn map_secret(len: usize, mapped: usize) -> io::Result<Self> {
        let fd = memfd_secret()?;
        rustix::fs::ftruncate(&fd, mapped as u64)?;
        // SAFETY: a fresh shared mapping of a descriptor we own, at an address the kernel picks.
        let ptr = unsafe {
            rustix::mm::mmap(std::ptr::null_mut(), mapped, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, &fd, 0)
        }?;
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, mapped, len, protection: Protection::Secret, _fd: Some(fd) })
    }

    fn map_locked(len: usize, mapped: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping at an address the kernel picks.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                mapped,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        let memory = Self { ptr, mapped, len, protection: Protection::Reduced, _fd: None };
        // SAFETY: the range is exactly the mapping made above, which `memory` owns.
        unsafe {
            rustix::mm::madvise(ptr.as_ptr().cast(), mapped, Advice::LinuxDontDump)?;
            // Refused over RLIMIT_MEMLOCK; the pages then may be swapped, which `Reduced` covers.
            let _ = rustix::mm::mlock(ptr.as_ptr().cast(), mapped);
        }
        Ok(memory)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn protection(&self) -> Protection {
        self.protection
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps at least `len` bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SecretMemory {
    fn drop(&mut self) {
        // SAFETY: the whole mapping is ours and writable; volatile writes are not optimized away.
        unsafe {
            let base = self.ptr.as_ptr();
            for i in 0..self.mapped {
                std::ptr::write_volatile(base.add(i), 0);
            }
            let _ = rustix::mm::munmap(base.cast::<c_void>(), self.mapped);
        }
    }
}

/// A private, unwritten scratch mapping of `len` bytes, excluded from core dumps: a forked child
/// may write its copy while this process's stays zero (see [`crate::exec`]).
pub(crate) struct Scratch {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) len: usize,
}

impl Scratch {
    pub(crate) fn new(len: usize) -> io::Result<Self> {
        let len = len.max(1).div_ceil(page_size()) * page_size();
        // SAFETY: a fresh private anonymous mapping at an address the kernel picks.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(std::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE)
        }?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        let scratch = Self { ptr, len };
        // SAFETY: exactly the mapping above.
        unsafe { rustix::mm::madvise(ptr.as_ptr().cast(), len, Advice::LinuxDontDump)? };
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours; this process never wrote it, so there is nothing to wipe.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A descriptor holding one credential, to hand to another process over `SCM_RIGHTS`: a
/// `memfd_secret` file of exactly the value's length, or (fallback) a sealed `memfd`. The
/// receiver maps it (or, for the fallback, may also read it) once and closes it.
pub fn credential_fd(value: &[u8]) -> io::Result<(OwnedFd, Protection)> {
    if protection() == Protection::Secret {
        match secret_credential_fd(value) {
            Ok(fd) => return Ok((fd, Protection::Secret)),
            Err(error) => warn_reduced(&error),
        }
    }
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create("agentkeys-credential", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    let mut written = 0;
    while written < value.len() {
        written += rustix::io::write(&fd, &value[written..])?;
    }
    rustix::fs::fcntl_add_seals(&fd, SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL)?;
    Ok((fd, Protection::Reduced))
}

fn secret_credential_fd(value: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_secret()?;
    rustix::fs::ftruncate(&fd, value.len() as u64)?;
    if !value.is_empty() {
        // SAFETY: a fresh shared mapping of the descriptor made above, sized to the file.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                value.len(),
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }?;
        // SAFETY: the mapping is `value.len()` writable bytes, and is unmapped right after;
        // the pages stay with the file, not with this process.
        unsafe {
            std::ptr::copy_nonoverlapping(value.as_ptr(), ptr.cast::<u8>(), value.len());
            rustix::mm::munmap(ptr, value.len())?;
        }
    }
    Ok(fd)
}

/// Reads a credential descriptor made by [`credential_fd`] (in this or another process) and
/// closes it. It is mapped, not read: `memfd_secret` files cannot be `read(2)`.
pub fn read_credential_fd(fd: OwnedFd) -> io::Result<Zeroizing<Vec<u8>>> {
    let len = usize::try_from(rustix::fs::fstat(&fd)?.st_size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the credential descriptor has a negative size"))?;
    if len == 0 {
        return Ok(Zeroizing::new(Vec::new()));
    }
    if len > 16 * 1024 * 1024 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the credential descriptor is larger than 16 MiB"));
    }
    let mut value = Zeroizing::new(vec![0u8; len]);
    // SAFETY: a fresh read-only shared mapping of `len` bytes of a file that is `len` long, and
    // the descriptor stays open until it is unmapped.
    unsafe {
        let ptr = rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ, MapFlags::SHARED, fd.as_fd(), 0)?;
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), value.as_mut_ptr(), len);
        rustix::mm::munmap(ptr, len)?;
    }
    drop(fd);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_a_copy_and_reports_its_protection() {
        let memory = SecretMemory::copy_of(b"sk-test-0123456789").unwrap();
        assert_eq!(memory.as_slice(), b"sk-test-0123456789");
        assert_eq!(memory.protection(), protection());
        let empty = SecretMemory::copy_of(b"").unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn a_credential_fd_reads_back_once() {
        for value in [b"".as_slice(), b"x", b"sk-live-abcdefghijklmnopqrstuvwxyz", &[7u8; 10_000]] {
            let (fd, protection) = credential_fd(value).unwrap();
            assert_eq!(protection, self::protection());
            assert_eq!(read_credential_fd(fd).unwrap().as_slice(), value);
        }
    }
}
