//! Several `agentkeys-server` processes on one database behave as one: what one stores the other
//! serves, a nonce one has seen the other refuses, and a revocation holds at both at once.

use agentkeys_core::vault::Namespace;
use agentkeys_core::{ApiClient, ClientError, OsRandom, account::create_account, vault};
use agentkeys_proto::ErrorCode;
use agentkeys_tests::{Backend, ServerProcess, TestDb, no_memory};
use reqwest::Method;

on_both_backends!(replicas_share_data_and_nonces);

async fn replicas_share_data_and_nonces(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let replica_a = ServerProcess::start(&db.url);
    let replica_b = ServerProcess::start(&db.url);
    let account =
        create_account(&ApiClient::anonymous(&replica_a.url).unwrap(), "replica-test", &mut OsRandom).await.unwrap();
    let via_a = ApiClient::for_session(&replica_a.url, account.session.clone()).unwrap();
    let via_b = ApiClient::for_session(&replica_b.url, account.session.clone()).unwrap();

    vault::store(&via_a, &account.session, &no_memory(), Namespace::Vault, "github", b"ghp_shared", &mut OsRandom)
        .await
        .unwrap();
    assert_eq!(
        vault::read(&via_b, &account.session, &no_memory(), Namespace::Vault, "github").await.unwrap().as_slice(),
        b"ghp_shared"
    );

    // Capture a request signed for replica A and replay it, byte for byte, at replica B.
    let captured = via_a.build_signed(Method::GET, "/v1/credentials/github", Vec::new()).build().unwrap();
    let mut replay =
        reqwest::Request::new(Method::GET, format!("{}/v1/credentials/github", replica_b.url).parse().unwrap());
    *replay.headers_mut() = captured.headers().clone();
    let first = agentkeys_tests::http_client().execute(captured).await.unwrap();
    assert_eq!(first.status(), 200);
    let second = agentkeys_tests::http_client().execute(replay).await.unwrap();
    assert_eq!(second.status(), 401);
    let body: agentkeys_proto::ErrorBody = serde_json::from_str(&second.text().await.unwrap()).unwrap();
    assert_eq!(body.error.code, ErrorCode::ReplayedNonce);

    // Concurrent stores through both replicas still get one version each.
    let (mut rng_a, mut rng_b) = (OsRandom, OsRandom);
    let (seen_a, seen_b) = (no_memory(), no_memory());
    let (a, b) = tokio::join!(
        vault::store(&via_a, &account.session, &seen_a, Namespace::Vault, "shared", b"from-a", &mut rng_a),
        vault::store(&via_b, &account.session, &seen_b, Namespace::Vault, "shared", b"from-b", &mut rng_b),
    );
    let mut versions = [a.unwrap().version, b.unwrap().version];
    versions.sort();
    assert_eq!(versions, [1, 2]);
    assert!(matches!(via_b.get_credential("nope", None).await, Err(ClientError::Api { .. })));

    // Both replicas have served (and cached) this session. Revoked in the database, it is refused
    // on the very next request at either replica.
    sqlx::any::install_default_drivers();
    let mut db_conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    sqlx::query("UPDATE sessions SET revoked_at_ms = $1 WHERE id = $2")
        .bind(1_i64)
        .bind(&account.session.session_id)
        .execute(&mut db_conn)
        .await
        .unwrap();
    for client in [&via_a, &via_b] {
        match client.get_credential("github", None).await {
            Err(ClientError::Api { detail, .. }) => assert_eq!(detail.code, ErrorCode::Revoked),
            other => panic!("a revoked session was served: {other:?}"),
        }
    }
}
