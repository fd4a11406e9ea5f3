//! Test support: find the built binaries, start a real `agentkeys-server` (as a process or in
//! this process) on an ephemeral port, give each test its own `AGENTKEYS_HOME` and its own
//! PostgreSQL database, and run the real `agentkeys` binary against it.
//!
//! PostgreSQL comes from `AGENTKEYS_TEST_PG_URL` (set by `scripts/test.sh`). Without it a
//! PostgreSQL test is skipped with a message — except under `CI=true`, where it fails.

pub mod browser;
pub mod bus;
pub mod fprint;
pub mod notify;
pub mod tls;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkeys_core::session::{EncryptedFileStore, Session, SessionId, SessionStore as _};

/// A built binary of this workspace (`cargo build --workspace` puts them beside `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The one guard for a test that needs something this machine may not have (PostgreSQL, a
/// keyring, root, strace, fprintd, the Python SDK): `true` when `present`; else it prints
/// `SKIPPED: <test>: <missing>` and returns `false` — or, under `CI=true`, fails the test, so CI
/// never passes a test that did not run.
pub fn present_or_skip(present: bool, missing: &str) -> bool {
    if present {
        return true;
    }
    let current = std::thread::current();
    let test = current.name().unwrap_or("this test");
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{test} needs what is missing under CI=true: {missing}");
    eprintln!("SKIPPED: {test}: {missing}");
    false
}

/// A plain HTTP client for requests the AgentKeys client would not make (anonymous floods,
/// malformed bodies), with the crypto provider every AgentKeys binary uses.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The admin URL of the test PostgreSQL, or `None` (skipped) outside CI.
pub fn pg_admin_url() -> Option<String> {
    let url = std::env::var("AGENTKEYS_TEST_PG_URL").ok().filter(|url| !url.is_empty());
    present_or_skip(url.is_some(), "no PostgreSQL (AGENTKEYS_TEST_PG_URL is not set; scripts/test.sh starts one)")
        .then(|| url.expect("present"))
}

/// A database for one test: a file under a temp dir, or a fresh PostgreSQL database.
#[derive(Debug)]
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub sqlite_path: Option<PathBuf>,
    pub pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("random");
    hex::encode(buf)
}

impl TestDb {
    /// `None` when the backend is PostgreSQL and none is configured (outside CI).
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("agentkeys.db");
                Some(Self {
                    backend,
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    sqlite_path: Some(path),
                    pg_name: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin = pg_admin_url()?;
                let name = format!("ak_test_{}", random_hex(6));
                sqlx::any::install_default_drivers();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .expect("connect to test PostgreSQL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create database");
                let base = admin.rsplit_once('/').map(|(base, _)| base).expect("URL with a database");
                Some(Self {
                    backend,
                    url: format!("{base}/{name}"),
                    sqlite_path: None,
                    pg_name: Some(name),
                    _dir: None,
                })
            }
        }
    }

    /// Every byte the database keeps on disk (SQLite files) or would dump (`pg_dump`).
    pub fn raw_contents(&self) -> Vec<u8> {
        match (&self.sqlite_path, &self.pg_name) {
            (Some(path), _) => {
                let mut all = Vec::new();
                for suffix in ["", "-wal", "-shm"] {
                    if let Ok(bytes) = std::fs::read(format!("{}{suffix}", path.display())) {
                        all.extend(bytes);
                    }
                }
                all
            }
            (_, Some(_)) => {
                let pg_dump = std::env::var("AGENTKEYS_TEST_PG_BIN")
                    .map(|d| format!("{d}/pg_dump"))
                    .unwrap_or_else(|_| "pg_dump".into());
                let out = Command::new(&pg_dump).arg("--dbname").arg(&self.url).output().expect("run pg_dump");
                assert!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
                out.stdout
            }
            _ => unreachable!("a test database is SQLite or PostgreSQL"),
        }
    }
}

