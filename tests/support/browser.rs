//! A real Chromium for the presence-key tests: tests/browser/webauthn_driver.py (Selenium over
//! Debian's chromedriver, headless, Chromium's WebAuthn virtual authenticator), driven one JSON
//! line at a time; and a CLI command that waits on a presence ceremony, whose printed link the
//! test opens in that browser as a human would on the machine with the key.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Master, present_or_skip, test_python};

/// The browser process and its driver.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// What the ceremony page showed when it settled (`data-state` of its status element).
#[derive(Debug, Clone)]
pub struct Page {
    /// `done`, `refused`, `over` or `error`.
    pub state: String,
    pub status: String,
    pub operation: String,
    pub code: String,
    pub request: String,
}

impl Browser {
    /// Starts Chromium, or skips (fails under `CI=true`) where it or its driver is missing.
    pub fn start() -> Option<Self> {
        let python = test_python()?;
        let installed = |name: &str| {
            std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).exists()))
        };
        let present = installed("chromium") && installed("chromedriver");
        if !present_or_skip(present, "no chromium and chromedriver (scripts/test.sh installs Debian's)") {
            return None;
        }
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/webauthn_driver.py");
        let mut child = Command::new(python)
            .arg(script)
            .env("SE_OFFLINE", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the browser driver");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut browser = Self { child, stdin, stdout };
        let ready = browser.read();
        assert_eq!(ready["ready"], true, "the browser driver did not start: {ready}");
        Some(browser)
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from the browser driver");
        assert!(!line.is_empty(), "the browser driver exited");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("the browser driver said {line:?}: {e}"))
    }

    /// Sends one command and returns its answer; a command the driver failed panics with why.
    pub fn call(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").and_then(|()| self.stdin.flush()).expect("write to the browser driver");
        let answer = self.read();
        assert_eq!(answer["ok"], true, "browser command {command} failed: {answer}");
        answer
    }

    /// Adds a virtual authenticator with user verification: `usb` (a security key) or
    /// `internal` (a platform authenticator). Returns its id.
    pub fn authenticator(&mut self, transport: &str) -> String {
        let answer = self.call(json!({"cmd": "authenticator", "transport": transport}));
        answer["id"].as_str().expect("an authenticator id").to_owned()
    }

    /// Opens a ceremony page and waits for it to settle.
    pub fn open(&mut self, url: &str) -> Page {
        let page = self.call(json!({"cmd": "open", "url": url, "timeout_s": 30}));
        let field = |name: &str| page[name].as_str().unwrap_or_default().to_owned();
        Page {
            state: field("state"),
            status: field("status"),
            operation: field("operation"),
            code: field("code"),
            request: field("request"),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        // The driver quits Chromium; give it a moment, then make sure.
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A ceremony link the CLI printed, with the code beside it.
#[derive(Debug, Clone)]
pub struct Link {
    pub url: String,
    pub code: String,
}

/// A running `agentkeys … --no-browser` that prints ceremony links and waits on them.
#[derive(Debug)]
pub struct Waiting {
    child: Child,
    links: Receiver<Link>,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Waiting {
    /// The next link it printed (waits up to 30 s).
    pub fn link(&self) -> Link {
        self.links
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the command printed no ceremony link:\n{}", self.stderr.lock().unwrap()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to exit; its status, stdout and everything it printed on stderr.
    pub fn finish(mut self) -> Output {
        let mut stdout = Vec::new();
        if let Some(mut pipe) = self.child.stdout.take() {
            std::io::Read::read_to_end(&mut pipe, &mut stdout).expect("read stdout");
        }
        let status = self.child.wait().expect("wait for agentkeys");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stderr reader");
        }
        let stderr = self.stderr.lock().unwrap().clone().into_bytes();
        Output { status, stdout, stderr }
    }
}

impl Master {
    /// Starts `agentkeys ARGS --no-browser`, reading the ceremony links it prints.
    pub fn waiting(&self, args: &[&str]) -> Waiting {
        let mut command = self.command(args);
        command.arg("--no-browser").stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn agentkeys");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, links) = std::sync::mpsc::channel();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut url = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.trim().strip_prefix("Open ") {
                    url = Some(rest.trim().to_owned());
                }
                if let Some(rest) = line.split("shows the code ").nth(1)
                    && let Some(url) = url.take()
                {
                    let code = rest.split([',', ' ']).next().unwrap_or_default().to_owned();
                    let _ = tx.send(Link { url, code });
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Waiting { child, links, stderr: log, reader: Some(reader) }
    }
}
