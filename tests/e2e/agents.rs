//! The agent side end to end: `agentkeys-daemon` and the master's agent commands against a real
//! server — pairing through both binaries, link codes, the OTP that catches a swapped key, code
//! guessing, the access matrix, certificates, revoke and teardown, several daemons on one host,
//! and the MCP server driven by the official Python SDK.

use agentkeys_core::vault::{self, Namespace};
use agentkeys_core::{ApiClient, ClientError, OsRandom, RandomSource as _};
use agentkeys_proto::{ErrorCode, ids};
use agentkeys_tests::{
    Backend, DaemonHost, Master, ServerProcess, TestDb, contains_any_window, no_memory, test_python,
};
use sqlx::{Connection as _, Row as _};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn server() -> (TestDb, ServerProcess) {
    server_on(Backend::Sqlite).await.expect("sqlite")
}

/// A server process on `backend`; `None` when PostgreSQL is unavailable outside CI (skipped).
async fn server_on(backend: Backend) -> Option<(TestDb, ServerProcess)> {
    let db = TestDb::new(backend).await?;
    let server = ServerProcess::start(&db.url);
    Some((db, server))
}

// The tests whose SQL differs most between the backends run on both.
on_both_backends!(
    the_access_matrix_holds_on_every_endpoint,
    link_codes_bind_end_to_end_and_work_once,
    teardown_deletes_private_credentials_and_wraps,
    the_master_refuses_a_key_the_otp_does_not_match,
    a_device_the_account_never_certified_gets_no_key,
);

async fn db_conn(db: &TestDb) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&db.url).await.expect("connect to the test database")
}

fn api_code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Api { detail, .. }) => detail.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn vault_code<T: std::fmt::Debug>(result: Result<T, vault::VaultError>) -> ErrorCode {
    match result {
        Err(vault::VaultError::Client(ClientError::Api { detail, .. })) => detail.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn pairing_through_both_binaries_then_read_run_and_revoke() {
    let (_db, server) = server().await;
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-openai-pairing"));
    master.ok(&["store", "github"], Some(b"ghp-not-for-bots"));
    let host = DaemonHost::new(&server.url);
    let agent_id = host.pair(&master, "build-bot", "openai");
    assert_eq!(agent_id, ids::agent_id(&master.session().account_id, "build-bot"), "ids derive from the label");

    let agents: serde_json::Value = serde_json::from_slice(&master.ok(&["agents", "--json"], None)).unwrap();
    let agent = &agents["agents"][0];
    assert_eq!((agent["label"].as_str(), agent["tier"].as_str()), (Some("build-bot"), Some("standard")));
    assert_eq!(agent["scope"], serde_json::json!(["openai"]));

    let who = text(&host.run(&["whoami"]).stdout);
    assert!(who.contains("build-bot") && who.contains("standard") && !who.contains("akt_"), "{who}");

    let ran = host.run(&["run", "--env", "KEY=openai", "--", "sh", "-c", "echo got:$KEY; exit 7"]);
    assert_eq!(ran.status.code(), Some(7), "the child's status passes through");
    assert_eq!(text(&ran.stdout), "got:********\n", "the value is masked");
    let outside = host.run(&["run", "--env", "KEY=github", "--", "true"]);
    assert_eq!(outside.status.code(), Some(4), "{}", text(&outside.stderr));
    assert!(text(&outside.stderr).contains("Fix: agentkeys scope build-bot --add github"), "{}", text(&outside.stderr));

    // An alias works wherever <agent> is taken; revoke ends the session on the next request.
    master.ok(&["link", "build-bot", "--alias", "ci"], None);
    master.ok(&["revoke", "ci", "--yes"], None);
    let revoked = host.run(&["run", "--env", "KEY=openai", "--", "true"]);
    assert_eq!(revoked.status.code(), Some(4), "{}", text(&revoked.stderr));
    assert!(text(&revoked.stderr).contains("REVOKED"), "{}", text(&revoked.stderr));
    let usage = text(&master.ok(&["usage", "build-bot", "--since", "1h"], None));
    // The agent's usage holds its own rows, not the master's.
    assert!(usage.contains("credential.read") && !usage.contains("account.create"), "{usage}");
    assert!(!usage.contains("sk-openai-pairing"));
    let all = text(&master.ok(&["usage", "--since", "1h"], None));
    for action in ["request.lookup", "request.approve", "agent:", "agent.revoke", "REVOKED", "DENIED"] {
        assert!(all.contains(action), "the audit shows {action}:\n{all}");
    }
}

#[tokio::test]
async fn a_denied_pairing_exits_6_and_a_code_is_single_use() {
    let (_db, server) = server().await;
    let master = Master::new(&server.url);
    master.init();
    let host = DaemonHost::new(&server.url);
    let pairing = host.start_pair("denied-bot", "");
    let code = pairing.prompt.code.clone();
    master.ok(&["deny", &code], None);
    let (exit, stderr) = pairing.finish();
    assert_eq!(exit, 6, "{stderr}");
    assert!(stderr.contains("denied"), "{stderr}");
    let again = master.run(&["approve", &code, "--otp", "000000"], None);
    assert_eq!(again.status.code(), Some(5), "a decided code is gone: {}", text(&again.stderr));

    // A wrong OTP typed at approve refuses, and leaves the request to deny.
    let pairing = host.start_pair("typo-bot", "");
    let otp = master.claim_pairing(&pairing);
    let wrong = if otp == "123456" { "654321" } else { "123456" };
    let refused = master.run(&["approve", &pairing.prompt.code], Some(format!("{wrong}\n").as_bytes()));
    assert_eq!(refused.status.code(), Some(6), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("does not match"), "{}", text(&refused.stderr));
    let empty = master.run(&["approve", &pairing.prompt.code, "--yes"], None);
    assert_eq!(empty.status.code(), Some(6), "--yes does not stand in for the OTP: {}", text(&empty.stderr));
    master.ok(&["deny", &pairing.prompt.code], None);
    assert_eq!(pairing.finish().0, 6);
}

async fn the_master_refuses_a_key_the_otp_does_not_match(backend: Backend) {
    let Some((db, server)) = server_on(backend).await else { return };
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-swap-target"));
    let host = DaemonHost::new(&server.url);
    let pairing = host.start_pair("swap-bot", "openai");
    // A malicious server swaps the daemon's key for one of its own before the master looks.
    let mut conn = db_conn(&db).await;
    let swapped = agentkeys_core::crypto::KeyPair::generate(&mut OsRandom).public();
    sqlx::query("UPDATE requests SET device_kx_public = $1 WHERE code = $2")
        .bind(swapped.kx.to_vec())
        .bind(&pairing.prompt.code)
        .execute(&mut conn)
        .await
        .unwrap();
    let out = master.approve_pairing(&pairing, &[]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("does not match"), "{}", text(&out.stderr));
    let wraps: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM credential_wraps").fetch_one(&mut conn).await.unwrap().get("n");
    assert_eq!(wraps, 0, "nothing was wrapped to the swapped key");
    master.ok(&["deny", &pairing.prompt.code], None);
    assert_eq!(pairing.finish().0, 6);

    // The nonce behind the OTP must open the daemon's commitment: a server that changes it after
    // the reveal (to make its own key's number match) is caught too.
    let pairing = host.start_pair("nonce-bot", "openai");
    let otp = master.claim_pairing(&pairing);
    sqlx::query("UPDATE requests SET reveal = $1 WHERE code = $2")
        .bind([9u8; 32].to_vec())
        .bind(&pairing.prompt.code)
        .execute(&mut conn)
        .await
        .unwrap();
    let out = master.run(&["approve", &pairing.prompt.code, "--otp", &otp], None);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("does not open the daemon's commitment"), "{}", text(&out.stderr));
    master.ok(&["deny", &pairing.prompt.code], None);
    assert_eq!(pairing.finish().0, 6);

    // The server shows the daemon an account key of its own (here: its own account claims the
    // code), then hands the request to the real master: the OTP covers the key the daemon pinned,
    // so the real master's number differs and nothing is signed; the daemon sees the account
    // change under it and stops.
    let impostor = Master::new(&server.url);
    impostor.init();
    let pairing = host.start_pair("impostor-bot", "openai");
    let shown = impostor.claim_pairing(&pairing);
    sqlx::query("UPDATE requests SET account_id = $1 WHERE code = $2")
        .bind(&master.session().account_id)
        .bind(&pairing.prompt.code)
        .execute(&mut conn)
        .await
        .unwrap();
    let out = master.run(&["approve", &pairing.prompt.code, "--otp", &shown], None);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("does not match"), "{}", text(&out.stderr));
    let (exit, stderr) = pairing.finish();
    assert_eq!(exit, 1, "{stderr}");
    assert!(stderr.contains("INTEGRITY"), "{stderr}");
}

