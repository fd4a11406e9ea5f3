//! The `agentkeys` binary end to end against a spawned `agentkeys-server` on SQLite: the main
//! flow, idempotent init, byte-exact values, and a clear error (with the right exit code) for
//! every kind of bad input.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;

use agentkeys_tests::{Master, ServerProcess, TestDb};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn start_server() -> (TestDb, ServerProcess) {
    let db = TestDb::new(agentkeys_tests::Backend::Sqlite).await.expect("sqlite");
    let server = ServerProcess::start(&db.url);
    (db, server)
}

#[tokio::test]
async fn init_store_read_list_rm_usage() {
    let (_db, server) = start_server().await;
    let master = Master::new(&server.url);
    let init = String::from_utf8(master.init()).unwrap();
    assert!(init.contains("Initialized account acct_"), "{init}");
    assert!(init.contains("AKRK-"), "the recovery key is shown once: {init}");

    master.ok(&["store", "openai"], Some(b"sk-live-123\n"));
    assert_eq!(
        master.ok(&["read", "openai"], None),
        b"sk-live-123",
        "one trailing newline of a one-line value is dropped"
    );
    master.ok(&["store", "openai"], Some(b"sk-live-456"));
    let list = String::from_utf8(master.ok(&["list"], None)).unwrap();
    assert!(list.contains("openai") && list.contains(" 2 "), "{list}");
    let listed: serde_json::Value = serde_json::from_slice(&master.ok(&["list", "--json"], None)).unwrap();
    assert_eq!(listed["credentials"][0]["version"], 2);

    let who = String::from_utf8(master.ok(&["whoami"], None)).unwrap();
    assert!(who.contains("Stored:   file ("), "{who}");
    let token = {
        use secrecy::ExposeSecret as _;
        master.session().token.expose_secret().to_owned()
    };
    assert!(!who.contains(&token) && !who.contains("akt_"), "whoami never prints the token");

    master.ok(&["rm", "openai"], None);
    let gone = master.run(&["read", "openai"], None);
    assert_eq!(gone.status.code(), Some(5), "{}", stderr(&gone));
    assert!(stderr(&gone).contains("Error: NOT_FOUND: no credential named 'openai'. Fix: "), "{}", stderr(&gone));

    let usage = stdout(&master.run(&["usage", "--since", "1h"], None));
    for needle in ["credential.store", "credential.read", "credential.remove", "NOT_FOUND", "(this device)"] {
        assert!(usage.contains(needle), "usage shows {needle}:\n{usage}");
    }
    let usage: serde_json::Value =
        serde_json::from_slice(&master.ok(&["usage", "--json", "--service", "openai"], None)).unwrap();
    let entries = usage["entries"].as_array().unwrap();
    assert!(entries.iter().all(|e| e["service"] == "openai"), "{usage}");
    assert!(entries.iter().any(|e| e["outcome"] == "failed" && e["code"] == "NOT_FOUND"));
}

#[tokio::test]
async fn init_is_idempotent_and_force_asks_first() {
    let (_db, server) = start_server().await;
    let master = Master::new(&server.url);
    master.init();
    let account = master.session().account_id.clone();
    let again = master.run(&["init"], None);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(stdout(&again).trim(), format!("Already initialized as {account}"));

    let forced = master.run(&["init", "--force"], None);
    assert_eq!(forced.status.code(), Some(2), "no terminal to ask on: {}", stderr(&forced));
    assert!(stderr(&forced).contains("--yes"), "{}", stderr(&forced));
    assert_eq!(master.session().account_id, account, "nothing changed");

    master.ok(&["init", "--force", "--yes"], None);
    assert_ne!(master.session().account_id, account, "a new account replaced the session");
}

