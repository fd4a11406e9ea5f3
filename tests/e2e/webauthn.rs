//! Server-verified presence (PRODUCT.md §2 "Presence key", §5 K11), end to end in a real
//! Chromium with its WebAuthn virtual authenticator: a security key (`usb`) and a platform
//! authenticator (`internal`) enrolled through the real CLI, real critical commands (`approve`
//! of a real pairing, `agent create`, `agent upgrade`, `revoke`) each answered on the server's
//! ceremony page, and every attack the issue lists — each refused with a stable code, nothing
//! changed, audited.
//!
//! The server runs in this process so its clock can be moved (a ceremony's two minutes).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use agentkeys_core::ApiClient;
use agentkeys_core::client::Presence;
use agentkeys_proto::ErrorCode;
use agentkeys_proto::agents::TierChangeRequest;
use agentkeys_proto::ceremony::{EnrollRequest, KeyKind, StartCeremonyRequest};
use agentkeys_tests::browser::{Browser, Page};
use agentkeys_tests::{Backend, DaemonHost, InProcessServer, Master, TestDb, skewed_server};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest as _;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(bytes)))
}

/// Runs `agentkeys ARGS --no-browser`, opens each ceremony link it prints in the browser and
/// checks the page settled as `done`; returns the command's output once it exits.
fn with_key(master: &Master, browser: &mut Browser, ceremonies: usize, args: &[&str]) -> std::process::Output {
    let waiting = master.waiting(args);
    for _ in 0..ceremonies {
        let link = waiting.link();
        let page = browser.open(&link.url);
        assert_eq!(page.state, "done", "{args:?}: {page:?}");
        assert_eq!(page.code, link.code, "the page shows the code the terminal shows");
    }
    let out = waiting.finish();
    assert!(out.status.success(), "agentkeys {args:?} failed ({:?}):\n{}", out.status, text(&out.stderr));
    out
}

fn audit_actions(master: &Master) -> Vec<Value> {
    json_of(&master.ok(&["--json", "usage", "--since", "1h"], None))["entries"].as_array().unwrap().clone()
}

fn has_row(entries: &[Value], action: &str) -> bool {
    entries.iter().any(|e| e["action"] == action)
}

fn agent_tier(master: &Master, label: &str) -> String {
    let agents = json_of(&master.ok(&["--json", "agents"], None));
    let agent = agents["agents"].as_array().unwrap().iter().find(|a| a["label"] == label).cloned().unwrap();
    agent["tier"].as_str().unwrap().to_owned()
}

