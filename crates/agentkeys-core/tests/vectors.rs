//! Checks every construction of `docs/protocol.md` against `tests/vectors.json`, where each case
//! states all of its inputs (keys, nonces, ephemeral secrets) and the exact expected output.
//! Regenerate after a deliberate format change with `AGENTKEYS_WRITE_VECTORS=1 cargo test -p
//! agentkeys-core --test vectors` (and say so in docs/protocol.md: it is a protocol change).

use agentkeys_core::agents::LinkCode;
use agentkeys_core::crypto::{self, Argon2Cost, CredentialContext, KeyPair, RecoveryKey, SymmetricKey, WrapLabel};
use agentkeys_core::random::{FixedRandom, RandomSource as _, SeededRandom};
use agentkeys_core::signing::sign_request;
use agentkeys_proto::{b64, ids, signing};
use serde_json::{Value, json};
use sha2::Digest as _;

fn bytes(rng: &mut SeededRandom, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    rng.fill(&mut out);
    out
}

fn h(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(bytes)
}

/// Computes every vector from explicit inputs drawn from a fixed seed.
fn compute() -> Value {
    let mut seed = SeededRandom::new(b"agentkeys test vectors v1");
    let keys_secret = bytes(&mut seed, 64);
    let keys = KeyPair::from_secret_blob(&keys_secret).unwrap();
    let public = keys.public();

    let data_key = bytes(&mut seed, 32);
    let nonce = bytes(&mut seed, 24);
    let context = CredentialContext {
        account_id: "acct_0123456789abcdef0123",
        namespace: "vault",
        service: "openai",
        version: 7,
    };
    let plaintext = b"sk-test-vector-value";
    let sealed = crypto::seal_credential(
        &SymmetricKey::from_bytes(&data_key).unwrap(),
        &context,
        plaintext,
        &mut FixedRandom::new(nonce.clone()),
    );

    let ephemeral = bytes(&mut seed, 32);
    let wrapped =
        crypto::wrap_to(&public.kx, &data_key, WrapLabel::DataKey, &mut FixedRandom::new(ephemeral.clone())).unwrap();

    let request_nonce = bytes(&mut seed, 16);
    let body = br#"{"version":7}"#;
    let session_id = "ses_0123456789abcdef01234567";
    let sig = sign_request(
        &keys,
        session_id,
        "PUT",
        "/v1/credentials/openai",
        body,
        1_800_000_000,
        &mut FixedRandom::new(request_nonce.clone()),
    );
    let payload = signing::signing_payload(
        "PUT",
        "/v1/credentials/openai",
        session_id,
        1_800_000_000,
        &sig.nonce,
        &signing::body_digest(body),
    );

    let recovery_secret = bytes(&mut seed, 32);
    let recovery = RecoveryKey::generate(&mut FixedRandom::new(recovery_secret.clone()));

    // A recovery opened for a new device (the key pair above) with the session token "akt_token".
    let recovery_token_hash: [u8; 32] = sha2::Sha256::digest(b"akt_token").into();
    let recovery_open =
        agentkeys_proto::devices::recovery_open_payload(&public.sign, &public.kx, &recovery_token_hash, "new-laptop");

    let account_id = crypto::account_id(&public.sign);
    let certificate_payload = crypto::device_certificate_payload(&account_id, &public, "laptop");
    json!({
        "key_pair": {
            "secret_blob": h(&keys_secret),
            "sign_public": h(public.sign),
            "kx_public": h(public.kx),
            "account_id_if_account_key": account_id,
            "device_id_if_device_key": crypto::device_id(&public.sign),
        },
        "seal": {
            "data_key": h(&data_key),
            "nonce": h(&nonce),
            "account_id": context.account_id,
            "namespace": context.namespace,
            "service": context.service,
            "version": context.version,
            "aad": h(context.aad()),
            "plaintext": h(plaintext),
            "sealed": h(&sealed),
        },
        "wrap": {
            "recipient_kx_public": h(public.kx),
            "recipient_secret_blob": h(&keys_secret),
            "ephemeral_secret": h(&ephemeral),
            "label": "agentkeys-wrap-v1/data-key",
            "wrapped_key": h(&data_key),
            "wrap": h(&wrapped),
        },
        "request_signature": {
            "signer_secret_blob": h(&keys_secret),
            "method": "PUT",
            "path_and_query": "/v1/credentials/openai",
            "session_id": session_id,
            "timestamp": 1_800_000_000,
            "nonce": sig.nonce,
            "body": String::from_utf8_lossy(body),
            "payload": String::from_utf8(payload).unwrap(),
            "signature": h(b64::decode(&sig.signature).unwrap()),
        },
        "device_certificate": {
            "signer_secret_blob": h(&keys_secret),
            "label": "laptop",
            "payload": String::from_utf8(certificate_payload.clone()).unwrap(),
            "signature": h(keys.sign(&certificate_payload)),
        },
        "recovery_key": {
            "secret": h(&recovery_secret),
            "kx_public": h(recovery.kx_public()),
            "text": recovery.to_text().as_str(),
            "sign_public": h(recovery.sign_public()),
            "open_token": "akt_token",
            "open_label": "new-laptop",
            "open_payload": String::from_utf8(recovery_open.clone()).unwrap(),
            "open_signature": h(recovery.sign(&recovery_open)),
        },
        "agent": agent_vectors(&keys_secret),
        "grant": grant_vector(&keys_secret, &sealed),
        "session_passphrase": session_passphrase_vector(),
        "account_audit_chain": account_chain_vector(),
        "account_statements": account_statements_vector(&keys_secret),
        "presence_ceremony": presence_ceremony_vector(),
    })
}