/// Calls MCP `get_credential` on a daemon socket by hand (JSON-RPC lines: initialize, initialized,
/// tools/call), on one connection closed before this returns; the `tools/call` answer.
pub fn mcp_get_credential_answer(socket: &Path, service: &str) -> serde_json::Value {
    mcp_tool_answer(socket, "get_credential", serde_json::json!({ "service": service }))
}

/// Calls the MCP tool `tool` with `arguments` on a daemon socket by hand, as
/// [`mcp_get_credential_answer`] does; the `tools/call` answer.
pub fn mcp_tool_answer(socket: &Path, tool: &str, arguments: serde_json::Value) -> serde_json::Value {
    let stream = std::os::unix::net::UnixStream::connect(socket).expect("connect to the daemon socket");
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut writer = stream;
    let mut call = |message: serde_json::Value, answer: bool| {
        writeln!(writer, "{message}").expect("write to the daemon");
        if !answer {
            return serde_json::Value::Null;
        }
        let mut line = String::new();
        reader.read_line(&mut line).expect("read the daemon's answer");
        serde_json::from_str::<serde_json::Value>(&line).expect("a JSON-RPC line")
    };
    call(
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "agentkeys-tests", "version": "1"}}}),
        true,
    );
    call(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), false);
    call(
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}),
        true,
    )
}

/// A verifier that remembers nothing between calls: for tests that drive the vault API directly
/// and are about something other than a client's memory (tests/e2e/hostile.rs is about that).
pub fn no_memory() -> agentkeys_core::integrity::Verifier {
    agentkeys_core::integrity::Verifier::in_memory()
}

/// Does `haystack` contain any 16-byte window of `secret`?
pub fn contains_any_window(haystack: &[u8], secret: &[u8]) -> bool {
    secret.windows(16.min(secret.len())).any(|window| haystack.windows(window.len()).any(|w| w == window))
}

