//! The daemon socket's native protocol through the real binaries (issue 6, items 2–4): `run`
//! through a `serve` daemon with the caller's own stdio, signals and exit status relayed; a
//! credential delivered as a descriptor to the Rust client and to the Python example; the
//! protected-memory fallback; and the idle cache of run values.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agentkeys_core::daemon_client;
use agentkeys_core::{OsRandom, RandomSource as _};
use agentkeys_proto::daemon::FdProtection;
use agentkeys_tests::{Backend, DaemonHost, Master, ServerProcess, TestDb, bin, spawn_serving, test_python};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A server, a master with `openai` (a random canary) and `stripe`, and an agent paired with
/// scope `openai` whose `serve` daemon listens on `socket`.
pub struct Served {
    _db: TestDb,
    pub server: ServerProcess,
    master: Master,
    pub host: DaemonHost,
    pub session: String,
    pub socket: PathBuf,
    _sockets: tempfile::TempDir,
    pub serve: Child,
    pub value: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

impl Served {
    /// Starts it all; `serve` gets `flags` and `env` on top of the host's.
    pub async fn start(flags: &[&str], env: &[(&str, &str)]) -> Self {
        let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
        let server = ServerProcess::start(&db.url);
        let master = Master::new(&server.url);
        master.init();
        let value = format!("sk-canary-{}", hex::encode(OsRandom.array::<24>()));
        master.ok(&["store", "openai"], Some(value.as_bytes()));
        master.ok(&["store", "stripe"], Some(b"sk-stripe-out-of-scope"));
        let host = DaemonHost::new(&server.url);
        let agent = host.pair(&master, "mediated", "openai");
        let session = DaemonHost::session_arg(&agent);
        let sockets = tempfile::tempdir().unwrap();
        let socket = sockets.path().join("daemon.sock");
        let mut args = vec!["--session-id", session.as_str()];
        args.extend_from_slice(flags);
        args.extend(["serve", "--socket", socket.to_str().unwrap()]);
        let mut command = host.command(&args);
        for (key, val) in env {
            command.env(key, val);
        }
        let serve = spawn_serving(command);
        Self { _db: db, server, master, host, session, socket, _sockets: sockets, serve, value }
    }

    /// `agentkeys-daemon --session-id … ARGS` pointed at the serving daemon.
    pub fn daemon(&self, args: &[&str]) -> Command {
        let mut all = vec!["--session-id", self.session.as_str()];
        all.extend_from_slice(args);
        let mut command = self.host.command(&all);
        command.env("AGENTKEYS_DAEMON_SOCKET", &self.socket);
        command
    }

    /// The master CLI `agentkeys --session-id … ARGS` on the agent's host (agent-side `run`).
    pub fn agent_cli(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("agentkeys"));
        command
            .args(["--session-id", &self.session])
            .args(args)
            .env("AGENTKEYS_HOME", self.host.home.path())
            .env("AGENTKEYS_SERVER", &self.server.url)
            .env("AGENTKEYS_SESSION_STORE", "file")
            .env("AGENTKEYS_BIOMETRIC", "off")
            .env("AGENTKEYS_DAEMON_SOCKET", &self.socket)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command
    }

    /// `agentkeys ARGS` as the account owner (the master's own home and session).
    pub fn master_command(&self, args: &[&str]) -> Command {
        self.master.command(args)
    }

    pub fn serve_pid(&self) -> u32 {
        self.serve.id()
    }

    pub fn trail(&self) -> String {
        std::fs::read_to_string(self.host.home.path().join(&self.session).join("trail.jsonl")).unwrap_or_default()
    }

