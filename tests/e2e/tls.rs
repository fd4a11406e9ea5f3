//! The server over TLS (`--tls-cert/--tls-key`) with a CA the test makes: the demo's whole flow
//! over https, curl as a third-party client, each certificate error a client can hit (unknown CA,
//! wrong host, expired) with its exit code and fix, the certificates the server refuses to start
//! with, and a reload on SIGHUP while a connection stays open.

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkeys_tests::tls::{Issued, TestCa, Validity};
use agentkeys_tests::{Backend, DaemonHost, Master, ServerProcess, TestDb, bin};
use rustls::pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn tls_server(issued: &Issued, name: &str) -> (TestDb, ServerProcess) {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let server = ServerProcess::start_tls(&db.url, issued, name);
    (db, server)
}

/// `agentkeys-daemon mcp` answering one `list_credentials` call, as the demo drives it.
fn mcp_list(host: &DaemonHost) -> String {
    let mut child =
        host.command(&["mcp"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"tls-test","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_credentials","arguments":{}}}"#,
    ] {
        writeln!(stdin, "{line}").unwrap();
    }
    let stdout = child.stdout.take().unwrap();
    let mut answers = std::io::BufReader::new(stdout).lines();
    let mut listed = String::new();
    for line in answers.by_ref() {
        let line = line.unwrap();
        if line.contains("\"id\":2") {
            listed = line;
            break;
        }
    }
    drop(stdin);
    let _ = child.wait();
    listed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_flow_runs_over_https() {
    let ca = TestCa::new("AgentKeys test CA");
    let issued = ca.issue("server", &["localhost", "127.0.0.1"], Validity::Current);
    let (_db, mut server) = tls_server(&issued, "localhost").await;
    assert!(server.url.starts_with("https://localhost:"), "{}", server.url);

    let master = Master::new(&server.url).trusting(&ca.cert);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-over-tls"));
    assert_eq!(master.ok(&["read", "openai"], None), b"sk-over-tls");
    let ran =
        master.ok(&["run", "--env", "KEY=openai", "--", "sh", "-c", "test \"$KEY\" = sk-over-tls && echo seen"], None);
    assert_eq!(text(&ran).trim(), "seen");
    assert!(text(&master.ok(&["list"], None)).contains("openai"));
    master.ok(&["store", "github"], Some(b"ghp-over-tls"));

    let host = DaemonHost::new(&server.url).trusting(&ca.cert);
    let agent = host.pair(&master, "build-bot", "openai");
    let session = DaemonHost::session_arg(&agent);
    let read = host.run(&[
        "--session-id",
        &session,
        "run",
        "--env",
        "K=openai",
        "--",
        "sh",
        "-c",
        "test \"$K\" = sk-over-tls",
    ]);
    assert!(read.status.success(), "{}", text(&read.stderr));
    let denied = host.run(&["--session-id", &session, "run", "--env", "G=github", "--", "true"]);
    assert_eq!(denied.status.code(), Some(4), "{}", text(&denied.stderr));
    let listed = mcp_list(&host);
    assert!(listed.contains("openai") && !listed.contains("github"), "{listed}");
    master.ok(&["revoke", "build-bot", "--yes"], None);
    let revoked = host.run(&["--session-id", &session, "run", "--env", "K=openai", "--", "true"]);
    assert_eq!(revoked.status.code(), Some(4), "{}", text(&revoked.stderr));
    assert!(text(&master.ok(&["usage", "--since", "1h"], None)).contains("agent.revoke"));

    // curl, a client of its own, trusts the server through the same CA, and not without it.
    let url = format!("{}/healthz", server.url);
    let curl = Command::new("curl").args(["-sS", "--cacert"]).arg(&ca.cert).arg(&url).output().expect("curl");
    assert!(curl.status.success(), "{}", text(&curl.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&curl.stdout).unwrap()["status"], "ok");
    let untrusted = Command::new("curl").args(["-sS", &url]).env_remove("CURL_CA_BUNDLE").output().unwrap();
    assert_eq!(untrusted.status.code(), Some(60), "curl refuses an unknown CA: {}", text(&untrusted.stderr));

    assert!(server.terminate(), "SIGTERM stops the TLS server cleanly (exit 0)");
    let verify = Command::new(bin("agentkeys-server"))
        .args(["verify-audit", "--database-url", &server.database_url])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

/// `agentkeys init` against the master's server: the first request, refused at the handshake.
fn refused(master: &Master) -> (Option<i32>, String) {
    let out = master.run(&["init"], None);
    (out.status.code(), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_errors_exit_8_with_the_cause_and_the_fix() {
    let ca = TestCa::new("AgentKeys test CA");
    let other = TestCa::new("Some other CA");
    let issued = ca.issue("localhost-only", &["localhost"], Validity::Current);
    let (_db, server) = tls_server(&issued, "localhost").await;

    // The system's roots do not know the test CA; nor does another CA.
    for master in [Master::new(&server.url), Master::new(&server.url).trusting(&other.cert)] {
        let (code, stderr) = refused(&master);
        assert_eq!(code, Some(8), "{stderr}");
        assert!(stderr.contains("is not signed by a certificate authority this client trusts"), "{stderr}");
        assert!(stderr.contains("--ca-cert") && stderr.contains("AGENTKEYS_CA_CERT"), "{stderr}");
        assert!(!master.home.path().join("master").exists(), "nothing saved");
    }
    // The certificate names localhost, not 127.0.0.1.
    let by_ip = server.url.replace("localhost", "127.0.0.1");
    let (code, stderr) = refused(&Master::new(&by_ip).trusting(&ca.cert));
    assert_eq!(code, Some(8), "{stderr}");
    assert!(stderr.contains("is not valid for that host name"), "{stderr}");
    assert!(stderr.contains("127.0.0.1 in its subject alternative names"), "{stderr}");
    // An expired certificate.
    let expired = ca.issue("expired", &["localhost"], Validity::Expired);
    let (_db2, old) = tls_server(&expired, "localhost").await;
    let (code, stderr) = refused(&Master::new(&old.url).trusting(&ca.cert));
    assert_eq!(code, Some(8), "{stderr}");
    assert!(stderr.contains("has expired") && stderr.contains("SIGHUP"), "{stderr}");
    // A CA file that is not one is a usage error, and the daemon says the same as the CLI.
    let missing = ca.dir.path().join("missing.pem");
    let (code, stderr) = refused(&Master::new(&server.url).trusting(&missing));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot use the CA certificate"), "{stderr}");
    let daemon = DaemonHost::new(&server.url).run(&["pair", "--label", "x", "--timeout", "5"]);
    assert_eq!(daemon.status.code(), Some(8), "{}", text(&daemon.stderr));
    assert!(text(&daemon.stderr).contains("--ca-cert"), "{}", text(&daemon.stderr));
}

fn start_refused(args: &[&str]) -> String {
    let out = Command::new(bin("agentkeys-server"))
        .args(["--listen", "127.0.0.1:0", "--database-url", "sqlite::memory:"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the server started with {args:?}");
    text(&out.stderr)
}

#[test]
fn the_server_refuses_to_start_with_a_certificate_it_cannot_serve() {
    let ca = TestCa::new("AgentKeys test CA");
    let one = ca.issue("one", &["localhost"], Validity::Current);
    let two = ca.issue("two", &["localhost"], Validity::Current);
    let path = |p: &Path| p.display().to_string();
    let stderr = start_refused(&["--tls-cert", &path(&one.cert), "--tls-key", &path(&two.key)]);
    assert!(stderr.contains("does not belong to the certificate"), "{stderr}");
    let stderr = start_refused(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", &path(&one.key)]);
    assert!(stderr.contains("cannot read the TLS certificate /nonexistent/cert.pem"), "{stderr}");
    let stderr = start_refused(&["--tls-cert", &path(&one.cert), "--tls-key", &path(&one.cert)]);
    assert!(stderr.contains("cannot read the TLS key"), "{stderr}");
    let stderr = start_refused(&["--tls-cert", &path(&one.key), "--tls-key", &path(&one.key)]);
    assert!(stderr.contains("holds no PEM certificate"), "{stderr}");
    let stderr = start_refused(&["--tls-cert", &path(&one.cert)]);
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let stderr = start_refused(&["--public-url", "keys.example.com"]);
    assert!(stderr.contains("--public-url"), "{stderr}");
}

/// A raw TLS connection trusting `ca`, to send requests on one connection.
async fn connect(port: &str, ca: &Path) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(ca).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// `GET /healthz` on an open connection (keep-alive); the status line of the answer.
async fn healthz(stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed: {}", text(&answer));
        answer.extend_from_slice(&buf[..n]);
        let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(end) = head_end {
            let head = text(&answer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return text(&answer[..end]).lines().next().unwrap_or_default().to_owned();
            }
        }
    }
}

fn wait_for_log(server: &ServerProcess, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.log.lock().unwrap().matches(needle).count() < count {
        assert!(Instant::now() < deadline, "no {needle:?} in the server log:\n{}", server.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sighup(server: &ServerProcess) {
    let pid = rustix::process::Pid::from_raw(server.pid()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_open_connections_stay() {
    let first = TestCa::new("First CA");
    let second = TestCa::new("Second CA");
    let served = first.issue("served", &["localhost"], Validity::Current);
    let (_db, server) = tls_server(&served, "localhost").await;
    let port = server.url.rsplit(':').next().unwrap().to_owned();

    let mut open = connect(&port, &first.cert).await.unwrap();
    assert_eq!(healthz(&mut open).await, "HTTP/1.1 200 OK");

    // The files now hold a certificate of the second CA; SIGHUP reads them again.
    let next = second.issue("next", &["localhost"], Validity::Current);
    std::fs::copy(&next.cert, &served.cert).unwrap();
    std::fs::copy(&next.key, &served.key).unwrap();
    sighup(&server);
    wait_for_log(&server, "TLS certificate reloaded", 1);

    assert_eq!(healthz(&mut open).await, "HTTP/1.1 200 OK", "the open connection goes on");
    let refused = connect(&port, &first.cert).await;
    assert!(refused.is_err(), "new handshakes get the new certificate");
    let mut fresh = connect(&port, &second.cert).await.unwrap();
    assert_eq!(healthz(&mut fresh).await, "HTTP/1.1 200 OK");

    // A pair that does not match is not taken: the server keeps the one it has.
    std::fs::copy(&first.issue("stray", &["localhost"], Validity::Current).key, &served.key).unwrap();
    sighup(&server);
    wait_for_log(&server, "TLS certificate not reloaded", 1);
    let mut still = connect(&port, &second.cert).await.unwrap();
    assert_eq!(healthz(&mut still).await, "HTTP/1.1 200 OK");
    assert!(server.log.lock().unwrap().contains("does not belong to the certificate"));
}
