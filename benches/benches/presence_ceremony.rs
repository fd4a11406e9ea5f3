//! What a presence key costs a critical operation on the server (issue 14: within 2 ms at the
//! median): the whole ceremony — open it (signed `POST /v1/presence/ceremonies`), the page's
//! options, the answer verified (an ES256 assertion from the software authenticator), and the
//! operation consuming it — against the same operation on an account without presence keys (a
//! local claim, taken as is), each on a real server in this process over loopback HTTP with
//! SQLite in a temp dir. Also the assertion check
//! alone. Run: `cargo bench -p agentkeys-bench --bench presence_ceremony`.

use std::hint::black_box;
use std::sync::Arc;

use agentkeys_core::ApiClient;
use agentkeys_core::client::Presence;
use agentkeys_core::random::OsRandom;
use agentkeys_core::session::Session;
use agentkeys_proto::agents::{Tier, TierChangeRequest};
use agentkeys_proto::ceremony::{EnrollRequest, KeyKind, StartCeremonyRequest};
use agentkeys_webauthn::soft::{self, SoftKey, UP, UV};
use agentkeys_webauthn::{CredentialKey, RelyingParty, b64url, from_b64url, verify_assertion};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use sha2::Digest as _;

struct Rig {
    _dir: tempfile::TempDir,
    url: String,
    public_url: String,
    client: ApiClient,
    http: reqwest::Client,
    agent_id: String,
    key: SoftKey,
    credential_id: Vec<u8>,
    counter: std::sync::atomic::AtomicU32,
}

impl Rig {
    async fn start(with_key: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
        let (mut state, _writer) =
            agentkeys_server::start(&database, agentkeys_server::clock::Clock::system()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        state.public_url = format!("http://localhost:{port}");
        // One source sending thousands of page requests: lift the anonymous limit it would hit.
        state.limits.anonymous.per_source =
            agentkeys_server::engine::ratelimit::RateLimit::per_second(1_000_000, 1_000_000);
        let public_url = state.public_url.clone();
        let router = agentkeys_server::router(state);
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let url = format!("http://127.0.0.1:{port}");
        let created =
            agentkeys_core::account::create_account(&ApiClient::anonymous(&url).unwrap(), "bench", &mut OsRandom)
                .await
                .unwrap();
        let session: Arc<Session> = created.session;
        let client = ApiClient::for_session(&url, session.clone()).unwrap();
        let agent = agentkeys_core::agents::create_agent(
            &client.clone().with_presence(Presence::Local("skipped")),
            &session,
            &agentkeys_core::integrity::Verifier::in_memory(),
            "bench-bot",
            &[],
            Tier::Standard,
            &mut OsRandom,
        )
        .await
        .unwrap()
        .0
        .agent_id;
        let rig = Self {
            _dir: dir,
            url,
            public_url,
            client,
            http: reqwest::Client::new(),
            agent_id: agent,
            key: SoftKey::es256(7),
            credential_id: vec![0xc7; 32],
            counter: std::sync::atomic::AtomicU32::new(1),
        };
        if with_key {
            rig.enroll().await;
        }
        rig
    }

    async fn options(&self, id: &str) -> Vec<u8> {
        let response = self.http.get(format!("{}/presence/{id}/options", self.url)).send().await.unwrap();
        let options: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        from_b64url(options["public_key"]["challenge"].as_str().unwrap()).unwrap()
    }

    async fn answer(&self, id: &str, answer: Value) {
        let response = self
            .http
            .post(format!("{}/presence/{id}/answer", self.url))
            .header("content-type", "application/json")
            .body(answer.to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    }

    /// The one key, enrolled through its ceremony with `none` attestation.
    async fn enroll(&self) {
        let enroll = EnrollRequest { name: "soft".into(), kind: KeyKind::Roaming };
        let started =
            self.client.clone().with_presence(Presence::Local("skipped")).enroll_presence_key(&enroll).await.unwrap();
        let challenge = self.options(&started.id).await;
        let client_data = soft::client_data("webauthn.create", &challenge, &self.public_url);
        let auth_data = soft::auth_data("localhost", UP | UV, 0, Some((&self.credential_id, &self.key)));
        let object = soft::attestation_object("none", Vec::new(), &auth_data);
        self.answer(
            &started.id,
            json!({
                "credential_id": b64url(&self.credential_id),
                "client_data_json": b64url(&client_data),
                "attestation_object": b64url(&object),
            }),
        )
        .await;
    }

    /// The tier change body alternates, so every request changes something.
    fn tier_change(&self, round: u32) -> (String, Vec<u8>, TierChangeRequest) {
        let tier = if round.is_multiple_of(2) { Tier::Admin } else { Tier::Standard };
        let request = TierChangeRequest { tier };
        (format!("/v1/agents/{}/tier", self.agent_id), serde_json::to_vec(&request).unwrap(), request)
    }

    /// One critical operation answered by a ceremony: open, options, answer, send.
    async fn ceremony_round(&self) {
        let round = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (path, body, request) = self.tier_change(round);
        let started = self
            .client
            .start_ceremony(&StartCeremonyRequest {
                method: "POST".into(),
                path,
                body_digest: agentkeys_proto::b64::encode(sha2::Sha256::digest(&body)),
                operation: "bench".into(),
            })
            .await
            .unwrap();
        let challenge = self.options(&started.id).await;
        let client_data = soft::client_data("webauthn.get", &challenge, &self.public_url);
        let auth_data = soft::auth_data("localhost", UP | UV, round, None);
        let signature = self.key.sign(&soft::signed(&auth_data, &client_data));
        self.answer(
            &started.id,
            json!({
                "credential_id": b64url(&self.credential_id),
                "client_data_json": b64url(&client_data),
                "authenticator_data": b64url(&auth_data),
                "signature": b64url(&signature),
            }),
        )
        .await;
        let path = format!("/v1/agents/{}/tier?presence=webauthn:{}", self.agent_id, started.id);
        let sent = self.client.build_signed(reqwest::Method::POST, &path, serde_json::to_vec(&request).unwrap());
        self.client.send::<()>(sent).await.unwrap();
    }
}

fn ceremony(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rig = runtime.block_on(Rig::start(true));
    let plain = runtime.block_on(Rig::start(false));
    let mut group = c.benchmark_group("presence ceremony (server, loopback HTTP, SQLite)");
    group.sample_size(50);
    let local = plain.client.clone().with_presence(Presence::Local("skipped"));
    group.bench_function("critical operation, no presence key (baseline)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let round = plain.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (_, _, request) = plain.tier_change(round);
                local.change_tier(&plain.agent_id, &request).await.unwrap();
            })
        })
    });
    group.bench_function("critical operation with a ceremony: open, options, answer, consume", |b| {
        b.iter(|| runtime.block_on(rig.ceremony_round()))
    });
    group.finish();

    let rp = RelyingParty::for_origin("http://localhost:8090").unwrap();
    let key = SoftKey::es256(9);
    let credential = CredentialKey::from_cose(&key.cose()).unwrap();
    let challenge = [5u8; 32];
    let client_data = soft::client_data("webauthn.get", &challenge, &rp.origin);
    let auth_data = soft::auth_data("localhost", UP | UV, 3, None);
    let signature = key.sign(&soft::signed(&auth_data, &client_data));
    c.bench_function("verify an ES256 assertion (client data, flags, signature)", |b| {
        b.iter(|| {
            verify_assertion(&rp, &challenge, &credential, black_box(&client_data), &auth_data, &signature).unwrap()
        })
    });
}

criterion_group!(benches, ceremony);
criterion_main!(benches);
