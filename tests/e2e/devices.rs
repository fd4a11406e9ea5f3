//! Losing a machine loses nothing (issue 15, parts 1–3), through the real binaries with one
//! `AGENTKEYS_HOME` per machine: a second master device joined by pair code and OTP shares the
//! vault and approves; a stolen laptop is revoked and its next call is refused; an account is
//! recovered with its recovery key once the server's clock is past the recovery delay (and a
//! recovery is denied, early, duplicated, mistyped, or opened with a rotated key); an agent's
//! replacement machine keeps its scope and private credentials. On SQLite and PostgreSQL.

use std::sync::atomic::Ordering;

use agentkeys_tests::{Backend, DaemonHost, Master, skewed_server};
use serde_json::Value;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(bytes)))
}

const HOUR_MS: i64 = 60 * 60 * 1000;

/// `init`, returning the recovery key it printed once.
fn init(master: &Master, label: &str) -> String {
    let out = json_of(&master.ok(&["init", "--label", label, "--json"], None));
    out["recovery_key"].as_str().expect("init prints the recovery key").to_owned()
}

/// Joins `machine` to `approver`'s account as a master device (the OTP typed as a human would).
fn join(approver: &Master, machine: &Master, label: &str) {
    let joining = machine.start_join(label);
    let out = approver.approve_pairing(&joining, &["--yes"]);
    assert!(out.status.success(), "approve of a device join: {}", text(&out.stderr));
    let (code, stderr) = joining.finish();
    assert_eq!(code, 0, "device join: {stderr}");
    assert!(stderr.contains("Joined account"), "{stderr}");
}

fn devices(master: &Master) -> Vec<Value> {
    json_of(&master.ok(&["devices", "--json"], None))["devices"].as_array().unwrap().clone()
}

fn device_id(master: &Master) -> String {
    json_of(&master.ok(&["whoami", "--json"], None))["device_id"].as_str().unwrap().to_owned()
}