/// A running `agentkeys-server` process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub url: String,
    pub database_url: String,
    pub log: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts the server on `127.0.0.1:0` and waits for its "listening on" line.
    pub fn start(database_url: &str) -> Self {
        Self::spawn(database_url, &[])
    }

    fn spawn(database_url: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(bin("agentkeys-server"))
            .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
            .args(extra)
            .env("AGENTKEYS_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agentkeys-server");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("agentkeys-server did not start:\n{}", log.lock().unwrap());
            }
        };
        Self { child, url, database_url: database_url.to_owned(), log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL: the crash case.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: the graceful case. Returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let pid = rustix::process::Pid::from_raw(self.pid()).expect("pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server running inside the test process (real HTTP on loopback), with its state at hand.
#[derive(Debug)]
pub struct InProcessServer {
    pub url: String,
    pub state: agentkeys_server::AppState,
    task: tokio::task::JoinHandle<()>,
}

impl InProcessServer {
    pub async fn start(database_url: &str) -> Self {
        Self::start_with_clock(database_url, agentkeys_server::clock::Clock::system()).await
    }

    pub async fn start_with_clock(database_url: &str, clock: agentkeys_server::clock::Clock) -> Self {
        let (mut state, _writer) = agentkeys_server::start(database_url, clock).await.expect("start server");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let url = format!("http://{addr}");
        // As the binary does for a loopback listener: the ceremony page is served, and its
        // WebAuthn RP ID is, at localhost (a secure context for browsers over plain http).
        state.public_url = format!("http://localhost:{}", addr.port());
        let router = agentkeys_server::router(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, state, task }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A test database and an in-process server on it whose clock runs `skew` milliseconds ahead of
/// the system's: a delay or an expiry passes without sleeping. `None` when the backend is missing.
pub async fn skewed_server(backend: Backend) -> Option<(TestDb, InProcessServer, Arc<std::sync::atomic::AtomicI64>)> {
    let db = TestDb::new(backend).await?;
    let skew = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let ahead = skew.clone();
    let clock = agentkeys_server::clock::Clock::from_fn(move || {
        agentkeys_server::clock::Clock::system().now_ms() + ahead.load(std::sync::atomic::Ordering::Relaxed)
    });
    let server = InProcessServer::start_with_clock(&db.url, clock).await;
    Some((db, server, skew))
}

/// A master: its own `AGENTKEYS_HOME`, and the real `agentkeys` binary pointed at a server.
#[derive(Debug)]
pub struct Master {
    pub home: tempfile::TempDir,
    pub server: String,
    /// `AGENTKEYS_CA_CERT` for an https server with a test CA.
    pub ca_cert: Option<PathBuf>,
}

impl Master {
    pub fn new(server: &str) -> Self {
        Self { home: tempfile::tempdir().expect("temp home"), server: server.to_owned(), ca_cert: None }
    }

    /// Trusts only `ca` (PEM) for the https server.
    pub fn trusting(mut self, ca: &Path) -> Self {
        self.ca_cert = Some(ca.to_path_buf());
        self
    }

    /// `agentkeys ARGS` with this master's environment, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("agentkeys"));
        command
            .args(args)
            .env("AGENTKEYS_HOME", self.home.path())
            .env("AGENTKEYS_SERVER", &self.server)
            .env_remove("AGENTKEYS_SESSION_ID")
            .env_remove("AGENTKEYS_CA_CERT")
            // Key files unless a test asks for the keychain: the suite must not depend on whether
            // the machine running it has one.
            .env("AGENTKEYS_SESSION_STORE", "file")
            // No presence check unless a test asks for one (tests/e2e/presence.rs does): the
            // machine running the suite has no human at it.
            .env("AGENTKEYS_BIOMETRIC", "off")
            .env_remove("AGENTKEYS_PRESENCE_TIMEOUT")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        if let Some(ca) = &self.ca_cert {
            command.env("AGENTKEYS_CA_CERT", ca);
        }
        command
    }

    /// Runs `agentkeys ARGS`, feeding `stdin` if given.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut command = self.command(args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().expect("spawn agentkeys");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            // A command that refuses its arguments exits without reading stdin.
            if let Err(e) = pipe.write_all(input) {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
            }
        }
        child.wait_with_output().expect("wait for agentkeys")
    }

    /// `agentkeys approve CODE ARGS` for a pairing, typing the OTP the daemon shows once approve
    /// has looked the code up (as a human reads it off the agent's screen).
    pub fn approve_pairing(&self, pairing: &Pairing, args: &[&str]) -> Output {
        let mut all = vec!["approve", pairing.prompt.code.as_str()];
        all.extend_from_slice(args);
        let mut command = self.command(&all);
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::piped());
        let mut child = command.spawn().expect("spawn agentkeys approve");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let otp = pairing.otp();
        // An approve that refused before asking has closed its stdin.
        let _ = stdin.write_all(format!("{otp}\n").as_bytes());
        drop(stdin);
        child.wait_with_output().expect("wait for agentkeys approve")
    }

    /// Looks a pairing's code up with `approve` typing nothing (it claims the code, the daemon
    /// reveals and shows its OTP, and approve exits 6 for want of one); returns that OTP, for a
    /// later `approve --otp`.
    pub fn claim_pairing(&self, pairing: &Pairing) -> String {
        let looked = self.run(&["approve", &pairing.prompt.code], None);
        assert_eq!(
            looked.status.code(),
            Some(6),
            "a look-up without an OTP: {}",
            String::from_utf8_lossy(&looked.stderr)
        );
        pairing.otp()
    }

    /// Runs and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "agentkeys {args:?} failed ({:?}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `agentkeys init` with a fixed label.
    pub fn init(&self) -> Vec<u8> {
        self.ok(&["init", "--label", "test-master"], None)
    }

    /// The saved master session, loaded the way the CLI loads it.
    pub fn session(&self) -> Arc<Session> {
        Arc::new(
            EncryptedFileStore::new(self.home.path()).load(&SessionId::master()).expect("load").expect("a session"),
        )
    }

    pub fn session_dir(&self) -> PathBuf {
        self.home.path().join("master")
    }

    /// Starts `agentkeys device join --label LABEL` on this (new) machine.
    pub fn start_join(&self, label: &str) -> Pairing {
        Pairing::start(self.command(&["device", "join", "--label", label, "--timeout", "60"]))
    }

    /// `agentkeys-daemon ARGS` sharing this master's home: an agent on the master's own machine.
    pub fn daemon_command(&self, args: &[&str]) -> Command {
        daemon_command(self.home.path(), &self.server, self.ca_cert.as_deref(), args)
    }
}