/// The challenge of a presence ceremony bound to one request (docs/protocol.md, "Presence
/// ceremonies"); fixed inputs, so no draw from the seeded generator moves the other vectors.
fn presence_ceremony_vector() -> Value {
    use agentkeys_proto::ceremony::{CeremonyPurpose, ceremony_challenge};
    let body = br#"{"tier":"admin"}"#;
    let digest: [u8; 32] = sha2::Sha256::digest(body).into();
    let nonce = [0x42u8; 32];
    let (id, account, method, path) =
        ("cer_AAECAwQFBgcICQoLDA0ODw", "acct_0123456789abcdef0123", "POST", "/v1/agents/ag_0123456789abcdef0123/tier");
    let challenge = ceremony_challenge(id, account, CeremonyPurpose::Assert, method, path, &digest, &nonce);
    json!({
        "ceremony_id": id,
        "account_id": account,
        "purpose": "assert",
        "method": method,
        "path": path,
        "body": String::from_utf8_lossy(body),
        "body_digest": h(digest),
        "nonce": h(nonce),
        "challenge": h(challenge),
        "challenge_b64url": b64::encode(challenge),
    })
}

/// Three places of an account's audit chain over given server-chain row hashes
/// (docs/protocol.md, "Account audit chains").
fn account_chain_vector() -> Value {
    let mut seed = SeededRandom::new(b"agentkeys account audit chain vectors v1");
    let mut prev = [0u8; 32];
    let places: Vec<Value> = (1..=3u64)
        .map(|seq| {
            let row_hash: [u8; 32] = bytes(&mut seed, 32).try_into().unwrap();
            let hash = agentkeys_proto::chain::account_chain_hash(&prev, seq, &row_hash);
            let place = json!({ "seq": seq, "row_hash": h(row_hash), "prev": h(prev), "hash": h(hash) });
            prev = hash;
            place
        })
        .collect();
    json!({ "domain": "agentkeys-account-audit-v1", "places": places })
}

/// Two statements of an account's log, signed by the account key and linked by hash
/// (docs/protocol.md, "Account statements").
fn account_statements_vector(account_secret: &[u8]) -> Value {
    use agentkeys_proto::statement::{Statement, StatementBody, statement_hash};
    let account = KeyPair::from_secret_blob(account_secret).unwrap();
    let account_id = ids::account_id(&account.public().sign);
    let bodies = [
        StatementBody::Grant {
            agent_id: "ag_0123456789abcdef0123".into(),
            services: vec!["openai".into(), "github.com".into()],
        },
        StatementBody::Revoke {
            agent_id: "ag_0123456789abcdef0123".into(),
            ids: vec!["dev_0123456789abcdef0123".into(), "lnk_0123456789abcdef0123".into()],
        },
    ];
    let mut prev = [0u8; 32];
    let statements: Vec<Value> = bodies
        .into_iter()
        .zip(1u64..)
        .map(|(body, seq)| {
            let (kind, agent_id, items) = match &body {
                StatementBody::Grant { agent_id, services } => (1, agent_id.clone(), services.clone()),
                StatementBody::Revoke { agent_id, ids } => (3, agent_id.clone(), ids.clone()),
                _ => unreachable!("the vector has a grant and a revocation"),
            };
            let statement = Statement { account_id: account_id.clone(), seq, prev, body };
            let payload = statement.payload();
            let entry = json!({
                "seq": seq,
                "prev": h(prev),
                "kind": kind,
                "agent_id": agent_id,
                "items": items,
                "payload": h(&payload),
                "signature": h(account.sign(&payload)),
                "hash": h(statement_hash(&payload)),
            });
            prev = statement_hash(&payload);
            entry
        })
        .collect();
    json!({
        "account_secret_blob": h(account_secret),
        "account_id": account_id,
        "domain": "agentkeys-statement-v1",
        "statements": statements,
    })
}

