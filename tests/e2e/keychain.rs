//! Session keys in the real Secret Service (gnome-keyring on a private session bus, started by
//! scripts/with-keyring.sh): saved, found with `secret-tool`, loaded, listed and cleared; a file
//! session migrated on first use; a missing bus and a locked collection falling back to files
//! within the timeout; a keychain that goes away between save and load losing nothing; and a master with two daemons on one host, each in its own slot.
//!
//! One test, run in order, because it locks and unlocks the one shared collection.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentkeys_core::session::{EncryptedFileStore, SessionId, SessionStore as _, StoreMode};
use agentkeys_tests::{DaemonHost, Master, ServerProcess, TestDb, contains_any_window};

/// The longest a fallback may take: the 2 s keychain timeout plus process start.
const FALLBACK_BOUND: Duration = Duration::from_millis(2_500);

fn keyring_available() -> bool {
    agentkeys_tests::present_or_skip(
        std::env::var("AGENTKEYS_TEST_KEYRING").as_deref() == Ok("1"),
        "no test keyring (scripts/test.sh runs the suite inside one)",
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `secret-tool lookup service agentkeys username ACCOUNT`: the raw secret, or `None`.
fn secret_tool_lookup(account: &str) -> Option<Vec<u8>> {
    let out =
        Command::new("secret-tool").args(["lookup", "service", "agentkeys", "username", account]).output().unwrap();
    (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
}

fn account_of(home: &std::path::Path, id: &str) -> String {
    EncryptedFileStore::new(home).keychain_account(&SessionId::parse(id).unwrap())
}

fn with_mode(mut command: Command, mode: &str) -> Command {
    command.env("AGENTKEYS_SESSION_STORE", mode);
    command
}

fn collection_call(method: &str) {
    let out = Command::new("dbus-send")
        .args([
            "--session",
            "--print-reply",
            "--dest=org.freedesktop.secrets",
            "/org/freedesktop/secrets",
            &format!("org.freedesktop.Secret.Service.{method}"),
            "array:objpath:/org/freedesktop/secrets/collection/login",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{method}: {}", text(&out.stderr));
}

fn unlock_again() {
    // `Unlock` over D-Bus would need a prompt; restarting the daemon with the password unlocks.
    let password = std::env::var("AGENTKEYS_TEST_KEYRING_PASSWORD").expect("set by with-keyring.sh");
    let mut daemon = Command::new("gnome-keyring-daemon")
        .args(["--replace", "--unlock", "--components=secrets"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut daemon.stdin.take().unwrap(), password.as_bytes()).unwrap();
    assert!(daemon.wait().unwrap().success());
    let ready =
        Command::new("gdbus").args(["wait", "--session", "--timeout", "10", "org.freedesktop.secrets"]).status();
    assert!(ready.unwrap().success());
}

#[tokio::test]
async fn sessions_live_in_the_real_secret_service() {
    if !keyring_available() {
        return;
    }
    let db = TestDb::new(agentkeys_tests::Backend::Sqlite).await.expect("sqlite");
    let server = ServerProcess::start(&db.url);

    // 1. A master in keychain mode: the key is in the Secret Service, the file only ciphertext.
    let master = Master::new(&server.url);
    let init = with_mode(master.command(&["init", "--label", "kc"]), "keychain").output().unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));
    let who = with_mode(master.command(&["whoami"]), "keychain").output().unwrap();
    assert!(text(&who.stdout).contains("Stored:   keychain (Secret Service)"), "{}", text(&who.stdout));
    let account = account_of(master.home.path(), "master");
    let key = secret_tool_lookup(&account).expect("secret-tool finds the session key");
    assert_eq!(key.len(), 32);
    assert!(!master.home.path().join("master/session.key").exists(), "no key file beside the session");
    let store = EncryptedFileStore::open(master.home.path(), StoreMode::Keychain).unwrap();
    let session = store.load(&SessionId::master()).unwrap().expect("loads through the keychain");
    let sealed = std::fs::read(master.home.path().join("master/session.enc")).unwrap();
    let token = secrecy::ExposeSecret::expose_secret(&session.token).to_owned();
    assert!(!contains_any_window(&sealed, token.as_bytes()) && !contains_any_window(&sealed, &key));

    // 2. One master and two daemons on one host, each in its own slot of the keychain.
    let host = DaemonHost::new(&server.url);
    let mut agents = Vec::new();
    for (label, scope) in [("kc-one", "openai"), ("kc-two", "github")] {
        let code = text(
            &with_mode(master.command(&["--yes", "agent", "create", label, "--scope", scope]), "keychain")
                .output()
                .unwrap()
                .stdout,
        );
        let linked = with_mode(host.command(&["link", code.trim()]), "keychain").output().unwrap();
        assert!(linked.status.success(), "{}", text(&linked.stderr));
        let id = text(&linked.stderr).split("Session saved as ").nth(1).unwrap().split('.').next().unwrap().to_owned();
        assert!(secret_tool_lookup(&account_of(host.home.path(), &id)).is_some(), "{id} has its own entry");
        agents.push(id);
    }
    let listed = EncryptedFileStore::open(host.home.path(), StoreMode::Keychain).unwrap().list("daemon-").unwrap();
    assert_eq!(listed.len(), 2);
    for (id, allowed) in agents.iter().zip(["openai", "github"]) {
        let status = with_mode(host.command(&["--session-id", id, "status", "--json"]), "keychain").output().unwrap();
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert!(status["stored"].as_str().unwrap().starts_with("keychain (Secret Service)"), "{status}");
        assert_eq!(status["server"], "reachable, session valid", "{allowed}");
    }
    let revoked = with_mode(master.command(&["revoke", "kc-one", "--yes"]), "keychain").output().unwrap();
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let one = with_mode(host.command(&["--session-id", &agents[0], "whoami"]), "keychain").output().unwrap();
    let two = with_mode(host.command(&["--session-id", &agents[1], "whoami"]), "keychain").output().unwrap();
    assert_eq!(one.status.code(), Some(4), "{}", text(&one.stderr));
    assert!(two.status.success(), "revoking one leaves the other: {}", text(&two.stderr));

    // 3. A session from the file-only form moves into the keychain on first use.
    let old = Master::new(&server.url);
    old.init();
    assert!(old.home.path().join("master/session.key").exists());
    let who = with_mode(old.command(&["whoami"]), "auto").output().unwrap();
    assert!(who.status.success(), "{}", text(&who.stderr));
    assert!(!old.home.path().join("master/session.key").exists(), "the key file is gone");
    assert!(secret_tool_lookup(&account_of(old.home.path(), "master")).is_some(), "its key is in the keychain");

    // 4. No session bus: auto falls back to a key file within the timeout; keychain mode says so.
    let busless = Master::new(&server.url);
    let started = Instant::now();
    let init = with_mode(busless.command(&["init"]), "auto")
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    assert!(
        init.status.success() && started.elapsed() < FALLBACK_BOUND,
        "{:?}: {}",
        started.elapsed(),
        text(&init.stderr)
    );
    assert!(busless.home.path().join("master/session.key").exists());
    let strict = with_mode(busless.command(&["whoami"]), "keychain")
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));
    assert!(
        text(&strict.stderr).contains("not usable") && text(&strict.stderr).contains("AGENTKEYS_SESSION_STORE=file")
    );

    // 5. A locked collection: a new session falls back to a file within the timeout; keychain
    // mode refuses; the keychain-held session says its key is out of reach instead of hanging.
    collection_call("Lock");
    let locked = Master::new(&server.url);
    let started = Instant::now();
    let init = with_mode(locked.command(&["init"]), "auto").output().unwrap();
    let took = started.elapsed();
    assert!(init.status.success() && took < FALLBACK_BOUND, "{took:?}: {}", text(&init.stderr));
    assert!(locked.home.path().join("master/session.key").exists(), "the file form");
    let started = Instant::now();
    let refused = with_mode(master.command(&["whoami"]), "keychain").output().unwrap();
    assert!(started.elapsed() < FALLBACK_BOUND);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    // The keychain went away between the save (step 1) and this load: auto mode says where the
    // key is and changes nothing, and the session opens again once the keychain is back.
    let sealed_before = std::fs::read(master.home.path().join("master/session.enc")).unwrap();
    let started = Instant::now();
    let away = with_mode(master.command(&["whoami"]), "auto").output().unwrap();
    assert!(started.elapsed() < FALLBACK_BOUND);
    assert_eq!(away.status.code(), Some(1), "{}", text(&away.stderr));
    assert!(
        text(&away.stderr).contains("unlock the keychain") && text(&away.stderr).contains("nothing was changed"),
        "{}",
        text(&away.stderr)
    );
    assert_eq!(std::fs::read(master.home.path().join("master/session.enc")).unwrap(), sealed_before);
    assert!(!master.home.path().join("master/session.key").exists(), "no fallback key was invented");
    unlock_again();
    let back = with_mode(master.command(&["whoami"]), "auto").output().unwrap();
    assert!(back.status.success(), "opens again: {}", text(&back.stderr));

    // 6. clear removes the keychain entry and the files, and nothing else.
    let store = EncryptedFileStore::open(master.home.path(), StoreMode::Keychain).unwrap();
    assert!(store.clear(&SessionId::master()).unwrap());
    assert!(secret_tool_lookup(&account).is_none(), "the entry is gone");
    assert!(!master.home.path().join("master").exists());
    assert!(secret_tool_lookup(&account_of(old.home.path(), "master")).is_some(), "other slots keep theirs");
}