#[tokio::test]
async fn values_round_trip_byte_exact() {
    let (_db, server) = start_server().await;
    let master = Master::new(&server.url);
    master.init();
    let binary: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, b'\n']).collect();
    master.ok(&["store", "binary"], Some(&binary));
    assert_eq!(master.ok(&["read", "binary"], None), binary, "non-UTF-8 values are stored exactly");

    let file = master.home.path().join("value.pem");
    std::fs::write(&file, b"-----BEGIN KEY-----\nabc\n-----END KEY-----\n").unwrap();
    master.ok(&["store", "pem", "--file", file.to_str().unwrap()], None);
    assert_eq!(master.ok(&["read", "pem"], None), std::fs::read(&file).unwrap());

    master.ok(&["store", "multi"], Some(b"line1\nline2\n"));
    assert_eq!(master.ok(&["read", "multi"], None), b"line1\nline2\n", "multi-line values keep their newline");
    master.ok(&["store", "exact", "--exact"], Some(b"v\n"));
    assert_eq!(master.ok(&["read", "exact"], None), b"v\n");

    let json: serde_json::Value = serde_json::from_slice(&master.ok(&["read", "binary", "--json"], None)).unwrap();
    assert!(json["value"].is_null(), "binary is not forced into a string");
    assert_eq!(agentkeys_proto::b64::decode(json["value_base64url"].as_str().unwrap()).unwrap(), binary);
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let (_db, server) = start_server().await;
    let master = Master::new(&server.url);

    let uninitialized = master.run(&["read", "openai"], None);
    assert_eq!(uninitialized.status.code(), Some(3));
    assert!(stderr(&uninitialized).contains("agentkeys init"), "{}", stderr(&uninitialized));

    master.init();
    for name in ["open ai", "a/b", "tab\tname", "..", "-dash", "nul\u{1}"] {
        let out = master.run(&["store", "--", name], Some(b"value"));
        assert_eq!(out.status.code(), Some(2), "{name:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
            "the allowed pattern is named: {}",
            stderr(&out)
        );
    }
    let empty = master.run(&["store", "empty"], Some(b""));
    assert_eq!(empty.status.code(), Some(2));
    assert!(stderr(&empty).contains("empty"), "{}", stderr(&empty));
    let huge = master.run(&["store", "huge"], Some(&vec![b'x'; 40 * 1024]));
    assert_eq!(huge.status.code(), Some(2));
    assert!(stderr(&huge).contains("largest storable value"), "{}", stderr(&huge));

    let on_argv = master.run(&["store", "argv", "sk-on-argv"], None);
    assert_eq!(on_argv.status.code(), Some(0));
    assert!(stderr(&on_argv).contains("shell history"), "{}", stderr(&on_argv));

    let bad_env = master.run(&["run", "--env", "1X=argv", "--", "true"], None);
    assert_eq!(bad_env.status.code(), Some(2));

    let list: serde_json::Value = serde_json::from_slice(&master.ok(&["list", "--json"], None)).unwrap();
    let names: Vec<&str> =
        list["credentials"].as_array().unwrap().iter().map(|c| c["service"].as_str().unwrap()).collect();
    assert_eq!(names, ["argv"], "nothing but the valid store landed");
}

#[tokio::test]
async fn unreachable_server_exits_8_with_the_url() {
    let (_db, mut server) = start_server().await;
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk"));

    let wrong = master.run(&["--server", "http://127.0.0.1:9", "read", "openai"], None);
    assert_eq!(wrong.status.code(), Some(8));
    assert!(stderr(&wrong).contains("http://127.0.0.1:9"), "{}", stderr(&wrong));
    let malformed = master.run(&["--server", "not a url", "read", "openai"], None);
    assert_eq!(malformed.status.code(), Some(2), "{}", stderr(&malformed));

    server.kill();
    let down = master.run(&["read", "openai"], None);
    assert_eq!(down.status.code(), Some(8));
    assert!(stderr(&down).contains(&server.url), "{}", stderr(&down));
    assert!(stderr(&down).contains("Fix: "), "{}", stderr(&down));
}

#[tokio::test]
async fn damaged_session_files_exit_3_with_the_fix() {
    let (_db, server) = start_server().await;
    let master = Master::new(&server.url);
    master.init();
    let file = master.session_dir().join("session.enc");
    let good = std::fs::read(&file).unwrap();

    let mut tampered = good.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    std::fs::write(&file, &tampered).unwrap();
    let out = master.run(&["list"], None);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("agentkeys init --force"), "{}", stderr(&out));

    std::fs::write(&file, &good[..10]).unwrap();
    assert_eq!(master.run(&["list"], None).status.code(), Some(3));

    std::fs::write(&file, &good).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = master.run(&["list"], None);
    assert_eq!(loose.status.code(), Some(3));
    assert!(stderr(&loose).contains("chmod 600"), "{}", stderr(&loose));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    master.ok(&["list"], None);

    // A session the server does not know (its database was reset, or another server).
    let (_other_db, other) = start_server().await;
    let unknown = master.run(&["--server", &other.url, "list"], None);
    assert_eq!(unknown.status.code(), Some(3), "{}", stderr(&unknown));
    assert!(
        stderr(&unknown).contains("UNAUTHENTICATED") && stderr(&unknown).contains("agentkeys init"),
        "{}",
        stderr(&unknown)
    );
    let reinit = master.run(&["--server", &other.url, "init"], None);
    assert_eq!(reinit.status.code(), Some(3), "init says the session is not valid there: {}", stderr(&reinit));
    assert!(stderr(&reinit).contains("--force"), "{}", stderr(&reinit));
}

