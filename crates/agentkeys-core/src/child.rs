//! Runs the child of `agentkeys run` and `agentkeys-daemon run`: argv only (no shell),
//! credentials in its environment, signals forwarded, output masked, and its exit status passed
//! through (128+N when killed by signal N).

use std::ffi::{OsStr, OsString};
use std::io::IsTerminal as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use rustix::process::{Pid, WaitIdOptions, kill_process, kill_process_group};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::low_level::siginfo::Cause;
use zeroize::Zeroizing;

use crate::exec::{self, SecretEnv};
use crate::exit;
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
        Self::new(exit::USAGE, message, hint)
    }
}

/// How long `run` waits, after its child exits, for output still in the pipes.
const PUMP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The signals `run` forwards to its child.
pub const FORWARDED_SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT];

/// What to run: argv (no shell), the credentials for its environment, and whether to mask them
/// in its output.
pub struct ChildSpec {
    pub argv: Vec<OsString>,
    pub env: SecretEnv,
    pub mask: bool,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vars: Vec<&str> = self.env.names().collect();
        f.debug_struct("ChildSpec").field("argv", &self.argv).field("env", &vars).field("mask", &self.mask).finish()
    }
}

/// The process a child runs for when it is not this one (the daemon runs children for callers on
/// its socket): the child gets the caller's stdio, working directory and environment, and the
/// signals the caller relays.
pub struct Caller {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub cwd: PathBuf,
    pub environ: Vec<(OsString, OsString)>,
    /// Signals to deliver to the child's process group; the sender going away ends relaying.
    pub signals: mpsc::Receiver<i32>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").field("cwd", &self.cwd).field("environ", &self.environ.len()).finish_non_exhaustive()
    }
}

/// Why the command could not be prepared: a NUL byte is a usage error, the rest as a spawn error.
pub fn prepare_error(program: &OsStr, error: std::io::Error) -> ChildError {
    if error.kind() == std::io::ErrorKind::InvalidInput {
        return ChildError::usage(
            format!("cannot run {}: {error}", program.to_string_lossy()),
            "remove the NUL byte; a binary credential cannot be an environment variable: read it with \
             `agentkeys read` into a file instead",
        );
    }
    spawn_error(program, error)
}

fn spawn_error(program: &OsStr, error: std::io::Error) -> ChildError {
    let name = program.to_string_lossy();
    match error.kind() {
        std::io::ErrorKind::NotFound => ChildError::new(
            exit::COMMAND_NOT_FOUND,
            format!("command not found: {name}"),
            "check the spelling and your PATH",
        ),
        std::io::ErrorKind::PermissionDenied => ChildError::new(
            exit::CANNOT_EXECUTE,
            format!("permission denied running {name}"),
            format!("make it executable: chmod +x {name}"),
        ),
        _ => ChildError::new(exit::ERROR, format!("cannot start {name}: {error}"), "check the command"),
    }
}

