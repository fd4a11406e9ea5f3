//! Presence gating of the master's critical operations (PRODUCT.md §5), end to end:
//!
//! * the policy matrix — `--yes` alone refused, `--no-biometric`, `AGENTKEYS_BIOMETRIC`,
//!   `biometric` in config.toml, weakening the policy being itself critical — and the audit
//!   recording how presence was shown;
//! * every silent command run with no terminal and no presence backend, asking nothing;
//! * the terminal fallback in a real pseudo-terminal: a typed confirmation, the session
//!   passphrase, Ctrl-C;
//! * the real fprintd (Debian's, with libfprint's virtual device) on a private system bus, and
//!   polkit through python-dbusmock's `polkitd` template: a matching finger, a wrong one, none
//!   (timeout, the reader released), polkit refusing fprintd and then allowing, denying or
//!   hanging on AgentKeys' own action.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use agentkeys_proto::critical::Critical;
use agentkeys_tests::fprint::{self, ACTION_AGENTKEYS, ENROLLED, FprintRig};
use agentkeys_tests::{DaemonHost, Master, ServerProcess, TestDb, without_terminal};

use crate::terminal::{exit_code, in_terminal};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn server() -> (TestDb, ServerProcess) {
    let db = TestDb::new(agentkeys_tests::Backend::Sqlite).await.expect("sqlite");
    let server = ServerProcess::start(&db.url);
    (db, server)
}

/// `agentkeys ARGS` with presence checks on (the suite's default is off), no controlling
/// terminal unless the caller adds one, and the system bus at `bus` (none: no fprintd, no polkit).
fn gated(master: &Master, args: &[&str], bus: Option<&str>) -> Command {
    let mut command = master.command(args);
    command
        .env_remove("AGENTKEYS_BIOMETRIC")
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.unwrap_or("unix:path=/nonexistent/system_bus_socket"))
        .env("AGENTKEYS_PRESENCE_TIMEOUT", "20");
    command
}

fn detached_output(command: &Command) -> std::process::Output {
    without_terminal(command).stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap()
}

/// An initialized master with agent `bot` (scope openai), made without presence checks.
fn master_with_agent(server: &ServerProcess) -> Master {
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["agent", "create", "bot", "--scope", "openai", "--yes"], None);
    master
}

fn agent_field(master: &Master, field: &str) -> String {
    let agents: serde_json::Value = serde_json::from_slice(&master.ok(&["--json", "agents"], None)).unwrap();
    let bot = agents["agents"].as_array().unwrap().iter().find(|a| a["label"] == "bot").cloned().unwrap();
    bot[field].as_str().unwrap().to_owned()
}