/// The passphrase form of a session file (docs/protocol.md "Session file"), at a cost small
/// enough for a test; real files carry the default cost in the same header.
fn session_passphrase_vector() -> Value {
    let mut seed = SeededRandom::new(b"agentkeys session passphrase vectors v1");
    let salt: [u8; 16] = bytes(&mut seed, 16).try_into().unwrap();
    let nonce = bytes(&mut seed, 24);
    let cost = Argon2Cost { memory_kib: 64, iterations: 1, lanes: 1 };
    let passphrase = "correct horse battery staple";
    let key = crypto::passphrase_key(passphrase.as_bytes(), &salt, cost).unwrap();
    let header = passphrase_header(cost, &salt);
    let aad = [&b"agentkeys-session-v1\0master"[..], &header].concat();
    let plaintext = br#"{"example":"a session record"}"#;
    let sealed = crypto::aead_seal(&key, &aad, plaintext, &mut FixedRandom::new(nonce.clone()));
    json!({
        "passphrase": passphrase,
        "salt": h(salt),
        "memory_kib": cost.memory_kib,
        "iterations": cost.iterations,
        "lanes": cost.lanes,
        "key": h(key.expose()),
        "session_id": "master",
        "header": h(&header),
        "aad": h(&aad),
        "nonce": h(&nonce),
        "plaintext": String::from_utf8_lossy(plaintext),
        "file": h([&header[..], &sealed].concat()),
    })
}

/// `0x02 || memory_kib || iterations || lanes || salt`, integers as u32 big-endian.
fn passphrase_header(cost: Argon2Cost, salt: &[u8; 16]) -> Vec<u8> {
    let mut header = vec![2u8];
    for word in [cost.memory_kib, cost.iterations, cost.lanes] {
        header.extend_from_slice(&word.to_be_bytes());
    }
    header.extend_from_slice(salt);
    header
}

/// Agent identity, device certificates, link codes and the pairing OTP, from their own seed so
/// the vectors above stay as they were. The account key is the key pair above.
fn agent_vectors(account_secret: &[u8]) -> Value {
    let mut seed = SeededRandom::new(b"agentkeys agent vectors v1");
    let account = KeyPair::from_secret_blob(account_secret).unwrap();
    let account_id = ids::account_id(&account.public().sign);
    let agent_id = ids::agent_id(&account_id, "build-bot");
    let device_secret = bytes(&mut seed, 64);
    let device = KeyPair::from_secret_blob(&device_secret).unwrap().public();
    let device_payload = ids::agent_device_payload(&account_id, &agent_id, &device.sign, &device.kx);
    let link_secret = bytes(&mut seed, 32);
    let link_code = LinkCode::parse(&format!(
        "AKL1-{}",
        data_encoding::BASE32_NOPAD.encode(&[&link_secret[..], &sha2::Sha256::digest(&link_secret)[..2]].concat())
    ))
    .unwrap();
    let link = link_code.key_pair();
    let link_public = link.public();
    let link_payload = ids::link_key_payload(&account_id, &agent_id, &link_public.sign, &link_public.kx);
    let scope = vec!["github".to_owned(), "openai".to_owned()];
    let pair_nonce: [u8; 32] = bytes(&mut seed, 32).try_into().unwrap();
    let link_account_payload = ids::link_account_payload(&ids::link_id(&link_public.sign), &account.public().sign);
    json!({
        "account_secret_blob": h(account_secret),
        "account_id": account_id,
        "label": "build-bot",
        "agent_id": agent_id,
        "device_secret_blob": h(&device_secret),
        "device_id": ids::device_id(&device.sign),
        "device_payload": String::from_utf8(device_payload.clone()).unwrap(),
        "paired_certificate": h(account.sign(&device_payload)),
        "link_secret": h(&link_secret),
        "link_code": link_code.to_text().as_str(),
        "link_sign_public": h(link_public.sign),
        "link_kx_public": h(link_public.kx),
        "link_id": ids::link_id(&link_public.sign),
        "link_payload": String::from_utf8(link_payload.clone()).unwrap(),
        "link_certificate": h(account.sign(&link_payload)),
        "linked_device_signature": h(link.sign(&device_payload)),
        "pair_kind": "pairing",
        "pair_code": "7K3D-QX2M",
        "pair_scope": scope.join(","),
        "pair_nonce": h(pair_nonce),
        "pair_commitment": h(ids::pairing_commitment(&pair_nonce)),
        "pair_otp": ids::pairing_otp(
            &pair_nonce,
            "pairing",
            "7K3D-QX2M",
            "build-bot",
            &scope,
            (&device.sign, &device.kx),
            &account.public().sign
        ),
        "link_account_payload": String::from_utf8(link_account_payload.clone()).unwrap(),
        "link_account_binding": h(link.sign(&link_account_payload)),
    })
}

