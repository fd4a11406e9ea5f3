//! High-value credentials (issue 16, part 1), through the real binaries: a credential marked
//! `--high-value` is wrapped to no agent; an agent's read answers `APPROVAL_REQUIRED` (exit 6)
//! with a release request the owner approves for a number of uses or a time, wrapped to the asking
//! device alone; what is left of a release is refused once used up or out of time (the server's
//! clock moved ahead), to another device of the same agent and to another agent; an approval
//! after the agent was revoked is refused; marking deletes the wraps agents held. On SQLite and
//! PostgreSQL.

use std::sync::atomic::Ordering;

use agentkeys_tests::{Backend, DaemonHost, Master, TestDb, skewed_server};
use serde_json::Value;
use sqlx::{Connection as _, Row as _};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(bytes)))
}

const SECOND_MS: i64 = 1000;

/// How many rows of `table` are about `service`, straight from the server's database.
async fn rows_of(db: &TestDb, table: &str, service: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.expect("connect to the test database");
    let query = match table {
        "releases" => "SELECT COUNT(*) AS n FROM releases WHERE service = $1",
        "credential_wraps" => "SELECT COUNT(*) AS n FROM credential_wraps WHERE service = $1",
        other => panic!("no count for table {other}"),
    };
    sqlx::query(query).bind(service).fetch_one(&mut conn).await.expect("count rows").get::<i64, _>("n")
}

/// A master with `prod-db` stored high-value, and agent `bot` paired with it in scope: the
/// master, the agent's machine and the agent's id.
fn marked_for_bot(server: &str) -> (Master, DaemonHost, String) {
    let master = Master::new(server);
    master.init();
    master.ok(&["store", "prod-db", "--high-value", "--yes"], Some(b"postgres://prod-secret"));
    let host = DaemonHost::new(server);
    let bot = host.pair(&master, "bot", "prod-db");
    (master, host, bot)
}

/// The agent's `run` of `printenv K` with `K` bound to `service`.
fn agent_reads(host: &DaemonHost, agent: &str, service: &str) -> std::process::Output {
    let binding = format!("K={service}");
    host.run(&[
        "run",
        "--session-id",
        &DaemonHost::session_arg(agent),
        "--no-mask",
        "--env",
        &binding,
        "--",
        "printenv",
        "K",
    ])
}

