//! Process hardening at start (PRODUCT.md §7), shared by the CLI and the daemon: no core dumps
//! (`RLIMIT_CORE` 0, inherited by children), not dumpable (`PR_SET_DUMPABLE` 0: no core file, and
//! `/proc/<pid>/mem`, `environ` and ptrace closed to other processes of the same user), and, for
//! the daemon, `PR_SET_NO_NEW_PRIVS` (nothing it runs can gain privileges through setuid). It
//! also reports what it cannot change: a tracer already attached (`TracerPid`), and Yama's
//! `ptrace_scope`, which decides whether same-user processes may attach later.

use std::io;

/// What to apply beyond the common part.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `PR_SET_NO_NEW_PRIVS`. The daemon sets it; the CLI does not, so `agentkeys run -- sudo …`
    /// keeps working for the human.
    pub no_new_privs: bool,
}

/// Yama's `ptrace_scope` (Linux): who may attach to a process of the same user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtraceScope {
    /// No Yama: any same-user process may attach (only non-dumpable processes are refused).
    Absent,
    /// 0 classic, 1 restricted to descendants, 2 admin only, 3 no attach.
    Level(u8),
}

/// What the hardening found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The pid of a tracer attached at start (gdb, strace), if any.
    pub traced_by: Option<u32>,
    pub ptrace_scope: PtraceScope,
    pub no_new_privs: bool,
}

impl Report {
    /// A warning for a machine where other same-user processes could attach, or `None`.
    pub fn ptrace_warning(&self) -> Option<String> {
        let what = match self.ptrace_scope {
            PtraceScope::Absent => "this kernel has no Yama LSM",
            PtraceScope::Level(0) => "Yama's ptrace_scope is 0 (classic)",
            PtraceScope::Level(_) => return None,
        };
        Some(format!(
            "{what}: any process of this user may ptrace others. This daemon is not dumpable, which keeps \
             tracers and /proc/<pid>/mem out of it, but the agent it serves is not protected; set \
             kernel.yama.ptrace_scope=1 (sysctl) where the kernel offers it"
        ))
    }
}

/// Applies the hardening to this process and reports.
pub fn harden(options: Options) -> io::Result<Report> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })?;
    #[cfg(target_os = "linux")]
    {
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
        if options.no_new_privs {
            rustix::thread::set_no_new_privs(true)?;
        }
    }
    Ok(Report {
        traced_by: tracer_pid(),
        ptrace_scope: ptrace_scope(),
        no_new_privs: cfg!(target_os = "linux") && options.no_new_privs,
    })
}

/// The pid tracing this process (`TracerPid` in `/proc/self/status`), if any.
pub fn tracer_pid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("TracerPid:"))
        .and_then(|pid| pid.trim().parse().ok())
        .filter(|&pid| pid != 0)
}

/// The command name of `pid` (`/proc/<pid>/comm`), for messages.
pub fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|name| name.trim().to_owned())
}

fn ptrace_scope() -> PtraceScope {
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(text) => text.trim().parse().map(PtraceScope::Level).unwrap_or(PtraceScope::Absent),
        Err(_) => PtraceScope::Absent,
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// In a child process, so the test binary itself stays dumpable.
    #[test]
    fn hardening_sets_the_core_limit_dumpable_flag_and_no_new_privs() {
        if std::env::var_os("AGENTKEYS_HARDEN_CHILD").is_some() {
            let report = harden(Options { no_new_privs: true }).unwrap();
            assert!(report.no_new_privs);
            assert_eq!(rustix::process::dumpable_behavior().unwrap(), rustix::process::DumpableBehavior::NotDumpable);
            assert!(rustix::thread::no_new_privs().unwrap());
            let limit = rustix::process::getrlimit(rustix::process::Resource::Core);
            assert_eq!((limit.current, limit.maximum), (Some(0), Some(0)));
            return;
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "harden::tests::hardening_sets_the_core_limit_dumpable_flag_and_no_new_privs"])
            .env("AGENTKEYS_HARDEN_CHILD", "1")
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn only_weak_ptrace_settings_warn() {
        let report = |scope| Report { traced_by: None, ptrace_scope: scope, no_new_privs: false };
        assert!(report(PtraceScope::Absent).ptrace_warning().unwrap().contains("no Yama"));
        assert!(report(PtraceScope::Level(0)).ptrace_warning().is_some());
        assert!(report(PtraceScope::Level(1)).ptrace_warning().is_none());
    }
}