/// The clock of the guessing test (its own, so it cannot move another test's server).
static GUESS_CLOCK_OFFSET_S: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn guess_clock_now_s() -> i64 {
    agentkeys_core::client::unix_now_s() + GUESS_CLOCK_OFFSET_S.load(std::sync::atomic::Ordering::SeqCst)
}

/// Opens a pairing as a daemon would, without one (the test moves the server's clock).
async fn open_test_pairing(server_url: &str, label: &str) -> agentkeys_proto::agents::OpenPairingResponse {
    use agentkeys_core::crypto::KeyPair;
    let device = KeyPair::generate(&mut OsRandom).public();
    let b64 = agentkeys_proto::b64::encode;
    ApiClient::anonymous(server_url)
        .unwrap()
        .open_pairing(&agentkeys_proto::agents::OpenPairingRequest {
            label: label.into(),
            scope: vec![],
            device_sign_public: b64(device.sign),
            device_kx_public: b64(device.kx),
            token_hash: b64([1u8; 32]),
            poll_hash: b64(sha256(b"poll-secret")),
            commitment: b64(ids::pairing_commitment(&[7; 32])),
            kind: agentkeys_proto::agents::PairingKind::Pairing,
        })
        .await
        .unwrap()
}

fn retry_after<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Result<u64, ErrorCode> {
    match result {
        Err(ClientError::Api { detail, .. }) if detail.code == ErrorCode::RateLimited => {
            Ok(detail.retry_after_s.expect("a rate-limited answer says when to retry"))
        }
        other => Err(api_code(other)),
    }
}

/// Misses slow an account's look-ups (each wait twice the last after five), the tenth locks them
/// for fifteen minutes — the right code included — and a flood of concurrent guesses gets no
/// more misses through than the rule allows. The server's clock is moved by the test, so the
/// waits are walked through, not slept.
#[tokio::test]
async fn guessing_pair_codes_is_slowed_then_locked() {
    use std::sync::atomic::Ordering::SeqCst;
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let clock = agentkeys_server::clock::Clock::from_fn(|| guess_clock_now_s() * 1000);
    let server = agentkeys_tests::InProcessServer::start_with_clock(&db.url, clock).await;
    let anonymous = ApiClient::anonymous(&server.url).unwrap();
    let master_of = |account: agentkeys_core::account::NewAccount| {
        ApiClient::for_session(&server.url, account.session).unwrap().with_clock(guess_clock_now_s)
    };
    let master =
        master_of(agentkeys_core::account::create_account(&anonymous, "guarded-master", &mut OsRandom).await.unwrap());
    let pairing = open_test_pairing(&server.url, "target-bot").await;
    let random_code = || ids::format_request_code(OsRandom.array::<5>());

    // 1. A flood: 2,000 concurrent guesses, the right code among them once the account is slowed.
    let (mut found, mut not_found, mut limited) = (0, 0, 0);
    let mut guesses: Vec<String> = (0..2_000).map(|_| random_code()).collect();
    guesses[1_000] = pairing.code.clone();
    for chunk in guesses.chunks(50) {
        let mut tasks = tokio::task::JoinSet::new();
        for code in chunk {
            let (client, code) = (master.clone(), code.clone());
            tasks.spawn(async move { client.lookup_request(&code).await });
        }
        while let Some(answer) = tasks.join_next().await {
            match answer.unwrap() {
                Ok(_) => found += 1,
                Err(ClientError::Api { detail, .. }) if detail.code == ErrorCode::NotFound => not_found += 1,
                Err(ClientError::Api { detail, .. }) if detail.code == ErrorCode::RateLimited => {
                    assert!(detail.retry_after_s.is_some_and(|s| s > 0));
                    limited += 1;
                }
                Err(other) => panic!("unexpected answer to a guess: {other}"),
            }
        }
    }
    assert_eq!(found, 0, "no guess finds the request, the right one included");
    // Five misses, then one every doubling wait: only real time passes here (seconds at most).
    assert!((5..=7).contains(&not_found), "misses answered before the slow-down held: {not_found}");
    assert_eq!(found + not_found + limited, guesses.len());

    // 2. Walk the clock through each wait: every wait is twice the last, until the tenth miss.
    let mut waits = Vec::new();
    let mut misses = not_found;
    while misses < 10 {
        match retry_after(master.lookup_request(&random_code()).await) {
            Ok(seconds) => {
                waits.push(seconds);
                GUESS_CLOCK_OFFSET_S.fetch_add(seconds as i64, SeqCst);
            }
            Err(code) => {
                assert_eq!(code, ErrorCode::NotFound);
                misses += 1;
            }
        }
    }
    assert!(waits.windows(2).all(|w| w[1] >= 2 * w[0] - 1), "each wait doubles: {waits:?}");

    // 3. Locked, and locked means locked on every route that takes a code: the right code gets
    // the same answer as any other, so neither look-up, approve nor deny tells a guesser anything.
    let empty = agentkeys_proto::agents::ApproveRequest::default();
    for code in [pairing.code.clone(), random_code()] {
        let wait = retry_after(master.lookup_request(&code).await).expect("locked");
        assert!((14 * 60..=15 * 60).contains(&wait), "locked for fifteen minutes: {wait}s");
        assert_eq!(api_code(master.approve_request(&code, &empty).await), ErrorCode::RateLimited);
        assert_eq!(api_code(master.deny_request(&code).await), ErrorCode::RateLimited);
    }
    // Another account that never looked the code up cannot approve it, even with a well-formed body.
    let other =
        master_of(agentkeys_core::account::create_account(&anonymous, "other-master", &mut OsRandom).await.unwrap());
    assert_eq!(api_code(other.approve_request(&pairing.code, &empty).await), ErrorCode::NotFound);

    // 4. Still locked after fourteen minutes; over after fifteen (the next miss is counted again).
    GUESS_CLOCK_OFFSET_S.fetch_add(14 * 60, SeqCst);
    assert!(retry_after(master.lookup_request(&random_code()).await).is_ok(), "still locked");
    GUESS_CLOCK_OFFSET_S.fetch_add(60 + 5, SeqCst);
    assert_eq!(api_code(master.lookup_request(&random_code()).await), ErrorCode::NotFound, "the lock is over");
    assert!(retry_after(master.lookup_request(&random_code()).await).is_ok(), "and the next miss waits again");
}

