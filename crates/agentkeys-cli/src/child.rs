//! Runs `agentkeys run`'s child: argv only (no shell), credentials in its environment, signals
//! forwarded, output masked, and its exit status passed through (128+N when killed by signal N).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::thread;

use rustix::process::{Pid, kill_process};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Cause;
use zeroize::Zeroizing;

use crate::error::{CliError, exit};
use crate::mask::Masker;

/// The signals `run` forwards to its child.
pub const FORWARDED_SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

/// What to run.
pub struct ChildSpec {
    pub argv: Vec<OsString>,
    pub env: Vec<(String, Zeroizing<Vec<u8>>)>,
    pub mask: bool,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vars: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ChildSpec").field("argv", &self.argv).field("env", &vars).field("mask", &self.mask).finish()
    }
}

fn spawn_error(program: &OsStr, error: std::io::Error) -> CliError {
    let name = program.to_string_lossy();
    match error.kind() {
        std::io::ErrorKind::NotFound => {
            CliError::new(127, format!("command not found: {name}"), "check the spelling and your PATH")
        }
        std::io::ErrorKind::PermissionDenied => CliError::new(
            126,
            format!("permission denied running {name}"),
            format!("make it executable: chmod +x {name}"),
        ),
        _ => CliError::new(exit::ERROR, format!("cannot start {name}: {error}"), "check the command"),
    }
}

/// Copies `source` to `sink`, masking values on the way; returns when `source` reaches EOF.
fn pump(mut source: impl std::io::Read, mut sink: impl std::io::Write, mut masker: Masker) {
    let mut buf = Zeroizing::new(vec![0u8; 16 * 1024]);
    let mut out = Zeroizing::new(Vec::with_capacity(16 * 1024));
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        out.clear();
        masker.push(&buf[..n], &mut out);
        if sink.write_all(&out).and_then(|()| sink.flush()).is_err() {
            // The reader went away; keep draining so the child is not blocked on a full pipe.
            continue;
        }
    }
    out.clear();
    masker.finish(&mut out);
    let _ = sink.write_all(&out).and_then(|()| sink.flush());
}

/// Runs the child to completion and returns the exit code `agentkeys run` should exit with.
pub fn run(spec: ChildSpec) -> Result<u8, CliError> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| CliError::usage("no command given", "agentkeys run --env VAR=service -- COMMAND ARGS…"))?;
    for (var, value) in &spec.env {
        if value.contains(&0) {
            return Err(CliError::usage(
                format!("the credential for {var} contains a NUL byte, which an environment variable cannot hold"),
                "read binary credentials with `agentkeys read` into a file instead",
            ));
        }
    }
    // Installed before the child exists, so no signal falls between spawn and forwarding.
    let mut signals = SignalsInfo::<WithOrigin>::new(FORWARDED_SIGNALS)
        .map_err(|e| CliError::new(exit::ERROR, format!("cannot install signal handlers: {e}"), "retry"))?;
    let signal_handle = signals.handle();

    let mut command = Command::new(program);
    command.args(args);
    for (var, value) in &spec.env {
        command.env(var, OsStr::from_bytes(value));
    }
    if spec.mask {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let spawned = command.spawn();
    drop(command);
    let mut child = spawned.map_err(|e| spawn_error(program, e))?;
    let pid = Pid::from_child(&child);

    let forwarder = thread::spawn(move || {
        for origin in signals.forever() {
            // A terminal's Ctrl-C, Ctrl-\ or hang-up already reached the child: it is in our
            // foreground process group. Forward only what was sent to us alone.
            if matches!(origin.cause, Cause::Kernel) {
                continue;
            }
            if let Some(signal) = rustix::process::Signal::from_named_raw(origin.signal) {
                let _ = kill_process(pid, signal);
            }
        }
    });

    let mut pumps = Vec::new();
    if spec.mask {
        let values: Vec<&[u8]> = spec.env.iter().map(|(_, v)| v.as_slice()).collect();
        if let Some(stdout) = child.stdout.take() {
            let masker = Masker::new(values.iter().copied());
            pumps.push(thread::spawn(move || pump(stdout, std::io::stdout(), masker)));
        }
        if let Some(stderr) = child.stderr.take() {
            let masker = Masker::new(values.iter().copied());
            pumps.push(thread::spawn(move || pump(stderr, std::io::stderr(), masker)));
        }
    }
    let status = child.wait();
    signal_handle.close();
    let _ = forwarder.join();
    for pump in pumps {
        let _ = pump.join();
    }
    let status =
        status.map_err(|e| CliError::new(exit::ERROR, format!("lost track of the child process: {e}"), "retry"))?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        (None, None) => exit::ERROR,
    })
}
