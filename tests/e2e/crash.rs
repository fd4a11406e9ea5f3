//! SIGKILL the server in the middle of a burst of stores, restart it on the same database, and
//! find every store it acknowledged — and an intact audit chain. The test checks that the kill
//! landed mid-burst (stores still unanswered at the kill, and some cut off by it): otherwise it
//! would only be a restart test.

use std::collections::HashMap;

use agentkeys_core::vault::Namespace;
use agentkeys_core::{ApiClient, OsRandom, account::create_account, vault};
use agentkeys_tests::{Backend, ServerProcess, TestDb, bin, no_memory};

on_both_backends!(sigkill_during_a_burst_loses_no_acknowledged_store);

async fn sigkill_during_a_burst_loses_no_acknowledged_store(backend: Backend) {
    const STORES: usize = 200;
    const KILL_AFTER_ACKS: usize = 40;
    let Some(db) = TestDb::new(backend).await else { return };
    let mut server = ServerProcess::start(&db.url);
    let account =
        create_account(&ApiClient::anonymous(&server.url).unwrap(), "crash-test", &mut OsRandom).await.unwrap();
    let client = ApiClient::for_session(&server.url, account.session.clone()).unwrap();

    let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..STORES {
        let (client, session, acks) = (client.clone(), account.session.clone(), acks.clone());
        tokio::spawn(async move {
            let service = format!("burst-{i}");
            let value = format!("value-{i}-{}", i * 7919);
            let result = vault::store(
                &client,
                &session,
                &no_memory(),
                Namespace::Vault,
                &service,
                value.as_bytes(),
                &mut OsRandom,
            )
            .await;
            let _ = acks.send((service, value, result.is_ok()));
        });
    }
    drop(acks);
    let mut acknowledged = HashMap::new();
    let (mut failed, mut answered, mut unanswered_at_kill) = (0, 0, None);
    while let Some((service, value, ok)) = acked.recv().await {
        answered += 1;
        if ok {
            acknowledged.insert(service, value);
            if acknowledged.len() == KILL_AFTER_ACKS {
                unanswered_at_kill = Some(STORES - answered);
                server.kill();
            }
        } else {
            failed += 1;
        }
    }
    assert!(acknowledged.len() >= KILL_AFTER_ACKS, "the burst was acknowledged before the kill");
    let unanswered_at_kill = unanswered_at_kill.expect("the kill happened");
    eprintln!(
        "{} stores acknowledged, {unanswered_at_kill} in flight at the kill, {failed} cut off by SIGKILL",
        acknowledged.len()
    );
    assert!(unanswered_at_kill > 0, "stores were in flight when the kill landed");
    assert!(failed > 0, "the kill cut stores off: it landed mid-burst, not after it");

    let mut restarted = ServerProcess::start(&db.url);
    let client = ApiClient::for_session(&restarted.url, account.session.clone()).unwrap();
    for (service, value) in &acknowledged {
        let read = vault::read(&client, &account.session, &no_memory(), Namespace::Vault, service)
            .await
            .unwrap_or_else(|e| panic!("{service} lost: {e}"));
        assert_eq!(read.as_slice(), value.as_bytes(), "{service}");
    }
    assert!(restarted.terminate(), "SIGTERM shuts the server down cleanly (exit 0)");
    let verify = std::process::Command::new(bin("agentkeys-server"))
        .args(["verify-audit", "--database-url", &db.url])
        .output()
        .unwrap();
    assert!(verify.status.success(), "audit chain intact after the crash: {}", String::from_utf8_lossy(&verify.stderr));
}