async fn link_codes_bind_end_to_end_and_work_once(backend: Backend) {
    let Some((db, server)) = server_on(backend).await else { return };
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-linked-value-0001"));
    let code = text(&master.ok(&["agent", "create", "linker", "--scope", "openai", "--yes"], None)).trim().to_owned();
    assert!(code.starts_with("AKL1-"), "{code}");
    let host = DaemonHost::new(&server.url);
    // From the environment, not argv.
    let linked = host.command(&["link"]).env("AGENTKEYS_LINK_CODE", &code).output().unwrap();
    assert!(linked.status.success(), "{}", text(&linked.stderr));
    let ran = host.run(&["run", "--no-mask", "--env", "K=openai", "--", "sh", "-c", "printf %s \"$K\""]);
    assert_eq!(text(&ran.stdout), "sk-linked-value-0001", "{}", text(&ran.stderr));

    let again = DaemonHost::new(&server.url).command(&["link", &code]).output().unwrap();
    assert_eq!(again.status.code(), Some(6), "a link code works once: {}", text(&again.stderr));
    let typo = DaemonHost::new(&server.url).command(&["link", &code[..code.len() - 2]]).output().unwrap();
    assert_eq!(typo.status.code(), Some(2), "a cut code is caught locally: {}", text(&typo.stderr));

    // The server never saw the code's secret: no 16-byte window of the code, or of the link key
    // it derives, is in the database.
    let link_key = agentkeys_core::agents::LinkCode::parse(&code).unwrap().key_pair().secret_blob();
    let raw = db.raw_contents();
    assert!(!contains_any_window(&raw, code.as_bytes()));
    assert!(!contains_any_window(&raw, link_key.as_ref()));
    assert!(!contains_any_window(&raw, b"sk-linked-value-0001"), "nor any value");
    let mut conn = db_conn(&db).await;
    let links: i64 = sqlx::query("SELECT COUNT(*) AS n FROM link_wraps").fetch_one(&mut conn).await.unwrap().get("n");
    assert_eq!(links, 0, "the link's wraps are deleted once redeemed");
}