/// The presence each audited action of this account recorded, newest last.
fn audited_presence(master: &Master, action: &str) -> Vec<String> {
    let usage: serde_json::Value =
        serde_json::from_slice(&master.ok(&["usage", "--json", "--since", "1h"], None)).unwrap();
    usage["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action && e["outcome"] == "allowed")
        .map(|e| e["presence"].as_str().unwrap_or("-").to_owned())
        .collect()
}

#[tokio::test]
async fn yes_no_biometric_and_the_policy_settings_follow_the_contract() {
    let (_db, server) = server().await;
    let master = master_with_agent(&server);

    // --yes alone does not show presence.
    let out = gated(&master, &["agent", "upgrade", "bot", "--tier", "admin", "--yes"], None).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--no-biometric"), "{}", text(&out.stderr));
    // No terminal and no backend: refused, nothing changed.
    let out = detached_output(&gated(&master, &["agent", "upgrade", "bot", "--tier", "admin"], None));
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no way to show presence here"), "{}", text(&out.stderr));
    assert_eq!(agent_field(&master, "tier"), "standard");
    // --no-biometric skips presence but not the y/N question; --yes answers that.
    let out = detached_output(&gated(&master, &["--no-biometric", "agent", "upgrade", "bot", "--tier", "admin"], None));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = gated(&master, &["--no-biometric", "--yes", "agent", "upgrade", "bot", "--tier", "admin"], None)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Warning: presence check skipped (--no-biometric)"), "{}", text(&out.stderr));
    assert_eq!(agent_field(&master, "tier"), "admin");
    assert_eq!(audited_presence(&master, "agent.tier"), ["skipped"]);

    let bad = gated(&master, &["config", "get", "biometric"], None).env("AGENTKEYS_BIOMETRIC", "sometimes").output();
    assert_eq!(bad.unwrap().status.code(), Some(2));

    // Weakening the policy is itself critical; strengthening is not.
    let config = master.home.path().join("config.toml");
    let out = detached_output(&gated(&master, &["config", "set", "biometric", "off"], None));
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(!config.exists());
    let out = detached_output(&gated(&master, &["config", "set", "biometric", "required"], None));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = gated(&master, &["config", "get", "biometric"], None).output().unwrap();
    assert_eq!(text(&got.stdout).trim(), "required (from config.toml)");

    // required: the terminal is no fallback.
    let mut refused = in_terminal(gated(&master, &["revoke", "bot"], None));
    let shown = refused.exp_eof().unwrap();
    assert!(shown.contains("is required and none answered") && !shown.contains("to confirm"), "{shown}");
    assert_eq!(exit_code(&refused), 6);
    let mut command = gated(&master, &["revoke", "bot"], None);
    command.env("AGENTKEYS_BIOMETRIC", "required");
    let mut refused = in_terminal(command);
    refused.exp_eof().unwrap();
    assert_eq!(exit_code(&refused), 6);
    assert_eq!(agent_field(&master, "status"), "pending");

    // Off in the config file: a warning names it, and the audit says skipped.
    let out = gated(&master, &["--no-biometric", "--yes", "config", "set", "biometric", "off"], None).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = gated(&master, &["revoke", "bot", "--yes"], None).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("presence check skipped (config.toml)"), "{}", text(&out.stderr));
    assert_eq!(audited_presence(&master, "agent.revoke"), ["skipped"]);
}

/// The command line of each critical operation (an exhaustive match: a new operation on the
/// shared list fails to compile here until it has one); `None` for one only the current state
/// makes critical (`policy set` weakening the policy in force: tests/e2e/policy.rs).
fn critical_command_line(op: Critical) -> Option<Vec<&'static str>> {
    Some(match op {
        Critical::Approve => vec!["approve", "7K3D-QX2M"],
        Critical::Revoke => vec!["revoke", "bot"],
        Critical::Teardown => vec!["teardown", "bot"],
        Critical::InitForce => vec!["init", "--force"],
        Critical::AgentCreate => vec!["agent", "create", "another"],
        Critical::AgentUpgrade => vec!["agent", "upgrade", "bot", "--tier", "admin"],
        Critical::ScopeWiden => vec!["scope", "bot", "--add", "github"],
        Critical::ConfigWeaken => vec!["config", "set", "require-presence", "off"],
        Critical::PresenceEnroll => vec!["presence", "enroll"],
        Critical::PresenceRemove => vec!["presence", "remove", "yubikey"],
        Critical::DeviceRevoke => vec!["device", "revoke", "laptop"],
        Critical::Recover => vec!["recover"],
        Critical::RecoveryKeyRotate => vec!["recovery-key", "rotate"],
        Critical::HighValueChange => vec!["store", "openai", "--high-value"],
        Critical::PolicyWeaken => return None,
        // `read` is critical only for a high-value credential (tests/e2e/releases.rs).
        Critical::HighValueRead => return None,
        // Critical only when a policy rule says so, which the server alone decides (policy.rs).
        Critical::PolicyRule => return None,
    })
}

