//! The storage layer and request authentication, through the real client over real HTTP, on
//! both backends: versions and history, concurrency, replay and forgery, the audit chain, and the
//! zero-knowledge property.

use std::collections::BTreeSet;
use std::sync::Arc;

use agentkeys_core::account::create_account;
use agentkeys_core::client::unix_now_s;
use agentkeys_core::crypto::{self, KeyPair, WrapLabel};
use agentkeys_core::session::Session;
use agentkeys_core::vault::Namespace;
use agentkeys_core::{ApiClient, ClientError, OsRandom, RandomSource as _, vault};
use agentkeys_proto::ErrorCode;
use agentkeys_proto::b64;
use agentkeys_proto::types::{AuditQuery, CreateAccountRequest};
use agentkeys_server::engine::audit::{ChainError, verify_chain};
use agentkeys_tests::{Backend, InProcessServer, TestDb, contains_any_window, no_memory};
use reqwest::Method;
use secrecy::{ExposeSecret as _, SecretString};

on_both_backends!(
    vault_round_trip_keeps_history,
    concurrent_stores_keep_every_version,
    concurrent_reads_of_one_credential_all_get_it,
    replayed_and_forged_requests_are_rejected_and_audited,
    audit_chain_detects_changed_and_removed_rows,
    server_never_holds_plaintext,
    bad_input_is_refused_with_stable_codes,
);

struct Fixture {
    db: TestDb,
    server: InProcessServer,
    session: Arc<Session>,
    client: ApiClient,
}

async fn fixture(backend: Backend) -> Option<Fixture> {
    let db = TestDb::new(backend).await?;
    let server = InProcessServer::start(&db.url).await;
    let account = create_account(&ApiClient::anonymous(&server.url).unwrap(), "storage-test", &mut OsRandom)
        .await
        .expect("create account");
    let client = ApiClient::for_session(&server.url, account.session.clone()).expect("client");
    Some(Fixture { db, server, session: account.session, client })
}

fn api_code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Api { detail, .. }) => detail.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn vault_code<T: std::fmt::Debug>(result: Result<T, vault::VaultError>) -> ErrorCode {
    match result {
        Err(vault::VaultError::Client(error)) => api_code::<()>(Err(error)),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn vault_round_trip_keeps_history(backend: Backend) {
    let Some(f) = fixture(backend).await else { return };
    let (client, session) = (&f.client, &f.session);
    assert_eq!(
        vault::store(client, session, &no_memory(), Namespace::Vault, "openai", b"sk-one", &mut OsRandom)
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        vault::read(client, session, &no_memory(), Namespace::Vault, "openai").await.unwrap().as_slice(),
        b"sk-one"
    );
    assert_eq!(
        vault::store(client, session, &no_memory(), Namespace::Vault, "openai", b"sk-two", &mut OsRandom)
            .await
            .unwrap()
            .version,
        2
    );
    assert_eq!(
        vault::read(client, session, &no_memory(), Namespace::Vault, "openai").await.unwrap().as_slice(),
        b"sk-two"
    );

    let all_bytes: Vec<u8> = (0..=255u8).rev().collect();
    vault::store(client, session, &no_memory(), Namespace::Vault, "binary.key", &all_bytes, &mut OsRandom)
        .await
        .unwrap();
    assert_eq!(
        vault::read(client, session, &no_memory(), Namespace::Vault, "binary.key").await.unwrap().as_slice(),
        all_bytes.as_slice()
    );

    let listed = client.list_credentials().await.unwrap();
    let names: Vec<(&str, u64)> = listed.credentials.iter().map(|c| (c.service.as_str(), c.version)).collect();
    assert_eq!(names, [("binary.key", 1), ("openai", 2)]);

    assert_eq!(client.delete_credential("openai", None).await.unwrap().version, 3);
    assert_eq!(
        vault_code(vault::read(client, session, &no_memory(), Namespace::Vault, "openai").await),
        ErrorCode::NotFound
    );
    assert_eq!(api_code(client.delete_credential("openai", None).await), ErrorCode::NotFound);
    assert_eq!(client.list_credentials().await.unwrap().credentials.len(), 1);
    assert_eq!(
        vault::store(client, session, &no_memory(), Namespace::Vault, "openai", b"sk-three", &mut OsRandom)
            .await
            .unwrap()
            .version,
        4
    );
    assert_eq!(
        vault::read(client, session, &no_memory(), Namespace::Vault, "openai").await.unwrap().as_slice(),
        b"sk-three"
    );
}

/// Many reads of one credential land in one writer batch, answered by one grouped `SELECT`:
/// every one of them gets the value (a batch once served only the first).
async fn concurrent_reads_of_one_credential_all_get_it(backend: Backend) {
    let Some(f) = fixture(backend).await else { return };
    vault::store(&f.client, &f.session, &no_memory(), Namespace::Vault, "hot", b"sk-hot", &mut OsRandom).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (client, session) = (f.client.clone(), f.session.clone());
        tasks.push(tokio::spawn(
            async move { vault::read(&client, &session, &no_memory(), Namespace::Vault, "hot").await },
        ));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().as_slice(), b"sk-hot");
    }
    let batches = f.server.state.metrics.render();
    assert!(batches.contains("agentkeys_writer_batch_size"), "{batches}");
}

