//! Criterion benchmarks of the per-request hot paths: sealing and opening a value, wrapping and
//! unwrapping a data key, signing a request (client) and verifying it (server), and masking a
//! child's output. Run: `cargo bench -p agentkeys-bench`.

use std::hint::black_box;

use agentkeys_core::crypto::{self, CredentialContext, KeyPair, SymmetricKey, WrapLabel};
use agentkeys_core::mask::Masker;
use agentkeys_core::random::SeededRandom;
use agentkeys_core::signing::sign_request;
use agentkeys_proto::{b64, signing};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn crypto_paths(c: &mut Criterion) {
    let mut rng = SeededRandom::new(b"bench");
    let keys = KeyPair::generate(&mut rng);
    let data_key = SymmetricKey::generate(&mut rng);
    let context = CredentialContext {
        account_id: "acct_0123456789abcdef0123",
        namespace: "vault",
        service: "openai",
        version: 1,
    };
    let value = vec![b'k'; 64];
    let sealed = crypto::seal_credential(&data_key, &context, &value, &mut rng);
    let wrap = crypto::wrap_to(&keys.public().kx, data_key.expose(), WrapLabel::DataKey, &mut rng).unwrap();

    c.bench_function("seal 64 B value", |b| {
        b.iter(|| crypto::seal_credential(&data_key, &context, black_box(&value), &mut rng))
    });
    c.bench_function("open 64 B value", |b| {
        b.iter(|| crypto::open_credential(&data_key, &context, black_box(&sealed)).unwrap())
    });
    c.bench_function("wrap data key (X25519 + HKDF + AEAD)", |b| {
        b.iter(|| {
            crypto::wrap_to(&keys.public().kx, black_box(data_key.expose()), WrapLabel::DataKey, &mut rng).unwrap()
        })
    });
    c.bench_function("unwrap data key", |b| b.iter(|| keys.unwrap(black_box(&wrap), WrapLabel::DataKey).unwrap()));
    c.bench_function("sign request (client)", |b| {
        b.iter(|| sign_request(&keys, "ses_bench", "GET", "/v1/credentials/openai", b"", 1_800_000_000, &mut rng))
    });
    let sig = sign_request(&keys, "ses_bench", "GET", "/v1/credentials/openai", b"", 1_800_000_000, &mut rng);
    let signature: [u8; 64] = b64::decode_array(&sig.signature).unwrap();
    // Rebuilt on every iteration, as the server rebuilds it for every request.
    let payload = || {
        signing::signing_payload(
            "GET",
            "/v1/credentials/openai",
            "ses_bench",
            sig.timestamp,
            &sig.nonce,
            &signing::body_digest(b""),
        )
    };
    c.bench_function("verify request signature, key decompressed each time", |b| {
        b.iter(|| {
            let payload = payload();
            crypto::verify(&keys.public().sign, black_box(&payload), &signature).unwrap()
        })
    });
    // What the server does: the session cache holds the decompressed key.
    let device_key = ed25519_dalek::VerifyingKey::from_bytes(&keys.public().sign).unwrap();
    let signature = ed25519_dalek::Signature::from_bytes(&signature);
    c.bench_function("verify request signature, cached key (server)", |b| {
        b.iter(|| {
            let payload = payload();
            device_key.verify_strict(black_box(&payload), &signature).unwrap()
        })
    });
}

/// What opening a passphrase-sealed master session costs each command (Argon2id, default cost).
fn session_passphrase(c: &mut Criterion) {
    let mut group = c.benchmark_group("session");
    group.sample_size(10);
    group.bench_function("derive a passphrase key (Argon2id 64 MiB, 3 passes, 1 lane)", |b| {
        b.iter(|| {
            agentkeys_core::crypto::passphrase_key(
                black_box(b"correct horse battery staple"),
                &[7u8; 16],
                agentkeys_core::crypto::Argon2Cost::DEFAULT,
            )
            .unwrap()
        })
    });
    group.finish();
}

fn masking(c: &mut Criterion) {
    let secrets: Vec<Vec<u8>> = (0..4).map(|i| format!("sk-secret-value-{i}-0123456789abcdef").into_bytes()).collect();
    let mut output = Vec::new();
    for line in 0..1000 {
        output.extend_from_slice(
            format!("log line {line}: nothing secret here, just ordinary program output\n").as_bytes(),
        );
    }
    output.extend_from_slice(&secrets[2]);
    let mut group = c.benchmark_group("mask");
    group.throughput(Throughput::Bytes(output.len() as u64));
    group.bench_function("70 KB of output in 4 KB reads, 4 values", |b| {
        b.iter(|| {
            let mut masker = Masker::new(secrets.iter().map(Vec::as_slice));
            let mut out = Vec::with_capacity(output.len());
            for chunk in output.chunks(4096) {
                masker.push(black_box(chunk), &mut out);
            }
            masker.finish(&mut out);
            out
        })
    });
    group.finish();
}

criterion_group!(benches, crypto_paths, session_passphrase, masking);
criterion_main!(benches);