/// Asserts the read was held for approval and returns the release request's code, as the
/// master's queue lists it (and as the agent was told).
fn held(master: &Master, read: &std::process::Output, service: &str) -> String {
    let stderr = text(&read.stderr);
    assert_eq!(read.status.code(), Some(6), "a high-value read waits for approval: {stderr}");
    assert!(stderr.contains("APPROVAL_REQUIRED") && stderr.contains("high-value"), "{stderr}");
    let listed = json_of(&master.ok(&["requests", "--json"], None));
    let releases: Vec<&Value> = listed["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "release" && r["scope"][0] == service)
        .collect();
    let newest = releases.last().unwrap_or_else(|| panic!("no release request for {service}: {listed}"));
    let code = newest["code"].as_str().unwrap().to_owned();
    assert!(stderr.contains(&code), "the agent is told the code {code}: {stderr}");
    code
}

async fn a_release_serves_what_was_approved_to_the_asking_device_alone(backend: Backend) {
    let Some((db, server, skew)) = skewed_server(backend).await else { return };
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "prod-db", "--high-value", "--yes"], Some(b"postgres://prod-secret"));
    master.ok(&["store", "openai"], Some(b"sk-everyday"));
    let host = DaemonHost::new(&server.url);
    let bot = host.pair(&master, "bot", "openai,prod-db");
    // An everyday credential in scope is read as before; the high-value one waits.
    assert_eq!(text(&agent_reads(&host, &bot, "openai").stdout).trim(), "sk-everyday");
    let code = held(&master, &agent_reads(&host, &bot, "prod-db"), "prod-db");
    // Asking again while it is pending names the same request, not a new one.
    assert_eq!(held(&master, &agent_reads(&host, &bot, "prod-db"), "prod-db"), code);
    let shown = text(&master.ok(&["requests"], None));
    assert!(shown.contains("read high-value prod-db as bot"), "{shown}");
    // --uses and --for are for releases only; --for is at most a day.
    let too_long = master.run(&["approve", &code, "--for", "25h", "--yes"], None);
    assert_eq!(too_long.status.code(), Some(2), "{}", text(&too_long.stderr));
    master.ok(&["approve", &code, "--uses", "1", "--yes"], None);
    let served = agent_reads(&host, &bot, "prod-db");
    assert_eq!(text(&served.stdout).trim(), "postgres://prod-secret", "{}", text(&served.stderr));
    // One use: the next read asks anew.
    let second = held(&master, &agent_reads(&host, &bot, "prod-db"), "prod-db");
    assert_ne!(second, code, "a used-up release opens a new request");
    assert_eq!(rows_of(&db, "releases", "prod-db").await, 0, "the wrap went with its last use");
    assert_eq!(rows_of(&db, "credential_wraps", "prod-db").await, 0, "no agent holds its key ahead");
    // Another device of the same agent gets nothing of a release to the first.
    let spare = DaemonHost::new(&server.url);
    let same_bot = spare.pair(&master, "bot", "openai,prod-db");
    assert_eq!(same_bot, bot, "the second machine joins agent bot");
    master.ok(&["approve", &second, "--uses", "2", "--yes"], None);
    let other_device = held(&master, &agent_reads(&spare, &bot, "prod-db"), "prod-db");
    assert_ne!(other_device, second);
    // Nor does another agent in whose scope it is.
    let other_host = DaemonHost::new(&server.url);
    let other = other_host.pair(&master, "other", "prod-db");
    held(&master, &agent_reads(&other_host, &other, "prod-db"), "prod-db");
    // The asking device has its two uses, then no more.
    for _ in 0..2 {
        let served = agent_reads(&host, &bot, "prod-db");
        assert_eq!(text(&served.stdout).trim(), "postgres://prod-secret", "{}", text(&served.stderr));
    }
    let third = held(&master, &agent_reads(&host, &bot, "prod-db"), "prod-db");
    assert_eq!(rows_of(&db, "releases", "prod-db").await, 0);
    // --for alone: any number of reads, until the time runs out on the server's clock (moved
    // less than the 60 s a signed request may be off by).
    master.ok(&["approve", &third, "--for", "30s", "--yes"], None);
    for _ in 0..3 {
        let served = agent_reads(&host, &bot, "prod-db");
        assert!(served.status.success(), "{}", text(&served.stderr));
    }
    skew.fetch_add(45 * SECOND_MS, Ordering::Relaxed);
    held(&master, &agent_reads(&host, &bot, "prod-db"), "prod-db");
    // The audit says who released what to whom.
    let audit = text(&master.ok(&["usage", "bot", "--since", "2h", "--json"], None));
    assert!(audit.contains("prod-db"), "{audit}");
}

async fn an_approval_after_the_agent_was_revoked_is_refused(backend: Backend) {
    let Some((_db, server, _)) = skewed_server(backend).await else { return };
    let (master, host, bot) = marked_for_bot(&server.url);
    let code = held(&master, &agent_reads(&host, &bot, "prod-db"), "prod-db");
    master.ok(&["revoke", "bot", "--yes"], None);
    let late = master.run(&["approve", &code, "--yes"], None);
    assert!(!late.status.success(), "an approval after revoke releases nothing");
    assert!(text(&late.stderr).contains(&code) || text(&late.stderr).contains("no "), "{}", text(&late.stderr));
    let refused = agent_reads(&host, &bot, "prod-db");
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused.stderr));
}