/// Enrolls the first key (this machine's check, skipped in the suite) through the CLI.
fn enroll_first(master: &Master, browser: &mut Browser, kind: &str, name: &str) -> Value {
    let out = with_key(master, browser, 1, &["--json", "presence", "enroll", kind, "--name", name, "--yes"]);
    json_of(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_security_key_in_chromium_answers_real_critical_commands() {
    let Some((_db, server, _skew)) = skewed_server(Backend::Sqlite).await else { return };
    tokio::task::block_in_place(|| {
        let Some(mut browser) = Browser::start() else { return };
        browser.authenticator("usb");
        let master = Master::new(&server.url);
        master.init();
        master.ok(&["store", "openai"], Some(b"sk-webauthn"));

        let key = enroll_first(&master, &mut browser, "--roaming", "yubikey");
        assert_eq!(key["name"], "yubikey");
        assert_eq!(key["kind"], "roaming");
        let listed = json_of(&master.ok(&["--json", "presence", "list"], None));
        let keys = listed["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1, "{listed}");
        assert!(keys[0]["id"].as_str().unwrap().starts_with("pk_"));
        for field in ["aaguid", "algorithm", "attestation_format", "attestation_trust", "sign_count", "created_at_ms"] {
            assert!(!keys[0][field].is_null(), "presence list shows {field}: {listed}");
        }
        let table = text(&master.ok(&["presence", "list"], None));
        assert!(table.contains("yubikey") && table.contains("roaming"), "{table}");

        // A real pairing, approved with the key: the daemon gets its session.
        let host = DaemonHost::new(&server.url);
        let pairing = host.start_pair("bot", "openai");
        let otp = master.claim_pairing(&pairing);
        with_key(&master, &mut browser, 1, &["approve", &pairing.prompt.code, "--otp", &otp, "--yes"]);
        let (code, stderr) = pairing.finish();
        assert_eq!(code, 0, "pair: {stderr}");

        with_key(&master, &mut browser, 1, &["agent", "create", "builder", "--scope", "openai", "--yes"]);
        with_key(&master, &mut browser, 1, &["agent", "upgrade", "builder", "--tier", "admin", "--yes"]);
        assert_eq!(agent_tier(&master, "builder"), "admin");
        with_key(&master, &mut browser, 1, &["revoke", "bot", "--yes"]);

        // The audit says how presence was shown, by key; usage shows the key's name.
        let entries = audit_actions(&master);
        let revoke = entries.iter().rev().find(|e| e["action"] == "agent.revoke").expect("a revoke row");
        let key_id = keys[0]["id"].as_str().unwrap();
        assert_eq!(revoke["presence"], format!("webauthn:{key_id}"), "{revoke}");
        for action in ["presence.key.enroll", "presence.ceremony.start", "presence.ceremony.complete"] {
            assert!(has_row(&entries, action), "audited: {action}");
        }
        let usage = text(&master.ok(&["usage", "--since", "1h"], None));
        assert!(usage.contains("webauthn (yubikey)"), "{usage}");
        // Every critical command after enrollment was one ceremony: four assertions, used.
        let used =
            entries.iter().filter(|e| e["presence"].as_str().is_some_and(|p| p.starts_with("webauthn:"))).count();
        assert!(used >= 4, "{used} operations carried a verified presence");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_authenticator_enrolls_and_removing_the_last_key_needs_it() {
    let Some((_db, server, _skew)) = skewed_server(Backend::Sqlite).await else { return };
    tokio::task::block_in_place(|| {
        let Some(mut browser) = Browser::start() else { return };
        let platform = browser.authenticator("internal");
        let master = Master::new(&server.url);
        master.init();
        let key = enroll_first(&master, &mut browser, "--platform", "touchid");
        assert_eq!(key["kind"], "platform");
        // A spare security key: its enrollment needs an assertion from the first key (the
        // platform authenticator), then its own ceremony, answered by the security key alone.
        let waiting = master.waiting(&["--json", "presence", "enroll", "--roaming", "--name", "spare"]);
        let assertion = browser.open(&waiting.link().url);
        assert_eq!(assertion.state, "done", "{assertion:?}");
        browser.call(json!({"cmd": "remove_authenticator", "id": platform}));
        browser.authenticator("usb");
        let enrollment = browser.open(&waiting.link().url);
        assert_eq!(enrollment.state, "done", "{enrollment:?}");
        let second = waiting.finish();
        assert!(second.status.success(), "{}", text(&second.stderr));
        assert_eq!(json_of(&second.stdout)["name"], "spare");
        // Removing a key, and then the last one, each need an assertion from an enrolled key.
        with_key(&master, &mut browser, 1, &["presence", "remove", "touchid", "--yes"]);
        let removed = with_key(&master, &mut browser, 1, &["presence", "remove", "spare", "--yes"]);
        assert!(text(&removed.stderr).contains("no longer requires a presence key"), "{}", text(&removed.stderr));
        // The requirement is off: a critical command runs on this machine's check again.
        master.ok(&["agent", "create", "bot", "--yes"], None);
        let entries = audit_actions(&master);
        assert_eq!(entries.iter().filter(|e| e["action"] == "presence.key.remove").count(), 2);
    });
}

/// Seconds the raw clients' clocks run ahead (with the server's, to reach past a ceremony's
/// two minutes without the timestamps going stale).
static CLIENT_SKEW_S: AtomicI64 = AtomicI64::new(0);

fn skewed_now_s() -> i64 {
    agentkeys_core::client::unix_now_s() + CLIENT_SKEW_S.load(Ordering::Relaxed)
}

/// A client holding the master's session, sending requests as it likes.
fn raw_client(master: &Master, server: &InProcessServer) -> ApiClient {
    ApiClient::for_session(&server.url, master.session()).expect("client").with_clock(skewed_now_s)
}

fn body_digest(body: &[u8]) -> String {
    agentkeys_proto::b64::encode(sha2::Sha256::digest(body))
}

/// Opens a ceremony for `method path body` and answers it in the browser; returns its id and
/// what the page showed.
async fn ceremony(client: &ApiClient, browser: &mut Browser, method: &str, path: &str, body: &[u8]) -> (String, Page) {
    let request = StartCeremonyRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        body_digest: body_digest(body),
        operation: "test operation".to_owned(),
    };
    let started = client.start_ceremony(&request).await.expect("start a ceremony");
    let page = tokio::task::block_in_place(|| browser.open(&started.url));
    (started.id, page)
}

/// Sends `method path body` claiming `presence`; the error code it got, if any.
async fn send_claiming(
    client: &ApiClient,
    method: Method,
    path: &str,
    body: &[u8],
    presence: &str,
) -> Option<ErrorCode> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let request = client.build_signed(method, &format!("{path}{separator}presence={presence}"), body.to_vec());
    client.send::<Value>(request).await.err().map(|e| e.code().unwrap_or_else(|| panic!("not an API error: {e}")))
}

fn tier_body(tier: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"tier": tier})).unwrap()
}

async fn master_with_key(server: &InProcessServer, browser: &mut Browser) -> (Master, String, ApiClient) {
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["agent", "create", "bot", "--yes"], None);
    tokio::task::block_in_place(|| enroll_first(&master, browser, "--roaming", "yubikey"));
    let agents = json_of(&master.ok(&["--json", "agents"], None));
    let bot = agents["agents"][0]["agent_id"].as_str().unwrap().to_owned();
    let client = raw_client(&master, server);
    (master, bot, client)
}