impl ServerProcess {
    /// [`ServerProcess::start`] with extra server flags (e.g. rate limits).
    pub fn start_with(database_url: &str, extra: &[&str]) -> Self {
        Self::spawn(database_url, extra)
    }
}

/// `agentkeys-daemon ARGS` in `home` against `server`, not yet run.
fn daemon_command(home: &Path, server: &str, ca_cert: Option<&Path>, args: &[&str]) -> Command {
    let mut command = Command::new(bin("agentkeys-daemon"));
    command
        .args(args)
        .env("AGENTKEYS_HOME", home)
        .env("AGENTKEYS_SERVER", server)
        .env_remove("AGENTKEYS_SESSION_ID")
        .env_remove("AGENTKEYS_CA_CERT")
        .env("AGENTKEYS_SESSION_STORE", "file")
        .env_remove("AGENTKEYS_DAEMON_SOCKET")
        .env_remove("XDG_RUNTIME_DIR")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    if let Some(ca) = ca_cert {
        command.env("AGENTKEYS_CA_CERT", ca);
    }
    command
}

/// A daemon host: its own `AGENTKEYS_HOME`, and the real `agentkeys-daemon` binary pointed at a
/// server. Several agents can share one host (one home, one `daemon-*` slot each).
#[derive(Debug)]
pub struct DaemonHost {
    pub home: tempfile::TempDir,
    pub server: String,
    /// `AGENTKEYS_CA_CERT` for an https server with a test CA.
    pub ca_cert: Option<PathBuf>,
}

/// What a pairing printed first: the code, read from the daemon's stderr.
#[derive(Debug, Clone)]
pub struct PairPrompt {
    pub code: String,
}

/// A `pair` in progress.
#[derive(Debug)]
pub struct Pairing {
    pub child: Child,
    pub prompt: PairPrompt,
    pub stderr: Arc<Mutex<String>>,
    /// The OTP line, printed once a master has claimed the code.
    otp: Mutex<(std::sync::mpsc::Receiver<String>, Option<String>)>,
    reader: std::thread::JoinHandle<()>,
}

impl Pairing {
    /// The OTP the daemon shows once a master looked its code up (waits up to 30 s for it).
    pub fn otp(&self) -> String {
        let mut otp = self.otp.lock().unwrap();
        if otp.1.is_none() {
            let received = otp
                .0
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("agentkeys-daemon pair printed no OTP:\n{}", self.stderr.lock().unwrap()));
            otp.1 = Some(received);
        }
        otp.1.clone().expect("set above")
    }

    /// Waits for the daemon to exit; returns its exit code and everything it printed on stderr.
    pub fn finish(mut self) -> (i32, String) {
        let status = self.child.wait().expect("wait for agentkeys-daemon pair");
        // The reader ends when the pipe closes, so after joining it the log is complete.
        self.reader.join().expect("stderr reader");
        (status.code().unwrap_or(-1), self.stderr.lock().unwrap().clone())
    }
}

impl DaemonHost {
    pub fn new(server: &str) -> Self {
        Self { home: tempfile::tempdir().expect("temp home"), server: server.to_owned(), ca_cert: None }
    }

    /// Trusts only `ca` (PEM) for the https server.
    pub fn trusting(mut self, ca: &Path) -> Self {
        self.ca_cert = Some(ca.to_path_buf());
        self
    }

