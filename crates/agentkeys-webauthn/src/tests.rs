//! The checks against a software authenticator: each refusal the issue lists has a case here, and
//! the same cases run through a real browser in `tests/e2e/webauthn.rs`.

use crate::soft::*;
use crate::*;

const NOW_S: i64 = 1_800_000_000;

fn rp() -> RelyingParty {
    RelyingParty::for_origin(ORIGIN).unwrap()
}

fn register(key: &SoftKey, format: &str, challenge: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let client = client_data("webauthn.create", challenge, ORIGIN);
    let auth = auth_data(RP_ID, UP | UV, 0, Some((b"credential-1", key)));
    let statement = match format {
        "none" => Vec::new(),
        _ => packed(key.alg(), key.sign(&signed(&auth, &client)), None),
    };
    (client, attestation_object(format, statement, &auth))
}

#[test]
fn rp_ids_are_the_host_of_the_public_url() {
    assert_eq!(RelyingParty::for_origin("http://localhost:8090").unwrap().id, "localhost");
    assert_eq!(RelyingParty::for_origin("https://Keys.Example.com").unwrap().id, "keys.example.com");
    for bad in ["localhost", "ftp://x", "https://x/y", "https://[::1]:8090", "https://:8090", "http://127.0.0.1:8090"] {
        assert!(RelyingParty::for_origin(bad).is_none(), "{bad}");
    }
}

#[test]
fn a_registration_and_assertions_verify_for_both_algorithms() {
    for key in [SoftKey::es256(7), SoftKey::eddsa(7)] {
        for format in ["none", "packed"] {
            let (client, object) = register(&key, format, b"challenge-1");
            let reg =
                verify_registration(&rp(), b"challenge-1", &client, &object, &TrustedRoots::none(), NOW_S).unwrap();
            assert_eq!(reg.credential_id, b"credential-1");
            assert_eq!(reg.aaguid, AAGUID);
            assert_eq!(reg.attestation.format, format);
            let stored = CredentialKey::from_cose(reg.key.cose()).unwrap();
            let client = client_data("webauthn.get", b"challenge-2", ORIGIN);
            let auth = auth_data(RP_ID, UP | UV, 5, None);
            let sig = key.sign(&signed(&auth, &client));
            let assertion = verify_assertion(&rp(), b"challenge-2", &stored, &client, &auth, &sig).unwrap();
            assert_eq!(assertion.sign_count, 5);
        }
    }
}

#[test]
fn assertions_are_refused_for_each_listed_fault() {
    let key = SoftKey::es256(9);
    let stored = CredentialKey::from_cose(&key.cose()).unwrap();
    let good_client = client_data("webauthn.get", b"chal", ORIGIN);
    let good_auth = auth_data(RP_ID, UP | UV, 3, None);
    let check = |client: &[u8], auth: &[u8], sig: &[u8]| verify_assertion(&rp(), b"chal", &stored, client, auth, sig);
    let sign = |client: &[u8], auth: &[u8]| key.sign(&signed(auth, client));
    assert!(check(&good_client, &good_auth, &sign(&good_client, &good_auth)).is_ok());
    // Tampered client data: origin, type, challenge.
    for (client, expected) in [
        (client_data("webauthn.get", b"chal", "http://evil.example"), "origin"),
        (client_data("webauthn.create", b"chal", ORIGIN), "webauthn.create"),
        (client_data("webauthn.get", b"other", ORIGIN), "another challenge"),
    ] {
        let error = check(&client, &good_auth, &sign(&client, &good_auth)).unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
    }
    // UV false, UP false, another RP ID.
    let no_uv = auth_data(RP_ID, UP, 3, None);
    assert_eq!(check(&good_client, &no_uv, &sign(&good_client, &no_uv)).unwrap_err(), WebauthnError::UserNotVerified);
    let no_up = auth_data(RP_ID, UV, 3, None);
    assert_eq!(check(&good_client, &no_up, &sign(&good_client, &no_up)).unwrap_err(), WebauthnError::UserNotPresent);
    let other_rp = auth_data("evil.example", UP | UV, 3, None);
    assert!(matches!(check(&good_client, &other_rp, &sign(&good_client, &other_rp)), Err(WebauthnError::WrongRpId(_))));
    // A bogus signature, a signature by another key, and the signed client data swapped afterwards.
    assert_eq!(
        check(&good_client, &good_auth, &[0x30, 0x06, 2, 1, 1, 2, 1, 1]).unwrap_err(),
        WebauthnError::BadSignature
    );
    let other = SoftKey::es256(10);
    assert_eq!(
        check(&good_client, &good_auth, &other.sign(&signed(&good_auth, &good_client))).unwrap_err(),
        WebauthnError::BadSignature
    );
    let swapped = br#"{"type":"webauthn.get","challenge":"Y2hhbA","origin":"http://localhost:8090","x":1}"#;
    assert_eq!(check(swapped, &good_auth, &sign(&good_client, &good_auth)).unwrap_err(), WebauthnError::BadSignature);
    // Authenticator data with bytes after its last field.
    let mut long = good_auth.clone();
    long.push(0);
    assert!(matches!(check(&good_client, &long, &sign(&good_client, &long)), Err(WebauthnError::AuthenticatorData(_))));
}