/// A grant (docs/protocol.md "Grants"): a master device, certified by the account key, signs the
/// account-key wrap of the `seal` vector's ciphertext and a device wrap of it.
fn grant_vector(account_secret: &[u8], sealed: &[u8]) -> Value {
    let mut seed = SeededRandom::new(b"agentkeys grant vectors v1");
    let account = KeyPair::from_secret_blob(account_secret).unwrap();
    let account_id = ids::account_id(&account.public().sign);
    let signer_secret = bytes(&mut seed, 64);
    let signer = KeyPair::from_secret_blob(&signer_secret).unwrap();
    let certificate_payload = crypto::device_certificate_payload(&account_id, &signer.public(), "laptop");
    let digest: [u8; 32] = sha2::Sha256::digest(sealed).into();
    let statement = |recipient| agentkeys_proto::grant::GrantStatement {
        account_id: &account_id,
        namespace: "vault",
        service: "openai",
        version: 7,
        ciphertext_sha256: &digest,
        flags: 0,
        recipient,
    };
    let to_account = statement(&account_id).payload();
    let to_device = statement("dev_0123456789abcdef0123").payload();
    json!({
        "account_secret_blob": h(account_secret),
        "account_id": account_id,
        "signer_secret_blob": h(&signer_secret),
        "signer_device_id": ids::device_id(&signer.public().sign),
        "signer_label": "laptop",
        "signer_certificate": h(account.sign(&certificate_payload)),
        "namespace": "vault",
        "service": "openai",
        "version": 7,
        "sealed": h(sealed),
        "ciphertext_sha256": h(digest),
        "flags": 0,
        "recipient_account": account_id,
        "payload_account": h(&to_account),
        "signature_account": h(signer.sign(&to_account)),
        "recipient_device": "dev_0123456789abcdef0123",
        "payload_device": h(&to_device),
        "signature_device": h(signer.sign(&to_device)),
    })
}

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");

