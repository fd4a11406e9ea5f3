//! Traffic without a session, tried as an attacker would: requests with no or a made-up token to
//! signed routes, floods of pairing opens and account creations, code guessing from throwaway
//! accounts. Each door is limited per source and in total (429 with `Retry-After`), refusals are
//! counted (metrics, one audit row per source per minute), and a real `pair` still gets through.
//! Also here: text a human reads refuses hidden characters, and `verify-audit` needs a database.

use std::process::Command;

use agentkeys_core::{ApiClient, ClientError, OsRandom, account::create_account};
use agentkeys_proto::ErrorCode;
use agentkeys_proto::agents::{AgentAskRequest, OpenPairingRequest, RequestKind};
use agentkeys_tests::{Backend, DaemonHost, Master, ServerProcess, TestDb, bin};
use sqlx::Connection as _;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn server(extra: &[&str]) -> (TestDb, ServerProcess) {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let server = ServerProcess::start_with(&db.url, extra);
    (db, server)
}

async fn anonymous_rows(db: &TestDb) -> i64 {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE account_id IS NULL").fetch_one(&mut conn).await.unwrap()
}

fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Api { detail, .. }) => detail.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_are_limited_and_counted_not_audited_each() {
    let (db, server) = server(&[]).await;
    let http = agentkeys_tests::http_client();
    let before = anonymous_rows(&db).await;
    let mut statuses = Vec::new();
    for i in 0..200 {
        let request = http.get(format!("{}/v1/credentials/svc-{i}", server.url));
        let request = if i % 2 == 0 { request } else { request.bearer_auth("akt_made-up") };
        let response = request.send().await.unwrap();
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
        statuses.push(response.status().as_u16());
    }
    let (refused, limited) =
        (statuses.iter().filter(|s| **s == 401).count(), statuses.iter().filter(|s| **s == 429).count());
    assert_eq!(refused + limited, 200, "{statuses:?}");
    assert_eq!(refused, 10, "the default burst per source, then 429: {statuses:?}");
    assert_eq!(anonymous_rows(&db).await - before, 1, "one audit row for this source this minute, not 200");
    let metrics = http.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"agentkeys_anonymous_refusals_total{door="unauthenticated",code="RATE_LIMITED"} 190"#),
        "{metrics}"
    );
    // Someone with a session is not affected.
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["list"], None);
}