async fn server_and_browser(backend: Backend) -> Option<(TestDb, InProcessServer, Arc<AtomicI64>, Browser, String)> {
    let (db, server, skew) = skewed_server(backend).await?;
    let mut browser = tokio::task::block_in_place(Browser::start)?;
    let authenticator = tokio::task::block_in_place(|| browser.authenticator("usb"));
    Some((db, server, skew, browser, authenticator))
}

/// A ceremony answers exactly its request, once, in time, for its account: an assertion for
/// one request sent with another, the same ceremony twice, an expired one, another account's,
/// a forged `presence=fprintd` or made-up ceremony from a client holding the session.
async fn a_ceremony_answers_one_request_once(backend: Backend) {
    let Some((_db, server, skew, mut browser, _)) = server_and_browser(backend).await else { return };
    let (master, bot, client) = master_with_key(&server, &mut browser).await;
    let tier_path = format!("/v1/agents/{bot}/tier");

    // Forged claims from a client that holds the session: refused, tier unchanged.
    for forged in ["fprintd", "skipped", "webauthn:cer_AAAAAAAAAAAAAAAAAAAAAA"] {
        let code = send_claiming(&client, Method::POST, &tier_path, &tier_body("admin"), forged).await;
        assert_eq!(code, Some(ErrorCode::PresenceRequired), "presence={forged}");
    }
    let code = client.change_tier(&bot, &TierChangeRequest { tier: agentkeys_proto::agents::Tier::Admin }).await;
    assert_eq!(code.err().and_then(|e| e.code()), Some(ErrorCode::PresenceRequired), "no presence at all");

    // A ceremony for tier=safe, sent with tier=admin (another body), and with another path.
    let (id, page) = ceremony(&client, &mut browser, "POST", &tier_path, &tier_body("safe")).await;
    assert_eq!(page.state, "done", "{page:?}");
    assert!(page.request.contains(&tier_path), "the page shows the request: {page:?}");
    let claim = format!("webauthn:{id}");
    let code = send_claiming(&client, Method::POST, &tier_path, &tier_body("admin"), &claim).await;
    assert_eq!(code, Some(ErrorCode::PresenceRequired), "another body");
    let code = send_claiming(&client, Method::POST, &format!("/v1/agents/{bot}/revoke"), b"{}", &claim).await;
    assert!(code.is_some(), "another operation");
    assert_eq!(agent_tier(&master, "bot"), "standard", "nothing changed");
    // Its own request: accepted, once.
    assert_eq!(send_claiming(&client, Method::POST, &tier_path, &tier_body("safe"), &claim).await, None);
    assert_eq!(agent_tier(&master, "bot"), "safe");
    let code = send_claiming(&client, Method::POST, &tier_path, &tier_body("safe"), &claim).await;
    assert_eq!(code, Some(ErrorCode::PresenceRequired), "the same ceremony twice");

    // The page of a used ceremony is over: it asks the authenticator nothing.
    let again = tokio::task::block_in_place(|| browser.open(&format!("{}/presence/{id}", server.state.public_url)));
    assert_eq!(again.state, "over", "{again:?}");

    // Expired: completed, then used after its two minutes.
    let (id, page) = ceremony(&client, &mut browser, "POST", &tier_path, &tier_body("standard")).await;
    assert_eq!(page.state, "done");
    skew.store(121_000, Ordering::Relaxed);
    CLIENT_SKEW_S.store(121, Ordering::Relaxed);
    let code =
        send_claiming(&client, Method::POST, &tier_path, &tier_body("standard"), &format!("webauthn:{id}")).await;
    assert_eq!(code, Some(ErrorCode::PresenceRequired), "expired");
    skew.store(0, Ordering::Relaxed);
    CLIENT_SKEW_S.store(0, Ordering::Relaxed);
    assert_eq!(agent_tier(&master, "bot"), "safe");

    // Another account's ceremony, for the same path shape: refused.
    let other = Master::new(&server.url);
    other.init();
    other.ok(&["agent", "create", "bot", "--yes"], None);
    let other_bot =
        json_of(&other.ok(&["--json", "agents"], None))["agents"][0]["agent_id"].as_str().unwrap().to_owned();
    let (id, page) =
        ceremony(&client, &mut browser, "POST", &format!("/v1/agents/{other_bot}/tier"), &tier_body("admin")).await;
    assert_eq!(page.state, "done");
    let other_client = raw_client(&other, &server);
    let code = send_claiming(
        &other_client,
        Method::POST,
        &format!("/v1/agents/{other_bot}/tier"),
        &tier_body("admin"),
        &format!("webauthn:{id}"),
    )
    .await;
    assert!(code.is_some(), "another account's ceremony");
    assert_eq!(agent_tier(&other, "bot"), "standard");

    // A second key enrolled without an assertion from the first: refused.
    let enroll = serde_json::to_vec(&json!({"name": "sneaky", "kind": "roaming"})).unwrap();
    let code = send_claiming(&client, Method::POST, "/v1/presence/keys", &enroll, "skipped").await;
    assert_eq!(code, Some(ErrorCode::PresenceRequired), "a second key without the first");
    let keys = json_of(&master.ok(&["--json", "presence", "list"], None));
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);

    let entries = audit_actions(&master);
    let refused = entries.iter().filter(|e| e["code"] == "PRESENCE_REQUIRED").count();
    assert!(refused >= 7, "every refusal is audited ({refused})");
}