    /// `agentkeys-daemon ARGS` with this host's environment, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        daemon_command(self.home.path(), &self.server, self.ca_cert.as_deref(), args)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).output().expect("run agentkeys-daemon")
    }

    /// Starts `pair` and waits for its "Pair code: … OTP: …" line (its readiness signal).
    pub fn start_pair(&self, label: &str, scope: &str) -> Pairing {
        let mut args = vec!["pair", "--label", label, "--timeout", "60"];
        if !scope.is_empty() {
            args.extend(["--scope", scope]);
        }
        Pairing::start(self.command(&args))
    }

    /// Starts `recover AGENT` (a replacement machine for an agent), like [`DaemonHost::start_pair`].
    pub fn start_recover(&self, agent: &str) -> Pairing {
        Pairing::start(self.command(&["recover", agent, "--timeout", "60"]))
    }
}

impl Pairing {
    /// Spawns a command that opens a pairing-kind request (`agentkeys-daemon pair|recover`,
    /// `agentkeys device join`) and waits for its "Pair code:" line (its readiness signal).
    pub fn start(mut command: Command) -> Pairing {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn a pairing");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (otp_tx, otp_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("Pair code: ")
                    && let Some(tx) = tx.take()
                {
                    let code = rest.split_whitespace().next().unwrap_or_default().to_owned();
                    let _ = tx.send(PairPrompt { code });
                }
                if let Some(rest) = line.strip_prefix("OTP: ") {
                    let _ = otp_tx.send(rest.trim().to_owned());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let prompt = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(prompt) => prompt,
            Err(_) => {
                let _ = child.kill();
                panic!("the pairing printed no code:\n{}", log.lock().unwrap());
            }
        };
        Pairing { child, prompt, stderr: log, otp: Mutex::new((otp_rx, None)), reader }
    }
}

impl DaemonHost {
    /// Pairs `label` end to end: the daemon's code read from its stderr, `approve` answered with
    /// the OTP the daemon shows once approve looked the code up. Returns the agent id.
    pub fn pair(&self, master: &Master, label: &str, scope: &str) -> String {
        let pairing = self.start_pair(label, scope);
        let out = master.approve_pairing(&pairing, &["--yes"]);
        assert!(out.status.success(), "approve failed ({:?}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        let (code, stderr) = pairing.finish();
        assert_eq!(code, 0, "pair failed:\n{stderr}");
        stderr
            .split("Session saved as daemon-")
            .nth(1)
            .and_then(|rest| rest.split('.').next())
            .expect("the saved session in pair's output")
            .to_owned()
    }

    /// The agent session slot for `agent_id` on this host.
    pub fn session_arg(agent_id: &str) -> String {
        format!("daemon-{agent_id}")
    }

    /// The saved agent session, loaded the way the daemon loads it.
    pub fn session(&self, agent_id: &str) -> Arc<Session> {
        let id = SessionId::daemon(agent_id).expect("session id");
        Arc::new(EncryptedFileStore::new(self.home.path()).load(&id).expect("load").expect("a session"))
    }
}

/// The Python of the venv with the MCP SDK (`AGENTKEYS_TEST_PYTHON`, set by scripts/test.sh);
/// `None` skips, except under `CI=true` where a missing one fails.
pub fn test_python() -> Option<PathBuf> {
    let path = std::env::var_os("AGENTKEYS_TEST_PYTHON").filter(|v| !v.is_empty()).map(PathBuf::from);
    present_or_skip(path.is_some(), "no Python with the MCP SDK (AGENTKEYS_TEST_PYTHON; scripts/test.sh sets it)")
        .then(|| path.expect("present"))
}

/// Whether this process runs as root (switching to other users, mounting a full disk).
pub fn root_or_skip() -> bool {
    present_or_skip(rustix::process::geteuid().is_root(), "not root (CI runs the suite as root)")
}

/// `command` run through `wrapper` (a program and its arguments), with the same environment.
pub fn wrapped(wrapper: &[&str], command: &Command) -> Command {
    let mut outer = Command::new(wrapper[0]);
    outer.args(&wrapper[1..]).arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => outer.env(key, value),
            None => outer.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        outer.current_dir(dir);
    }
    outer.stdin(std::process::Stdio::null());
    outer
}