    /// (event, via, outcome) of every trail line about `service`.
    pub fn trail_events(&self, service: &str) -> Vec<(String, String, String)> {
        self.trail()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|e| e["service"] == service)
            .map(|e| {
                let field = |k: &str| e[k].as_str().unwrap().to_owned();
                (field("event"), field("via"), field("outcome"))
            })
            .collect()
    }

    /// Waits (polling the trail file, which is the daemon's only signal) for an event.
    pub fn wait_for_event(&self, service: &str, event: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.trail_events(service).iter().any(|(e, _, _)| e == event) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

fn output_with_stdin(mut command: Command, stdin: &[u8]) -> std::process::Output {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Spawns a `run` whose command prints `ready` first; returns it once `ready` arrived, with the
/// rest of its stdout still to read.
fn spawn_until_ready(mut command: Command) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    if line.trim() != "ready" {
        let _ = child.kill();
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        panic!("the command never got ready (stdout {line:?}):\n{stderr}");
    }
    (child, stdout)
}

fn signal(child: &Child, signal: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_child(child), signal).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_through_the_daemon_uses_the_callers_stdio_and_returns_its_status() {
    let served = Served::start(&["--cache-ttl", "0"], &[]).await;
    // The command is the daemon's child, in a session of its own (so no terminal of the daemon's
    // can stop it), in the caller's directory, reading the caller's stdin.
    let script = r#"read line; sid=$(cut -d' ' -f6 /proc/$$/stat); [ "$sid" = "$$" ] && own=own-session;
        echo "$line ${#V} $PPID $PWD $own"; echo "$V" >&2; exit 3"#;
    let workdir = tempfile::tempdir().unwrap();
    let mut command = served.daemon(&["run", "--env", "V=openai", "--", "sh", "-c", script]);
    command.current_dir(workdir.path());
    let ran = output_with_stdin(command, b"hello\n");
    assert_eq!(ran.status.code(), Some(3), "{}", text(&ran.stderr));
    // The command is the serve daemon's child, in the caller's working directory, reading the
    // caller's stdin; the value was masked on its way to the caller's stderr.
    let cwd = workdir.path().canonicalize().unwrap();
    let expected = format!("hello {} {} {} own-session\n", served.value.len(), served.serve_pid(), cwd.display());
    assert_eq!(text(&ran.stdout), expected);
    assert_eq!(text(&ran.stderr), "********\n");

    // The master CLI with the agent's session goes the same way; --no-mask shows the value.
    let ran = served
        .agent_cli(&["run", "--no-mask", "--env", "V=openai", "--", "sh", "-c", r#"echo "$PPID $V""#])
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    assert_eq!(text(&ran.stdout), format!("{} {}\n", served.serve_pid(), served.value));

    // Refusals come back with the code and fix, and nothing runs.
    let denied = served
        .daemon(&["run", "--env", "V=stripe", "--", "touch", "ran"])
        .current_dir(workdir.path())
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(4), "{}", text(&denied.stderr));
    assert!(
        text(&denied.stderr).contains("stripe") && text(&denied.stderr).contains("Fix:"),
        "{}",
        text(&denied.stderr)
    );
    assert!(!workdir.path().join("ran").exists());
    let missing = served.daemon(&["run", "--", "no-such-program-anywhere"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(127), "{}", text(&missing.stderr));

    // The daemon's trail: fetched, delivered and (no cache) dropped by run; the denial recorded.
    let events = served.trail_events("openai");
    for expected in [("fetch", "run", "ok"), ("deliver", "run", "ok"), ("drop", "run", "ok")] {
        let expected = (expected.0.to_owned(), expected.1.to_owned(), expected.2.to_owned());
        assert!(events.contains(&expected), "{expected:?} in {events:?}");
    }
    assert!(served.trail_events("stripe").iter().any(|(e, _, o)| e == "deny" && o == "DENIED"));
    assert!(!served.trail().contains(&served.value));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_the_command_through_the_daemon() {
    let served = Served::start(&[], &[]).await;
    let looping = |trap: &str| format!(r#"trap '{trap}' TERM HUP; echo ready; while :; do sleep 0.05; done"#);

    // SIGTERM to the caller reaches the command, whose own exit status comes back.
    let (child, mut stdout) = spawn_until_ready(served.daemon(&[
        "run",
        "--env",
        "V=openai",
        "--",
        "sh",
        "-c",
        &looping("echo got-term; exit 7"),
    ]));
    signal(&child, rustix::process::Signal::TERM);
    let status = {
        let mut child = child;
        child.wait().unwrap()
    };
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(7));
    assert_eq!(rest, "got-term\n");

    // Ctrl-C's SIGINT kills a command that does not catch it: 128 + 2.
    let (child, _) = spawn_until_ready(served.daemon(&["run", "--", "sh", "-c", "echo ready; exec sleep 30"]));
    signal(&child, rustix::process::Signal::INT);
    let status = {
        let mut child = child;
        child.wait().unwrap()
    };
    assert_eq!(status.code(), Some(130));

    // A caller killed outright: the daemon hangs up on its command.
    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = fifo_dir.path().join("hup");
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0)
        .unwrap();
    let script = looping(&format!("echo hung-up > {}; exit 0", fifo.display()));
    let (mut child, _) = spawn_until_ready(served.daemon(&["run", "--", "sh", "-c", &script]));
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_to_string(reader).unwrap_or_default());
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).expect("the command was never hung up on"), "hung-up\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cannot_fill_the_daemons_descriptor_table() {
    use std::os::fd::AsFd as _;
    let served = Served::start(&[], &[]).await;
    // Four descriptors where no request carries more than three: the daemon hangs up and closes
    // them, and goes on serving.
    let stream = std::os::unix::net::UnixStream::connect(&served.socket).unwrap();
    let stdin = std::io::stdin();
    let fds = [stdin.as_fd(), stdin.as_fd(), stdin.as_fd(), stdin.as_fd()];
    let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
    let message = b"AGENTKEYS/1\n{\"op\":\"get_credential\",\"service\":\"openai\"}\n";
    rustix::net::sendmsg(&stream, &[std::io::IoSlice::new(message)], &mut control, rustix::net::SendFlags::empty())
        .unwrap();
    let mut answer = Vec::new();
    (&stream).read_to_end(&mut answer).unwrap();
    assert!(answer.is_empty(), "no answer, just a hang-up: {}", text(&answer));
    let delivered = daemon_client::get_credential_fd(&served.socket, "openai").unwrap();
    assert_eq!(delivered.read().unwrap().as_slice(), served.value.as_bytes());
}

fn python_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fd_credential.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_arrives_as_a_memfd_secret_descriptor() {
    let served = Served::start(&[], &[]).await;
    let delivered = daemon_client::get_credential_fd(&served.socket, "openai").unwrap();
    assert_eq!(delivered.protection, FdProtection::MemfdSecret, "this kernel offers memfd_secret");
    assert_eq!(delivered.length, served.value.len() as u64);
    // memfd_secret memory cannot be read(2), only mapped: the descriptor really is one.
    let mut raw = std::fs::File::from(delivered.fd.try_clone().unwrap());
    assert!(raw.read(&mut [0u8; 8]).is_err(), "a memfd_secret file refuses read(2)");
    assert_eq!(delivered.read().unwrap().as_slice(), served.value.as_bytes());

    let denied = daemon_client::get_credential_fd(&served.socket, "stripe").unwrap_err();
    assert_eq!(denied.exit_code, 4, "{denied}");
    assert_eq!(denied.code, Some(agentkeys_proto::ErrorCode::Denied));

    let python = test_python().unwrap_or_else(|| PathBuf::from("python3"));
    let socket = served.socket.to_str().unwrap();
    let out =
        Command::new(&python).arg(python_example()).args(["--socket", socket, "--print", "openai"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), served.value);
    let out = Command::new(&python).arg(python_example()).args(["--socket", socket, "stripe"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("DENIED") && text(&out.stderr).contains("Fix:"), "{}", text(&out.stderr));

    let fd_events: Vec<_> = served.trail_events("openai").into_iter().filter(|(_, via, _)| via == "fd").collect();
    let kinds: Vec<&str> = fd_events.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(kinds, ["fetch", "deliver", "drop", "fetch", "deliver", "drop"], "{fd_events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_memfd_secret_the_fallback_works_and_says_it_is_reduced() {
    let forced = [("AGENTKEYS_SECRET_MEMORY", "fallback")];
    let served = Served::start(&[], &forced).await;
    let delivered = daemon_client::get_credential_fd(&served.socket, "openai").unwrap();
    assert_eq!(delivered.protection, FdProtection::SealedMemfd);
    assert_eq!(delivered.read().unwrap().as_slice(), served.value.as_bytes());
    let ran = served.daemon(&["run", "--no-mask", "--env", "V=openai", "--", "sh", "-c", "echo $V"]).output().unwrap();
    assert_eq!(text(&ran.stdout).trim(), served.value, "{}", text(&ran.stderr));
    let status = served.daemon(&["status", "--json"]).envs(forced).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["secret_memory"], "reduced", "{status}");
    let human = served.daemon(&["status"]).envs(forced).output().unwrap();
    assert!(text(&human.stdout).contains("REDUCED"), "{}", text(&human.stdout));
    let normal = served.daemon(&["status", "--json"]).output().unwrap();
    let normal: serde_json::Value = serde_json::from_slice(&normal.stdout).unwrap();
    assert_eq!(normal["secret_memory"], "secret", "{normal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_values_are_cached_while_used_and_evicted_when_idle() {
    let served = Served::start(&["--cache-ttl", "1"], &[]).await;
    for _ in 0..2 {
        let ran = served.daemon(&["run", "--env", "V=openai", "--", "true"]).output().unwrap();
        assert!(ran.status.success(), "{}", text(&ran.stderr));
    }
    let fetches: Vec<String> =
        served.trail_events("openai").into_iter().filter(|(e, _, _)| e == "fetch").map(|(_, _, o)| o).collect();
    assert_eq!(fetches, ["ok", "cached"], "the second run used the cache");
    assert!(
        served.wait_for_event("openai", "evict", Duration::from_secs(10)),
        "evicted after 1 s idle:\n{}",
        served.trail()
    );
    // Evicted means gone: the next run fetches again.
    let ran = served.daemon(&["run", "--env", "V=openai", "--", "true"]).output().unwrap();
    assert!(ran.status.success());
    let fetches: Vec<String> =
        served.trail_events("openai").into_iter().filter(|(e, _, _)| e == "fetch").map(|(_, _, o)| o).collect();
    assert_eq!(fetches, ["ok", "cached", "ok"]);
}