/// What the browser sends that fails verification: user verification false, a bogus
/// signature, a sign counter that went backwards, a tampered clientDataJSON (origin, type,
/// challenge), a credential that is not enrolled. The page says refused, the ceremony is
/// refused for good (the waiting command exits 6), the audit says why.
async fn a_bad_answer_is_refused_and_audited(backend: Backend) {
    let Some((_db, server, _skew, mut browser, authenticator)) = server_and_browser(backend).await else { return };
    let (master, bot, client) = master_with_key(&server, &mut browser).await;
    let tier_path = format!("/v1/agents/{bot}/tier");
    let body = tier_body("admin");
    // One good assertion first, so the server holds a sign count above zero to go back from.
    let (_, page) = ceremony(&client, &mut browser, "POST", &tier_path, &tier_body("safe")).await;
    assert_eq!(page.state, "done", "{page:?}");

    let mut attempt = |setup: Value, undo: Value, reason: &'static str| {
        let started = {
            let request = StartCeremonyRequest {
                method: "POST".into(),
                path: tier_path.clone(),
                body_digest: body_digest(&body),
                operation: "test operation".into(),
            };
            tokio::runtime::Handle::current().block_on(client.start_ceremony(&request)).expect("start")
        };
        browser.call(setup);
        let page = browser.open(&started.url);
        browser.call(undo);
        assert_eq!(page.state, "refused", "{reason}: {page:?}");
        let status = tokio::runtime::Handle::current().block_on(client.ceremony_status(&started.id, 0));
        assert_eq!(status.err().and_then(|e| e.code()), Some(ErrorCode::Declined), "{reason}: refused for good");
        let code = tokio::runtime::Handle::current().block_on(send_claiming(
            &client,
            Method::POST,
            &tier_path,
            &body,
            &format!("webauthn:{}", started.id),
        ));
        assert_eq!(code, Some(ErrorCode::PresenceRequired), "{reason}: a refused ceremony answers nothing");
        reason
    };
    let clear = json!({"cmd": "override", "id": authenticator});
    let reasons = tokio::task::block_in_place(|| {
        vec![
            attempt(json!({"cmd": "override", "id": authenticator, "bad_uv": true}), clear.clone(), "unverified"),
            attempt(
                json!({"cmd": "override", "id": authenticator, "bogus_signature": true}),
                clear.clone(),
                "signature",
            ),
            attempt(json!({"cmd": "tamper", "field": "origin"}), json!({"cmd": "untamper"}), "client-data"),
            attempt(json!({"cmd": "tamper", "field": "type"}), json!({"cmd": "untamper"}), "client-data"),
            attempt(json!({"cmd": "tamper", "field": "challenge"}), json!({"cmd": "untamper"}), "client-data"),
            attempt(json!({"cmd": "tamper", "field": "credential_id"}), json!({"cmd": "untamper"}), "unknown-key"),
            attempt(json!({"cmd": "rewind_counter", "id": authenticator}), json!({"cmd": "untamper"}), "cloned"),
        ]
    });
    assert_eq!(agent_tier(&master, "bot"), "standard", "nothing changed");
    let entries = audit_actions(&master);
    for reason in reasons {
        let action = format!("presence.refused.{reason}");
        assert!(has_row(&entries, &action), "audited as {action}");
    }
}