async fn two_master_devices_share_the_vault_and_each_approves(backend: Backend) {
    let Some((_db, server, _)) = skewed_server(backend).await else { return };
    let laptop = Master::new(&server.url);
    init(&laptop, "laptop");
    laptop.ok(&["store", "openai"], Some(b"sk-from-the-laptop"));
    let desktop = Master::new(&server.url);
    join(&laptop, &desktop, "desktop");
    // The second device reads what the first stored, stores what the first reads.
    assert_eq!(desktop.ok(&["read", "openai"], None), b"sk-from-the-laptop");
    desktop.ok(&["store", "github"], Some(b"ghp-from-the-desktop"));
    assert_eq!(laptop.ok(&["read", "github"], None), b"ghp-from-the-desktop");
    // It approves a daemon's pairing, and the agent reads what the first device stored.
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&desktop, "bot", "openai");
    let read = host.run(&[
        "run",
        "--session-id",
        &DaemonHost::session_arg(&agent),
        "--no-mask",
        "--env",
        "K=openai",
        "--",
        "printenv",
        "K",
    ]);
    assert_eq!(text(&read.stdout).trim(), "sk-from-the-laptop", "{}", text(&read.stderr));
    // And the first approves a third device the second sees.
    let spare = Master::new(&server.url);
    join(&laptop, &spare, "spare");
    let listed = devices(&desktop);
    let labels: Vec<&str> = listed.iter().map(|d| d["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["laptop", "desktop", "spare"]);
    let joined_by: Vec<&str> = listed.iter().map(|d| d["joined_by"].as_str().unwrap()).collect();
    assert_eq!(joined_by, ["init", "join", "join"]);
    let this: Vec<bool> = listed.iter().map(|d| d["this_device"].as_bool().unwrap()).collect();
    assert_eq!(this, [false, true, false]);
    assert!(listed[0]["last_seen_ms"].as_i64().is_some(), "the laptop was seen: {listed:?}");
    // The human table says the same.
    let table = text(&desktop.ok(&["devices"], None));
    assert!(table.contains("(this one)") && table.contains("spare"), "{table}");
}

async fn a_stolen_laptop_is_revoked_and_refused_at_once(backend: Backend) {
    let Some((_db, server, _)) = skewed_server(backend).await else { return };
    let desktop = Master::new(&server.url);
    init(&desktop, "desktop");
    desktop.ok(&["store", "openai"], Some(b"sk-stolen-drill"));
    let laptop = Master::new(&server.url);
    join(&desktop, &laptop, "laptop");
    laptop.ok(&["read", "openai"], None);
    let stolen = device_id(&laptop);
    // Revoking the device you are on is refused with the fix.
    let own = desktop.run(&["device", "revoke", &device_id(&desktop), "--yes"], None);
    assert_eq!(own.status.code(), Some(2), "{}", text(&own.stderr));
    assert!(text(&own.stderr).contains("another master device"), "{}", text(&own.stderr));
    // The thief's laptop is revoked by label; its very next call is refused.
    desktop.ok(&["device", "revoke", "laptop", "--yes"], None);
    let refused = laptop.run(&["read", "openai"], None);
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("REVOKED"), "{}", text(&refused.stderr));
    let listed = devices(&desktop);
    let revoked = listed.iter().find(|d| d["device_id"] == stolen.as_str()).unwrap();
    assert!(revoked["revoked_at_ms"].as_i64().is_some(), "{listed:?}");
    // Revoking it again says so and changes nothing.
    let again = desktop.run(&["device", "revoke", &stolen, "--yes"], None);
    assert_eq!(again.status.code(), Some(5), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("revoked already"), "{}", text(&again.stderr));
    // A join approved with a wrong OTP is refused (exit 6); nothing joined.
    let intruder = Master::new(&server.url);
    let joining = intruder.start_join("intruder");
    let otp = desktop.claim_pairing(&joining);
    let wrong_otp = if otp == "000000" { "111111" } else { "000000" };
    let wrong = desktop.run(&["approve", &joining.prompt.code, "--otp", wrong_otp, "--yes"], None);
    assert_eq!(wrong.status.code(), Some(6), "{}", text(&wrong.stderr));
    assert!(text(&wrong.stderr).contains("does not match"), "{}", text(&wrong.stderr));
    desktop.ok(&["deny", &joining.prompt.code], None);
    let (code, stderr) = joining.finish();
    assert_eq!(code, 6, "a denied join ends with exit 6: {stderr}");
    assert_eq!(devices(&desktop).len(), 2, "the intruder did not join");
}

/// Opens a recovery on `machine`; returns its code.
fn open_recovery(machine: &Master, recovery_key: &str) -> String {
    let out =
        json_of(&machine.ok(
            &["recover", "--label", "replacement", "--json", "--yes"],
            Some(format!("{recovery_key}\n").as_bytes()),
        ));
    out["code"].as_str().unwrap().to_owned()
}

