//! The attestation object (WebAuthn §6.5) and the statement formats we check: `none`, and
//! `packed` (§8.2) either self-attested or with an attestation certificate chain (`x5c`). The
//! chain is checked against the roots the account lists (`config set presence-attestation`):
//! each certificate signed by the next, the last one a listed root or signed by one, all valid at
//! the time of enrollment. Other formats (`tpm`, `apple`, …) are recorded unverified, and refused
//! when the account lists roots, since they cannot then be checked.

use ciborium::Value;
use p256::ecdsa::signature::Verifier as _;
use x509_cert::Certificate;
use x509_cert::der::asn1::{ObjectIdentifier, OctetString};
use x509_cert::der::{Decode as _, Encode as _};

use crate::error::WebauthnError;
use crate::key::{Algorithm, CredentialKey};

/// How far an attestation vouches for the authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestationTrust {
    /// `none`: the authenticator's make is not attested.
    None,
    /// `packed` signed by the credential's own key: proves possession, not the make.
    SelfAttested,
    /// An attestation certificate whose chain ends at one of the account's roots.
    Certified,
    /// An attestation certificate, checked for its signature but not against any root (the
    /// account lists none).
    Uncertified,
    /// A format this server does not check (recorded; refused when the account lists roots).
    Unchecked,
}

impl AttestationTrust {
    pub fn as_str(&self) -> &'static str {
        match self {
            AttestationTrust::None => "none",
            AttestationTrust::SelfAttested => "self",
            AttestationTrust::Certified => "certified",
            AttestationTrust::Uncertified => "uncertified",
            AttestationTrust::Unchecked => "unchecked",
        }
    }
}

/// What the server keeps of an attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The statement format (`none`, `packed`, …), as the authenticator named it.
    pub format: String,
    pub trust: AttestationTrust,
    /// The attestation certificate's subject (RFC 4514), when there is one.
    pub subject: Option<String>,
}

/// The attestation roots an account lists; empty means any authenticator may enroll.
#[derive(Debug, Clone, Default)]
pub struct TrustedRoots {
    roots: Vec<(Vec<u8>, Certificate)>,
}

/// Most certificates accepted in one `x5c`, and in one account's list of roots.
pub const MAX_CERTIFICATES: usize = 8;

impl TrustedRoots {
    pub fn none() -> Self {
        Self::default()
    }