/// Ctrl-C in a command waiting on a ceremony cancels it on the server: the page then says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_ceremony_on_the_server() {
    let Some((_db, server, _skew, mut browser, _)) = server_and_browser(Backend::Sqlite).await else { return };
    let (master, _bot, _client) = master_with_key(&server, &mut browser).await;
    tokio::task::block_in_place(|| {
        let waiting = master.waiting(&["agent", "upgrade", "bot", "--tier", "admin", "--yes"]);
        let link = waiting.link();
        let pid = rustix::process::Pid::from_raw(waiting.pid() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        let out = waiting.finish();
        assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("cancelled"), "{}", text(&out.stderr));
        let page = browser.open(&link.url);
        assert_eq!(page.state, "over", "{page:?}");
        assert_eq!(agent_tier(&master, "bot"), "standard");
        assert!(has_row(&audit_actions(&master), "presence.ceremony.cancel"));
    });
}

on_both_backends!(a_ceremony_answers_one_request_once, a_bad_answer_is_refused_and_audited);

/// `config set presence-attestation` restricts enrollment to the roots the account lists: with a
/// root this test makes, Chromium's authenticator (whose attestation chains to no such root) is
/// refused and nothing is enrolled; `yubico` lists Yubico's root; `none` lifts it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_is_restricted_to_the_listed_attestation_roots() {
    let Some((_db, server, _skew, mut browser, _)) = server_and_browser(Backend::Sqlite).await else { return };
    tokio::task::block_in_place(|| {
        let master = Master::new(&server.url);
        master.init();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "AgentKeys test attestation root");
        let root = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("roots.pem");
        std::fs::write(&pem, root.pem()).unwrap();
        master.ok(&["config", "set", "presence-attestation", pem.to_str().unwrap(), "--yes"], None);

        let waiting = master.waiting(&["presence", "enroll", "--roaming", "--name", "yubikey", "--yes"]);
        let page = browser.open(&waiting.link().url);
        assert_eq!(page.state, "refused", "{page:?}");
        let out = waiting.finish();
        assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
        let keys = json_of(&master.ok(&["--json", "presence", "list"], None));
        assert!(keys["keys"].as_array().unwrap().is_empty(), "nothing enrolled: {keys}");
        assert!(has_row(&audit_actions(&master), "presence.refused.attestation"));

        let bad = master.run(&["config", "set", "presence-attestation", "/nonexistent.pem", "--yes"], None);
        assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
        let yubico = json_of(&master.ok(&["--json", "config", "set", "presence-attestation", "yubico", "--yes"], None));
        assert_eq!(yubico["presence-attestation"], 1);
        master.ok(&["config", "set", "presence-attestation", "none", "--yes"], None);
        enroll_first(&master, &mut browser, "--roaming", "yubikey");
    });
}