/// Agent A can never read B's private credentials or anything outside its scope or tier; a safe
/// agent sees names, never values; no agent manages agents or writes. Each path is the real API.
async fn the_access_matrix_holds_on_every_endpoint(backend: Backend) {
    let Some((_db, server)) = server_on(backend).await else { return };
    let master = Master::new(&server.url);
    master.init();
    for (service, value) in [("openai", "sk-shared-openai"), ("github", "ghp-shared-github"), ("stripe", "sk-stripe")] {
        master.ok(&["store", service], Some(value.as_bytes()));
    }
    let host = DaemonHost::new(&server.url);
    let a = host.pair(&master, "agent-a", "openai");
    let b = host.pair(&master, "agent-b", "github");
    let c = host.pair(&master, "agent-c", "openai");
    master.ok(&["agent", "upgrade", "agent-c", "--tier", "safe", "--yes"], None);
    master.ok(&["store", "openai", "--agent", "agent-a"], Some(b"sk-private-for-a"));
    master.ok(&["store", "b-only", "--agent", "agent-b"], Some(b"private-for-b"));

    let client_of = |agent: &str| {
        let session = host.session(agent);
        (ApiClient::for_session(&server.url, session.clone()).unwrap(), session)
    };
    let (ca, sa) = client_of(&a);
    let (cb, sb) = client_of(&b);
    let (cc, sc) = client_of(&c);

    // Reads: a private override wins; scope and tier hold; B's private name means nothing to A.
    assert_eq!(
        vault::read(&ca, &sa, &no_memory(), Namespace::Vault, "openai").await.unwrap().as_slice(),
        b"sk-private-for-a"
    );
    assert_eq!(
        vault::read(&cb, &sb, &no_memory(), Namespace::Vault, "github").await.unwrap().as_slice(),
        b"ghp-shared-github"
    );
    assert_eq!(
        vault::read(&cb, &sb, &no_memory(), Namespace::Vault, "b-only").await.unwrap().as_slice(),
        b"private-for-b"
    );
    for (client, session, service) in
        [(&ca, &sa, "github"), (&ca, &sa, "b-only"), (&ca, &sa, "stripe"), (&cb, &sb, "openai")]
    {
        assert_eq!(
            vault_code(vault::read(client, session, &no_memory(), Namespace::Vault, service).await),
            ErrorCode::Denied
        );
    }
    assert_eq!(
        vault_code(vault::read(&cc, &sc, &no_memory(), Namespace::Vault, "openai").await),
        ErrorCode::Denied,
        "safe: no values"
    );
    // Addressing another namespace, writing, or managing agents is the account owner's alone.
    assert_eq!(api_code(ca.get_credential("b-only", Some(&b)).await), ErrorCode::Denied);
    assert_eq!(api_code(ca.get_credential("openai", Some(&a)).await), ErrorCode::Denied);
    assert_eq!(api_code(ca.delete_credential("openai", None).await), ErrorCode::Denied);
    assert_eq!(api_code(ca.list_agents().await), ErrorCode::Denied);
    let end = agentkeys_proto::agents::RevokeRequest::default();
    assert_eq!(api_code(ca.revoke_agent(&b, &end).await), ErrorCode::Denied);
    assert_eq!(api_code(ca.teardown_agent(&b, &end).await), ErrorCode::Denied);
    assert_eq!(api_code(ca.list_requests().await), ErrorCode::Denied);
    assert_eq!(api_code(ca.recipients("openai", None).await), ErrorCode::Denied);
    let upgrade = agentkeys_proto::agents::TierChangeRequest { tier: agentkeys_proto::agents::Tier::Admin };
    assert_eq!(api_code(cc.change_tier(&c, &upgrade).await), ErrorCode::Denied, "no agent changes its own tier");
    let widen = agentkeys_proto::agents::ScopeChangeRequest { add: vec!["stripe".into()], ..Default::default() };
    assert_eq!(api_code(ca.change_scope(&a, &widen).await), ErrorCode::Denied, "nor its scope");
    let store = vault::store(&ca, &sa, &no_memory(), Namespace::Vault, "openai", b"overwrite", &mut OsRandom).await;
    assert!(matches!(store, Err(vault::VaultError::NotMaster)), "{store:?}");
    // The server refuses on its own, whatever a modified client sends.
    let raw_put = agentkeys_proto::types::PutCredentialRequest {
        version: 2,
        ciphertext: agentkeys_proto::b64::encode([0u8; 64]),
        data_key_wrap: agentkeys_proto::b64::encode([0u8; 81]),
        grant: agentkeys_proto::grant::Grant {
            recipient: sa.account_id.clone(),
            signer: sa.device_id.clone(),
            signature: agentkeys_proto::b64::encode([0u8; 64]),
        },
        flags: 0,
        agent_wraps: vec![],
    };
    assert_eq!(api_code(ca.put_credential("openai", None, &raw_put).await), ErrorCode::Denied);
    let create = agentkeys_proto::agents::CreateAgentRequest {
        label: "sub".into(),
        scope: vec![],
        tier: agentkeys_proto::agents::Tier::Admin,
        link_sign_public: agentkeys_proto::b64::encode([1u8; 32]),
        link_kx_public: agentkeys_proto::b64::encode([1u8; 32]),
        link_certificate: agentkeys_proto::b64::encode([1u8; 64]),
        wraps: vec![],
        account_binding: agentkeys_proto::b64::encode([1u8; 64]),
        statements: vec![],
    };
    assert_eq!(api_code(ca.create_agent(&create).await), ErrorCode::Denied);
    let alias = agentkeys_proto::agents::AliasRequest { alias: "boss".into() };
    assert_eq!(api_code(ca.add_alias(&a, &alias).await), ErrorCode::Denied);
    assert_eq!(api_code(ca.lookup_request("7K3D-QX2M").await), ErrorCode::Denied);
    assert_eq!(api_code(ca.deny_request("7K3D-QX2M").await), ErrorCode::Denied);
    let approve = agentkeys_proto::agents::ApproveRequest::default();
    assert_eq!(api_code(ca.approve_request("7K3D-QX2M", &approve).await), ErrorCode::Denied);

    // Names: each sees its own private ones and its scope; the safe agent sees names too.
    let names = |listed: agentkeys_proto::types::CredentialListResponse| {
        let mut names: Vec<String> = listed.credentials.into_iter().map(|c| c.service).collect();
        names.sort();
        names
    };
    assert_eq!(names(ca.list_credentials().await.unwrap()), ["openai", "openai"]);
    assert_eq!(names(cb.list_credentials().await.unwrap()), ["b-only", "github"]);
    assert_eq!(names(cc.list_credentials().await.unwrap()), ["openai"]);
    // Usage: an agent's audit rows are its own, whatever it asks for.
    let rows = ca.audit(&agentkeys_proto::types::AuditQuery { agent: Some(b.clone()), ..Default::default() }).await;
    let own_device = sa.device_id.clone();
    assert!(rows.unwrap().entries.iter().all(|e| e.actor.as_deref() == Some(own_device.as_str())));

    // Scope changes hold on the next read: removing deletes the wraps, adding re-wraps.
    master.ok(&["scope", "agent-b", "--remove", "github"], None);
    assert_eq!(vault_code(vault::read(&cb, &sb, &no_memory(), Namespace::Vault, "github").await), ErrorCode::Denied);
    master.ok(&["scope", "agent-b", "--set", "github,stripe", "--yes"], None);
    assert_eq!(vault::read(&cb, &sb, &no_memory(), Namespace::Vault, "stripe").await.unwrap().as_slice(), b"sk-stripe");
    // A new version is wrapped to every agent that may read it.
    master.ok(&["store", "github"], Some(b"ghp-rotated"));
    assert_eq!(
        vault::read(&cb, &sb, &no_memory(), Namespace::Vault, "github").await.unwrap().as_slice(),
        b"ghp-rotated"
    );
    let scope = text(&master.ok(&["scope", "agent-b", "--list"], None));
    assert_eq!(scope, "github\nstripe\n");
}

async fn a_device_the_account_never_certified_gets_no_key(backend: Backend) {
    let Some((db, server)) = server_on(backend).await else { return };
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-v1"));
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&master, "real-bot", "openai");
    // The server slips in a device of its own for the agent.
    let mut conn = db_conn(&db).await;
    let rogue = agentkeys_core::crypto::KeyPair::generate(&mut OsRandom).public();
    sqlx::query(
        "INSERT INTO devices (id, account_id, kind, label, sign_public, kx_public, certificate, created_at_ms, agent_id) \
         VALUES ($1, $2, 'agent', 'real-bot', $3, $4, $5, 0, $6)",
    )
    .bind(ids::device_id(&rogue.sign))
    .bind(&master.session().account_id)
    .bind(rogue.sign.to_vec())
    .bind(rogue.kx.to_vec())
    .bind([1u8; 65].to_vec())
    .bind(&agent)
    .execute(&mut conn)
    .await
    .unwrap();
    let out = master.run(&["store", "openai"], Some(b"sk-v2"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("has no valid certificate"), "{}", text(&out.stderr));
    let rogue_wraps: i64 = sqlx::query("SELECT COUNT(*) AS n FROM credential_wraps WHERE device_id = $1")
        .bind(ids::device_id(&rogue.sign))
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get("n");
    assert_eq!(rogue_wraps, 0);
    assert_eq!(master.ok(&["read", "openai"], None), b"sk-v1", "nothing was stored");
}

async fn teardown_deletes_private_credentials_and_wraps(backend: Backend) {
    let Some((db, server)) = server_on(backend).await else { return };
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-shared"));
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&master, "doomed", "openai");
    master.ok(&["store", "own", "--agent", "doomed"], Some(b"private-doomed"));
    master.ok(&["teardown", "doomed", "--yes"], None);
    let after = host.run(&["run", "--env", "K=own", "--", "true"]);
    assert_eq!(after.status.code(), Some(4), "{}", text(&after.stderr));
    let mut conn = db_conn(&db).await;
    for sql in [
        "SELECT COUNT(*) AS n FROM credential_versions WHERE namespace = 'agent:' || $1",
        "SELECT COUNT(*) AS n FROM credential_wraps WHERE device_id IN (SELECT id FROM devices WHERE agent_id = $1)",
        "SELECT COUNT(*) AS n FROM agent_scope WHERE agent_id = $1",
    ] {
        let left: i64 = sqlx::query(sql).bind(&agent).fetch_one(&mut conn).await.unwrap().get("n");
        assert_eq!(left, 0, "{sql}");
    }
    let listed = text(&master.ok(&["agents"], None));
    assert!(listed.contains("torn_down"), "{listed}");
    // The master's own credential is untouched.
    assert_eq!(master.ok(&["read", "openai"], None), b"sk-shared");
}