async fn the_account_is_recovered_with_its_recovery_key_after_the_delay(backend: Backend) {
    let Some((_db, server, skew)) = skewed_server(backend).await else { return };
    let lost = Master::new(&server.url);
    let recovery_key = init(&lost, "lost-laptop");
    lost.ok(&["store", "openai"], Some(b"sk-survives-the-loss"));
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&lost, "bot", "openai");

    // A mistyped key is caught by its checksum before anything is sent; a key of no account here
    // is not found; neither leaves a pending recovery.
    let new = Master::new(&server.url);
    let mut typo = recovery_key.clone();
    let at = typo.len() - 3;
    let swapped = if &typo[at..at + 1] == "A" { "B" } else { "A" };
    typo.replace_range(at..at + 1, swapped);
    let out = new.run(&["recover", "--yes"], Some(format!("{typo}\n").as_bytes()));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("checksum"), "{}", text(&out.stderr));
    let out = new.run(&["recover", "--yes"], Some(b"AKRK-TRUNC\n"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let other = Master::new(&server.url);
    let stranger_key = init(&other, "other-account");
    let elsewhere = Master::new(&server.url);
    other.ok(&["recovery-key", "rotate", "--yes"], None);
    let out = elsewhere.run(&["recover", "--yes"], Some(format!("{stranger_key}\n").as_bytes()));
    assert_eq!(out.status.code(), Some(5), "a rotated key finds no account: {}", text(&out.stderr));

    // The real recovery: held for the delay, seen loudly by the remaining device.
    let code = open_recovery(&new, &recovery_key);
    let whoami = lost.run(&["whoami"], None);
    assert!(text(&whoami.stderr).contains("RECOVERY PENDING"), "{}", text(&whoami.stderr));
    assert!(text(&whoami.stderr).contains(&format!("agentkeys deny {code}")), "{}", text(&whoami.stderr));
    let requests = text(&lost.ok(&["requests"], None));
    assert!(requests.contains(&code) && requests.contains("RECOVER THIS ACCOUNT"), "{requests}");
    // It is not approved, only waited out or denied.
    let approve = lost.run(&["approve", &code, "--yes"], None);
    assert_eq!(approve.status.code(), Some(4), "{}", text(&approve.stderr));
    // A second recovery while one is pending is refused.
    let second = Master::new(&server.url);
    let out = second.run(&["recover", "--yes"], Some(format!("{recovery_key}\n").as_bytes()));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pending already"), "{}", text(&out.stderr));
    // Completing before the delay: exit 6 with the time left.
    let early = new.run(&["recover", "--complete", "--yes"], Some(format!("{recovery_key}\n").as_bytes()));
    assert_eq!(early.status.code(), Some(6), "{}", text(&early.stderr));
    assert!(
        text(&early.stderr).contains("3d 0h left") || text(&early.stderr).contains("2d 23h left"),
        "{}",
        text(&early.stderr)
    );

    // Past the delay (the server's clock moved 72 h ahead), the new machine completes.
    skew.store(72 * HOUR_MS + 60_000, Ordering::Relaxed);
    let done = new.run(&["recover", "--complete", "--yes"], Some(format!("{recovery_key}\n").as_bytes()));
    skew.store(0, Ordering::Relaxed);
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stderr));
    assert!(text(&done.stderr).contains("Recovered account"), "{}", text(&done.stderr));
    // It is a master device with everything: the vault, the agents, approvals.
    assert_eq!(new.ok(&["read", "openai"], None), b"sk-survives-the-loss");
    let listed = devices(&new);
    assert_eq!(listed.iter().map(|d| d["joined_by"].as_str().unwrap()).collect::<Vec<_>>(), ["init", "recovery"]);
    new.ok(&["device", "revoke", "lost-laptop", "--yes"], None);
    assert_eq!(lost.run(&["list"], None).status.code(), Some(4), "the lost laptop is revoked");
    let read = host.run(&[
        "run",
        "--session-id",
        &DaemonHost::session_arg(&agent),
        "--no-mask",
        "--env",
        "K=openai",
        "--",
        "printenv",
        "K",
    ]);
    assert_eq!(text(&read.stdout).trim(), "sk-survives-the-loss", "{}", text(&read.stderr));
    // The recovery key is rotated: the old one opens nothing, the new one opens a recovery that
    // the recovered device denies; its completion then changes nothing.
    let rotated = json_of(&new.ok(&["recovery-key", "rotate", "--yes", "--json"], None));
    let new_key = rotated["recovery_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, recovery_key);
    let thief = Master::new(&server.url);
    let out = thief.run(&["recover", "--yes"], Some(format!("{recovery_key}\n").as_bytes()));
    assert_eq!(out.status.code(), Some(5), "the old key is gone: {}", text(&out.stderr));
    let code = open_recovery(&thief, &new_key);
    new.ok(&["deny", &code], None);
    skew.store(73 * HOUR_MS, Ordering::Relaxed);
    let denied = thief.run(&["recover", "--complete", "--yes"], Some(format!("{new_key}\n").as_bytes()));
    skew.store(0, Ordering::Relaxed);
    assert_eq!(denied.status.code(), Some(6), "{}", text(&denied.stderr));
    assert!(text(&denied.stderr).contains("denied"), "{}", text(&denied.stderr));
    assert_eq!(devices(&new).len(), 2, "the denied recovery added no device");
    // The audit says what happened, and verifies.
    let usage = text(&new.ok(&["usage", "--json", "--since", "100h"], None));
    for action in ["recovery.open", "recovery.complete", "device.revoke", "recovery_key.rotate", "request.deny"] {
        assert!(usage.contains(action), "{action} audited: {usage}");
    }
}

