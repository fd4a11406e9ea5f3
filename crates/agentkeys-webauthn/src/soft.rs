//! A software authenticator for the unit tests (and, behind the `soft` feature, the benchmarks):
//! it makes registrations and assertions the way a
//! browser and a security key would (client data, authenticator data, attestation object), so the
//! checks can be driven through every branch, including the ones a real key never takes.

use ciborium::Value;
use coset::iana::{self, EnumI64 as _};
use coset::{CborSerializable as _, CoseKeyBuilder};
use p256::ecdsa::signature::Signer as _;
use sha2::{Digest as _, Sha256};

use crate::error::b64url;

pub const ORIGIN: &str = "http://localhost:8090";
pub const RP_ID: &str = "localhost";
pub const AAGUID: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8];

#[derive(Debug)]
pub enum SoftKey {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_dalek::SigningKey),
}

impl SoftKey {
    pub fn es256(seed: u8) -> Self {
        SoftKey::Es256(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap())
    }

    pub fn eddsa(seed: u8) -> Self {
        SoftKey::EdDsa(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    pub fn cose(&self) -> Vec<u8> {
        let key = match self {
            SoftKey::Es256(key) => {
                let point = key.verifying_key().to_sec1_point(false);
                CoseKeyBuilder::new_ec2_pub_key(
                    iana::EllipticCurve::P_256,
                    point.x().unwrap().to_vec(),
                    point.y().unwrap().to_vec(),
                )
                .algorithm(iana::Algorithm::ES256)
                .build()
            }
            SoftKey::EdDsa(key) => CoseKeyBuilder::new_okp_key()
                .param(iana::OkpKeyParameter::Crv.to_i64(), Value::from(iana::EllipticCurve::Ed25519.to_i64()))
                .param(iana::OkpKeyParameter::X.to_i64(), Value::Bytes(key.verifying_key().to_bytes().to_vec()))
                .algorithm(iana::Algorithm::EdDSA)
                .build(),
        };
        key.to_vec().unwrap()
    }

    pub fn alg(&self) -> i64 {
        match self {
            SoftKey::Es256(_) => -7,
            SoftKey::EdDsa(_) => -8,
        }
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            SoftKey::Es256(key) => {
                let sig: p256::ecdsa::Signature = key.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            SoftKey::EdDsa(key) => ed25519_dalek::Signer::sign(key, message).to_bytes().to_vec(),
        }
    }
}

pub fn client_data(kind: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
    format!(r#"{{"type":"{kind}","challenge":"{}","origin":"{origin}","crossOrigin":false}}"#, b64url(challenge))
        .into_bytes()
}

pub const UP: u8 = 0x01;
pub const UV: u8 = 0x04;
pub const AT: u8 = 0x40;

pub fn auth_data(rp_id: &str, flags: u8, count: u32, attested: Option<(&[u8], &SoftKey)>) -> Vec<u8> {
    let mut out = Sha256::digest(rp_id.as_bytes()).to_vec();
    out.push(flags | if attested.is_some() { AT } else { 0 });
    out.extend_from_slice(&count.to_be_bytes());
    if let Some((id, key)) = attested {
        out.extend_from_slice(&AAGUID);
        out.extend_from_slice(&u16::try_from(id.len()).unwrap().to_be_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&key.cose());
    }
    out
}

pub fn attestation_object(format: &str, statement: Vec<(Value, Value)>, auth_data: &[u8]) -> Vec<u8> {
    let object = Value::Map(vec![
        (Value::from("fmt"), Value::from(format)),
        (Value::from("attStmt"), Value::Map(statement)),
        (Value::from("authData"), Value::Bytes(auth_data.to_vec())),
    ]);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&object, &mut out).unwrap();
    out
}

/// `authData || SHA-256(clientData)`: what attestation and assertion signatures cover.
pub fn signed(auth_data: &[u8], client_data: &[u8]) -> Vec<u8> {
    let mut out = auth_data.to_vec();
    out.extend_from_slice(&Sha256::digest(client_data));
    out
}

pub fn packed(alg: i64, sig: Vec<u8>, x5c: Option<Vec<Vec<u8>>>) -> Vec<(Value, Value)> {
    let mut statement = vec![(Value::from("alg"), Value::from(alg)), (Value::from("sig"), Value::Bytes(sig))];
    if let Some(chain) = x5c {
        statement.push((Value::from("x5c"), Value::Array(chain.into_iter().map(Value::Bytes).collect())));
    }
    statement
}

/// An attestation CA and a batch certificate it issued, as a key maker would ship them.
#[derive(Debug)]
pub struct Maker {
    pub root_der: Vec<u8>,
    pub leaf_der: Vec<u8>,
    pub leaf_key: rcgen::KeyPair,
}

impl Maker {
    pub fn new(organization_unit: &str, aaguid: [u8; 16]) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType, IsCa, KeyPair};
        let mut root = CertificateParams::new(Vec::new()).unwrap();
        root.distinguished_name.push(DnType::CommonName, "Test Attestation Root");
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(root, KeyPair::generate().unwrap()).unwrap();
        let mut leaf = CertificateParams::new(Vec::new()).unwrap();
        leaf.distinguished_name.push(DnType::CountryName, "US");
        leaf.distinguished_name.push(DnType::OrganizationName, "Test Keys");
        leaf.distinguished_name.push(DnType::OrganizationalUnitName, organization_unit);
        leaf.distinguished_name.push(DnType::CommonName, "Test Key Batch 1");
        leaf.is_ca = IsCa::ExplicitNoCa;
        let mut value = vec![0x04, 16];
        value.extend_from_slice(&aaguid);
        leaf.custom_extensions.push(CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 45724, 1, 1, 4], value));
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        Self { root_der: issuer.der().to_vec(), leaf_der: leaf_cert.der().to_vec(), leaf_key }
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        rcgen::SigningKey::sign(&self.leaf_key, message).unwrap()
    }
}