/// Every operation of the one critical list — every one the server enforces presence for, and
/// `init --force` — is refused on a bare `--yes` before it does any work (no look-up, no request).
#[tokio::test]
async fn every_critical_operation_is_refused_on_a_bare_yes_before_any_work() {
    let (_db, server) = server().await;
    let master = master_with_agent(&server);
    master.ok(&["config", "set", "require-presence", "on"], None);
    let before = text(&master.ok(&["usage", "--json", "--since", "1h"], None));
    for op in Critical::ALL {
        let Some(mut args) = critical_command_line(op) else { continue };
        args.push("--yes");
        let out = detached_output(&gated(&master, &args, None));
        assert_eq!(out.status.code(), Some(2), "{op}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(&format!("`{op}` is a critical operation")), "{op}: {stderr}");
        assert!(stderr.contains("--no-biometric"), "{op}: {stderr}");
    }
    // Nothing reached the server: the only new rows are those of the first `usage` itself.
    let after: serde_json::Value =
        serde_json::from_slice(&master.ok(&["usage", "--json", "--since", "1h"], None)).unwrap();
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    let entries = |v: &serde_json::Value| v["entries"].as_array().unwrap().clone();
    let new: Vec<String> =
        entries(&after)[entries(&before).len()..].iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect();
    assert_eq!(new, ["audit.read", "agent.list"], "no look-up, no request: only the first usage's own rows");
    assert_eq!(agent_field(&master, "tier"), "standard");
    assert_eq!(agent_field(&master, "status"), "pending");
}

/// Every silent command of §5, with no terminal, no presence backend and presence checks on:
/// each works and asks nothing.
#[tokio::test]
async fn silent_commands_ask_nothing_without_a_terminal() {
    let (_db, server) = server().await;
    let master = master_with_agent(&server);
    let host = DaemonHost::new(&server.url);
    let pairing = host.start_pair("quiet", "openai");
    let mut silent: Vec<Vec<String>> = [
        vec!["whoami"],
        vec!["list"],
        vec!["read", "openai"],
        vec!["run", "--env", "K=openai", "--", "true"],
        vec!["usage"],
        vec!["agents"],
        vec!["link", "bot", "--alias", "robot"],
        vec!["requests"],
        vec!["scope", "bot", "--remove", "openai"],
        vec!["init"],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(str::to_owned).collect())
    .collect();
    silent.push(vec!["deny".to_owned(), pairing.prompt.code.clone()]);
    let mut store = without_terminal(&gated(&master, &["store", "openai"], None))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut store.stdin.take().unwrap(), b"sk-silent").unwrap();
    let stored = store.wait_with_output().unwrap();
    assert!(stored.status.success() && !text(&stored.stderr).contains("presence"), "{}", text(&stored.stderr));
    silent.push(vec!["rm".to_owned(), "openai".to_owned()]);
    for args in &silent {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = detached_output(&gated(&master, &args, None));
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "agentkeys {args:?}: {stderr}");
        for asked in ["presence", "to confirm", "assphrase", "[y/N]"] {
            assert!(!stderr.contains(asked), "agentkeys {args:?} asked ({asked}): {stderr}");
        }
    }
    let (code, _) = pairing.finish();
    assert_eq!(code, 6, "the denied pairing ends");
}

#[tokio::test]
async fn the_terminal_confirms_by_typing_the_operation() {
    let (_db, server) = server().await;
    let master = master_with_agent(&server);

    let mut wrong = in_terminal(gated(&master, &["revoke", "bot"], None));
    wrong.exp_string("Revoke all sessions of agent bot").unwrap();
    wrong.exp_string("Type \"revoke bot\" to confirm: ").unwrap();
    wrong.send_line("y").unwrap();
    let shown = wrong.exp_eof().unwrap();
    assert!(shown.contains("presence declined"), "{shown}");
    assert_eq!(exit_code(&wrong), 6);

    let mut cancelled = in_terminal(gated(&master, &["revoke", "bot"], None));
    cancelled.exp_string("to confirm: ").unwrap();
    cancelled.send_control('c').unwrap();
    let shown = cancelled.exp_eof().unwrap();
    assert!(shown.contains("cancelled"), "{shown}");
    assert_eq!(exit_code(&cancelled), 6);
    assert_eq!(agent_field(&master, "status"), "pending", "nothing happened (no daemon has linked yet)");

    let mut typed = in_terminal(gated(&master, &["revoke", "bot"], None));
    typed.exp_string("Type \"revoke bot\" to confirm: ").unwrap();
    typed.send_line("revoke bot").unwrap();
    typed.exp_eof().unwrap();
    assert_eq!(exit_code(&typed), 0);
    assert_eq!(agent_field(&master, "status"), "revoked");
    assert_eq!(audited_presence(&master, "agent.revoke"), ["prompt"]);
}