async fn concurrent_stores_keep_every_version(backend: Backend) {
    let Some(f) = fixture(backend).await else { return };
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (client, session) = (f.client.clone(), f.session.clone());
        tasks.push(tokio::spawn(async move {
            let value = format!("value-{i}");
            let stored = vault::store(
                &client,
                &session,
                &no_memory(),
                Namespace::Vault,
                "shared",
                value.as_bytes(),
                &mut OsRandom,
            )
            .await
            .unwrap();
            (stored.version, value)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let versions: BTreeSet<u64> = results.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=8).collect(), "every store got its own version: no write was lost");
    let last = &results.iter().find(|(v, _)| *v == 8).unwrap().1;
    assert_eq!(
        vault::read(&f.client, &f.session, &no_memory(), Namespace::Vault, "shared").await.unwrap().as_slice(),
        last.as_bytes(),
        "last write wins"
    );
    let history = agentkeys_server::domains::credentials::queries::history_len(
        &f.server.state.db.reads,
        &f.session.account_id,
        &agentkeys_proto::namespace::Namespace::Vault,
        "shared",
    )
    .await
    .unwrap();
    assert_eq!(history, 8, "every version is kept");
}

async fn replayed_and_forged_requests_are_rejected_and_audited(backend: Backend) {
    let Some(f) = fixture(backend).await else { return };
    vault::store(&f.client, &f.session, &no_memory(), Namespace::Vault, "github", b"ghp_x", &mut OsRandom)
        .await
        .unwrap();

    // A captured request sent again is refused, even though its signature is valid.
    let captured = f.client.build_signed(Method::GET, "/v1/credentials/github", Vec::new());
    let replay = captured.try_clone().unwrap();
    f.client.send::<serde_json::Value>(captured).await.expect("first use succeeds");
    assert_eq!(api_code(f.client.send::<serde_json::Value>(replay).await), ErrorCode::ReplayedNonce);

    // The token alone, signed by some other key, is useless.
    let thief = Session {
        server_url: f.server.url.clone(),
        account_id: f.session.account_id.clone(),
        device_id: f.session.device_id.clone(),
        device_label: "thief".into(),
        session_id: f.session.session_id.clone(),
        token: SecretString::from(f.session.token.expose_secret().to_owned()),
        device: KeyPair::generate(&mut OsRandom),
        account: Some(KeyPair::generate(&mut OsRandom)),
        agent_id: None,
        account_sign_public: None,
        link_id: None,
    };
    let thief_client = ApiClient::for_session(&f.server.url, Arc::new(thief)).unwrap();
    assert_eq!(api_code(thief_client.get_credential("github", None).await), ErrorCode::SignatureInvalid);

    // The token without any signature.
    let http = agentkeys_tests::http_client();
    let unsigned = http
        .get(format!("{}/v1/credentials/github", f.server.url))
        .bearer_auth(f.session.token.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert!(unsigned.text().await.unwrap().contains("SIGNATURE_INVALID"));

    // A signed body swapped for another.
    let signed = f.client.build_signed(Method::PUT, "/v1/credentials/github", b"{}".to_vec()).build().unwrap();
    let mut swapped = reqwest::Request::new(Method::PUT, signed.url().clone());
    *swapped.headers_mut() = signed.headers().clone();
    *swapped.body_mut() = Some(b"{ }".to_vec().into());
    let response = http.execute(swapped).await.unwrap();
    assert!(response.text().await.unwrap().contains("SIGNATURE_INVALID"));

    // A stale timestamp, and an unknown token.
    let stale = f.client.clone().with_clock(|| unix_now_s() - 600);
    assert_eq!(api_code(stale.whoami().await), ErrorCode::StaleTimestamp);
    let unknown = http.get(format!("{}/v1/session", f.server.url)).bearer_auth("akt_unknown").send().await.unwrap();
    assert!(unknown.text().await.unwrap().contains("UNAUTHENTICATED"));

    // Each refusal is an audit row of the account.
    let audit = f.client.audit(&AuditQuery::default()).await.unwrap();
    let denied: Vec<ErrorCode> = audit.entries.iter().filter_map(|e| e.code).collect();
    for code in [ErrorCode::ReplayedNonce, ErrorCode::SignatureInvalid, ErrorCode::StaleTimestamp] {
        assert!(denied.contains(&code), "{code} audited: {denied:?}");
    }
    assert!(audit.entries.iter().any(|e| e.action == "credential.read" && e.outcome_str() == "allowed"));
}

async fn audit_chain_detects_changed_and_removed_rows(backend: Backend) {
    let Some(f) = fixture(backend).await else { return };
    vault::store(&f.client, &f.session, &no_memory(), Namespace::Vault, "aws", b"AKIA", &mut OsRandom).await.unwrap();
    let _ = vault::read(&f.client, &f.session, &no_memory(), Namespace::Vault, "missing").await;
    vault::read(&f.client, &f.session, &no_memory(), Namespace::Vault, "aws").await.unwrap();
    let pool = &f.server.state.db.reads;
    let intact = verify_chain(pool).await.unwrap();
    assert!(intact.rows >= 4, "{intact:?}");

    // The log refuses changes outright...
    let refused =
        sqlx::query("UPDATE audit_log SET outcome = 'allowed' WHERE code = 'NOT_FOUND' AND service = 'missing'")
            .execute(pool)
            .await;
    assert!(refused.is_err(), "audit_log is append-only");

    // ...and someone with the database who removes that guard is still caught.
    let drop_guard = match backend {
        Backend::Sqlite => vec!["DROP TRIGGER audit_log_no_update", "DROP TRIGGER audit_log_no_delete"],
        Backend::Postgres => vec!["DROP TRIGGER audit_log_no_change ON audit_log"],
    };
    for statement in drop_guard {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(pool).await.unwrap();
    }
    sqlx::query(
        "UPDATE audit_log SET outcome = 'allowed', code = NULL WHERE code = 'NOT_FOUND' AND service = 'missing'",
    )
    .execute(pool)
    .await
    .unwrap();
    let error = verify_chain(pool).await.unwrap_err();
    assert!(matches!(&error, ChainError::Broken { reason, .. } if reason.contains("changed")), "{error}");
    sqlx::query("UPDATE audit_log SET outcome = 'failed', code = 'NOT_FOUND' WHERE outcome = 'allowed' AND action = 'credential.read' AND service = 'missing'")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(verify_chain(pool).await.unwrap(), intact, "restoring the row restores the chain");
    assert_eq!(intact.accounts, 1, "{intact:?}");

    // The account's own chain: a place's hash changed, or its head moved back.
    for (change, undo, why) in [
        (
            "UPDATE audit_log SET account_hash = prev_hash WHERE account_seq = 2",
            "UPDATE audit_log SET account_hash = (SELECT account_hash FROM saved) WHERE account_seq = 2",
            "does not match",
        ),
        (
            "UPDATE account_audit_heads SET seq = seq - 1",
            "UPDATE account_audit_heads SET seq = seq + 1",
            "head says place",
        ),
    ] {
        sqlx::query("CREATE TABLE saved AS SELECT account_hash FROM audit_log WHERE account_seq = 2")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(change)).execute(pool).await.unwrap();
        let error = verify_chain(pool).await.unwrap_err();
        assert!(matches!(&error, ChainError::Broken { reason, .. } if reason.contains(why)), "{error}");
        sqlx::query(sqlx::AssertSqlSafe(undo)).execute(pool).await.unwrap();
        sqlx::query("DROP TABLE saved").execute(pool).await.unwrap();
        assert_eq!(verify_chain(pool).await.unwrap(), intact, "undone: {change}");
    }

    // A row slipped in outside the chain.
    sqlx::query(
        "INSERT INTO audit_log (seq, ts_ms, account_id, actor, session_id, action, namespace, service, outcome, \
         code, prev_hash, hash) SELECT 0, ts_ms, account_id, actor, session_id, action, namespace, service, \
         outcome, code, prev_hash, hash FROM audit_log WHERE seq = 1",
    )
    .execute(pool)
    .await
    .unwrap();
    assert!(matches!(verify_chain(pool).await.unwrap_err(), ChainError::Broken { seq: 0, .. }));
    sqlx::query("DELETE FROM audit_log WHERE seq = 0").execute(pool).await.unwrap();

    // The newest row cut off.
    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM audit_log WHERE seq = {}", intact.rows)))
        .execute(pool)
        .await
        .unwrap();
    let error = verify_chain(pool).await.unwrap_err();
    assert!(matches!(&error, ChainError::Broken { reason, .. } if reason.contains("cut off")), "{error}");

    // A row in the middle removed.
    sqlx::query("DELETE FROM audit_log WHERE seq = 2").execute(pool).await.unwrap();
    match verify_chain(pool).await.unwrap_err() {
        ChainError::Broken { seq, .. } => assert_eq!(seq, 2),
        other => panic!("{other}"),
    }
}

async fn server_never_holds_plaintext(backend: Backend) {
    let Some(f) = fixture(backend).await else { return };
    let mut random = [0u8; 24];
    getrandom::fill(&mut random).unwrap();
    let secret = format!("zk-{}", hex::encode(random));
    vault::store(
        &f.client,
        &f.session,
        &no_memory(),
        Namespace::Vault,
        "zero-knowledge-probe",
        secret.as_bytes(),
        &mut OsRandom,
    )
    .await
    .unwrap();
    assert_eq!(
        vault::read(&f.client, &f.session, &no_memory(), Namespace::Vault, "zero-knowledge-probe")
            .await
            .unwrap()
            .as_slice(),
        secret.as_bytes()
    );
    let raw = f.db.raw_contents();
    assert!(contains_any_window(&raw, b"zero-knowledge-probe"), "the scan sees what the server does store");
    assert!(!contains_any_window(&raw, secret.as_bytes()), "no 16-byte window of the value is in the database");
    assert!(!contains_any_window(&raw, f.session.token.expose_secret().as_bytes()), "nor the session token");
    let account_secret = f.session.account.as_ref().expect("a master session").secret_blob();
    assert!(!contains_any_window(&raw, account_secret.as_ref()), "nor the account private key");
}

async fn bad_input_is_refused_with_stable_codes(backend: Backend) {
    let Some(f) = fixture(backend).await else { return };
    let http = agentkeys_tests::http_client();
    let code_of = |body: String| -> String {
        let value: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON error body, got {body}"));
        value["error"]["code"].as_str().unwrap().to_owned()
    };

    let huge = vec![b'x'; agentkeys_proto::types::MAX_BODY_BYTES + 1];
    let response =
        f.client.send::<serde_json::Value>(f.client.build_signed(Method::PUT, "/v1/credentials/big", huge)).await;
    assert_eq!(api_code(response), ErrorCode::PayloadTooLarge);

    let unknown_field = br#"{"version":1,"ciphertext":"AA","data_key_wrap":"AA","note":"x"}"#.to_vec();
    let response = f
        .client
        .send::<serde_json::Value>(f.client.build_signed(Method::PUT, "/v1/credentials/x", unknown_field))
        .await;
    assert_eq!(api_code(response), ErrorCode::BadRequest);

    for bad in ["a%20b", "-lead", "a%2Fb", "%01x", "a%0Ab"] {
        let response = f
            .client
            .send::<serde_json::Value>(f.client.build_signed(
                Method::GET,
                &format!("/v1/credentials/{bad}"),
                Vec::new(),
            ))
            .await;
        assert_eq!(api_code(response), ErrorCode::InvalidServiceName, "{bad}");
    }
    assert!(matches!(
        vault::store(&f.client, &f.session, &no_memory(), Namespace::Vault, "x", b"", &mut OsRandom).await,
        Err(vault::VaultError::EmptyValue)
    ));

    // A second account reusing a device key is refused on its own; the server keeps serving.
    let device = KeyPair::generate(&mut OsRandom);
    for expected in [201, 409] {
        let account = KeyPair::generate(&mut OsRandom);
        let account_id = crypto::account_id(&account.public().sign);
        let certificate = account.sign(&crypto::device_certificate_payload(&account_id, &device.public(), "dup"));
        let wrap = b64::encode(
            crypto::wrap_to(&device.public().kx, account.secret_blob().as_ref(), WrapLabel::AccountKey, &mut OsRandom)
                .unwrap(),
        );
        let request = CreateAccountRequest {
            device_label: "dup".into(),
            account_sign_public: b64::encode(account.public().sign),
            account_kx_public: b64::encode(account.public().kx),
            device_sign_public: b64::encode(device.public().sign),
            device_kx_public: b64::encode(device.public().kx),
            device_certificate: b64::encode(certificate),
            account_key_wrap_device: wrap.clone(),
            account_key_wrap_recovery: wrap,
            recovery_sign_public: b64::encode(OsRandom.array::<32>()),
        };
        let response = http
            .post(format!("{}/v1/accounts", f.server.url))
            .body(serde_json::to_vec(&request).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
        if expected == 409 {
            assert_eq!(code_of(response.text().await.unwrap()), "ALREADY_EXISTS");
        }
    }
    vault::store(&f.client, &f.session, &no_memory(), Namespace::Vault, "still-serving", b"v", &mut OsRandom)
        .await
        .unwrap();

    let garbage = http.post(format!("{}/v1/accounts", f.server.url)).body("not json").send().await.unwrap();
    assert_eq!(garbage.status(), 400);
    assert_eq!(code_of(garbage.text().await.unwrap()), "BAD_REQUEST");
    let nowhere = http.get(format!("{}/v2/anything", f.server.url)).send().await.unwrap();
    assert_eq!(code_of(nowhere.text().await.unwrap()), "NOT_FOUND");

    let openapi = http.get(format!("{}/v1/openapi.json", f.server.url)).send().await.unwrap().text().await.unwrap();
    let openapi: serde_json::Value = serde_json::from_str(&openapi).unwrap();
    for path in ["/v1/accounts", "/v1/session", "/v1/credentials", "/v1/credentials/{service}", "/v1/audit"] {
        assert!(openapi["paths"].get(path).is_some(), "{path} documented");
    }
    let metrics = http.get(format!("{}/metrics", f.server.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("agentkeys_http_requests_total{route=\"/v1/credentials/{service}\""), "{metrics}");
}

/// PostgreSQL drops every connection of the server (a restart, a failover): the next requests are
/// refused as UNAVAILABLE at worst, and the server recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writer_reconnects_after_the_database_drops_it() {
    let Some(f) = fixture(Backend::Postgres).await else { return };
    vault::store(&f.client, &f.session, &no_memory(), Namespace::Vault, "before", b"v1", &mut OsRandom).await.unwrap();
    let admin_url = agentkeys_tests::pg_admin_url().unwrap();
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url).await.unwrap();
    let database = f.db.pg_name.clone().unwrap();
    let killed = sqlx::query("SELECT COUNT(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(sqlx::Row::try_get::<i64, _>(&killed, "n").unwrap() >= 1, "the server's connections were dropped");

    let mut outcome = Err(vault::VaultError::EmptyValue);
    for _ in 0..3 {
        outcome =
            vault::store(&f.client, &f.session, &no_memory(), Namespace::Vault, "after", b"v2", &mut OsRandom).await;
        match &outcome {
            Err(vault::VaultError::Client(ClientError::Api { detail, .. }))
                if detail.code == ErrorCode::Unavailable =>
            {
                continue;
            }
            _ => break,
        }
    }
    outcome.expect("the server reconnected within three attempts");
    assert_eq!(
        vault::read(&f.client, &f.session, &no_memory(), Namespace::Vault, "before").await.unwrap().as_slice(),
        b"v1"
    );
    assert_eq!(
        vault::read(&f.client, &f.session, &no_memory(), Namespace::Vault, "after").await.unwrap().as_slice(),
        b"v2"
    );
}
