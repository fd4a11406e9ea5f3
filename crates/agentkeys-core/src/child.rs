//! Runs the child of `agentkeys run` and `agentkeys-daemon run`: argv only (no shell),
//! credentials in its environment, signals forwarded, output masked, and its exit status passed
//! through (128+N when killed by signal N).

use std::ffi::{OsStr, OsString};
use std::io::IsTerminal as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Command, Stdio};
use std::thread;

use rustix::process::{Pid, WaitIdOptions, kill_process};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Cause;
use zeroize::Zeroizing;

use crate::mask::Masker;

/// Why the child could not be run: an exit code (127 not found, 126 not executable, 2 usage,
/// 1 otherwise), what went wrong, and the fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ChildError {
    pub exit_code: u8,
    pub message: String,
    pub hint: String,
}

impl ChildError {
    fn new(exit_code: u8, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { exit_code, message: message.into(), hint: hint.into() }
    }

    fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(2, message, hint)
    }
}

/// How long `run` waits, after its child exits, for output still in the pipes.
const PUMP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

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

fn spawn_error(program: &OsStr, error: std::io::Error) -> ChildError {
    let name = program.to_string_lossy();
    match error.kind() {
        std::io::ErrorKind::NotFound => {
            ChildError::new(127, format!("command not found: {name}"), "check the spelling and your PATH")
        }
        std::io::ErrorKind::PermissionDenied => ChildError::new(
            126,
            format!("permission denied running {name}"),
            format!("make it executable: chmod +x {name}"),
        ),
        _ => ChildError::new(1, format!("cannot start {name}: {error}"), "check the command"),
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
            // Our reader went away (`… | head -1`). Close our end so the child gets EPIPE/SIGPIPE,
            // as it would have without masking, instead of writing on forever.
            return;
        }
    }
    out.clear();
    masker.finish(&mut out);
    let _ = sink.write_all(&out).and_then(|()| sink.flush());
}

/// Parses `--env VAR=service` bindings, checking both halves and refusing a variable bound twice.
pub fn parse_bindings(specs: &[String]) -> Result<Vec<(String, String)>, ChildError> {
    let mut bindings: Vec<(String, String)> = Vec::with_capacity(specs.len());
    for spec in specs {
        let bad = |why: &str| {
            ChildError::usage(
                format!("invalid --env {spec:?}: {why}"),
                "write --env VAR=service, e.g. --env OPENAI_API_KEY=openai",
            )
        };
        let (var, service) = spec.split_once('=').ok_or_else(|| bad("expected VAR=service"))?;
        let var_ok = var.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !var_ok {
            return Err(bad("the variable name must match [A-Za-z_][A-Za-z0-9_]*"));
        }
        if let Err(e) = agentkeys_proto::names::validate_service_name(service) {
            return Err(bad(&format!("invalid service name: {e}")));
        }
        if bindings.iter().any(|(v, _)| v == var) {
            return Err(ChildError::usage(format!("--env {var} is given twice"), "bind each variable once"));
        }
        bindings.push((var.to_owned(), service.to_owned()));
    }
    Ok(bindings)
}

/// Runs the child to completion and returns the exit code `agentkeys run` should exit with.
pub fn run(spec: ChildSpec) -> Result<u8, ChildError> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| ChildError::usage("no command given", "run --env VAR=service -- COMMAND ARGS…"))?;
    for (var, value) in &spec.env {
        if value.contains(&0) {
            return Err(ChildError::usage(
                format!("the credential for {var} contains a NUL byte, which an environment variable cannot hold"),
                "read binary credentials with `agentkeys read` into a file instead",
            ));
        }
    }
    // Installed before the child exists, so no signal falls between spawn and forwarding.
    let mut signals = SignalsInfo::<WithOrigin>::new(FORWARDED_SIGNALS)
        .map_err(|e| ChildError::new(1, format!("cannot install signal handlers: {e}"), "retry"))?;
    let signal_handle = signals.handle();

    // At a terminal the child shares our process group, so it keeps the terminal (job control,
    // prompts) and receives Ctrl-C from it directly. Elsewhere it gets a group of its own, so a
    // signal sent to our whole group (`timeout`, a supervisor) reaches it once, through us.
    let interactive = std::io::stdin().is_terminal();
    let mut command = Command::new(program);
    command.args(args);
    if !interactive {
        command.process_group(0);
    }
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
            // A terminal's Ctrl-C, Ctrl-\ or hang-up already reached an interactive child: it is
            // in our foreground process group. Forward only what was sent to us alone.
            if interactive && matches!(origin.cause, Cause::Kernel) {
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
        let mut start_pump = |source: Box<dyn std::io::Read + Send>, sink: Box<dyn std::io::Write + Send>| {
            let masker = Masker::new(values.iter().copied());
            let (done, finished) = std::sync::mpsc::channel::<()>();
            let handle = thread::spawn(move || {
                pump(source, sink, masker);
                let _ = done.send(());
            });
            pumps.push((handle, finished));
        };
        if let Some(stdout) = child.stdout.take() {
            start_pump(Box::new(stdout), Box::new(std::io::stdout()));
        }
        if let Some(stderr) = child.stderr.take() {
            start_pump(Box::new(stderr), Box::new(std::io::stderr()));
        }
    }
    // Wait for the exit without reaping, stop forwarding, and only then reap: the child's pid
    // stays ours until no signal can be sent to it, so none can reach a recycled pid.
    let exited =
        rustix::process::waitid(rustix::process::WaitId::Pid(pid), WaitIdOptions::EXITED | WaitIdOptions::NOWAIT);
    signal_handle.close();
    let _ = forwarder.join();
    let status = exited.map_err(std::io::Error::from).and_then(|_| child.wait());
    // Output still in the pipes is flushed; pipes a daemonized grandchild keeps open are not
    // waited on past a short grace period.
    let deadline = std::time::Instant::now() + PUMP_GRACE;
    for (pump, done) in pumps {
        if done.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).is_ok() {
            let _ = pump.join();
        }
    }
    let status = status.map_err(|e| ChildError::new(1, format!("lost track of the child process: {e}"), "retry"))?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.saturating_add(signal as u8),
        (None, None) => 1,
    })
}