async fn the_recovery_delay_is_a_setting_whose_shortening_is_critical(backend: Backend) {
    let Some((_db, server, _)) = skewed_server(backend).await else { return };
    let master = Master::new(&server.url);
    let recovery_key = init(&master, "laptop");
    assert_eq!(text(&master.ok(&["config", "get", "recovery-delay"], None)).trim(), "3days");
    let short = master.run(&["config", "set", "recovery-delay", "30m"], None);
    assert_eq!(short.status.code(), Some(2), "{}", text(&short.stderr));
    assert!(text(&short.stderr).contains("at least 1h"), "{}", text(&short.stderr));
    let bare_yes = master
        .command(&["config", "set", "recovery-delay", "2h", "--yes"])
        .env("AGENTKEYS_BIOMETRIC", "required")
        .output()
        .unwrap();
    assert_eq!(bare_yes.status.code(), Some(2), "shortening needs presence: {}", text(&bare_yes.stderr));
    assert!(text(&bare_yes.stderr).contains("`config-weaken` is a critical operation"), "{}", text(&bare_yes.stderr));
    master.ok(&["config", "set", "recovery-delay", "2h", "--yes"], None);
    assert_eq!(text(&master.ok(&["config", "get", "recovery-delay"], None)).trim(), "2h");
    master.ok(&["config", "set", "recovery-delay", "1week"], None);
    master.ok(&["config", "set", "recovery-delay", "1h", "--yes"], None);
    // A recovery opened now waits the new delay.
    let new = Master::new(&server.url);
    let opened = json_of(&new.ok(&["recover", "--json", "--yes"], Some(format!("{recovery_key}\n").as_bytes())));
    let delay = opened["not_before_ms"].as_i64().unwrap() - agentkeys_core::client::unix_now_s() * 1000;
    assert!((HOUR_MS - 120_000..=HOUR_MS + 1000).contains(&delay), "{delay}");
}

/// What `host`'s agent session reads of `service` (through `agentkeys-daemon run`).
fn agent_reads(host: &DaemonHost, agent: &str, service: &str) -> std::process::Output {
    let env = format!("K={service}");
    host.run(&[
        "run",
        "--session-id",
        &DaemonHost::session_arg(agent),
        "--no-mask",
        "--env",
        &env,
        "--",
        "printenv",
        "K",
    ])
}

fn agent_entry(master: &Master, label: &str) -> Value {
    let agents = json_of(&master.ok(&["agents", "--json"], None));
    agents["agents"].as_array().unwrap().iter().find(|a| a["label"] == label).cloned().unwrap()
}