/// `init --roaming-authenticator` creates the account and enrolls a security key right away; the
/// account's first critical command then needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_with_a_roaming_authenticator_enrolls_it_at_once() {
    let Some((_db, server, _skew, mut browser, _)) = server_and_browser(Backend::Sqlite).await else { return };
    tokio::task::block_in_place(|| {
        let master = Master::new(&server.url);
        let out = with_key(
            &master,
            &mut browser,
            1,
            &["--json", "init", "--label", "laptop", "--roaming-authenticator", "--yes"],
        );
        let init = json_of(&out.stdout);
        assert!(init["account_id"].as_str().unwrap().starts_with("acct_"), "{init}");
        assert_eq!(init["presence_key"]["kind"], "roaming", "{init}");
        let created = with_key(&master, &mut browser, 1, &["agent", "create", "bot", "--yes"]);
        assert!(text(&created.stderr).contains("Presence needed for: Create agent bot"), "{}", text(&created.stderr));
    });
}

/// An enrollment opened while the account had no key (this machine's word sufficed then) cannot
/// be completed once a key is enrolled: that key must allow any further one. Without this, a
/// thief holding the session opens enrollments early and adds its own key after the owner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_opened_before_the_first_key_cannot_add_a_second() {
    let Some((_db, server, _skew, mut browser, owners)) = server_and_browser(Backend::Sqlite).await else { return };
    let master = Master::new(&server.url);
    master.init();
    let thief = raw_client(&master, &server).with_presence(Presence::Local("fprintd"));
    let early = EnrollRequest { name: "thief".into(), kind: KeyKind::Roaming };
    let early = thief.enroll_presence_key(&early).await.expect("an enrollment while there is no key");
    tokio::task::block_in_place(|| {
        enroll_first(&master, &mut browser, "--roaming", "yubikey");
        // The thief's own authenticator answers the early enrollment.
        browser.call(json!({"cmd": "remove_authenticator", "id": owners}));
        browser.authenticator("usb");
        let page = browser.open(&early.url);
        assert_eq!(page.state, "refused", "{page:?}");
        assert!(page.status.contains("enrolled after this enrollment was opened"), "{page:?}");
        let keys = json_of(&master.ok(&["--json", "presence", "list"], None));
        assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "only the owner's key: {keys}");
    });
}

