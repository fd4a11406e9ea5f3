//! A certificate authority made by the test (rcgen), the certificates it issues as PEM files, and
//! a server started with them.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::ServerProcess;

/// A test CA: its certificate in `ca.pem`, and what it issues beside it.
#[derive(Debug)]
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA certificate, for `--ca-cert` / `AGENTKEYS_CA_CERT` / `curl --cacert`.
    pub cert: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// How long an issued certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// rcgen's default: from 1975 to 4096.
    Current,
    /// All of 2020.
    Expired,
}

/// A server certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert");
        let cert = dir.path().join("ca.pem");
        std::fs::write(&cert, issuer.pem()).expect("write the CA");
        Self { dir, cert, issuer }
    }

    /// A server certificate for `names` (DNS names or IP addresses), written as `<file>.pem` and
    /// `<file>.key` in the CA's directory.
    pub fn issue(&self, file: &str, names: &[&str], validity: Validity) -> Issued {
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("server params");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("server"));
        if validity == Validity::Expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("sign the server certificate");
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write the certificate");
        write_private(&issued.key, key.serialize_pem().as_bytes());
        issued
    }
}

/// Writes a key file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, bytes).expect("write the key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod the key");
}

impl ServerProcess {
    /// A server speaking TLS with `issued` on `127.0.0.1:0`; its URL is `https://localhost:PORT`
    /// when `name` is `localhost`, else `https://NAME:PORT`.
    pub fn start_tls(database_url: &str, issued: &Issued, name: &str) -> Self {
        let cert = issued.cert.display().to_string();
        let key = issued.key.display().to_string();
        let mut server = Self::start_with(database_url, &["--tls-cert", &cert, "--tls-key", &key]);
        let port = server.url.rsplit(':').next().expect("a port").to_owned();
        assert!(server.url.starts_with("https://"), "{}", server.url);
        server.url = format!("https://{name}:{port}");
        server
    }
}
