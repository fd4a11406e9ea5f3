//! The API contract, held by a third-party fuzzer: schemathesis (PyPI) runs every operation of
//! the server's OpenAPI document with every check — undocumented status codes, schema-valid
//! requests refused, schema-invalid ones accepted, responses that break their schema, methods an
//! endpoint does not take, server errors — three times: unauthenticated, and through a hook that
//! signs each request as a real master and as a real agent (tests/api/signing_hook.py), so the
//! fuzzer reaches the handlers and not only the signature check. Zero failures, zero 5xx.

use std::path::{Path, PathBuf};
use std::process::Command;

use agentkeys_core::session::Session;
use agentkeys_tests::{Backend, DaemonHost, Master, ServerProcess, TestDb, present_or_skip, test_python};
use secrecy::ExposeSecret as _;

fn identity_file(dir: &Path, name: &str, session: &Session) -> PathBuf {
    let seed = session.device.secret_blob();
    let identity = serde_json::json!({
        "token": session.token.expose_secret(),
        "session_id": session.session_id,
        "device_sign_secret": agentkeys_proto::b64::encode(&seed[..32]),
    });
    let path = dir.join(format!("{name}.json"));
    agentkeys_tests::tls::write_private(&path, identity.to_string().as_bytes());
    path
}

/// The settings of tests/api/schemathesis.toml, and for a signed pass the session's token as the
/// bearer of the `agentkeys_session` scheme (read from the environment, never argv).
fn config(dir: &Path, signed: bool) -> PathBuf {
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("api");
    let mut settings = std::fs::read_to_string(api.join("schemathesis.toml")).unwrap();
    if signed {
        settings.push_str("\n[auth.openapi.agentkeys_session]\nbearer = \"${AGENTKEYS_ST_TOKEN}\"\n");
    }
    let path = dir.join(if signed { "signed.toml" } else { "unsigned.toml" });
    std::fs::write(&path, settings).unwrap();
    path
}

fn fuzz(schemathesis: &Path, server: &ServerProcess, identity: Option<(&Path, &Session)>, label: &str) {
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("api");
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(schemathesis);
    command
        .arg("--no-color")
        .arg("--config-file")
        .arg(config(dir.path(), identity.is_some()))
        .args(["run", &format!("{}/v1/openapi.json", server.url), "--checks", "all"])
        .args(["--max-examples", &std::env::var("AGENTKEYS_FUZZ_EXAMPLES").unwrap_or_else(|_| "12".into())])
        .args(["--seed", "20261201", "--workers", "1"])
        // Its cache of past crashes goes to the temp dir: each run starts from the seed alone.
        .current_dir(dir.path())
        .env("SCHEMATHESIS_HOOKS", "signing_hook")
        .env("PYTHONPATH", &api)
        .env_remove("AGENTKEYS_ST_IDENTITY")
        .env_remove("AGENTKEYS_ST_TOKEN");
    if let Some((identity, session)) = identity {
        command.env("AGENTKEYS_ST_IDENTITY", identity).env("AGENTKEYS_ST_TOKEN", session.token.expose_secret());
    }
    let out = command.output().expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis ({label}) found failures:\n{report}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log.lock().unwrap()
    );
    // The summary (operations tested, checks run, warnings) for the log.
    let summary: Vec<&str> = report.lines().skip_while(|l| !l.contains("SUMMARY")).collect();
    eprintln!("schemathesis ({label}):\n{}", summary.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_unauthenticated_or_signed() {
    let Some(python) = test_python() else { return };
    let schemathesis = python.with_file_name("schemathesis");
    if !present_or_skip(schemathesis.exists(), "no schemathesis in the test venv (scripts/test.sh installs it)") {
        return;
    }
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    // The fuzzer is one source sending thousands of requests: lift the limits it would only hit.
    let server = ServerProcess::start_with(
        &db.url,
        &[
            "--anonymous-burst",
            "1000000",
            "--anonymous-per-minute",
            "1000000",
            "--agent-read-burst",
            "1000000",
            "--agent-read-rate",
            "1000000",
        ],
    );
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-fuzzed"));
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&master, "fuzz-bot", "openai");
    let dir = tempfile::tempdir().unwrap();
    let (master_session, agent_session) = (master.session(), host.session(&agent));
    let as_master = identity_file(dir.path(), "master", &master_session);
    let as_agent = identity_file(dir.path(), "agent", &agent_session);

    fuzz(&schemathesis, &server, None, "unauthenticated");
    fuzz(&schemathesis, &server, Some((&as_master, &master_session)), "signed as the master");
    fuzz(&schemathesis, &server, Some((&as_agent, &agent_session)), "signed as an agent");
}