async fn marking_takes_the_keys_agents_held_and_clearing_gives_them_back(backend: Backend) {
    let Some((db, server, _)) = skewed_server(backend).await else { return };
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "stripe"], Some(b"sk-live-1"));
    let host = DaemonHost::new(&server.url);
    let bot = host.pair(&master, "bot", "stripe");
    assert_eq!(text(&agent_reads(&host, &bot, "stripe").stdout).trim(), "sk-live-1");
    master.ok(&["store", "stripe", "--high-value", "--yes"], Some(b"sk-live-2"));
    held(&master, &agent_reads(&host, &bot, "stripe"), "stripe");
    assert_eq!(rows_of(&db, "credential_wraps", "stripe").await, 0, "marking deleted the agent's wraps");
    // A new version without the flag keeps the mark.
    master.ok(&["store", "stripe"], Some(b"sk-live-3"));
    held(&master, &agent_reads(&host, &bot, "stripe"), "stripe");
    // The master's own read of it is critical, asked on this machine before the value is printed:
    // with no terminal and no --yes it is refused and prints nothing; with presence checks on a
    // bare --yes is refused; with them off --yes answers, and the warning says presence was skipped.
    let asked = master.run(&["read", "stripe"], None);
    assert_eq!(asked.status.code(), Some(2), "{}", text(&asked.stderr));
    assert!(text(&asked.stderr).contains("`high-value-read` needs confirmation"), "{}", text(&asked.stderr));
    assert!(asked.stdout.is_empty());
    let mut bare = master.command(&["read", "stripe", "--yes"]);
    bare.env("AGENTKEYS_BIOMETRIC", "required");
    let bare = bare.output().unwrap();
    assert_eq!(bare.status.code(), Some(2), "{}", text(&bare.stderr));
    assert!(text(&bare.stderr).contains("`high-value-read` is a critical operation"), "{}", text(&bare.stderr));
    assert!(bare.stdout.is_empty());
    let read = master.run(&["read", "stripe", "--yes"], None);
    assert_eq!(read.stdout, b"sk-live-3", "{}", text(&read.stderr));
    assert!(text(&read.stderr).contains("presence check skipped"), "{}", text(&read.stderr));
    // `run` asks once, before the command starts.
    let run = ["run", "--no-mask", "--env", "K=stripe", "--env", "L=stripe", "--", "printenv", "K"];
    let refused = master.run(&run, None);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(refused.stdout.is_empty(), "the command did not start");
    let ran = master.run(&[&["--yes"], &run[..]].concat(), None);
    assert_eq!(text(&ran.stdout).trim(), "sk-live-3", "{}", text(&ran.stderr));
    assert_eq!(text(&ran.stderr).matches("presence check skipped").count(), 1, "{}", text(&ran.stderr));
    // Removing it does not drop the mark: stored again, it is still high-value.
    master.ok(&["rm", "stripe"], None);
    master.ok(&["store", "stripe"], Some(b"sk-live-3b"));
    held(&master, &agent_reads(&host, &bot, "stripe"), "stripe");
    // A master slot that never saw the mark (its memory gone) cannot drop it by accident either:
    // the server's removal marker keeps it, and a store that does not say is refused.
    master.ok(&["rm", "stripe"], None);
    std::fs::remove_file(master.session_dir().join("seen.json")).expect("the slot's memory");
    let unsaid = master.run(&["store", "stripe"], Some(b"sk-live-3c"));
    assert_eq!(unsaid.status.code(), Some(6), "{}", text(&unsaid.stderr));
    assert!(text(&unsaid.stderr).contains("--high-value=false"), "{}", text(&unsaid.stderr));
    master.ok(&["store", "stripe", "--high-value", "--yes"], Some(b"sk-live-3c"));
    held(&master, &agent_reads(&host, &bot, "stripe"), "stripe");
    // Clearing wraps it to the agents in its scope again.
    master.ok(&["store", "stripe", "--high-value=false", "--yes"], Some(b"sk-live-4"));
    assert_eq!(text(&agent_reads(&host, &bot, "stripe").stdout).trim(), "sk-live-4");
    // A pending release of a credential no longer high-value is refused at approval.
    let listed = json_of(&master.ok(&["requests", "--json"], None));
    if let Some(stale) = listed["requests"].as_array().unwrap().iter().find(|r| r["kind"] == "release") {
        let refused = master.run(&["approve", stale["code"].as_str().unwrap(), "--yes"], None);
        assert!(!refused.status.success(), "{}", text(&refused.stderr));
    }
}