#[tokio::test]
async fn a_passphrase_master_confirms_with_its_passphrase() {
    const PASSPHRASE: &str = "correct horse battery";
    let (_db, server) = server().await;
    let master = Master::new(&server.url);
    let mut init = in_terminal(master.command(&["init", "--passphrase"]));
    for prompt in ["New passphrase", "Repeat it"] {
        init.exp_string(prompt).unwrap();
        init.send_line(PASSPHRASE).unwrap();
    }
    init.exp_eof().unwrap();
    assert_eq!(exit_code(&init), 0);

    let create = |answers: &[&str]| {
        let mut session = in_terminal(gated(&master, &["agent", "create", "bot", "--scope", "openai"], None));
        session.exp_string("Passphrase for the AgentKeys 'master' session: ").unwrap();
        session.send_line(PASSPHRASE).unwrap();
        session.exp_string("Create agent bot (tier standard, scope openai)").unwrap();
        for answer in answers {
            session.exp_string("assphrase").unwrap();
            session.send_line(answer).unwrap();
        }
        let shown = session.exp_eof().unwrap();
        (exit_code(&session), shown)
    };
    let (code, shown) = create(&["one", "two", "three"]);
    assert_eq!(code, 6, "{shown}");
    assert!(shown.contains("wrong passphrase (3 attempts)"), "{shown}");
    let (code, shown) = create(&[PASSPHRASE]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("AKL1-"), "the link code: {shown}");
}

/// Spawns `command` with no terminal and returns it with a channel of its stderr lines.
fn spawn_watching(command: &Command) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = without_terminal(command).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for the line asking for a finger (the readiness signal of a verification); returns
/// everything read up to it.
fn wait_for_finger_prompt(lines: &mpsc::Receiver<String>) -> String {
    let mut seen = String::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("Touch the fingerprint reader") {
            return seen;
        }
    }
    panic!("no finger prompt:\n{seen}");
}

