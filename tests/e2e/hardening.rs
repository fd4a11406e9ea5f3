//! Process hardening of the daemon and the CLI (PRODUCT.md §7), checked on real processes: not
//! dumpable (another process of the same, unprivileged user can neither open `/proc/<pid>/mem`
//! nor ptrace it), no core file on abort, `RLIMIT_CORE` 0, and the daemon refusing to start
//! under a tracer unless `--allow-debugger`. Each check has a control — an ordinary process of
//! the same user, which the same probe can read or dump — so the test fails if the probe itself
//! stops discriminating. The suite runs as root; the processes under test run as `nobody`.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use agentkeys_tests::{DaemonHost, Master, NOBODY, ServerProcess, TestDb, as_nobody, spawn_until};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn root_only() -> bool {
    agentkeys_tests::root_or_skip()
}

/// A directory `nobody` owns (0700), for a home or a working directory.
fn nobody_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    rustix::fs::chown(
        dir.path(),
        Some(rustix::process::Uid::from_raw(NOBODY)),
        Some(rustix::process::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    dir
}

/// Copies of the built binaries that `nobody` may execute (the build directory is under root's
/// home, which nobody cannot enter).
struct PublicBinaries(tempfile::TempDir);

impl PublicBinaries {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for name in ["agentkeys", "agentkeys-daemon"] {
            std::fs::copy(agentkeys_tests::bin(name), dir.path().join(name)).unwrap();
        }
        Self(dir)
    }

    /// `command` with its program replaced by the public copy of the same name.
    fn public(&self, command: &Command) -> Command {
        let name = Path::new(command.get_program()).file_name().unwrap().to_owned();
        let mut public = Command::new(self.0.path().join(name));
        public.args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => public.env(key, value),
                None => public.env_remove(key),
            };
        }
        public
    }
}

/// What `nobody` gets trying to read one byte of `pid`'s memory: "Permission denied" for a
/// non-dumpable process, an I/O error (offset 0 is unmapped) for an ordinary one.
fn probe_memory(pid: u32) -> String {
    let out = as_nobody(Command::new("head").args(["-c", "1", &format!("/proc/{pid}/mem")]).stdin(Stdio::null()))
        .output()
        .unwrap();
    text(&out.stderr)
}

/// Whether `nobody` may ptrace `pid` (`strace -p` attaching, then detached at once).
fn can_trace(pid: u32) -> bool {
    let mut strace = as_nobody(Command::new("strace").args(["-p", &pid.to_string(), "-o", "/dev/null"]))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(strace.stderr.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = strace.kill();
    let _ = strace.wait();
    first.contains("Process") && first.contains("attached")
}

fn core_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .split_whitespace()
        .skip(4)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cores_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("core"))
        .collect()
}

/// Sends SIGABRT and waits for the process to die of it.
fn abort(mut child: Child) {
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::ABORT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(rustix::process::Signal::ABORT.as_raw()),
        "{status:?}"
    );
}

#[tokio::test]
async fn the_daemon_and_the_cli_are_not_dumpable_and_leave_no_core() {
    if !root_only() {
        return;
    }
    let db = TestDb::new(agentkeys_tests::Backend::Sqlite).await.expect("sqlite");
    let server = ServerProcess::start(&db.url);

    // Control: an ordinary process of nobody, in a directory it may write, with core dumps on.
    let control_dir = nobody_dir();
    let mut control = Command::new("sh");
    control.args(["-c", "ulimit -c unlimited; echo ready >&2; exec sleep 60"]).current_dir(control_dir.path());
    let control = spawn_until(as_nobody(&control), "ready");
    let control_pid = control.id();
    assert!(!probe_memory(control_pid).contains("Permission denied"), "the probe can read an ordinary process");
    assert!(can_trace(control_pid), "nobody can ptrace its own ordinary process here");
    abort(control);
    assert!(
        !cores_in(control_dir.path()).is_empty(),
        "an ordinary process dumps core here, so the check below means something"
    );

    // The daemon, waiting for a pairing, with core dumps asked for.
    let binaries = PublicBinaries::new();
    let host = DaemonHost::new(&server.url);
    let home = nobody_dir();
    let work = nobody_dir();
    let mut pair = binaries.public(&host.command(&["pair", "--label", "hardened", "--timeout", "60"]));
    pair.env("AGENTKEYS_HOME", home.path()).current_dir(work.path());
    let wrapped_pair = agentkeys_tests::wrapped(&["sh", "-c", "ulimit -c unlimited; exec \"$0\" \"$@\""], &pair);
    let daemon = spawn_until(as_nobody(&wrapped_pair), "Pair code:");
    let pid = daemon.id();
    assert_eq!(core_limit(pid), "0 0", "RLIMIT_CORE is 0 although the shell raised it");
    assert_eq!(
        std::fs::metadata(format!("/proc/{pid}/mem")).unwrap().uid(),
        0,
        "not dumpable: /proc/<pid> belongs to root"
    );
    assert!(probe_memory(pid).contains("Permission denied"), "{}", probe_memory(pid));
    assert!(!can_trace(pid), "nobody cannot ptrace the daemon");
    abort(daemon);
    assert!(cores_in(work.path()).is_empty(), "no core file: {:?}", cores_in(work.path()));

    // The CLI's `run` parent, while its child runs.
    let master = Master::new(&server.url);
    let cli_home = nobody_dir();
    let as_master = |args: &[&str]| {
        let mut command = binaries.public(&master.command(args));
        command.env("AGENTKEYS_HOME", cli_home.path());
        as_nobody(&command)
    };
    assert!(as_master(&["init", "--label", "nobody"]).output().unwrap().status.success());
    let mut store = as_master(&["store", "canary"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut store.stdin.take().unwrap(), b"canary-value").unwrap();
    assert!(store.wait().unwrap().success());
    let run = spawn_until(
        as_master(&["run", "--env", "K=canary", "--", "sh", "-c", "echo started >&2; exec sleep 60"]),
        "started",
    );
    let pid = run.id();
    assert_eq!(core_limit(pid), "0 0");
    assert!(probe_memory(pid).contains("Permission denied"), "{}", probe_memory(pid));
    abort(run);
}

#[tokio::test]
async fn the_daemon_refuses_a_tracer_unless_allowed() {
    if !agentkeys_tests::present_or_skip(
        Command::new("strace").arg("-V").output().is_ok(),
        "no strace (scripts/test.sh installs it)",
    ) {
        return;
    }
    let host = DaemonHost::new("http://127.0.0.1:9");
    let traced = |args: &[&str]| {
        let command = host.command(args);
        agentkeys_tests::wrapped(&["strace", "-f", "-o", "/dev/null", "--"], &command).output().unwrap()
    };
    let refused = traced(&["status"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("is being traced by process") && stderr.contains("(strace)"), "{stderr}");
    assert!(stderr.contains("--allow-debugger"), "{stderr}");

    let allowed = traced(&["--allow-debugger", "status"]);
    let stderr = text(&allowed.stderr);
    assert!(stderr.contains("running under tracer") && !stderr.contains("refusing to start"), "{stderr}");
    assert_ne!(allowed.status.code(), Some(1), "it started (and then found no session): {stderr}");
}

/// The daemon's allocator is mimalloc in secure mode (its own start-up report says so).
#[test]
fn the_daemon_allocates_with_mimalloc_in_secure_mode() {
    let out = Command::new(agentkeys_tests::bin("agentkeys-daemon"))
        .arg("--version")
        .env("MIMALLOC_VERBOSE", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("secure level: 4"), "{}", text(&out.stderr));
}