/// Copies `source` to `sink`, masking values on the way; returns when `source` reaches EOF, or
/// at once when `stop` becomes readable (its writer closed: the grace period after the child's
/// exit ran out), so a pipe a daemonized grandchild keeps open cannot keep the values mapped.
fn pump(source: OwnedFd, stop: &impl AsFd, mut sink: impl std::io::Write, values: &SecretEnv) {
    use rustix::event::{PollFd, PollFlags};
    let mut masker = Masker::new(values.values());
    let mut buf = Zeroizing::new(vec![0u8; 16 * 1024]);
    let mut out = Zeroizing::new(Vec::with_capacity(16 * 1024));
    loop {
        let mut fds = [PollFd::new(&source, PollFlags::IN), PollFd::new(stop, PollFlags::IN)];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        let n = match rustix::io::read(&source, &mut buf[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
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

/// Runs the child to completion, here (this process's stdio, environment and signals), and
/// returns the exit code `agentkeys run` should exit with.
pub fn run(spec: ChildSpec) -> Result<u8, ChildError> {
    run_child(spec, None)
}

/// Runs the child for `caller` and returns its exit code (128+N when killed by signal N).
pub fn run_for(spec: ChildSpec, caller: Caller) -> Result<u8, ChildError> {
    run_child(spec, Some(caller))
}

/// Who passes signals on to the child, and how they are stopped before it is reaped.
enum Forwarder {
    Local(signal_hook::iterator::Handle, thread::JoinHandle<()>),
    /// Relayed signals; `true` once the child may no longer be signalled.
    Relayed(Arc<Mutex<bool>>),
}

fn run_child(spec: ChildSpec, caller: Option<Caller>) -> Result<u8, ChildError> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| ChildError::usage("no command given", "run --env VAR=service -- COMMAND ARGS…"))?;
    let env = Arc::new(spec.env);
    // Installed before the child exists, so no signal falls between spawn and forwarding.
    let local_signals = match &caller {
        Some(_) => None,
        None => Some(
            SignalsInfo::<WithOrigin>::new(FORWARDED_SIGNALS)
                .map_err(|e| ChildError::new(exit::ERROR, format!("cannot install signal handlers: {e}"), "retry"))?,
        ),
    };

    // At a terminal the child shares our process group, so it keeps the terminal (job control,
    // prompts) and receives Ctrl-C from it directly. Elsewhere it gets a group of its own, so a
    // signal sent to our whole group (`timeout`, a supervisor) reaches it once, through us. A
    // caller's command gets a session of its own (setsid, see `exec::with_secret_env`), hence
    // its own group, and the caller relays its signals.
    let interactive = caller.is_none() && std::io::stdin().is_terminal();
    let mut command = Command::new(program);
    if !interactive && caller.is_none() {
        command.process_group(0);
    }
    if let Some(caller) = &caller
        && !caller.cwd.is_dir()
    {
        return Err(ChildError::new(
            1,
            format!("the working directory {} does not exist (any more)", caller.cwd.display()),
            "cd to a directory that exists and run it again",
        ));
    }
    let plain: Vec<(OsString, OsString)> = match &caller {
        Some(caller) => caller.environ.clone(),
        None => std::env::vars_os().collect(),
    };
    let mut sinks: Vec<Box<dyn std::io::Write + Send>> = Vec::new();
    let mut relayed = None;
    let new_session = caller.is_some();
    if let Some(caller) = caller {
        command.current_dir(&caller.cwd).stdin(Stdio::from(caller.stdin));
        if spec.mask {
            sinks.push(Box::new(std::fs::File::from(caller.stdout)));
            sinks.push(Box::new(std::fs::File::from(caller.stderr)));
        } else {
            command.stdout(Stdio::from(caller.stdout)).stderr(Stdio::from(caller.stderr));
        }
        relayed = Some(caller.signals);
    } else if spec.mask {
        sinks.push(Box::new(std::io::stdout()));
        sinks.push(Box::new(std::io::stderr()));
    }
    if spec.mask {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    exec::with_secret_env(&mut command, program.as_os_str(), args, &plain, &env, new_session)
        .map_err(|e| prepare_error(program, e))?;
    drop(plain);
    let spawned = command.spawn();
    // The prepared environment (no plaintext: that was only ever assembled in the child) goes.
    drop(command);
    let mut child = spawned.map_err(|e| spawn_error(program, e))?;
    let pid = Pid::from_child(&child);

    let forwarder = match (local_signals, relayed) {
        (Some(mut signals), _) => {
            let handle = signals.handle();
            let thread = thread::spawn(move || {
                for origin in signals.forever() {
                    // A terminal's Ctrl-C, Ctrl-\ or hang-up already reached an interactive child:
                    // it is in our foreground process group. Forward only what was sent to us alone.
                    if interactive && matches!(origin.cause, Cause::Kernel) {
                        continue;
                    }
                    if let Some(signal) = rustix::process::Signal::from_named_raw(origin.signal) {
                        let _ = kill_process(pid, signal);
                    }
                }
            });
            Forwarder::Local(handle, thread)
        }
        (None, Some(relayed)) => {
            let reaped = Arc::new(Mutex::new(false));
            let guard = Arc::clone(&reaped);
            thread::spawn(move || {
                for raw in relayed {
                    let Some(signal) = rustix::process::Signal::from_named_raw(raw) else { continue };
                    let reaped = guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if *reaped {
                        return;
                    }
                    // The caller's terminal would have signalled the whole foreground group.
                    let _ = kill_process_group(pid, signal);
                }
            });
            Forwarder::Relayed(reaped)
        }
        (None, None) => unreachable!("a child has local signals or a caller"),
    };

    let mut pumps = Vec::new();
    let mut sinks = sinks.into_iter();
    let pipe_error = |e: std::io::Error| ChildError::new(exit::ERROR, format!("cannot make a pipe: {e}"), "retry");
    let (stop, stop_writer) = std::io::pipe().map_err(pipe_error)?;
    let sources = [child.stdout.take().map(OwnedFd::from), child.stderr.take().map(OwnedFd::from)];
    for source in sources.into_iter().flatten() {
        let Some(sink) = sinks.next() else { break };
        let values = Arc::clone(&env);
        let stop = stop.try_clone().map_err(pipe_error)?;
        let (done, finished) = mpsc::channel::<()>();
        let handle = thread::spawn(move || {
            pump(source, &stop, sink, &values);
            let _ = done.send(());
        });
        pumps.push((handle, finished));
    }
    // Wait for the exit without reaping, stop forwarding, and only then reap: the child's pid
    // stays ours until no signal can be sent to it, so none can reach a recycled pid.
    let exited =
        rustix::process::waitid(rustix::process::WaitId::Pid(pid), WaitIdOptions::EXITED | WaitIdOptions::NOWAIT);
    match forwarder {
        Forwarder::Local(handle, thread) => {
            handle.close();
            let _ = thread.join();
        }
        Forwarder::Relayed(reaped) => *reaped.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true,
    }
    let status = exited.map_err(std::io::Error::from).and_then(|_| child.wait());
    // Output still in the pipes is flushed; pipes a daemonized grandchild keeps open are not
    // waited on past a short grace period.
    let deadline = std::time::Instant::now() + PUMP_GRACE;
    let mut late = Vec::new();
    for (pump, done) in pumps {
        if done.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).is_ok() {
            let _ = pump.join();
        } else {
            late.push(pump);
        }
    }
    // Past the grace period: stop the pumps, so they drop the values with the pipes.
    drop(stop_writer);
    for pump in late {
        let _ = pump.join();
    }
    let status =
        status.map_err(|e| ChildError::new(exit::ERROR, format!("lost track of the child process: {e}"), "retry"))?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => exit::SIGNAL_BASE.saturating_add(signal as u8),
        (None, None) => exit::ERROR,
    })
}