/// An agent whose daemon shares the master's home (one laptop): `revoke` and `teardown` remove
/// its session slot here too, and leave the master's and any other slot alone.
#[tokio::test]
async fn revoke_and_teardown_clear_the_agents_slot_on_the_masters_machine() {
    let (_db, server) = server().await;
    let master = Master::new(&server.url);
    master.init();
    let daemon_here = |args: &[&str]| master.daemon_command(args).output().unwrap();
    let mut slots = Vec::new();
    for label in ["local-one", "local-two", "local-three"] {
        let code = text(&master.ok(&["agent", "create", label, "--scope", "openai", "--yes"], None));
        let linked = daemon_here(&["link", code.trim()]);
        assert!(linked.status.success(), "{}", text(&linked.stderr));
        let id = text(&linked.stderr).split("Session saved as ").nth(1).unwrap().split('.').next().unwrap().to_owned();
        assert!(master.home.path().join(&id).join("session.enc").exists());
        slots.push(id);
    }
    let revoked: serde_json::Value =
        serde_json::from_slice(&master.ok(&["--json", "revoke", "local-one", "--yes"], None)).unwrap();
    assert_eq!(revoked["local_session_cleared"], true, "{revoked}");
    assert!(!master.home.path().join(&slots[0]).exists(), "the revoked agent's slot is gone");
    let torn = master.run(&["teardown", "local-two", "--yes"], None);
    assert!(text(&torn.stderr).contains("Removed its session slot on this machine"), "{}", text(&torn.stderr));
    assert!(!master.home.path().join(&slots[1]).exists());
    assert!(master.home.path().join(&slots[2]).join("session.enc").exists(), "the other agent keeps its slot");
    let still = daemon_here(&["--session-id", &slots[2], "whoami"]);
    assert!(still.status.success(), "{}", text(&still.stderr));
    master.ok(&["whoami"], None);
}

/// Starts `serve` for `session` on `socket` and waits until it is serving.
fn start_serve(host: &DaemonHost, session: &str, socket: &std::path::Path) -> std::process::Child {
    agentkeys_tests::spawn_serving(host.command(&[
        "--session-id",
        session,
        "serve",
        "--socket",
        socket.to_str().unwrap(),
    ]))
}

#[tokio::test]
async fn two_daemons_on_one_host_keep_their_own_sessions() {
    let (_db, server) = server().await;
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-one"));
    master.ok(&["store", "github"], Some(b"ghp-two"));
    let host = DaemonHost::new(&server.url);
    let first = host.pair(&master, "first", "openai");
    let second = host.pair(&master, "second", "github");
    let ambiguous = host.run(&["whoami"]);
    assert_eq!(ambiguous.status.code(), Some(2), "{}", text(&ambiguous.stderr));
    assert!(text(&ambiguous.stderr).contains(&first) && text(&ambiguous.stderr).contains("--session-id"));

    let sockets = tempfile::tempdir().unwrap();
    let mut daemons = Vec::new();
    for (agent, service) in [(&first, "openai"), (&second, "github")] {
        let session = DaemonHost::session_arg(agent);
        let socket = sockets.path().join(format!("{agent}.sock"));
        let serving = start_serve(&host, &session, &socket);
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "the socket is private");
        let again = host.run(&["--session-id", &session, "serve", "--socket", socket.to_str().unwrap()]);
        assert_eq!(again.status.code(), Some(1), "a second serve on the same socket is refused");
        let ran = host
            .command(&[
                "--session-id",
                &session,
                "run",
                "--env",
                &format!("V={service}"),
                "--",
                "sh",
                "-c",
                "echo ${#V}",
            ])
            .output()
            .unwrap();
        assert!(ran.status.success(), "{}", text(&ran.stderr));
        let status = host
            .command(&["--session-id", &session, "status", "--json"])
            .env("AGENTKEYS_DAEMON_SOCKET", &socket)
            .output()
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(status["serving"], true, "{status}");
        assert_eq!(status["server"], "reachable, session valid");
        daemons.push((socket, serving));
    }
    master.ok(&["revoke", "first", "--yes"], None);
    let revoked =
        host.run(&["--session-id", &DaemonHost::session_arg(&first), "run", "--env", "V=openai", "--", "true"]);
    assert_eq!(revoked.status.code(), Some(4));
    let alive =
        host.run(&["--session-id", &DaemonHost::session_arg(&second), "run", "--env", "V=github", "--", "true"]);
    assert!(alive.status.success(), "revoking one leaves the other working: {}", text(&alive.stderr));
    for (socket, mut serving) in daemons {
        let pid = rustix::process::Pid::from_raw(serving.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        assert!(serving.wait().unwrap().success(), "serve exits 0 on SIGTERM");
        assert!(!socket.exists(), "serve removes its socket on the way out");
    }
}

/// The suite's real third-party client: the official MCP Python SDK against `agentkeys-daemon mcp`.
fn python_client(
    host: &DaemonHost,
    python: &std::path::Path,
    phase: &str,
    expect: &serde_json::Value,
) -> serde_json::Value {
    python_client_with_log(host, python, phase, expect).0
}

/// [`python_client`], also returning what the client and the daemon logged on stderr.
fn python_client_with_log(
    host: &DaemonHost,
    python: &std::path::Path,
    phase: &str,
    expect: &serde_json::Value,
) -> (serde_json::Value, String) {
    let out = std::process::Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/mcp/mcp_client.py"))
        .args([phase, &expect.to_string()])
        .env("AGENTKEYS_DAEMON_BIN", agentkeys_tests::bin("agentkeys-daemon"))
        .env("AGENTKEYS_HOME", host.home.path())
        .env("AGENTKEYS_SERVER", &host.server)
        .env("AGENTKEYS_LOG", "debug")
        .env("AGENTKEYS_SESSION_STORE", "file")
        .env_remove("AGENTKEYS_SESSION_ID")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("run the Python MCP client");
    assert!(out.status.success(), "the MCP client failed:\n{}", text(&out.stderr));
    let result = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    (result, text(&out.stderr))
}