/// Without `--no-browser` the CLI hands the link to `$BROWSER` (here a script that passes it to
/// the test, standing in for a browser on a desktop) and goes on waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_goes_to_the_browser_named_in_browser() {
    use std::io::BufRead as _;
    let Some((_db, server, _skew, mut browser, _)) = server_and_browser(Backend::Sqlite).await else { return };
    let (master, _bot, _client) = master_with_key(&server, &mut browser).await;
    tokio::task::block_in_place(|| {
        let dir = tempfile::tempdir().unwrap();
        let handed = dir.path().join("url");
        let script = dir.path().join("browser.sh");
        let body = format!("#!/bin/sh\nprintf '%s' \"$1\" > {0}.tmp && mv {0}.tmp {0}\n", handed.display());
        std::fs::write(&script, body).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let mut child = master
            .command(&["agent", "upgrade", "bot", "--tier", "admin", "--yes"])
            .env("BROWSER", format!("{} %s", script.display()))
            .env("DISPLAY", ":0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok);
        let opened = lines.by_ref().find(|l| l.contains("(opened with")).expect("the CLI says it opened the browser");
        assert!(opened.contains("browser.sh"), "{opened}");
        // The script runs beside the CLI: its file appears once it has run (renamed into place).
        let url = (0..200)
            .find_map(|_| {
                std::fs::read_to_string(&handed).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                    None
                })
            })
            .expect("$BROWSER got the link");
        assert!(url.contains("/presence/cer_"), "{url}");
        let page = browser.open(&url);
        assert_eq!(page.state, "done", "{page:?}");
        // Read stderr to its end, so the CLI's last lines never meet a closed pipe.
        let rest: Vec<String> = lines.collect();
        assert!(child.wait().unwrap().success(), "{rest:?}");
        assert_eq!(agent_tier(&master, "bot"), "admin");
    });
}

/// The only presence key is lost with the laptop: a recovery with the recovery key, once the
/// server's clock is past the delay, removes the old key (audited) and the new machine enrolls a
/// new one in Chromium, which then answers its critical commands; the old key no longer would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_presence_key_is_replaced_by_a_recovery() {
    let Some((_db, server, skew)) = skewed_server(Backend::Sqlite).await else { return };
    tokio::task::block_in_place(|| {
        let Some(mut browser) = Browser::start() else { return };
        let lost_key = browser.authenticator("usb");
        let laptop = Master::new(&server.url);
        let created = json_of(&laptop.ok(&["init", "--label", "laptop", "--json"], None));
        let recovery_key = created["recovery_key"].as_str().unwrap().to_owned();
        laptop.ok(&["store", "openai"], Some(b"sk-kept-through-recovery"));
        enroll_first(&laptop, &mut browser, "--roaming", "yubikey");
        // Laptop and key are gone.
        browser.call(json!({"cmd": "remove_authenticator", "id": lost_key}));
        let new = Master::new(&server.url);
        let stdin = format!("{recovery_key}\n");
        new.ok(&["recover", "--label", "new-laptop", "--yes"], Some(stdin.as_bytes()));
        skew.store(72 * 60 * 60 * 1000 + 60_000, Ordering::Relaxed);
        let done = new.run(&["recover", "--complete", "--replace-presence-keys", "--yes"], Some(stdin.as_bytes()));
        skew.store(0, Ordering::Relaxed);
        assert!(done.status.success(), "{}", text(&done.stderr));
        assert!(text(&done.stderr).contains("presence key(s) were removed"), "{}", text(&done.stderr));
        let listed = json_of(&new.ok(&["--json", "presence", "list"], None));
        assert_eq!(listed["keys"].as_array().unwrap().len(), 0, "{listed}");
        // A new key, enrolled with this machine's check (the account has none now)…
        browser.authenticator("usb");
        let key = enroll_first(&new, &mut browser, "--roaming", "new-yubikey");
        assert_eq!(key["name"], "new-yubikey");
        // …answers the new machine's critical commands, and the vault is all there.
        with_key(&new, &mut browser, 1, &["agent", "create", "bot", "--scope", "openai", "--yes"]);
        assert_eq!(new.ok(&["read", "openai"], None), b"sk-kept-through-recovery");
        let entries = audit_actions(&new);
        assert!(has_row(&entries, "recovery.complete.presence_keys_removed"), "{entries:?}");
        let listed = json_of(&new.ok(&["--json", "presence", "list"], None));
        let key_id = listed["keys"][0]["id"].as_str().unwrap().to_owned();
        let create = entries.iter().rev().find(|e| e["action"] == "agent.create").expect("an agent.create row");
        assert_eq!(create["presence"], format!("webauthn:{key_id}"), "{create}");
    });
}
