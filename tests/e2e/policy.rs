//! The policy (issue 16, part 2), through the real binaries: a time-window `deny` decided at two
//! instants of the server's injected clock, naming its rule, recorded in the audit row and shown
//! by `policy explain`; `policy test` passing and failing; `policy set` refusing bad files with
//! every problem listed, and weakening as a critical change; `require_approval` turning a read
//! into a release, decided by the policy in force at approval time; a rate; an `allow` that
//! cannot give what scope does not; `deny` on an agent's `list` and `request`; and
//! `require_presence` on the owner's own operations, asked when the server says so and never
//! skipped. On SQLite and PostgreSQL.

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

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Writes `body` to a file in the master's home and returns its path.
fn file(master: &Master, name: &str, body: &str) -> String {
    let path = master.home.path().join(name);
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

/// The agent's `run` of `printenv K` with `K` bound to `service`.
fn agent_reads(host: &DaemonHost, agent: &str, service: &str) -> std::process::Output {
    let binding = format!("K={service}");
    let session = DaemonHost::session_arg(agent);
    host.run(&["run", "--session-id", &session, "--no-mask", "--env", &binding, "--", "printenv", "K"])
}

/// The newest audit row of `action` on `service` (of `outcome`, when given): its presence and
/// policy rule.
async fn audited(db: &TestDb, action: &str, service: &str, outcome: Option<&str>) -> (Option<String>, Option<String>) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.expect("connect to the test database");
    let of_outcome = if outcome.is_some() { "AND outcome = $3" } else { "" };
    let sql = format!(
        "SELECT presence, policy_rule FROM audit_log WHERE action = $1 AND service = $2 {of_outcome} \
         ORDER BY seq DESC LIMIT 1"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(action).bind(service);
    if let Some(outcome) = outcome {
        query = query.bind(outcome);
    }
    let row = query.fetch_one(&mut conn).await.expect("an audit row");
    (row.get("presence"), row.get("policy_rule"))
}

/// The `policy_rule` column of the newest audit row of `action` on `service`.
async fn audited_rule(db: &TestDb, action: &str, service: &str) -> Option<String> {
    audited(db, action, service, None).await.1
}

/// `HH:MM` (UTC) of a minute boundary.
fn hhmm(ms: i64) -> String {
    let minutes = (ms / 60_000).rem_euclid(24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

async fn a_time_window_deny_is_decided_by_the_servers_clock_and_explained(backend: Backend) {
    let Some((db, server, skew)) = skewed_server(backend).await else { return };
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "prod-db"], Some(b"postgres://prod"));
    let host = DaemonHost::new(&server.url);
    let bot = host.pair(&master, "build-bot", "prod-db");
    // A window ending at the nearest minute boundary: 15 s before it the rule matches, 15 s
    // after it does not. The server's clock moves at most 45 s, inside the signatures' 60 s.
    let boundary = (now_ms() + 30_000) / 60_000 * 60_000;
    let rule = format!(
        "# prod is off limits for build agents in the hour before {end}\n[[rule]]\nname = \"no-prod-at-night\"\n\
         agents = [\"build-*\"]\nservices = [\"prod-*\"]\nactions = [\"read\", \"run\"]\nhours = \"{start}-{end}\"\n\
         effect = \"deny\"\n",
        start = hhmm(boundary - 3_600_000),
        end = hhmm(boundary)
    );
    let policy = file(&master, "policy.toml", &rule);
    let iso = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap().to_string();
    let cases = |expect_before: &str| {
        format!(
            "[[case]]\nname = \"before\"\nagent = \"build-bot\"\nservice = \"prod-db\"\naction = \"read\"\nat = \"{}\"\n\
             expect = \"{expect_before}\"\n\n[[case]]\nname = \"after\"\nagent = \"build-bot\"\nservice = \"prod-db\"\n\
             action = \"run\"\nat = \"{}\"\nexpect = \"allow\"\n",
            iso(boundary - 15_000),
            iso(boundary + 15_000)
        )
    };
    // Tested before it is set: passing, then failing with the mismatch named.
    let passing = file(&master, "pass.toml", &cases("deny"));
    let out = master.run(&["policy", "test", &passing, "--policy", &policy], None);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("2 cases, 2 passed, 0 failed"), "{}", text(&out.stdout));
    let failing = file(&master, "fail.toml", &cases("allow"));
    let out = master.run(&["policy", "test", &failing, "--policy", &policy], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("FAIL before: expected allow, got deny (rule no-prod-at-night)"), "{shown}");
    // Set, then decided at two instants of the server's clock.
    let out = master.run(&["policy", "set", &policy], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("+ rule no-prod-at-night"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("policy version 1 set"), "{}", text(&out.stderr));
    // The policy in force, tested against the server's copy.
    assert!(master.run(&["policy", "test", &passing], None).status.success());
    skew.store(boundary - 15_000 - now_ms(), Ordering::Relaxed);
    let denied = agent_reads(&host, &bot, "prod-db");
    let stderr = text(&denied.stderr);
    assert_eq!(denied.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("DENIED") && stderr.contains("rule no-prod-at-night"), "{stderr}");
    assert_eq!(audited_rule(&db, "credential.read", "prod-db").await.as_deref(), Some("v1:no-prod-at-night"));
    skew.store(boundary + 15_000 - now_ms(), Ordering::Relaxed);
    let served = agent_reads(&host, &bot, "prod-db");
    assert_eq!(text(&served.stdout).trim(), "postgres://prod", "{}", text(&served.stderr));
    assert_eq!(audited_rule(&db, "credential.read", "prod-db").await.as_deref(), Some("v1"), "version 1, no rule");
    skew.store(0, Ordering::Relaxed);
    // `explain` names the rule of a denied row, and says when none decided.
    let usage = json_of(&master.ok(&["usage", "--json", "--since", "1h"], None));
    let reads: Vec<&Value> =
        usage["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "credential.read").collect();
    let denied_row = reads.iter().find(|e| e["outcome"] == "denied").expect("the denied read");
    assert_eq!(denied_row["rule"], "v1:no-prod-at-night");
    let explained = text(&master.ok(&["policy", "explain", &denied_row["seq"].to_string()], None));
    assert!(explained.contains("decided by rule no-prod-at-night of policy version 1"), "{explained}");
    assert!(explained.contains("services = [\"prod-*\"]"), "{explained}");
    let allowed_row = reads.iter().rev().find(|e| e["outcome"] == "allowed").expect("the allowed read");
    let explained = text(&master.ok(&["policy", "explain", &allowed_row["seq"].to_string()], None));
    assert!(explained.contains("no rule decided it; scope and tier did (policy version 1"), "{explained}");
    // A row from before the policy names none.
    let store_row = usage["entries"].as_array().unwrap().iter().find(|e| e["action"] == "credential.store").unwrap();
    let explained = text(&master.ok(&["policy", "explain", &store_row["seq"].to_string()], None));
    assert!(explained.contains("(policy version 0 was in force)"), "{explained}");
    // Shown as it was set, comments and all; version 0 is the empty policy.
    let shown = text(&master.ok(&["policy", "show"], None));
    assert!(shown.contains("# prod is off limits"), "{shown}");
    let missing = master.run(&["policy", "show", "--version", "7"], None);
    assert_eq!(missing.status.code(), Some(5), "{}", text(&missing.stderr));
}

async fn bad_policies_are_refused_and_weakening_is_critical(backend: Backend) {
    let Some((db, server, _skew)) = skewed_server(backend).await else { return };
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-1"));
    master.ok(&["store", "github"], Some(b"gh-1"));
    let host = DaemonHost::new(&server.url);
    let bot = host.pair(&master, "bot", "openai");
    for (body, expected) in [
        ("[[rule]\nname = \"x\"", "line 1"),
        ("[[rule]]\nname = \"x\"\neffect = \"deny\"\nagent = [\"bot\"]\n", "unknown field `agent`"),
        (
            "[[rule]]\nname = \"x\"\neffect = \"deny\"\nhours = \"20:00-07:00\"\ntz = \"Europe/Berln\"\n",
            "time zone 'Europe/Berln'",
        ),
        ("[[rule]]\nname = \"x\"\neffect = \"deny\"\nservices = [\"prod db\"]\n", "can never match"),
        ("[[rule]]\nname = \"x\"\neffect = \"deny\"\n[[rule]]\nname = \"x\"\neffect = \"allow\"\n", "used twice"),
    ] {
        let path = file(&master, "bad.toml", body);
        let out = master.run(&["policy", "set", &path], None);
        assert_eq!(out.status.code(), Some(1), "{body}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(expected), "{body}: {}", text(&out.stderr));
    }
    assert!(text(&master.ok(&["policy", "show"], None)).is_empty(), "nothing was set");
    // An `allow` cannot give what scope does not.
    let widen = file(
        &master,
        "allow.toml",
        "[[rule]]\nname = \"let-bot-read-github\"\nagents = [\"bot\"]\nservices = [\"github\"]\neffect = \"allow\"\n",
    );
    master.ok(&["policy", "set", &widen], None);
    let out = agent_reads(&host, &bot, "github");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no access"), "scope decides: {}", text(&out.stderr));
    // A rate: two reads an hour, then the rule matches.
    let rate = file(
        &master,
        "rate.toml",
        "[[rule]]\nname = \"let-bot-read-github\"\nagents = [\"bot\"]\nservices = [\"github\"]\neffect = \"allow\"\n\n\
         [[rule]]\nname = \"two-an-hour\"\nagents = [\"bot\"]\nrate = \"2/h\"\neffect = \"deny\"\n",
    );
    master.ok(&["policy", "set", &rate], None);
    for _ in 0..2 {
        assert!(agent_reads(&host, &bot, "openai").status.success());
    }
    let third = agent_reads(&host, &bot, "openai");
    assert_eq!(third.status.code(), Some(4), "{}", text(&third.stderr));
    assert!(text(&third.stderr).contains("rule two-an-hour"), "{}", text(&third.stderr));
    // Dropping the deny weakens the policy: the CLI says so and shows presence for it (the
    // audit row records how), while adding a rule is not critical.
    let out = master.run(&["policy", "set", &widen, "--yes"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("weakens the policy: it removes deny rule 'two-an-hour'"),
        "{}",
        text(&out.stderr)
    );
    assert!(agent_reads(&host, &bot, "openai").status.success(), "the rate rule is gone");
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let presence: Vec<Option<String>> =
        sqlx::query("SELECT presence FROM audit_log WHERE action = 'policy.set' AND outcome = 'allowed' ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<Option<String>, _>("presence"))
            .collect();
    assert_eq!(presence.len(), 3, "{presence:?}");
    assert!(presence[..2].iter().all(Option::is_none), "adding rules is not critical: {presence:?}");
    assert!(presence[2].is_some(), "the weakening change showed presence: {presence:?}");
    // Three versions were set, each kept.
    let shown = json_of(&master.ok(&["policy", "show", "--json"], None));
    assert_eq!(shown["version"], 3);
    // A device that set from what it saw at version 2 (another device set 3 meanwhile) is
    // refused, and version 3 stays in force.
    let client = agentkeys_core::ApiClient::for_session(&server.url, master.session()).unwrap();
    let stale =
        agentkeys_proto::policy::SetPolicyRequest { text: std::fs::read_to_string(&rate).unwrap(), base_version: 2 };
    match client.set_policy(&stale).await {
        Err(agentkeys_core::ClientError::Api { detail, .. }) => {
            assert_eq!(detail.code, agentkeys_proto::ErrorCode::VersionConflict, "{}", detail.message);
            assert!(detail.message.contains("at version 3 now, not 2"), "{}", detail.message);
        }
        other => panic!("a stale base is refused: {other:?}"),
    }
    assert_eq!(json_of(&master.ok(&["policy", "show", "--json"], None))["version"], 3);
}

async fn require_approval_makes_a_read_a_release_decided_by_the_policy_in_force(backend: Backend) {
    let Some((_db, server, _skew)) = skewed_server(backend).await else { return };
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "prod-db"], Some(b"postgres://prod"));
    let host = DaemonHost::new(&server.url);
    let bot = host.pair(&master, "bot", "prod-db");
    let ask = file(
        &master,
        "ask.toml",
        "[[rule]]\nname = \"ask-for-prod\"\nservices = [\"prod-*\"]\neffect = \"require_approval\"\n",
    );
    master.ok(&["policy", "set", &ask], None);
    let code_of = |out: &std::process::Output| {
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{stderr}");
        assert!(stderr.contains("APPROVAL_REQUIRED"), "{stderr}");
        let listed = json_of(&master.ok(&["requests", "--json"], None));
        let release = listed["requests"].as_array().unwrap().iter().rev().find(|r| r["kind"] == "release").cloned();
        let code = release.expect("a release request")["code"].as_str().unwrap().to_owned();
        assert!(stderr.contains(&code), "{stderr}");
        code
    };
    let code = code_of(&agent_reads(&host, &bot, "prod-db"));
    master.ok(&["approve", &code, "--yes"], None);
    let served = agent_reads(&host, &bot, "prod-db");
    assert_eq!(text(&served.stdout).trim(), "postgres://prod", "{}", text(&served.stderr));
    // One use: the next read asks again.
    let pending = code_of(&agent_reads(&host, &bot, "prod-db"));
    // The policy changes while that request is pending: the approval is decided by the policy
    // in force then, which no longer asks, and the agent reads as scope gives.
    let calm = file(&master, "calm.toml", "");
    let out = master.run(&["policy", "set", &calm, "--yes"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("removes require_approval rule 'ask-for-prod'"), "{}", text(&out.stderr));
    let late = master.run(&["approve", &pending, "--yes"], None);
    assert_eq!(late.status.code(), Some(4), "{}", text(&late.stderr));
    assert!(text(&late.stderr).contains("no policy rule requires approval for it now"), "{}", text(&late.stderr));
    let served = agent_reads(&host, &bot, "prod-db");
    assert_eq!(text(&served.stdout).trim(), "postgres://prod", "{}", text(&served.stderr));
}

async fn require_presence_guards_the_owners_operations_and_cannot_be_skipped(backend: Backend) {
    let Some((db, server, _skew)) = skewed_server(backend).await else { return };
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-1"));
    master.ok(&["agent", "create", "bot", "--scope", "openai", "--yes"], None);
    let guard = file(
        &master,
        "guard.toml",
        "[[rule]]\nname = \"guard-prod\"\nservices = [\"prod-*\"]\nactions = [\"store\", \"scope.add\", \"agent.create\"]\n\
         effect = \"require_presence\"\n",
    );
    master.ok(&["policy", "set", &guard], None);
    // What the rule does not match stays silent.
    master.ok(&["store", "github"], Some(b"gh-1"));
    // With presence checks off (the suite's default), the server's refusal stands, naming the
    // rule and the fix, and nothing is stored.
    let out = master.run(&["store", "prod-db"], Some(b"postgres://prod"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("rule guard-prod of the account's policy (version 1) requires presence"), "{stderr}");
    assert!(stderr.contains("presence checks are off here"), "{stderr}");
    assert_eq!(master.run(&["read", "prod-db"], None).status.code(), Some(5), "nothing was stored");
    // A critical operation shown as skipped does not satisfy the rule either.
    let out = master.run(&["--no-biometric", "--yes", "scope", "bot", "--add", "prod-db"], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("scope.add of 'prod-db'") && stderr.contains("a skipped check does not count"), "{stderr}");
    // Nor does creating an agent with that service in its scope go around it.
    let out = master.run(&["--no-biometric", "--yes", "agent", "create", "bot2", "--scope", "prod-db"], None);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("agent.create of 'prod-db'"), "{}", text(&out.stderr));
    let agents = json_of(&master.ok(&["--json", "agents"], None));
    assert!(agents["agents"].as_array().unwrap().iter().all(|a| a["label"] != "bot2"), "{agents}");
    // In person: the server refuses the first send, the CLI asks on the terminal (the typed
    // confirmation: no fingerprint reader here), then sends it again.
    let value = file(&master, "prod-db.txt", "postgres://prod");
    let mut command = master.command(&["store", "prod-db", "--file", &value]);
    command
        .env_remove("AGENTKEYS_BIOMETRIC")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/system_bus_socket")
        .env("AGENTKEYS_PRESENCE_TIMEOUT", "20");
    let mut store = crate::terminal::in_terminal(command);
    store.exp_string("Go on with PUT /v1/credentials/prod-db; the server says: rule guard-prod").unwrap();
    store.exp_string("Type \"allow guard-prod\" to confirm: ").unwrap();
    store.send_line("allow guard-prod").unwrap();
    let shown = store.exp_eof().unwrap();
    assert_eq!(crate::terminal::exit_code(&store), 0, "{shown}");
    assert_eq!(master.ok(&["read", "prod-db"], None), b"postgres://prod");
    let (presence, rule) = audited(&db, "credential.store", "prod-db", Some("allowed")).await;
    assert_eq!((presence.as_deref(), rule.as_deref()), (Some("prompt"), Some("v1:guard-prod")));
}

async fn deny_rules_on_list_and_request_refuse_an_agent(backend: Backend) {
    use agentkeys_core::ClientError;
    use agentkeys_proto::agents::{AgentAskRequest, RequestKind};
    let Some((db, server, _skew)) = skewed_server(backend).await else { return };
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-1"));
    let host = DaemonHost::new(&server.url);
    let bot = host.pair(&master, "bot", "openai");
    let client = agentkeys_core::ApiClient::for_session(&server.url, host.session(&bot)).unwrap();
    let ask = |service: &str| AgentAskRequest {
        kind: RequestKind::Access,
        service: Some(service.to_owned()),
        tier: None,
        reason: "deploy".to_owned(),
    };
    assert_eq!(client.list_credentials().await.unwrap().credentials.len(), 1);
    let quiet = file(
        &master,
        "quiet.toml",
        "[[rule]]\nname = \"no-listing\"\nagents = [\"bot\"]\nactions = [\"list\"]\neffect = \"deny\"\n\n\
         [[rule]]\nname = \"no-prod-asks\"\nservices = [\"prod-*\"]\nactions = [\"request\"]\neffect = \"deny\"\n",
    );
    master.ok(&["policy", "set", &quiet], None);
    let denied = |answer: Result<(), ClientError>, rule: &str| match answer {
        Err(ClientError::Api { detail, .. }) => {
            assert_eq!(detail.code, agentkeys_proto::ErrorCode::Denied, "{}", detail.message);
            assert!(detail.message.contains(&format!("rule {rule} of the account's policy")), "{}", detail.message);
        }
        other => panic!("{rule} denies: {other:?}"),
    };
    denied(client.list_credentials().await.map(drop), "no-listing");
    denied(client.ask(&ask("prod-db")).await.map(drop), "no-prod-asks");
    assert_eq!(audited_rule(&db, "request.open", "prod-db").await.as_deref(), Some("v1:no-prod-asks"));
    // What the rules do not name goes on: another service's ask reaches the owner's queue.
    let opened = client.ask(&ask("github")).await.expect("an ask no rule denies");
    let queue = json_of(&master.ok(&["requests", "--json"], None));
    assert!(queue["requests"].as_array().unwrap().iter().any(|r| r["code"] == opened.code.as_str()), "{queue}");
    assert!(queue["requests"].as_array().unwrap().iter().all(|r| r["scope"] != serde_json::json!(["prod-db"])));
}

on_both_backends!(
    a_time_window_deny_is_decided_by_the_servers_clock_and_explained,
    bad_policies_are_refused_and_weakening_is_critical,
    require_approval_makes_a_read_a_release_decided_by_the_policy_in_force,
    require_presence_guards_the_owners_operations_and_cannot_be_skipped,
    deny_rules_on_list_and_request_refuse_an_agent,
);