#[tokio::test]
async fn mcp_tools_through_the_official_python_sdk() {
    let Some(python) = test_python() else { return };
    let db = TestDb::new(agentkeys_tests::Backend::Sqlite).await.expect("sqlite");
    let server = ServerProcess::start_with(&db.url, &["--agent-read-burst", "40", "--agent-read-rate", "1"]);
    let master = Master::new(&server.url);
    master.init();
    let value = format!("sk-mcp-{}", hex::encode(OsRandom.array::<12>()));
    master.ok(&["store", "openai"], Some(value.as_bytes()));
    master.ok(&["store", "stripe"], Some(b"sk-stripe-secret"));
    let host = DaemonHost::new(&server.url);
    host.pair(&master, "mcp-bot", "openai,not-stored-yet");
    let expect = serde_json::json!({"in_scope": "openai", "out_of_scope": "stripe", "scope_missing": "not-stored-yet"});

    let (full, daemon_log) = python_client_with_log(&host, &python, "full", &expect);
    assert!(daemon_log.contains("DEBUG"), "the daemon ran with debug logs on: {daemon_log}");
    assert!(!daemon_log.contains(&value), "no value in the daemon's logs, even at debug");
    assert!(full["protocol_version"].as_str().unwrap() >= "2025-11-25", "{}", full["protocol_version"]);
    assert_eq!(full["server_name"], "agentkeys-daemon");
    assert_eq!(full["whoami"]["label"], "mcp-bot");
    assert_eq!(full["listed"], serde_json::json!(["openai"]));
    assert_eq!(full["value"], value.as_str());
    let codes = &full["codes"];
    assert_eq!(codes["out_of_scope"], "DENIED");
    assert_eq!(codes["missing"], "NOT_FOUND");
    assert_eq!(codes["bad_name"], "INVALID_INPUT");
    assert_eq!(codes["run_out_of_scope"], "DENIED");
    assert_eq!(codes["after_request"], "APPROVAL_REQUIRED");
    assert_eq!(full["run"]["exit_code"], 3);
    assert_eq!(full["run"]["stdout"], "out:********\n");
    assert_eq!(full["run"]["stderr"], "err:********\n");
    assert_eq!(full["run_timeout"]["timed_out"], true, "{}", full["run_timeout"]);
    assert_eq!(full["grandchild_left"], false, "a timeout ends the whole process group");
    assert_eq!(full["run_flood"]["truncated"], true);
    let flood = full["run_flood"]["length"].as_u64().unwrap();
    assert!((200_000..=256 * 1024).contains(&flood), "output capped at 256 KiB: {flood}");
    let usage = full["usage"].to_string();
    assert!(usage.contains("credential.read") && !usage.contains(&value), "usage has no values: {usage}");
    // The daemon's trail: the MCP read fetched, delivered and dropped openai, and was denied stripe.
    let agent_id = full["whoami"]["agent_id"].as_str().unwrap();
    let trail = std::fs::read_to_string(host.home.path().join(format!("daemon-{agent_id}/trail.jsonl"))).unwrap();
    let events: Vec<[String; 4]> = trail
        .lines()
        .map(|line| {
            let e: serde_json::Value = serde_json::from_str(line).unwrap();
            ["event", "service", "via", "outcome"].map(|k| e[k].as_str().unwrap().to_owned())
        })
        .collect();
    for expected in [
        ["fetch", "openai", "mcp", "ok"],
        ["deliver", "openai", "mcp", "ok"],
        ["drop", "openai", "mcp", "ok"],
        ["deny", "stripe", "mcp", "DENIED"],
    ] {
        assert!(events.iter().any(|e| e == &expected.map(str::to_owned)), "{expected:?} in the trail:\n{trail}");
    }
    assert!(!trail.contains(&value), "no value in the trail");

    // The agent's asks reach the master's queue; approving access wraps the key and works at once.
    let requests = text(&master.ok(&["requests"], None));
    let access_code = full["access_code"].as_str().unwrap();
    assert!(requests.contains(access_code) && requests.contains("the nightly sync needs it"), "{requests}");
    master.ok(&["approve", access_code, "--yes"], None);
    master.ok(&["approve", full["tier_code"].as_str().unwrap(), "--yes"], None);
    let agents = text(&master.ok(&["agents"], None));
    assert!(agents.contains("admin") && agents.contains("stripe"), "{agents}");
    let stripe = python_client(&host, &python, "call", &serde_json::json!({"in_scope": "stripe"}));
    assert_eq!(stripe["code"], serde_json::Value::Null, "{stripe}");

    let hammered = python_client(&host, &python, "hammer", &expect);
    assert_eq!(hammered["code"], "RATE_LIMITED");
    assert!(hammered["text"].as_str().unwrap().contains("retry after"), "{hammered}");

    master.ok(&["revoke", "mcp-bot", "--yes"], None);
    let revoked = python_client(&host, &python, "call", &expect);
    assert_eq!(revoked["code"], "REVOKED", "{revoked}");

    // No value in the server's log or the master's usage output.
    let log = server.log.lock().unwrap().clone();
    assert!(!log.contains(&value) && !log.contains("sk-stripe-secret"), "the server log holds a value");
    let usage = text(&master.ok(&["usage", "--since", "1h", "--json"], None));
    assert!(!usage.contains(&value) && usage.contains("RATE_LIMITED"), "{usage}");
}

#[tokio::test]
async fn mcp_clients_share_a_running_serve_daemon() {
    let Some(python) = test_python() else { return };
    let (_db, server) = server().await;
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-through-the-socket"));
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&master, "served", "openai");
    // The default socket: XDG_RUNTIME_DIR is cleared for the host, so it lives under its home.
    let socket = host.home.path().join("run").join(format!("daemon-{agent}.sock"));
    let mut serving = start_serve(&host, &DaemonHost::session_arg(&agent), &socket);
    let expect = serde_json::json!({"in_scope": "openai"});
    let (answer, log) = python_client_with_log(&host, &python, "call", &expect);
    assert_eq!(answer["code"], serde_json::Value::Null, "{answer}");
    assert!(answer["text"].as_str().unwrap().contains("sk-through-the-socket"));
    assert!(log.contains("bridging MCP on stdio to the daemon"), "mcp used the running daemon:\n{log}");
    assert!(!log.contains("sk-through-the-socket"), "no value in the logs");
    let status: serde_json::Value = serde_json::from_slice(&host.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["serving"], true, "{status}");
    let pid = rustix::process::Pid::from_raw(serving.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    assert!(serving.wait().unwrap().success());
    let (answer, log) = python_client_with_log(&host, &python, "call", &expect);
    assert_eq!(answer["code"], serde_json::Value::Null, "without a daemon, mcp serves in-process: {answer}");
    assert!(!log.contains("bridging"), "{log}");
}

/// Connects to the socket as `uid`, sends an MCP initialize and returns what came back, or `EOF`
/// when the daemon closed the connection (a close with our line unread arrives as a reset, and a
/// close before we finished writing as a broken pipe).
fn probe_socket_as(uid: Option<u32>, socket: &std::path::Path) -> String {
    use std::os::unix::process::CommandExt as _;
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"probe","version":"1"}}}\n')
    data = s.recv(65536)
except (ConnectionResetError, BrokenPipeError):
    data = b""