    /// Roots from their DER encodings.
    pub fn from_der(certificates: &[Vec<u8>]) -> Result<Self, WebauthnError> {
        if certificates.len() > MAX_CERTIFICATES {
            return Err(WebauthnError::Attestation(format!("more than {MAX_CERTIFICATES} roots")));
        }
        let roots = certificates
            .iter()
            .map(|der| Ok((der.clone(), parse_certificate(der)?)))
            .collect::<Result<_, WebauthnError>>()?;
        Ok(Self { roots })
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

/// A certificate's subject, for display (RFC 4514).
pub fn certificate_subject(der: &[u8]) -> Result<String, WebauthnError> {
    Ok(parse_certificate(der)?.tbs_certificate().subject().to_string())
}

fn parse_certificate(der: &[u8]) -> Result<Certificate, WebauthnError> {
    Certificate::from_der(der).map_err(|e| WebauthnError::Attestation(format!("a certificate does not parse ({e})")))
}

fn bad(what: impl Into<String>) -> WebauthnError {
    WebauthnError::Attestation(what.into())
}

/// The three members of an attestation object.
pub(crate) struct AttestationObject {
    pub format: String,
    pub statement: Vec<(Value, Value)>,
    pub auth_data: Vec<u8>,
}

/// Longest attestation object accepted (a YubiKey's, with its certificate, is under 1 KiB).
const MAX_LEN: usize = 16 * 1024;

impl AttestationObject {
    pub fn parse(bytes: &[u8]) -> Result<Self, WebauthnError> {
        if bytes.len() > MAX_LEN {
            return Err(bad(format!("it is over {MAX_LEN} bytes")));
        }
        let mut rest = bytes;
        let value: Value = ciborium::de::from_reader(&mut rest).map_err(|_| bad("it is not CBOR"))?;
        if !rest.is_empty() {
            return Err(bad("bytes follow it"));
        }
        let Value::Map(entries) = value else { return Err(bad("it is not a CBOR map")) };
        let (mut format, mut statement, mut auth_data) = (None, None, None);
        for (key, value) in entries {
            let slot = match key.as_text() {
                Some("fmt") => format.replace(value),
                Some("attStmt") => statement.replace(value),
                Some("authData") => auth_data.replace(value),
                _ => return Err(bad("it has a member other than fmt, attStmt and authData")),
            };
            if slot.is_some() {
                return Err(bad("a member appears twice"));
            }
        }
        let (Some(Value::Text(format)), Some(Value::Map(statement)), Some(Value::Bytes(auth_data))) =
            (format, statement, auth_data)
        else {
            return Err(bad("fmt, attStmt or authData is missing or of the wrong type"));
        };
        Ok(Self { format, statement, auth_data })
    }

    /// Checks the statement over `authData || clientDataHash` (§8.2 for packed).
    pub fn verify(
        &self,
        credential: &CredentialKey,
        aaguid: &[u8; 16],
        client_data_hash: &[u8; 32],
        roots: &TrustedRoots,
        now_s: i64,
    ) -> Result<Attestation, WebauthnError> {
        let attestation = |trust, subject| Attestation { format: self.format.clone(), trust, subject };
        match self.format.as_str() {
            "none" => {
                if !self.statement.is_empty() {
                    return Err(bad("a none attestation carries a statement"));
                }
                refuse_without_certificate(roots)?;
                Ok(attestation(AttestationTrust::None, None))
            }
            "packed" => {
                let packed = Packed::parse(&self.statement)?;
                let mut signed = self.auth_data.clone();
                signed.extend_from_slice(client_data_hash);
                match packed.x5c {
                    None => {
                        if packed.alg != credential.algorithm().cose() {
                            return Err(bad("a self attestation names another algorithm than the credential's"));
                        }
                        credential.verify(&signed, &packed.sig).map_err(|_| bad("its signature does not verify"))?;
                        refuse_without_certificate(roots)?;
                        Ok(attestation(AttestationTrust::SelfAttested, None))
                    }
                    Some(chain) => {
                        if packed.alg != Algorithm::Es256.cose() {
                            return Err(bad("an attestation certificate must sign with ES256"));
                        }
                        let certificates =
                            chain.iter().map(|der| parse_certificate(der)).collect::<Result<Vec<_>, _>>()?;
                        let leaf = &certificates[0];
                        check_leaf(leaf, aaguid)?;
                        let key = p256_key(leaf)?;
                        let sig = p256::ecdsa::DerSignature::try_from(packed.sig.as_slice())
                            .ok()
                            .and_then(|sig| p256::ecdsa::Signature::try_from(sig).ok())
                            .ok_or_else(|| bad("its signature is not a DER ECDSA signature"))?;
                        key.verify(&signed, &sig).map_err(|_| bad("its signature does not verify"))?;
                        let subject = Some(leaf.tbs_certificate().subject().to_string());
                        let trust = if roots.is_empty() {
                            AttestationTrust::Uncertified
                        } else {
                            check_chain(&chain, &certificates, roots, now_s)?;
                            AttestationTrust::Certified
                        };
                        Ok(attestation(trust, subject))
                    }
                }
            }
            other => {
                if !roots.is_empty() {
                    return Err(WebauthnError::Untrusted(format!(
                        "the account lists attestation roots, and a {other:?} attestation cannot be checked against them"
                    )));
                }
                Ok(attestation(AttestationTrust::Unchecked, None))
            }
        }
    }
}

fn refuse_without_certificate(roots: &TrustedRoots) -> Result<(), WebauthnError> {
    if roots.is_empty() {
        Ok(())
    } else {
        Err(WebauthnError::Untrusted(
            "the account lists attestation roots, and this authenticator presents no attestation certificate".into(),
        ))
    }
}

struct Packed {
    alg: i64,
    sig: Vec<u8>,
    x5c: Option<Vec<Vec<u8>>>,
}

impl Packed {
    fn parse(statement: &[(Value, Value)]) -> Result<Self, WebauthnError> {
        let (mut alg, mut sig, mut x5c) = (None, None, None);
        for (key, value) in statement {
            let repeated = match key.as_text() {
                Some("alg") => alg
                    .replace(
                        value
                            .as_integer()
                            .and_then(|i| i64::try_from(i).ok())
                            .ok_or_else(|| bad("alg is not an integer"))?,
                    )
                    .is_some(),
                Some("sig") => {
                    sig.replace(value.as_bytes().ok_or_else(|| bad("sig is not a byte string"))?.clone()).is_some()
                }
                Some("x5c") => {
                    let items = value.as_array().ok_or_else(|| bad("x5c is not an array"))?;
                    if items.is_empty() || items.len() > MAX_CERTIFICATES {
                        return Err(bad(format!("x5c holds no certificate or more than {MAX_CERTIFICATES}")));
                    }
                    let chain = items
                        .iter()
                        .map(|item| item.as_bytes().cloned().ok_or_else(|| bad("an x5c entry is not a byte string")))
                        .collect::<Result<Vec<_>, _>>()?;
                    x5c.replace(chain).is_some()
                }
                _ => return Err(bad("a packed statement has a member other than alg, sig and x5c")),
            };
            if repeated {
                return Err(bad("a packed statement member appears twice"));
            }
        }
        match (alg, sig) {
            (Some(alg), Some(sig)) => Ok(Self { alg, sig, x5c }),
            _ => Err(bad("a packed statement lacks alg or sig")),
        }
    }
}

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-fido-gen-ce-aaguid: the AAGUID an attestation certificate vouches for.
const ID_FIDO_GEN_CE_AAGUID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");

fn p256_key(certificate: &Certificate) -> Result<p256::ecdsa::VerifyingKey, WebauthnError> {
    let spki = certificate.tbs_certificate().subject_public_key_info();
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY || curve != Some(SECP256R1) {
        return Err(bad("a certificate's key is not a P-256 key (only ES256 chains are checked)"));
    }
    p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
        .map_err(|_| bad("a certificate's P-256 key is not a curve point"))
}

/// Whether `certificate` says it may issue others (basicConstraints cA).
fn is_ca(certificate: &Certificate) -> Result<bool, WebauthnError> {
    let basic = certificate
        .tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::BasicConstraints>()
        .map_err(|_| bad("a certificate's basic constraints do not parse"))?;
    Ok(basic.is_some_and(|(_, constraints)| constraints.ca))
}

/// The attestation certificate's requirements (§8.2.1): version 3, OU "Authenticator
/// Attestation", not a CA, and the AAGUID extension, when present, non-critical and equal to the
/// authenticator data's.
fn check_leaf(leaf: &Certificate, aaguid: &[u8; 16]) -> Result<(), WebauthnError> {
    let tbs = leaf.tbs_certificate();
    if tbs.version() != x509_cert::certificate::Version::V3 {
        return Err(bad("the attestation certificate is not X.509 version 3"));
    }
    let unit = tbs.subject().organization_unit().ok().flatten().map(|u| u.value().into_owned());
    if unit.as_deref() != Some("Authenticator Attestation") {
        return Err(bad("the attestation certificate's OU is not \"Authenticator Attestation\""));
    }
    if is_ca(leaf)? {
        return Err(bad("the attestation certificate is a CA certificate"));
    }
    for extension in tbs.extensions().into_iter().flatten() {
        if extension.extn_id == ID_FIDO_GEN_CE_AAGUID {
            let value = OctetString::from_der(extension.extn_value.as_bytes())
                .map_err(|_| bad("the certificate's AAGUID extension does not parse"))?;
            if extension.critical || value.as_bytes() != aaguid {
                return Err(bad("the certificate vouches for another AAGUID than the authenticator reports"));
            }
        }
    }
    Ok(())
}

fn signed_by(child: &Certificate, issuer: &Certificate) -> Result<(), WebauthnError> {
    if child.tbs_certificate().issuer() != issuer.tbs_certificate().subject() {
        return Err(WebauthnError::Untrusted("a certificate's issuer is not the next certificate's subject".into()));
    }
    let tbs = child.tbs_certificate().to_der().map_err(|_| bad("a certificate does not encode"))?;
    let signature = child.signature().raw_bytes();
    let untrusted =
        || WebauthnError::Untrusted("a certificate's signature does not verify with its issuer's key".into());
    match child.signature_algorithm().oid {
        ECDSA_WITH_SHA256 => {
            let sig = p256::ecdsa::DerSignature::try_from(signature)
                .ok()
                .and_then(|sig| p256::ecdsa::Signature::try_from(sig).ok())
                .ok_or_else(|| bad("a certificate's signature is not a DER ECDSA signature"))?;
            p256_key(issuer)?.verify(&tbs, &sig).map_err(|_| untrusted())
        }
        SHA256_WITH_RSA => {
            let sig = rsa::pkcs1v15::Signature::try_from(signature)
                .map_err(|_| bad("a certificate's RSA signature does not parse"))?;
            rsa_key(issuer)?.verify(&tbs, &sig).map_err(|_| untrusted())
        }
        _ => Err(bad("a certificate is signed with neither ECDSA nor RSA PKCS #1 v1.5 over SHA-256")),
    }
}

/// Smallest RSA issuer key taken (Yubico's roots are 2048-bit).
const MIN_RSA_BITS: usize = 2048;

fn rsa_key(certificate: &Certificate) -> Result<rsa::pkcs1v15::VerifyingKey<sha2::Sha256>, WebauthnError> {
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let spki = certificate.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(bad("an RSA-signed certificate's issuer has no RSA key"));
    }
    let key = rsa::PublicKey::from_pkcs1_der(spki.subject_public_key.raw_bytes())
        .map_err(|_| bad("an issuer's RSA key does not parse"))?;
    if key.n_bytes().len() * 8 < MIN_RSA_BITS {
        return Err(bad("an issuer's RSA key is shorter than 2048 bits"));
    }
    Ok(rsa::pkcs1v15::VerifyingKey::new(key))
}

fn valid_at(certificate: &Certificate, now_s: i64) -> Result<(), WebauthnError> {
    let validity = certificate.tbs_certificate().validity();
    let (from, until) =
        (validity.not_before.to_unix_duration().as_secs(), validity.not_after.to_unix_duration().as_secs());
    let now = u64::try_from(now_s).unwrap_or(0);
    if now < from || now > until {
        return Err(WebauthnError::Untrusted(format!(
            "the certificate {} is not valid now",
            certificate.tbs_certificate().subject()
        )));
    }
    Ok(())
}

/// Walks `x5c` from the leaf: each certificate valid now and signed by the next (which must be a
/// CA), until one is a listed root (byte for byte) or the last is signed by one.
fn check_chain(ders: &[Vec<u8>], chain: &[Certificate], roots: &TrustedRoots, now_s: i64) -> Result<(), WebauthnError> {
    for (index, certificate) in chain.iter().enumerate() {
        valid_at(certificate, now_s)?;
        if roots.roots.iter().any(|(root, _)| *root == ders[index]) {
            return Ok(());
        }
        match chain.get(index + 1) {
            Some(issuer) => {
                if !is_ca(issuer)? {
                    return Err(WebauthnError::Untrusted("an intermediate certificate is not a CA".into()));
                }
                signed_by(certificate, issuer)?;
            }
            None => {
                for (_, root) in &roots.roots {
                    if signed_by(certificate, root).is_ok() {
                        return valid_at(root, now_s);
                    }
                }
            }
        }
    }
    Err(WebauthnError::Untrusted("the attestation certificate chains to none of the account's roots".into()))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use x509_cert::der::Decode as _;

    use super::{Certificate, WebauthnError, signed_by};

    /// The root the CLI ships as `config set presence-attestation yubico`: RSA-2048, self-signed.
    fn yubico_root() -> Vec<u8> {
        let pem = include_str!("../../agentkeys-cli/assets/yubico-u2f-root-ca.pem");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    }

    #[test]
    fn rsa_issuers_verify_and_a_flipped_bit_does_not() {
        let der = yubico_root();
        let root = Certificate::from_der(&der).unwrap();
        signed_by(&root, &root).expect("Yubico's root signs itself");
        // The signature is the certificate's last bytes.
        let mut forged = der.clone();
        *forged.last_mut().unwrap() ^= 1;
        let forged = Certificate::from_der(&forged).unwrap();
        assert!(matches!(signed_by(&forged, &root), Err(WebauthnError::Untrusted(_))));
    }
}
