//! Test support: find the built binaries, start a real `agentkeys-server` (as a process or in
//! this process) on an ephemeral port, give each test its own `AGENTKEYS_HOME` and its own
//! PostgreSQL database, and run the real `agentkeys` binary against it.
//!
//! PostgreSQL comes from `AGENTKEYS_TEST_PG_URL` (set by `scripts/test.sh`). Without it a
//! PostgreSQL test is skipped with a message — except under `CI=true`, where it fails.

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

/// The admin URL of the test PostgreSQL, or `None` (skip) outside CI.
pub fn pg_admin_url() -> Option<String> {
    match std::env::var("AGENTKEYS_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "CI=true but AGENTKEYS_TEST_PG_URL is not set: PostgreSQL tests must run in CI (use scripts/test.sh)"
            )
        }
        _ => {
            eprintln!("SKIPPED: AGENTKEYS_TEST_PG_URL is not set; run scripts/test.sh to test against PostgreSQL");
            None
        }
    }
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
        let mut child = Command::new(bin("agentkeys-server"))
            .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
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
        let (state, _writer) = agentkeys_server::start(database_url, clock).await.expect("start server");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
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

/// A master: its own `AGENTKEYS_HOME`, and the real `agentkeys` binary pointed at a server.
#[derive(Debug)]
pub struct Master {
    pub home: tempfile::TempDir,
    pub server: String,
}

impl Master {
    pub fn new(server: &str) -> Self {
        Self { home: tempfile::tempdir().expect("temp home"), server: server.to_owned() }
    }

    /// `agentkeys ARGS` with this master's environment, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin("agentkeys"));
        command
            .args(args)
            .env("AGENTKEYS_HOME", self.home.path())
            .env("AGENTKEYS_SERVER", &self.server)
            .env_remove("AGENTKEYS_SESSION_ID")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
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
}