print(data.decode() if data else "EOF")
"#;
    let mut command = std::process::Command::new("python3");
    command.args(["-c", script, socket.to_str().unwrap()]);
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    let out = command.output().expect("run python3");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[tokio::test]
async fn the_socket_refuses_peers_of_another_user() {
    if !agentkeys_tests::root_or_skip() {
        return;
    }
    let (_db, server) = server().await;
    let master = Master::new(&server.url);
    master.init();
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&master, "guarded", "");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("open").join("d.sock");
    let mut serving = start_serve(&host, &DaemonHost::session_arg(&agent), &socket);
    assert!(probe_socket_as(None, &socket).contains("agentkeys-daemon"), "our own uid is served");
    // Loosen the file modes, as a careless admin might: the uid check still refuses the stranger.
    use std::os::unix::fs::PermissionsExt as _;
    for path in [dir.path(), socket.parent().unwrap(), socket.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    assert_eq!(probe_socket_as(Some(65534), &socket).trim(), "EOF", "a peer of another uid gets nothing");
    let pid = rustix::process::Pid::from_raw(serving.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    assert!(serving.wait().unwrap().success());
}

/// A clock the test moves: the in-process server and the client's signatures both read it.
static CLOCK_OFFSET_S: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn shifted_now_s() -> i64 {
    agentkeys_core::client::unix_now_s() + CLOCK_OFFSET_S.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn pair_codes_expire_after_ten_minutes() {
    let db = TestDb::new(agentkeys_tests::Backend::Sqlite).await.expect("sqlite");
    let clock = agentkeys_server::clock::Clock::from_fn(|| shifted_now_s() * 1000);
    let server = agentkeys_tests::InProcessServer::start_with_clock(&db.url, clock).await;
    let account = agentkeys_core::account::create_account(
        &ApiClient::anonymous(&server.url).unwrap(),
        "clock-master",
        &mut OsRandom,
    )
    .await
    .unwrap();
    let master = ApiClient::for_session(&server.url, account.session.clone()).unwrap().with_clock(shifted_now_s);
    let anonymous = ApiClient::anonymous(&server.url).unwrap();
    let opened = open_test_pairing(&server.url, "late-bot").await;
    CLOCK_OFFSET_S.store(9 * 60, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        anonymous.pairing_status(&opened.pairing_id, "poll-secret").await.unwrap().status,
        agentkeys_proto::agents::RequestStatus::Pending
    );
    assert!(master.lookup_request(&opened.code).await.is_ok(), "alive at 9 minutes");
    CLOCK_OFFSET_S.store(10 * 60 + 5, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(api_code(master.lookup_request(&opened.code).await), ErrorCode::NotFound, "gone after 10");
    assert_eq!(
        anonymous.pairing_status(&opened.pairing_id, "poll-secret").await.unwrap().status,
        agentkeys_proto::agents::RequestStatus::Expired
    );
    assert_eq!(api_code(anonymous.pairing_status(&opened.pairing_id, "wrong-secret").await), ErrorCode::NotFound);
    // An hour after expiry the housekeeping of the next batch deletes it.
    CLOCK_OFFSET_S.store(2 * 3600, std::sync::atomic::Ordering::SeqCst);
    master.whoami().await.unwrap();
    assert_eq!(
        api_code(anonymous.pairing_status(&opened.pairing_id, "poll-secret").await),
        ErrorCode::NotFound,
        "pruned"
    );
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM requests").fetch_one(&server.state.db.reads).await.unwrap();
    assert_eq!(left, 0);
    CLOCK_OFFSET_S.store(0, std::sync::atomic::Ordering::SeqCst);
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// The read limit is one bucket per agent in the database: two replicas share it.
#[tokio::test]
async fn replicas_share_an_agents_read_limit() {
    let Some(db) = TestDb::new(agentkeys_tests::Backend::Postgres).await else { return };
    let limits = ["--agent-read-burst", "6", "--agent-read-rate", "1"];
    let a = ServerProcess::start_with(&db.url, &limits);
    let b = ServerProcess::start_with(&db.url, &limits);
    let master = Master::new(&a.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-limited"));
    let host = DaemonHost::new(&a.url);
    let agent = host.pair(&master, "limited", "openai");
    let session = host.session(&agent);
    let via = [
        ApiClient::for_session(&a.url, session.clone()).unwrap(),
        ApiClient::for_session(&b.url, session.clone()).unwrap(),
    ];
    let (mut allowed, mut limited) = (0, 0);
    for i in 0..20 {
        match via[i % 2].get_credential("openai", None).await {
            Ok(_) => allowed += 1,
            Err(ClientError::Api { detail, .. }) if detail.code == ErrorCode::RateLimited => {
                assert!(detail.retry_after_s.is_some());
                limited += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    // Six at once, plus at most what a second or two of refill adds: never six per replica.
    assert!((6..=8).contains(&allowed), "allowed {allowed}, limited {limited}");
}

/// The daemon's own trail: what it fetched, delivered, dropped and was denied, as JSON lines in
/// the session's slot — never a value — and counted by `status`.
#[tokio::test]
async fn the_daemon_keeps_a_trail_without_values() {
    let (_db, server) = server().await;
    let master = Master::new(&server.url);
    master.init();
    let secret = format!("sk-trail-{}", hex::encode(OsRandom.array::<8>()));
    master.ok(&["store", "openai"], Some(secret.as_bytes()));
    master.ok(&["store", "github"], Some(b"ghp-not-in-scope"));
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&master, "trailed", "openai");
    let ran = host.run(&["run", "--env", "K=openai", "--", "true"]);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    let denied = host.run(&["run", "--env", "K=github", "--", "true"]);
    assert_eq!(denied.status.code(), Some(4), "{}", text(&denied.stderr));

    let trail = std::fs::read_to_string(host.home.path().join(format!("daemon-{agent}/trail.jsonl"))).unwrap();
    let events: Vec<serde_json::Value> = trail.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seen: Vec<(String, String, String, String)> = events
        .iter()
        .map(|e| {
            assert_eq!(e["agent"], agent.as_str());
            let field = |k: &str| e[k].as_str().unwrap().to_owned();
            (field("event"), field("service"), field("via"), field("outcome"))
        })
        .collect();
    let expected = [
        ("fetch", "openai", "run", "ok"),
        ("deliver", "openai", "run", "ok"),
        ("drop", "openai", "run", "ok"),
        ("deny", "github", "run", "DENIED"),
    ]
    .map(|(a, b, c, d)| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned()));
    assert_eq!(seen, expected);
    assert!(!trail.contains(&secret) && !trail.contains("ghp-"), "no value in the trail");

    let status: serde_json::Value = serde_json::from_slice(&host.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["trail"]["events"], serde_json::json!({"fetch": 1, "deliver": 1, "drop": 1, "deny": 1}));
}

/// A stored state this version does not know (a tier, a status written by a newer or a tampered
/// server) is an error, never a default: the read fails with INTERNAL instead of being served as
/// `safe` or `standard`, and the listing says the same; put back, everything works again.
#[tokio::test]
async fn an_unknown_stored_tier_or_status_is_an_error_not_a_default() {
    let (db, server) = server().await;
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-unknown-state"));
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&master, "odd-bot", "openai");
    let session = host.session(&agent);
    let client = ApiClient::for_session(&server.url, session.clone()).unwrap();
    assert_eq!(
        vault::read(&client, &session, &no_memory(), Namespace::Vault, "openai").await.unwrap().as_slice(),
        b"sk-unknown-state"
    );

    let mut conn = db_conn(&db).await;
    for (column, value) in [("tier", "superuser"), ("status", "dormant")] {
        let set = format!("UPDATE agents SET {column} = $1 WHERE id = $2");
        let good: String =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {column} FROM agents WHERE id = $1")))
                .bind(&agent)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(set.clone())).bind(value).bind(&agent).execute(&mut conn).await.unwrap();
        assert_eq!(
            vault_code(vault::read(&client, &session, &no_memory(), Namespace::Vault, "openai").await),
            ErrorCode::Internal,
            "{column} = {value}"
        );
        let listed = master.run(&["agents"], None);
        assert_eq!(listed.status.code(), Some(1), "{column} = {value}: {}", text(&listed.stderr));
        assert!(text(&listed.stderr).contains("INTERNAL"), "{}", text(&listed.stderr));
        sqlx::query(sqlx::AssertSqlSafe(set)).bind(&good).bind(&agent).execute(&mut conn).await.unwrap();
        assert!(
            vault::read(&client, &session, &no_memory(), Namespace::Vault, "openai").await.is_ok(),
            "{column} restored"
        );
    }
}

fn agent_summary(master: &Master, label: &str) -> agentkeys_proto::agents::AgentSummary {
    let listed: agentkeys_proto::agents::AgentListResponse =
        serde_json::from_slice(&master.ok(&["--json", "agents"], None)).unwrap();
    listed.agents.into_iter().find(|a| a.label == label).expect("the agent is listed")
}

/// Pending link codes and devices that join during a grant are recipients: a credential stored
/// (or a new version) between `agent create` and `link` reaches the linked device; a scope change
/// or a pairing approval prepared before a device joined is refused (VERSION_CONFLICT) instead of
/// leaving that device without the key, and the CLI's retry covers it.
#[tokio::test]
async fn pending_links_and_devices_that_join_mid_grant_get_their_keys() {
    let (_db, server) = server().await;
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-openai-v1"));
    let code = text(&master.ok(&["agent", "create", "late-linker", "--scope", "openai,github", "--yes"], None))
        .trim()
        .to_owned();
    assert_eq!(agent_summary(&master, "late-linker").links.len(), 1, "the pending code is listed as a recipient");
    // Between create and link: a new version of one service in scope, and a first one of another.
    master.ok(&["store", "openai"], Some(b"sk-openai-v2"));
    master.ok(&["store", "github"], Some(b"ghp-stored-after-create"));
    let host = DaemonHost::new(&server.url);
    let linked = host.command(&["link", &code]).output().unwrap();
    assert!(linked.status.success(), "{}", text(&linked.stderr));
    for (service, value) in [("openai", "sk-openai-v2"), ("github", "ghp-stored-after-create")] {
        let ran =
            host.run(&["run", "--no-mask", "--env", &format!("K={service}"), "--", "sh", "-c", "printf %s \"$K\""]);
        assert_eq!(text(&ran.stdout), value, "{service}: {}", text(&ran.stderr));
    }

    // A scope change prepared for the devices the agent had, sent after a second device joined.
    master.ok(&["store", "stripe"], Some(b"sk-stripe"));
    let first = host.pair(&master, "two-machines", "");
    let session = master.session();
    let client = ApiClient::for_session(&server.url, session.clone()).unwrap();
    let before = agent_summary(&master, "two-machines");
    let stale = agentkeys_proto::agents::ScopeChangeRequest {
        add: vec!["stripe".into()],
        remove: vec![],
        wraps: agentkeys_core::agents::wrap_current(
            &client,
            &session,
            &no_memory(),
            Namespace::Vault,
            &["stripe".to_owned()],
            (&before.devices[0].device_id, &vault::certified_kx(&session, &before.devices[0]).unwrap()),
            &mut OsRandom,
        )
        .await
        .unwrap(),
        statements: vec![],
    };
    let second_host = DaemonHost::new(&server.url);
    let second = second_host.pair(&master, "two-machines", "");
    assert_eq!(first, second, "the same agent, on a second machine");
    assert_eq!(
        api_code(client.change_scope(&first, &stale).await),
        ErrorCode::VersionConflict,
        "the new device lacks it"
    );
    master.ok(&["scope", "two-machines", "--add", "stripe", "--yes"], None);
    for host in [&host, &second_host] {
        let ran = host.run(&[
            "--session-id",
            &DaemonHost::session_arg(&first),
            "run",
            "--no-mask",
            "--env",
            "K=stripe",
            "--",
            "sh",
            "-c",
            "printf %s \"$K\"",
        ]);
        assert_eq!(text(&ran.stdout), "sk-stripe", "{}", text(&ran.stderr));
    }

    // A third machine's pairing approved with wraps prepared before the scope widened: refused,
    // and the approval made again (as the CLI's retry does) opens everything the agent reads.
    let third_host = DaemonHost::new(&server.url);
    let pairing = third_host.start_pair("two-machines", "");
    let pending = client.lookup_request(&pairing.prompt.code).await.unwrap();
    let sign = agentkeys_proto::b64::decode_array::<32>(pending.device_sign_public.as_deref().unwrap()).unwrap();
    let kx = agentkeys_proto::b64::decode_array::<32>(pending.device_kx_public.as_deref().unwrap()).unwrap();
    let device_id = ids::device_id(&sign);
    let account = session.account.as_ref().unwrap();
    let certificate = account.sign(&ids::agent_device_payload(&session.account_id, &first, &sign, &kx));
    let wraps = agentkeys_core::agents::wrap_current(
        &client,
        &session,
        &no_memory(),
        Namespace::Vault,
        &["stripe".to_owned()],
        (&device_id, &kx),
        &mut OsRandom,
    )
    .await
    .unwrap();
    let stale = agentkeys_proto::agents::ApproveRequest {
        scope: vec![],
        device_certificate: Some(agentkeys_proto::b64::encode(certificate)),
        wraps,
        ..Default::default()
    };
    master.ok(&["store", "late-service"], Some(b"late-value"));
    master.ok(&["scope", "two-machines", "--add", "late-service", "--yes"], None);
    assert_eq!(api_code(client.approve_request(&pending.code, &stale).await), ErrorCode::VersionConflict);
    let verifier = no_memory();
    let options = agentkeys_core::agents::ApproveOptions::default();
    agentkeys_core::agents::approve(&client, &session, &verifier, &pending, &[], None, options, &mut OsRandom)
        .await
        .unwrap();
    let (exit, stderr) = pairing.finish();
    assert_eq!(exit, 0, "{stderr}");
    for service in ["stripe", "late-service"] {
        let ran = third_host.run(&["run", "--env", &format!("K={service}"), "--", "true"]);
        assert!(ran.status.success(), "{service}: {}", text(&ran.stderr));
    }
}