#[test]
fn counters_must_grow_unless_the_key_keeps_none() {
    assert!(counter_advances(0, 0));
    assert!(counter_advances(0, 1));
    assert!(counter_advances(41, 42));
    assert!(!counter_advances(42, 42));
    assert!(!counter_advances(42, 7));
    assert!(!counter_advances(5, 0));
}

#[test]
fn attestation_certificates_are_checked_against_the_listed_roots() {
    let key = SoftKey::es256(11);
    let maker = Maker::new("Authenticator Attestation", AAGUID);
    let client = client_data("webauthn.create", b"c", ORIGIN);
    let auth = auth_data(RP_ID, UP | UV, 0, Some((b"id", &key)));
    let object = attestation_object(
        "packed",
        packed(-7, maker.sign(&signed(&auth, &client)), Some(vec![maker.leaf_der.clone()])),
        &auth,
    );
    let listed = TrustedRoots::from_der(std::slice::from_ref(&maker.root_der)).unwrap();
    let reg = verify_registration(&rp(), b"c", &client, &object, &listed, NOW_S).unwrap();
    assert_eq!(reg.attestation.trust, AttestationTrust::Certified);
    assert!(reg.attestation.subject.unwrap().contains("OU=Authenticator Attestation"));
    // Without listed roots the certificate is recorded, uncertified.
    let reg = verify_registration(&rp(), b"c", &client, &object, &TrustedRoots::none(), NOW_S).unwrap();
    assert_eq!(reg.attestation.trust, AttestationTrust::Uncertified);
    // Another maker's root does not vouch for it.
    let other = Maker::new("Authenticator Attestation", AAGUID);
    let foreign = TrustedRoots::from_der(std::slice::from_ref(&other.root_der)).unwrap();
    assert!(matches!(
        verify_registration(&rp(), b"c", &client, &object, &foreign, NOW_S),
        Err(WebauthnError::Untrusted(_))
    ));
    // The leaf itself listed (a self-signed batch certificate, as Chromium's) is trusted.
    let pinned = TrustedRoots::from_der(std::slice::from_ref(&maker.leaf_der)).unwrap();
    assert_eq!(
        verify_registration(&rp(), b"c", &client, &object, &pinned, NOW_S).unwrap().attestation.trust,
        AttestationTrust::Certified
    );
    // With roots listed, a self attestation or none is refused.
    let (client2, object2) = register(&key, "packed", b"c");
    assert!(matches!(
        verify_registration(&rp(), b"c", &client2, &object2, &listed, NOW_S),
        Err(WebauthnError::Untrusted(_))
    ));
    // A certificate for another AAGUID, or without the attestation OU.
    for maker in [Maker::new("Authenticator Attestation", [9; 16]), Maker::new("Web", AAGUID)] {
        let object = attestation_object(
            "packed",
            packed(-7, maker.sign(&signed(&auth, &client)), Some(vec![maker.leaf_der.clone()])),
            &auth,
        );
        assert!(matches!(
            verify_registration(&rp(), b"c", &client, &object, &TrustedRoots::none(), NOW_S),
            Err(WebauthnError::Attestation(_))
        ));
    }
    // A statement signature over other bytes.
    let object = attestation_object(
        "packed",
        packed(-7, maker.sign(b"something else"), Some(vec![maker.leaf_der.clone()])),
        &auth,
    );
    assert!(verify_registration(&rp(), b"c", &client, &object, &listed, NOW_S).is_err());
}

#[test]
fn registrations_without_user_verification_or_for_another_challenge_are_refused() {
    let key = SoftKey::es256(12);
    let client = client_data("webauthn.create", b"c", ORIGIN);
    let auth = auth_data(RP_ID, UP, 0, Some((b"id", &key)));
    let object = attestation_object("none", Vec::new(), &auth);
    assert_eq!(
        verify_registration(&rp(), b"c", &client, &object, &TrustedRoots::none(), NOW_S).unwrap_err(),
        WebauthnError::UserNotVerified
    );
    let (client, object) = register(&key, "none", b"c");
    assert_eq!(
        verify_registration(&rp(), b"d", &client, &object, &TrustedRoots::none(), NOW_S).unwrap_err(),
        WebauthnError::WrongChallenge
    );
    // An assertion's authenticator data (no attested credential) is no registration.
    let auth = auth_data(RP_ID, UP | UV, 0, None);
    let object = attestation_object("none", Vec::new(), &auth);
    assert!(verify_registration(&rp(), b"c", &client, &object, &TrustedRoots::none(), NOW_S).is_err());
}