#[tokio::test]
async fn concurrent_stores_from_two_shells_lose_nothing() {
    let (_db, server) = start_server().await;
    let master = Master::new(&server.url);
    master.init();
    let mut shells = Vec::new();
    for i in 0..6 {
        let mut command = master.command(&["store", "shared"]);
        command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(format!("value-{i}").as_bytes()).unwrap();
        shells.push(child);
    }
    for child in shells {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let value = String::from_utf8(master.ok(&["read", "shared"], None)).unwrap();
    assert!(value.starts_with("value-"), "a whole value, not a torn one: {value}");
    let list: serde_json::Value = serde_json::from_slice(&master.ok(&["list", "--json"], None)).unwrap();
    assert_eq!(list["credentials"][0]["version"], 6, "six stores, six versions");
    let usage: serde_json::Value =
        serde_json::from_slice(&master.ok(&["usage", "--json", "--service", "shared"], None)).unwrap();
    let stores = usage["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "credential.store" && e["outcome"] == "allowed")
        .count();
    assert_eq!(stores, 6, "every store has its audit row");
}

#[test]
fn completions_are_generated() {
    let master = Master::new("http://127.0.0.1:9");
    let bash = String::from_utf8(master.ok(&["completions", "bash"], None)).unwrap();
    assert!(bash.contains("agentkeys") && bash.contains("usage"), "{bash}");
}

#[tokio::test]
async fn the_prompt_hides_what_is_typed() {
    use std::io::{BufRead as _, Read as _, Write as _};
    let (_db, server) = start_server().await;
    let master = Master::new(&server.url);
    master.init();
    // `script` gives the CLI a real terminal and transcribes what that terminal shows.
    let mut terminal = std::process::Command::new("script")
        .args(["-qec", &format!("{} store typed", agentkeys_tests::bin("agentkeys").display()), "/dev/null"])
        .env("AGENTKEYS_HOME", master.home.path())
        .env("AGENTKEYS_SERVER", &master.server)
        .env("AGENTKEYS_SESSION_STORE", "file")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs the CLI on a pty");
    let mut shown = std::io::BufReader::new(terminal.stdout.take().unwrap());
    let mut prompt = Vec::new();
    shown.read_until(b':', &mut prompt).unwrap();
    assert!(String::from_utf8_lossy(&prompt).contains("Value for typed (input hidden)"), "{prompt:?}");
    terminal.stdin.take().unwrap().write_all(b"typed-secret-4711\n").unwrap();
    let mut rest = String::new();
    shown.read_to_string(&mut rest).unwrap();
    assert!(terminal.wait().unwrap().success(), "{rest}");
    assert!(!rest.contains("typed-secret-4711"), "the terminal never shows the value: {rest:?}");
    assert_eq!(master.ok(&["read", "typed"], None), b"typed-secret-4711");
}

#[tokio::test]
async fn session_slots_are_separate() {
    let (_db, server) = start_server().await;
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["--session-id", "work", "init", "--label", "work"], None);
    let account = |slot: &str| -> String {
        let who: serde_json::Value =
            serde_json::from_slice(&master.ok(&["--session-id", slot, "whoami", "--json"], None)).unwrap();
        who["account_id"].as_str().unwrap().to_owned()
    };
    assert_ne!(account("master"), account("work"), "two slots, two sessions");
    assert!(master.home.path().join("work/session.enc").exists());
    master.ok(&["--session-id", "work", "store", "only-in-work"], Some(b"w"));
    assert_eq!(master.run(&["read", "only-in-work"], None).status.code(), Some(5), "the master slot does not see it");
    let bad = master.run(&["--session-id", "../escape", "list"], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("invalid session id"), "{}", stderr(&bad));
}