#[test]
fn constructions_match_the_published_vectors() {
    let computed = compute();
    if std::env::var_os("AGENTKEYS_WRITE_VECTORS").is_some() {
        std::fs::write(PATH, serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
    }
    let published: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    for (name, case) in published.as_object().unwrap() {
        assert_eq!(&computed[name], case, "vector {name} changed: a protocol change (see this file's header)");
    }
    assert_eq!(computed.as_object().unwrap().len(), published.as_object().unwrap().len());
}

#[test]
fn published_vectors_open_and_verify_from_their_stated_inputs() {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let hx = |value: &Value| hex::decode(value.as_str().unwrap()).unwrap();

    let seal = &v["seal"];
    let context = CredentialContext {
        account_id: seal["account_id"].as_str().unwrap(),
        namespace: seal["namespace"].as_str().unwrap(),
        service: seal["service"].as_str().unwrap(),
        version: seal["version"].as_u64().unwrap(),
    };
    let key = SymmetricKey::from_bytes(&hx(&seal["data_key"])).unwrap();
    assert_eq!(
        crypto::open_credential(&key, &context, &hx(&seal["sealed"])).unwrap().as_slice(),
        hx(&seal["plaintext"])
    );

    let wrap = &v["wrap"];
    let recipient = KeyPair::from_secret_blob(&hx(&wrap["recipient_secret_blob"])).unwrap();
    assert_eq!(recipient.unwrap(&hx(&wrap["wrap"]), WrapLabel::DataKey).unwrap().as_slice(), hx(&wrap["wrapped_key"]));

    let sig = &v["request_signature"];
    let signer = KeyPair::from_secret_blob(&hx(&sig["signer_secret_blob"])).unwrap();
    let signature: [u8; 64] = hx(&sig["signature"]).try_into().unwrap();
    crypto::verify(&signer.public().sign, sig["payload"].as_str().unwrap().as_bytes(), &signature).unwrap();

    let recovery = RecoveryKey::parse(v["recovery_key"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(h(recovery.kx_public()), v["recovery_key"]["kx_public"].as_str().unwrap());
}

/// Answers the session store's passphrase question with a fixed passphrase.
#[derive(Debug)]
struct Answer(&'static str);

impl agentkeys_core::session::PassphrasePrompt for Answer {
    fn ask(
        &self,
        _id: &agentkeys_core::session::SessionId,
        _again: bool,
    ) -> Result<secrecy::SecretString, agentkeys_core::session::SessionError> {
        Ok(secrecy::SecretString::from(self.0.to_owned()))
    }
}

/// The store reads both documented session-file forms: a session saved in the key form is opened
/// by hand from the documented construction, re-sealed in the documented passphrase form with the
/// vector's inputs, and the store opens that with the passphrase.
#[test]
fn the_session_store_reads_the_documented_file_forms() {
    use agentkeys_core::session::{EncryptedFileStore, Session, SessionId, SessionStore as _};
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let p = &v["session_passphrase"];
    let hx = |value: &Value| hex::decode(value.as_str().unwrap()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut rng = SeededRandom::new(b"session form");
    let session = Session {
        server_url: "http://127.0.0.1:8090".into(),
        account_id: "acct_x".into(),
        device_id: "dev_documented".into(),
        device_label: "laptop".into(),
        session_id: "ses_x".into(),
        token: secrecy::SecretString::from("akt_x".to_owned()),
        device: KeyPair::generate(&mut rng),
        account: None,
        agent_id: None,
        account_sign_public: None,
        link_id: None,
    };
    let id = SessionId::master();
    EncryptedFileStore::new(home.path()).save(&id, &session).unwrap();
    let dir = home.path().join("master");
    let key = SymmetricKey::from_bytes(&std::fs::read(dir.join("session.key")).unwrap()).unwrap();
    let record =
        crypto::aead_open(&key, b"agentkeys-session-v1\0master", &std::fs::read(dir.join("session.enc")).unwrap())
            .unwrap();

    let cost = Argon2Cost {
        memory_kib: p["memory_kib"].as_u64().unwrap() as u32,
        iterations: p["iterations"].as_u64().unwrap() as u32,
        lanes: p["lanes"].as_u64().unwrap() as u32,
    };
    let salt: [u8; 16] = hx(&p["salt"]).try_into().unwrap();
    let passphrase_key = crypto::passphrase_key(p["passphrase"].as_str().unwrap().as_bytes(), &salt, cost).unwrap();
    assert_eq!(h(passphrase_key.expose()), p["key"].as_str().unwrap());
    let header = hx(&p["header"]);
    let aad = [&b"agentkeys-session-v1\0master"[..], &header].concat();
    let sealed = crypto::aead_seal(&passphrase_key, &aad, &record, &mut FixedRandom::new(hx(&p["nonce"])));
    std::fs::write(dir.join("session.enc"), [&header[..], &sealed].concat()).unwrap();
    std::fs::remove_file(dir.join("session.key")).unwrap();

    let store = EncryptedFileStore::new(home.path())
        .with_passphrase_prompt(std::sync::Arc::new(Answer("correct horse battery staple")));
    assert_eq!(store.load(&id).unwrap().unwrap().device_id, "dev_documented");
}
