//! TLS for the server (rustls, ring): the certificate chain and key from PEM files, checked to
//! belong together before the server starts or a reload takes them, and the public URL clients
//! and browsers reach it at.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The files `--tls-cert` and `--tls-key` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why the certificate or key cannot be served; each message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason}; pass --tls-cert a readable PEM file")]
    Cert { path: String, reason: String },
    #[error("{path} holds no PEM certificate; pass --tls-cert the server's certificate chain (PEM, server first)")]
    NoCert { path: String },
    #[error(
        "cannot read the TLS key {path}: {reason}; pass --tls-key a readable PEM private key (PKCS#8, PKCS#1 or SEC1)"
    )]
    Key { path: String, reason: String },
    #[error(
        "the key in {key} does not belong to the certificate in {cert}; pass the key the certificate was issued for"
    )]
    Mismatch { cert: String, key: String },
    #[error("the TLS certificate {cert} and key {key} cannot be used: {reason}")]
    Unusable { cert: String, key: String, reason: String },
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// The rustls configuration of `files`: the chain and its key, which must match.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert { path: shown(&files.cert), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert { path: shown(&files.cert) });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Key { path: shown(&files.key), reason: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                TlsError::Mismatch { cert: shown(&files.cert), key: shown(&files.key) }
            }
            other => TlsError::Unusable { cert: shown(&files.cert), key: shown(&files.key), reason: other.to_string() },
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The origin clients and browsers reach the server at: `--public-url` checked to be an origin
/// (`http(s)://host[:port]`, nothing after it), else the listening address with the scheme the
/// server speaks.
pub fn public_url(given: Option<&str>, listening: std::net::SocketAddr, tls: bool) -> anyhow::Result<String> {
    let Some(given) = given.filter(|g| !g.is_empty()) else {
        let scheme = if tls { "https" } else { "http" };
        // A loopback listener is reached as `localhost`: a browser's WebAuthn takes it as an RP
        // ID (an IP address it refuses), and treats http://localhost as a secure context.
        if listening.ip().is_loopback() {
            return Ok(format!("{scheme}://localhost:{}", listening.port()));
        }
        return Ok(format!("{scheme}://{listening}"));
    };
    let invalid =
        |why: &str| anyhow::anyhow!("--public-url {given:?} {why}: pass an origin like https://keys.example.com");
    let (scheme, rest) = given.split_once("://").ok_or_else(|| invalid("has no scheme"))?;
    if !matches!(scheme, "http" | "https") {
        return Err(invalid("is not http or https"));
    }
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err(invalid("is not just a scheme, a host and a port"));
    }
    Ok(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_origins() {
        let addr: std::net::SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(public_url(None, addr, true).unwrap(), "https://localhost:8443");
        assert_eq!(public_url(None, addr, false).unwrap(), "http://localhost:8443");
        let wide: std::net::SocketAddr = "192.0.2.7:8443".parse().unwrap();
        assert_eq!(public_url(None, wide, true).unwrap(), "https://192.0.2.7:8443");
        assert_eq!(public_url(Some("https://keys.example.com/"), addr, true).unwrap(), "https://keys.example.com");
        for bad in ["keys.example.com", "ftp://x", "https://x/path", "https://x?q", "https://u@x", "https://"] {
            assert!(public_url(Some(bad), addr, true).is_err(), "{bad}");
        }
    }
}