fn rest(lines: &mpsc::Receiver<String>) -> String {
    lines.iter().collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn a_matching_finger_on_the_real_fprintd_lets_approve_proceed() {
    if !fprint::available() {
        return;
    }
    let rig = FprintRig::start();
    let (_db, server) = server().await;
    let master = Master::new(&server.url);
    master.init();
    let host = DaemonHost::new(&server.url);
    let pairing = host.start_pair("fingered", "openai");
    let otp = master.claim_pairing(&pairing);
    let (mut approve, lines) =
        spawn_watching(&gated(&master, &["approve", &pairing.prompt.code, "--otp", &otp], Some(&rig.bus)));
    let shown = wait_for_finger_prompt(&lines);
    assert!(shown.contains("Approve pairing of fingered (device "), "the exact operation: {shown}");
    rig.scan(ENROLLED);
    assert!(approve.wait().unwrap().success(), "{}", rest(&lines));
    let (code, log) = pairing.finish();
    assert_eq!(code, 0, "{log}");
    assert_eq!(audited_presence(&master, "request.approve"), ["fprintd"]);
    assert!(rig.claimable(), "the reader was released");
}

#[tokio::test]
async fn a_wrong_finger_or_none_changes_nothing_and_releases_the_reader() {
    if !fprint::available() {
        return;
    }
    let rig = FprintRig::start();
    let (_db, server) = server().await;
    let master = master_with_agent(&server);

    let (mut revoke, lines) = spawn_watching(&gated(&master, &["revoke", "bot"], Some(&rig.bus)));
    wait_for_finger_prompt(&lines);
    rig.scan("somebody-else");
    assert_eq!(revoke.wait().unwrap().code(), Some(6));
    assert!(rest(&lines).contains("the finger did not match"));
    assert_eq!(agent_field(&master, "status"), "pending");
    assert!(rig.claimable());

    let mut command = gated(&master, &["revoke", "bot"], Some(&rig.bus));
    command.env("AGENTKEYS_PRESENCE_TIMEOUT", "2");
    let (mut revoke, lines) = spawn_watching(&command);
    wait_for_finger_prompt(&lines);
    assert_eq!(revoke.wait().unwrap().code(), Some(6));
    assert!(rest(&lines).contains("no presence shown within 2s"));
    assert!(rig.claimable(), "a timed-out check released the reader: another client can claim it");
    assert_eq!(agent_field(&master, "status"), "pending");
}

#[tokio::test]
async fn polkit_stands_in_when_fprintd_is_refused_and_can_deny_or_hang() {
    if !fprint::available() {
        return;
    }
    let rig = FprintRig::start();
    let (_db, server) = server().await;
    let master = master_with_agent(&server);
    let short = |args: &[&str]| {
        let mut command = gated(&master, args, Some(&rig.bus));
        command.env("AGENTKEYS_PRESENCE_TIMEOUT", "2");
        detached_output(&command)
    };

    // polkit refuses fprintd's verify action, and AgentKeys' own action with no way to obtain it
    // by authenticating: both step aside, and with no terminal nothing is left.
    rig.polkit_allow(&[]);
    let out = short(&["agent", "upgrade", "bot", "--tier", "admin"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("fprintd: polkit does not allow fprintd here")
            && stderr.contains("polkit: polkit does not allow this action in this session")
            && stderr.contains("prompt: no terminal"),
        "{stderr}"
    );
    // polkit hangs on AgentKeys' action: the check times out and is cancelled.
    rig.polkit_hang(&[ACTION_AGENTKEYS]);
    let started = std::time::Instant::now();
    let out = short(&["agent", "upgrade", "bot", "--tier", "admin"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no presence shown within 2s"), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10), "bounded by the timeout");
    assert_eq!(agent_field(&master, "tier"), "standard");
    rig.polkit_hang(&[]);
    // polkit allows it (fprintd still refused): presence by polkit.
    rig.polkit_allow(&[ACTION_AGENTKEYS]);
    let out = short(&["agent", "upgrade", "bot", "--tier", "admin"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(audited_presence(&master, "agent.tier"), ["polkit"]);
}

/// The account setting: with `require-presence on`, the server refuses critical operations made
/// with presence skipped (and turning it off without presence), while shown presence passes and
/// silent operations are unaffected.
#[tokio::test]
async fn an_account_that_requires_presence_refuses_skipped_critical_operations() {
    let (_db, server) = server().await;
    let master = master_with_agent(&server);
    master.ok(&["config", "set", "require-presence", "on"], None);
    assert_eq!(text(&master.ok(&["config", "get", "require-presence"], None)).trim(), "on");

    let skipped = master.run(&["revoke", "bot", "--yes"], None);
    assert_eq!(skipped.status.code(), Some(4), "{}", text(&skipped.stderr));
    assert!(text(&skipped.stderr).contains("requires the human's presence"), "{}", text(&skipped.stderr));
    assert_eq!(agent_field(&master, "status"), "pending", "not revoked");
    let lifted = master.run(&["config", "set", "require-presence", "off", "--yes"], None);
    assert_eq!(lifted.status.code(), Some(4), "turning it off needs presence too: {}", text(&lifted.stderr));
    // Every critical operation the server sees, made with presence skipped: refused, unchanged.
    let host = DaemonHost::new(&server.url);
    let pairing = host.start_pair("unattended", "openai");
    let otp = format!("{}\n", master.claim_pairing(&pairing));
    for (args, stdin) in [
        (vec!["agent", "create", "another", "--yes"], None),
        (vec!["agent", "upgrade", "bot", "--tier", "admin", "--yes"], None),
        (vec!["scope", "bot", "--add", "github", "--yes"], None),
        (vec!["teardown", "bot", "--yes"], None),
        (vec!["approve", pairing.prompt.code.as_str(), "--yes"], Some(otp.as_bytes())),
    ] {
        let out = master.run(&args, stdin);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("requires the human's presence"), "{args:?}: {}", text(&out.stderr));
    }
    assert_eq!(agent_field(&master, "tier"), "standard");
    let agents = text(&master.ok(&["agents"], None));
    assert!(!agents.contains("another") && !agents.contains("unattended"), "{agents}");
    master.ok(&["deny", &pairing.prompt.code], None);
    let _ = pairing.finish();
    master.ok(&["scope", "bot", "--remove", "openai"], None);

    let mut typed = in_terminal(gated(&master, &["revoke", "bot"], None));
    typed.exp_string("Type \"revoke bot\" to confirm: ").unwrap();
    typed.send_line("revoke bot").unwrap();
    typed.exp_eof().unwrap();
    assert_eq!(exit_code(&typed), 0);
    assert_eq!(agent_field(&master, "status"), "revoked");

    let mut off = in_terminal(gated(&master, &["config", "set", "require-presence", "off"], None));
    off.exp_string("Change the account's presence requirement from on to off").unwrap();
    off.exp_string("Type \"set require-presence off\" to confirm: ").unwrap();
    off.send_line("set require-presence off").unwrap();
    off.exp_eof().unwrap();
    assert_eq!(exit_code(&off), 0);
    assert_eq!(text(&master.ok(&["config", "get", "require-presence"], None)).trim(), "off");
    assert_eq!(audited_presence(&master, "account.settings.change"), ["-", "prompt"]);
}

/// The `presence=` parameter is part of what is signed: upgraded, added or removed on the way,
/// the request fails its signature; an unknown or repeated method is a bad request; and a
/// recorded method is covered by the audit chain.
#[tokio::test]
async fn the_presence_parameter_is_signed_checked_and_chained() {
    use agentkeys_core::ApiClient;
    use reqwest::Method;
    let (db, server) = server().await;
    let master = master_with_agent(&server);
    let client = ApiClient::for_session(&server.url, master.session()).unwrap();
    let http = agentkeys_tests::http_client();
    let send_to = |signed: &reqwest::Request, target: &str| {
        let mut moved =
            reqwest::Request::new(signed.method().clone(), format!("{}{target}", server.url).parse().unwrap());
        *moved.headers_mut() = signed.headers().clone();
        http.execute(moved)
    };
    let signed = |target: &str| client.build_signed(Method::GET, target, Vec::new()).build().unwrap();

    let honest = http.execute(signed("/v1/session?presence=skipped")).await.unwrap();
    assert_eq!(honest.status(), 200, "{}", honest.text().await.unwrap());
    for (signed_for, sent_to) in [
        ("/v1/session?presence=skipped", "/v1/session?presence=fprintd"),
        ("/v1/session?presence=skipped", "/v1/session"),
        ("/v1/session", "/v1/session?presence=fprintd"),
    ] {
        let response = send_to(&signed(signed_for), sent_to).await.unwrap();
        assert_eq!(response.status(), 401, "{signed_for} sent as {sent_to}");
        assert!(response.text().await.unwrap().contains("SIGNATURE_INVALID"));
    }
    for target in ["/v1/session?presence=face", "/v1/session?presence=prompt&presence=fprintd"] {
        let response = http.execute(signed(target)).await.unwrap();
        assert_eq!(response.status(), 400, "{target}");
    }

    // A recorded method is part of its row's hash.
    master.ok(&["revoke", "bot", "--yes"], None);
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let intact = agentkeys_server::engine::audit::verify_chain(&pool).await.unwrap();
    for statement in ["DROP TRIGGER audit_log_no_update", "DROP TRIGGER audit_log_no_delete"] {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&pool).await.unwrap();
    }
    sqlx::query("UPDATE audit_log SET presence = 'fprintd' WHERE presence = 'skipped'").execute(&pool).await.unwrap();
    assert!(
        agentkeys_server::engine::audit::verify_chain(&pool).await.is_err(),
        "an upgraded presence breaks the chain"
    );
    sqlx::query("UPDATE audit_log SET presence = 'skipped' WHERE presence = 'fprintd'").execute(&pool).await.unwrap();
    assert_eq!(agentkeys_server::engine::audit::verify_chain(&pool).await.unwrap(), intact);
}