/// `command` with no controlling terminal at all (`setsid`), as under a service manager or CI.
pub fn without_terminal(command: &Command) -> Command {
    wrapped(&["setsid", "--wait"], command)
}

/// The uid of `nobody`, for tests that need a second, unprivileged user (they run as root).
pub const NOBODY: u32 = 65534;

/// `command` as the unprivileged user `nobody` (`setpriv`), with the same environment.
pub fn as_nobody(command: &Command) -> Command {
    wrapped(&["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], command)
}

/// Spawns `command` and waits for a stderr line containing `ready` (its readiness signal);
/// stderr keeps being drained so the process never blocks on it.
pub fn spawn_until(mut command: Command, ready: &str) -> Child {
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let mut seen = String::new();
    for line in lines.by_ref().map_while(Result::ok) {
        let found = line.contains(ready);
        seen.push_str(&line);
        seen.push('\n');
        if found {
            std::thread::spawn(move || lines.for_each(drop));
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("never printed {ready:?}:\n{seen}");
}

/// Spawns `agentkeys-daemon … serve` and waits until it is serving.
pub fn spawn_serving(command: Command) -> Child {
    spawn_until(command, "agentkeys-daemon serving")
}

/// The mappings of `pid` whose readable memory holds any 16-byte window of `needle`, named by
/// path (or `[heap]`, or `anon@<address>`). Only pages present in memory (or swapped) are read —
/// `/proc/<pid>/pagemap` says which; untouched reservations read as zeros anyway — and mappings the
/// kernel will not read through `/proc/<pid>/mem` (memfd_secret pages, guard pages) are skipped:
/// that is what they are for. Needs the right to ptrace `pid` (the suite runs as root).
pub fn mappings_holding(pid: u32, needle: &[u8]) -> Vec<String> {
    use std::os::unix::fs::FileExt as _;
    let finders: Vec<memchr::memmem::Finder<'_>> =
        needle.windows(16.min(needle.len())).map(memchr::memmem::Finder::new).collect();
    let page = rustix::param::page_size() as u64;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open mem");
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap")).expect("open pagemap");
    let mut found = Vec::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(range), Some(perms)) = (fields.first(), fields.get(1)) else { continue };
        if !perms.starts_with('r') {
            continue;
        }
        let (start, end) = range.split_once('-').expect("a range");
        let (start, end) = (u64::from_str_radix(start, 16).unwrap(), u64::from_str_radix(end, 16).unwrap());
        let name = fields.get(5).map_or_else(|| format!("anon@{start:x}"), |p| (*p).to_owned());
        if name.starts_with("[vvar") || name == "[vsyscall]" {
            continue;
        }
        let pages = ((end - start) / page) as usize;
        let mut entries = vec![0u8; pages * 8];
        if pagemap.read_exact_at(&mut entries, start / page * 8).is_err() {
            continue;
        }
        // Runs of pages that hold data (present, bit 63, or swapped, bit 62), read whole so a
        // value across a page boundary is seen.
        let held = |i: usize| u64::from_le_bytes(entries[i * 8..i * 8 + 8].try_into().unwrap()) >> 62 != 0;
        let mut i = 0;
        'mapping: while i < pages {
            if !held(i) {
                i += 1;
                continue;
            }
            let run_start = i;
            while i < pages && held(i) {
                i += 1;
            }
            let mut buf = vec![0u8; (i - run_start) * page as usize];
            let Ok(n) = mem.read_at(&mut buf, start + run_start as u64 * page) else { continue };
            if finders.iter().any(|f| f.find(&buf[..n]).is_some()) {
                found.push(name.clone());
                break 'mapping;
            }
        }
    }
    found
}