fn pairing_request(label: &str) -> OpenPairingRequest {
    let b64 = agentkeys_proto::b64::encode;
    OpenPairingRequest {
        label: label.into(),
        scope: vec![],
        device_sign_public: b64([3u8; 32]),
        device_kx_public: b64([4u8; 32]),
        token_hash: b64([5u8; 32]),
        poll_hash: b64([6u8; 32]),
        commitment: b64([7u8; 32]),
        kind: agentkeys_proto::agents::PairingKind::Pairing,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_pairing_opens_is_limited_and_a_real_pair_still_gets_through() {
    // A burst of 5 and one a second per source, so the test does not wait long.
    let (_db, server) = server(&["--anonymous-burst", "5", "--anonymous-per-minute", "60"]).await;
    let anonymous = ApiClient::anonymous(&server.url).unwrap();
    let mut limited = 0;
    for i in 0..20 {
        match anonymous.open_pairing(&pairing_request(&format!("flood-{i}"))).await {
            Ok(_) => {}
            Err(error) => {
                assert_eq!(code::<()>(Err(error)), ErrorCode::RateLimited);
                limited += 1;
            }
        }
    }
    assert!(limited >= 14, "{limited} of 20 opens limited");
    // Malformed opens are counted at the same door.
    let http = agentkeys_tests::http_client();
    let malformed = http.post(format!("{}/v1/pairings", server.url)).body("{").send().await.unwrap();
    assert_eq!(malformed.status(), 429);

    // The daemon waits its turn (RATE_LIMITED with Retry-After) instead of failing.
    let master = Master::new(&server.url);
    master.init();
    let host = DaemonHost::new(&server.url);
    let pairing = host.start_pair("patient-bot", "");
    let approved = master.approve_pairing(&pairing, &["--yes"]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    let (exit, stderr) = pairing.finish();
    assert_eq!(exit, 0, "{stderr}");
    assert!(stderr.contains("retrying until it takes this one"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_creation_is_limited_per_source() {
    let (_db, server) = server(&[]).await;
    let mut limited = 0;
    for i in 0..15 {
        let client = ApiClient::anonymous(&server.url).unwrap();
        match create_account(&client, &format!("throwaway-{i}"), &mut OsRandom).await {
            Ok(_) => {}
            Err(agentkeys_core::account::CreateAccountError::Client(error)) => {
                assert_eq!(code::<()>(Err(error)), ErrorCode::RateLimited);
                limited += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(limited, 5, "ten accounts per source at once, then one every ten seconds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_codes_from_many_accounts_pauses_look_ups_server_wide() {
    let (_db, server) = server(&["--anonymous-burst", "100"]).await;
    let account = |label: String| {
        let url = server.url.clone();
        async move {
            let created = create_account(&ApiClient::anonymous(&url).unwrap(), &label, &mut OsRandom).await.unwrap();
            ApiClient::for_session(&url, created.session).unwrap()
        }
    };
    let real = ApiClient::anonymous(&server.url).unwrap().open_pairing(&pairing_request("real-bot")).await.unwrap();
    let fresh = account("fresh".into()).await;
    let mut guessers = Vec::new();
    for i in 0..45 {
        guessers.push(account(format!("guesser-{i}")).await);
    }
    // Each account gets five quick misses before its own guard slows it; together they run the
    // server's allowance of 200 dry.
    let mut server_wide = 0;
    for guesser in &guessers {
        for n in 0..5 {
            let guess = agentkeys_proto::ids::format_request_code([n, 9, 8, 7, 6]);
            match guesser.lookup_request(&guess).await {
                Err(ClientError::Api { detail, .. }) if detail.code == ErrorCode::NotFound => {}
                Err(ClientError::Api { detail, .. }) if detail.message.contains("on this server") => server_wide += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(server_wide > 0, "225 misses across accounts pause look-ups for everyone");
    // A real code, looked up by an account that never missed, waits too: a guesser learns nothing.
    match fresh.lookup_request(&real.code).await {
        Err(ClientError::Api { detail, .. }) => {
            assert_eq!(detail.code, ErrorCode::RateLimited);
            assert!(detail.message.contains("on this server"), "{}", detail.message);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_a_human_reads_refuses_hidden_characters() {
    let (_db, server) = server(&[]).await;
    let bidi = Master::new(&server.url).run(&["init", "--label", "laptop\u{202e}gpj.exe"], None);
    assert_eq!(bidi.status.code(), Some(2), "{}", text(&bidi.stderr));
    assert!(text(&bidi.stderr).contains("U+202E"), "{}", text(&bidi.stderr));
    let zero_width = Master::new(&server.url).run(&["init", "--label", "lap\u{200b}top"], None);
    assert_eq!(zero_width.status.code(), Some(2), "{}", text(&zero_width.stderr));

    let master = Master::new(&server.url);
    master.init();
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&master, "asker", "");
    let client = ApiClient::for_session(&server.url, host.session(&agent)).unwrap();
    let ask = |reason: &str| AgentAskRequest {
        kind: RequestKind::Access,
        service: Some("openai".into()),
        tier: None,
        reason: reason.into(),
    };
    for reason in ["ok \u{202e}evil", "zero\u{200b}width", "\u{2066}isolate", "   "] {
        assert_eq!(code(client.ask(&ask(reason)).await), ErrorCode::BadRequest, "{reason:?}");
    }
    client.ask(&ask("needs openai for the nightly build 🚀")).await.unwrap();
    assert!(text(&master.ok(&["requests"], None)).contains("nightly build 🚀"));
}

#[test]
fn verify_audit_without_a_database_says_so() {
    let empty = tempfile::tempdir().unwrap();
    let out =
        Command::new(bin("agentkeys-server")).args(["verify-audit", "--data-dir"]).arg(empty.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("there is no database at"), "{}", text(&out.stderr));
    assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none(), "nothing was created");
    let missing = format!("sqlite://{}/none.db", empty.path().display());
    let out =
        Command::new(bin("agentkeys-server")).args(["verify-audit", "--database-url", &missing]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}