async fn an_agent_is_recovered_on_a_replacement_machine(backend: Backend) {
    let Some((_db, server, _)) = skewed_server(backend).await else { return };
    let master = Master::new(&server.url);
    init(&master, "laptop");
    master.ok(&["store", "openai"], Some(b"sk-vault-openai"));
    let old = DaemonHost::new(&server.url);
    let agent = old.pair(&master, "bot", "openai");
    master.ok(&["link", "bot", "--alias", "ci"], None);
    master.ok(&["store", "deploy-key", "--agent", "bot"], Some(b"private-to-bot"));
    master.ok(&["agent", "upgrade", "bot", "--tier", "admin", "--yes"], None);

    // The replacement machine names the agent by its alias; the master approves with the OTP.
    let new = DaemonHost::new(&server.url);
    let recovering = new.start_recover("ci");
    let approved = master.approve_pairing(&recovering, &["--yes"]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    assert!(text(&approved.stderr).contains("revoked once this is approved"), "{}", text(&approved.stderr));
    let (code, stderr) = recovering.finish();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("Session saved as daemon-{agent}")), "the same agent id: {stderr}");
    // Same agent: scope, tier, aliases and private credentials survive; the old machine is out.
    for (service, value) in [("openai", "sk-vault-openai"), ("deploy-key", "private-to-bot")] {
        let read = agent_reads(&new, &agent, service);
        assert_eq!(text(&read.stdout).trim(), value, "{}", text(&read.stderr));
    }
    let refused = agent_reads(&old, &agent, "openai");
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused.stderr));
    let entry = agent_entry(&master, "bot");
    assert_eq!(entry["agent_id"], agent.as_str());
    assert_eq!(entry["tier"], "admin");
    assert_eq!(entry["scope"], serde_json::json!(["openai"]));
    assert_eq!(entry["aliases"], serde_json::json!(["ci"]));
    let live: Vec<&Value> = entry["devices"].as_array().unwrap().iter().filter(|d| d["revoked"] == false).collect();
    assert_eq!(live.len(), 1, "only the replacement is live: {entry}");
    // A credential stored now reaches the replacement too.
    master.ok(&["store", "openai"], Some(b"sk-vault-openai-2"));
    assert_eq!(text(&agent_reads(&new, &agent, "openai").stdout).trim(), "sk-vault-openai-2");

    // With --keep-old, a second replacement joins beside the first.
    let spare = DaemonHost::new(&server.url);
    let recovering = spare.start_recover(&agent);
    let approved = master.approve_pairing(&recovering, &["--yes", "--keep-old"]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    assert_eq!(recovering.finish().0, 0);
    for host in [&new, &spare] {
        assert_eq!(text(&agent_reads(host, &agent, "deploy-key").stdout).trim(), "private-to-bot");
    }
}

async fn a_torn_down_or_unknown_agent_is_not_recovered(backend: Backend) {
    let Some((_db, server, _)) = skewed_server(backend).await else { return };
    let master = Master::new(&server.url);
    init(&master, "laptop");
    master.ok(&["store", "openai"], Some(b"sk-vault-openai"));
    // A torn-down agent is not recovered: the master is told to pair anew, and nothing changes.
    let doomed = DaemonHost::new(&server.url);
    doomed.pair(&master, "gone", "openai");
    master.ok(&["teardown", "gone", "--yes"], None);
    let late = DaemonHost::new(&server.url);
    let recovering = late.start_recover("gone");
    let refused = master.approve_pairing(&recovering, &["--yes"]);
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("torn down") && text(&refused.stderr).contains("pair"),
        "{}",
        text(&refused.stderr)
    );
    master.ok(&["deny", &recovering.prompt.code], None);
    assert_eq!(recovering.finish().0, 6);
    // And an agent that does not exist is named as such.
    let stray = DaemonHost::new(&server.url);
    let recovering = stray.start_recover("no-such-bot");
    let refused = master.approve_pairing(&recovering, &["--yes"]);
    assert_eq!(refused.status.code(), Some(5), "{}", text(&refused.stderr));
    master.ok(&["deny", &recovering.prompt.code], None);
    assert_eq!(recovering.finish().0, 6);
}

on_both_backends!(
    two_master_devices_share_the_vault_and_each_approves,
    a_stolen_laptop_is_revoked_and_refused_at_once,
    the_account_is_recovered_with_its_recovery_key_after_the_delay,
    the_recovery_delay_is_a_setting_whose_shortening_is_critical,
    an_agent_is_recovered_on_a_replacement_machine,
    a_torn_down_or_unknown_agent_is_not_recovered,
);