/// Every way an agent reads — MCP `get_credential` with a reason, a descriptor, `run` through a
/// `serve` daemon that caches `run` values — asks for the release and is served by it, and the
/// daemon keeps no high-value value for the next run.
async fn every_agent_path_asks_and_none_caches_a_release(backend: Backend) {
    let Some((_db, server, _)) = skewed_server(backend).await else { return };
    let (master, host, bot) = marked_for_bot(&server.url);
    let session = DaemonHost::session_arg(&bot);
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("daemon.sock");
    let mut serve = agentkeys_tests::spawn_serving(host.command(&[
        "--session-id",
        &session,
        "--cache-ttl",
        "60",
        "serve",
        "--socket",
        socket.to_str().unwrap(),
    ]));
    let mcp = |reason: &str| {
        agentkeys_tests::mcp_tool_answer(
            &socket,
            "get_credential",
            serde_json::json!({ "service": "prod-db", "reason": reason }),
        )
    };
    // MCP: the tool error names the request; the owner sees the reason.
    let asked = mcp("migrate the orders table");
    assert_eq!(asked["result"]["isError"], true, "{asked}");
    let error = &asked["result"]["structuredContent"]["error"];
    assert_eq!(error["code"], "APPROVAL_REQUIRED", "{asked}");
    let code = error["request_code"].as_str().unwrap_or_else(|| panic!("no request code: {asked}")).to_owned();
    let listed = text(&master.ok(&["requests"], None));
    assert!(listed.contains(&code) && listed.contains("migrate the orders table"), "{listed}");
    master.ok(&["approve", &code, "--uses", "2", "--yes"], None);
    let served = mcp("migrate the orders table");
    assert_eq!(served["result"]["structuredContent"]["value"], "postgres://prod-secret", "{served}");
    // The second use as a descriptor; then none is left.
    let delivered = agentkeys_core::daemon_client::get_credential_fd(&socket, "prod-db").unwrap();
    assert_eq!(delivered.read().unwrap().as_slice(), b"postgres://prod-secret");
    let refused = agentkeys_core::daemon_client::get_credential_fd(&socket, "prod-db").unwrap_err();
    assert_eq!(refused.exit_code, 6, "{refused}");
    assert_eq!(refused.code, Some(agentkeys_proto::ErrorCode::ApprovalRequired));
    // The refused descriptor left a request open (without a reason): deny it, so the next read
    // opens its own.
    let listed = json_of(&master.ok(&["requests", "--json"], None));
    for open in listed["requests"].as_array().unwrap() {
        master.ok(&["deny", open["code"].as_str().unwrap()], None);
    }
    // `run` through the daemon: one approved use, and the next run asks again (not cached).
    let through = || {
        let mut command = host.command(&[
            "--session-id",
            &session,
            "run",
            "--no-mask",
            "--reason",
            "nightly backup",
            "--env",
            "K=prod-db",
            "--",
            "printenv",
            "K",
        ]);
        command.env("AGENTKEYS_DAEMON_SOCKET", &socket);
        command.output().expect("run agentkeys-daemon run")
    };
    let code = held(&master, &through(), "prod-db");
    let listed = text(&master.ok(&["requests"], None));
    assert!(listed.contains("nightly backup"), "the daemon's --reason reaches the owner: {listed}");
    master.ok(&["approve", &code, "--yes"], None);
    assert_eq!(text(&through().stdout).trim(), "postgres://prod-secret");
    held(&master, &through(), "prod-db");
    let _ = serve.kill();
    let _ = serve.wait();
}

/// Through the official Python MCP SDK: `get_credential` with `wait_s` waits while the owner
/// decides from another process, with progress notifications naming the request; the value is
/// served once and the next read asks again; a denial ends the wait as `DENIED`; `wait_s` out of
/// range is `INVALID_INPUT`.
async fn an_mcp_read_waits_for_the_owners_decision(backend: Backend) {
    use std::io::BufRead as _;
    let Some(python) = agentkeys_tests::test_python() else { return };
    let Some((_db, server, _)) = skewed_server(backend).await else { return };
    let (master, host, _bot) = marked_for_bot(&server.url);
    let expect = serde_json::json!({ "service": "prod-db", "reason": "rotate the replica password" });
    let mut client = std::process::Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/mcp/mcp_client.py"))
        .args(["release", &expect.to_string()])
        .env("AGENTKEYS_DAEMON_BIN", agentkeys_tests::bin("agentkeys-daemon"))
        .env("AGENTKEYS_HOME", host.home.path())
        .env("AGENTKEYS_SERVER", &host.server)
        .env("AGENTKEYS_SESSION_STORE", "file")
        .env_remove("AGENTKEYS_SESSION_ID")
        .env_remove("XDG_RUNTIME_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the Python MCP client");
    let stderr = std::io::BufReader::new(client.stderr.take().unwrap());
    let mut log = Vec::new();
    let mut decided = Vec::new();
    // Each wait announces itself in a progress notification: the first is approved, the second denied.
    for line in stderr.lines() {
        let line = line.expect("read the client's stderr");
        log.push(line.clone());
        let Some(message) = line.strip_prefix("PROGRESS ") else { continue };
        let code = message.rsplit(' ').next().unwrap().to_owned();
        if decided.contains(&code) {
            continue;
        }
        // The first was opened by the waiting read and shows its reason (the second by a read
        // without one).
        let listed = text(&master.ok(&["requests"], None));
        assert!(listed.contains(&code), "{listed}");
        assert!(!decided.is_empty() || listed.contains("rotate the replica password"), "{listed}");
        match decided.len() {
            0 => master.ok(&["approve", &code, "--yes"], None),
            _ => master.ok(&["deny", &code], None),
        };
        decided.push(code);
    }
    let out = client.wait_with_output().expect("wait for the Python MCP client");
    assert!(out.status.success(), "the MCP client failed:\n{}", log.join("\n"));
    let result = json_of(&out.stdout);
    assert_eq!(result["out_of_range"], "INVALID_INPUT", "{result}");
    assert_eq!(result["value"], "postgres://prod-secret", "{result}");
    assert_eq!(result["again"], "APPROVAL_REQUIRED", "served once: {result}");
    assert_eq!(result["denied"], "DENIED", "{result}");
    assert_eq!(decided.len(), 2, "two waits, each announced: {log:?}");
    assert_eq!(result["again_code"], decided[1].as_str(), "the next read opened the request later denied");
    let progress = result["progress"].as_array().unwrap();
    assert!(progress.iter().all(|p| p["total"] == 120.0), "{progress:?}");
}

/// Two master devices approve one release at the same moment: one wins, the other is told it was
/// decided already (not "no such request", and no look-up miss counted); one release exists.
async fn two_masters_approving_one_release_at_once_one_wins(backend: Backend) {
    let Some((db, server, _)) = skewed_server(backend).await else { return };
    let (laptop, host, bot) = marked_for_bot(&server.url);
    let desktop = Master::new(&server.url);
    let joining = desktop.start_join("desktop");
    let joined = laptop.approve_pairing(&joining, &["--yes"]);
    assert!(joined.status.success(), "{}", text(&joined.stderr));
    assert_eq!(joining.finish().0, 0);
    let code = held(&laptop, &agent_reads(&host, &bot, "prod-db"), "prod-db");
    let spawn = |master: &Master| {
        master
            .command(&["approve", &code, "--yes"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start approve")
    };
    let (a, b) = (spawn(&laptop), spawn(&desktop));
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let won: Vec<bool> = outs.iter().map(|o| o.status.success()).collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "exactly one wins: {won:?}");
    let lost = outs.iter().find(|o| !o.status.success()).unwrap();
    assert!(text(&lost.stderr).contains("approved already"), "{}", text(&lost.stderr));
    assert_eq!(rows_of(&db, "releases", "prod-db").await, 1);
    assert!(agent_reads(&host, &bot, "prod-db").status.success());
}

on_both_backends!(
    two_masters_approving_one_release_at_once_one_wins,
    an_mcp_read_waits_for_the_owners_decision,
    every_agent_path_asks_and_none_caches_a_release,
    a_release_serves_what_was_approved_to_the_asking_device_alone,
    an_approval_after_the_agent_was_revoked_is_refused,
    marking_takes_the_keys_agents_held_and_clearing_gives_them_back,
);
