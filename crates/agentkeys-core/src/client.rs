//! The HTTP client of the `/v1` API: signs every authenticated request, maps transport failures
//! to "server unreachable" (exit 8, with the URL) — a refused TLS certificate to its cause and
//! fix — and error bodies to their stable codes. `https://` servers are verified against the
//! system's roots, or only against the CA of `--ca-cert` / `AGENTKEYS_CA_CERT` ([`Trust`]). A
//! client given its slot's [`ChainMemory`] checks every signed answer's audit head against it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentkeys_proto::agents::{
    AgentAskRequest, AgentAskResponse, AgentListResponse, AgentSessionResponse, AliasRequest, ApproveRequest,
    CreateAgentRequest, CreateAgentResponse, DecisionResponse, LinkInfoResponse, OpenPairingRequest,
    OpenPairingResponse, PairingStatusResponse, PendingRequest, RecipientsResponse, RedeemLinkRequest,
    RequestListResponse, RevealPairingRequest, ScopeChangeRequest, TierChangeRequest,
};
use agentkeys_proto::ceremony::{
    AttestationRootsRequest, CeremonyStarted, CeremonyStatus, EnrollRequest, PresenceKeyList, StartCeremonyRequest,
};
use agentkeys_proto::signing::{HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use agentkeys_proto::types::{
    AccountSettings, AuditQuery, AuditResponse, CreateAccountRequest, CreateAccountResponse, CredentialListResponse,
    CredentialVersionResponse, PutCredentialRequest, SealedCredentialResponse, WhoAmIResponse,
};
use agentkeys_proto::{ErrorBody, ErrorCode, ErrorDetail};
use reqwest::Method;
use secrecy::ExposeSecret as _;
use serde::de::DeserializeOwned;

use crate::chain::{ChainMemory, MemoryError};
use crate::exit;
use crate::integrity::IntegrityError;
use crate::random::OsRandom;
use crate::session::Session;
use crate::signing::sign_request;

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach the AgentKeys server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{}", .problem.message(.url))]
    Tls { url: String, problem: TlsProblem },
    #[error("cannot use the CA certificate {path}: {reason}")]
    BadCa { path: String, reason: String },
    #[error("{}: {}", .detail.code, .detail.message)]
    Api { status: u16, detail: Box<ErrorDetail> },
    #[error("unexpected response from the AgentKeys server at {url}: {reason}")]
    Protocol { url: String, reason: String },
    #[error("INTEGRITY: {0}")]
    Integrity(IntegrityError),
    #[error(transparent)]
    Memory(MemoryError),
    /// The presence ceremony did not complete: cancelled, refused or out of time.
    #[error("{message}")]
    Presence { message: String, hint: String },
}

impl ClientError {
    /// The CLI exit code (PRODUCT.md §4).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::BadUrl { .. } => exit::USAGE,
            ClientError::Unreachable { .. } | ClientError::Tls { .. } => exit::UNREACHABLE,
            ClientError::BadCa { .. } => exit::USAGE,
            ClientError::Api { detail, .. } => exit::for_code(detail.code),
            ClientError::Protocol { .. } | ClientError::Memory(_) => exit::ERROR,
            ClientError::Integrity(_) => exit::for_code(ErrorCode::Integrity),
            ClientError::Presence { .. } => exit::DECLINED,
        }
    }

    /// How to fix it.
    pub fn hint(&self) -> String {
        match self {
            ClientError::BadUrl { .. } => "pass --server https://HOST:PORT (or set AGENTKEYS_SERVER)".into(),
            ClientError::Tls { url, problem } => problem.fix(url),
            ClientError::BadCa { .. } => {
                format!("pass --ca-cert (or set {}) to a readable PEM file with the CA's certificate", Trust::ENV)
            }
            ClientError::Unreachable { url, .. } => format!(
                "check that agentkeys-server is running and listening at {url}, or pass --server / set AGENTKEYS_SERVER"
            ),
            ClientError::Api { detail, .. } => detail.hint.clone(),
            ClientError::Protocol { .. } => {
                "check that --server points at an agentkeys-server of the same version".into()
            }
            ClientError::Integrity(e) => e.hint(),
            ClientError::Memory(e) => e.hint(),
            ClientError::Presence { hint, .. } => hint.clone(),
        }
    }

    /// The API error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { detail, .. } => Some(detail.code),
            ClientError::Integrity(_) => Some(ErrorCode::Integrity),
            _ => None,
        }
    }
}

/// Why a TLS connection to the server was refused, as a person can act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsProblem {
    /// The certificate is not signed by a CA this client trusts.
    UnknownCa,
    /// The certificate is not issued for the host the client connected to.
    WrongHost,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet (or this machine's clock is behind).
    NotYetValid,
    /// Anything else the handshake refused.
    Other(String),
}

impl TlsProblem {
    fn message(&self, url: &str) -> String {
        match self {
            TlsProblem::UnknownCa => {
                format!("the TLS certificate of {url} is not signed by a certificate authority this client trusts")
            }
            TlsProblem::WrongHost => format!("the TLS certificate of {url} is not valid for that host name"),
            TlsProblem::Expired => format!("the TLS certificate of {url} has expired"),
            TlsProblem::NotYetValid => format!("the TLS certificate of {url} is not valid yet"),
            TlsProblem::Other(reason) => format!("the TLS handshake with {url} failed: {reason}"),
        }
    }

    fn fix(&self, url: &str) -> String {
        let host = reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
        match self {
            TlsProblem::UnknownCa => format!(
                "pass --ca-cert FILE (or set {}) with the CA that signed the server's certificate, or add that CA to \
                 this system's trust store",
                Trust::ENV
            ),
            TlsProblem::WrongHost => format!(
                "use the host name the certificate was issued for in --server, or reissue the certificate with \
                 {host} in its subject alternative names"
            ),
            TlsProblem::Expired => {
                "renew the server's certificate and send agentkeys-server SIGHUP to reload it (or check this \
                 machine's clock)"
                    .into()
            }
            TlsProblem::NotYetValid => "check this machine's clock (NTP), or the certificate's validity dates".into(),
            TlsProblem::Other(_) => {
                "check that the server speaks TLS at that address (agentkeys-server --tls-cert/--tls-key), or use \
                 http:// for a server without TLS"
                    .into()
            }
        }
    }

    /// The problem behind a failed request, when a TLS handshake refused the server.
    fn of(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(error) = current {
            if let Some(tls) = error.downcast_ref::<rustls::Error>() {
                return Some(Self::from_rustls(tls));
            }
            // An io::Error hides the error it wraps from `source()` (it answers for that one's
            // source): step into it instead.
            current = match error.downcast_ref::<std::io::Error>() {
                Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
                None => error.source(),
            };
        }
        None
    }

    fn from_rustls(error: &rustls::Error) -> Self {
        use rustls::CertificateError as C;
        match error {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => TlsProblem::UnknownCa,
            rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                TlsProblem::WrongHost
            }
            rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => TlsProblem::Expired,
            rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => TlsProblem::NotYetValid,
            other => TlsProblem::Other(other.to_string()),
        }
    }
}

/// How a client trusts an `https://` server: the system's roots, or only the CA certificates in
/// a PEM file (`--ca-cert FILE`, `AGENTKEYS_CA_CERT`), as `curl --cacert` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    ca_cert: Option<PathBuf>,
}

impl Trust {
    pub const ENV: &'static str = "AGENTKEYS_CA_CERT";

    /// The system's roots.
    pub fn system() -> Self {
        Self { ca_cert: None }
    }

    /// Only the CA certificates in `path` (PEM); `None` means the system's roots.
    pub fn ca_file(path: Option<&Path>) -> Self {
        Self { ca_cert: path.filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf) }
    }

    /// `AGENTKEYS_CA_CERT` when set, else the system's roots.
    pub fn from_env() -> Self {
        Self::ca_file(std::env::var_os(Self::ENV).as_deref().map(Path::new))
    }

    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }
}

/// A warning for a server URL that sends requests in the clear to another machine: `http://`
/// to a host that is not loopback. Values stay sealed and requests signed, but who reads what
/// is visible on the way.
pub fn plain_http_warning(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if parsed.scheme() != "http" {
        return None;
    }
    let host = parsed.host_str()?.trim_start_matches('[').trim_end_matches(']');
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| {
        format!(
            "talking to {url} over plain http: service names and who reads what are visible on the network \
             (values stay sealed); serve it with --tls-cert/--tls-key and use https://"
        )
    })
}

/// Where a server is expected when nothing else says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8090";

/// The server to talk to: `--server` (or `AGENTKEYS_SERVER`) when given, else the one the session
/// was saved with, else [`DEFAULT_SERVER`].
pub fn resolve_server_url(flag: Option<&str>, session: Option<&Session>) -> String {
    flag.filter(|s| !s.is_empty())
        .map(str::to_owned)
        .or_else(|| session.map(|s| s.server_url.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned())
}

/// Returns the current Unix time in seconds.
pub fn unix_now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A client for one server, optionally authenticated as one session.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    session: Option<Arc<Session>>,
    clock: fn() -> i64,
    /// How the human shows presence for the operation this client carries out.
    presence: Option<Presence>,
    /// The audit head this session's slot saw last: every signed answer is checked against it.
    chain: Option<Arc<ChainMemory>>,
    /// Asked when a rule of the account's policy requires presence for a request sent without.
    on_demand: Option<OnDemand>,
}

/// What asks the human for presence when the server answers a request sent without any
/// `PRESENCE_REQUIRED` naming a `require_presence` rule of the account's policy (which only
/// the server can decide: its clock, its policy version). The client then sends the request
/// again, once, with the presence this returns.
pub trait PresenceOnDemand: Send + Sync {
    /// `request` is the request as this client sends it (`PUT /v1/credentials/prod-db`),
    /// `demand` the server's refusal, naming the rule.
    fn presence_for<'a>(
        &'a self,
        client: &'a ApiClient,
        request: &'a str,
        demand: &'a ErrorDetail,
    ) -> BoxFuture<'a, Result<Presence, ClientError>>;
}

#[derive(Clone)]
struct OnDemand(Arc<dyn PresenceOnDemand>);

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnDemand")
    }
}

/// How the human shows presence for the critical request a client sends (PRODUCT.md §5): the
/// signed `presence=` query parameter of every request but reads.
#[derive(Clone)]
pub enum Presence {
    /// Shown on this machine (`fprintd`, `polkit`, `prompt`, `skipped`, …): the client's word,
    /// which the server records in its audit.
    Local(&'static str),
    /// Shown with an enrolled presence key on the server's ceremony page, which the server
    /// verifies: each request first opens a ceremony bound to it (method, path, body digest),
    /// the host shows it to the human and waits, and the request then carries
    /// `presence=webauthn:<ceremony id>`.
    Ceremony(Arc<dyn CeremonyHost>),
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presence::Local(method) => f.debug_tuple("Local").field(method).finish(),
            Presence::Ceremony(host) => f.debug_tuple("Ceremony").field(&host.operation()).finish(),
        }
    }
}

/// A boxed future, for the object-safe [`CeremonyHost`].
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What shows a presence ceremony to the human and waits for it (the CLI: URL, code, browser,
/// Ctrl-C).
pub trait CeremonyHost: Send + Sync {
    /// The operation as the ceremony page shows it.
    fn operation(&self) -> &str;
    /// Returns once the ceremony completed; an error when it was cancelled, refused or expired.
    fn wait<'a>(
        &'a self,
        client: &'a ApiClient,
        started: &'a CeremonyStarted,
    ) -> BoxFuture<'a, Result<(), ClientError>>;
}

/// `path_and_query` with one more query parameter.
fn with_query_param(path_and_query: &str, key: &str, value: &str) -> String {
    let separator = if path_and_query.contains('?') { '&' } else { '?' };
    format!("{path_and_query}{separator}{key}={value}")
}

/// Normalizes and checks a server URL: `http(s)://host[:port]`, no trailing slash.
pub fn normalize_server_url(url: &str) -> Result<String, ClientError> {
    let bad = |reason: &str| ClientError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("the scheme must be https (or http for a server without TLS)"));
    }
    if parsed.host_str().is_none() {
        return Err(bad("the URL has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("the URL must not have a query or fragment"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// The HTTP client for `base_url`. Over `https://` it verifies against `trust`; over `http://`
/// it gets a TLS setup it never uses, so a plain request does not pay for reading the system's
/// roots.
fn http_client(base_url: &str, trust: &Trust) -> Result<reqwest::Client, ClientError> {
    // One crypto provider in every AgentKeys binary; a second install attempt is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30));
    let builder = if !base_url.starts_with("https:") {
        let unused = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        builder.tls_backend_preconfigured(unused)
    } else if let Some(path) = trust.ca_cert() {
        let bad = |reason: String| ClientError::BadCa { path: path.display().to_string(), reason };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("it holds no PEM certificate".into()));
        }
        builder.tls_certs_only(certs)
    } else {
        builder
    };
    builder.build().map_err(|e| ClientError::BadUrl { url: base_url.to_owned(), reason: e.to_string() })
}

impl ApiClient {
    /// An unauthenticated client for `server_url`, trusting an `https://` server as `trust` says.
    pub fn new(server_url: &str, trust: &Trust) -> Result<Self, ClientError> {
        let base_url = normalize_server_url(server_url)?;
        let http = http_client(&base_url, trust)?;
        Ok(Self { http, base_url, session: None, clock: unix_now_s, presence: None, chain: None, on_demand: None })
    }

    /// Signs every request as `session`.
    pub fn with_session(mut self, session: Arc<Session>) -> Self {
        self.session = Some(session);
        self
    }

    /// An unauthenticated client trusting as `AGENTKEYS_CA_CERT` says (account creation, health checks).
    pub fn anonymous(server_url: &str) -> Result<Self, ClientError> {
        Self::new(server_url, &Trust::from_env())
    }

    /// A client that signs as `session`, talking to `server_url` (which may override the
    /// session's own), trusting as `AGENTKEYS_CA_CERT` says.
    pub fn for_session(server_url: &str, session: Arc<Session>) -> Result<Self, ClientError> {
        Ok(Self::anonymous(server_url)?.with_session(session))
    }

    /// Checks every signed answer's audit head against what `memory` saw, and remembers it.
    pub fn with_chain_memory(mut self, memory: Arc<ChainMemory>) -> Self {
        self.chain = Some(memory);
        self
    }

    /// Replaces the clock used for request timestamps (tests of stale-timestamp handling).
    pub fn with_clock(mut self, clock: fn() -> i64) -> Self {
        self.clock = clock;
        self
    }

    /// Marks every later request but reads as made after presence shown as `presence` says.
    pub fn with_presence(mut self, presence: Presence) -> Self {
        self.presence = Some(presence);
        self
    }

    /// Asks `source` for presence when a policy rule requires it for a request sent without.
    pub fn with_presence_on_demand(mut self, source: Arc<dyn PresenceOnDemand>) -> Self {
        self.on_demand = Some(OnDemand(source));
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Builds a signed request without sending it, so tests can capture and replay it.
    pub fn build_signed(&self, method: Method, path_and_query: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path_and_query}", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(session) = &self.session {
            let sig = sign_request(
                &session.device,
                &session.session_id,
                method.as_str(),
                path_and_query,
                &body,
                (self.clock)(),
                &mut OsRandom,
            );
            request = request
                .bearer_auth(session.token.expose_secret())
                .header(HEADER_TIMESTAMP, sig.timestamp.to_string())
                .header(HEADER_NONCE, sig.nonce)
                .header(HEADER_SIGNATURE, sig.signature);
        }
        request.body(body)
    }

    /// Sends a built request and decodes the answer; an empty success body decodes as `()`.
    pub async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let (status, _, bytes) = self.exchange(request).await?;
        self.decode(status, &bytes)
    }

    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>), ClientError> {
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| self.transport_error(&e))?;
        Ok((status, headers, bytes.to_vec()))
    }

    /// Sends a signed request of this session, checking its answer's audit head against the
    /// slot's memory (when it has one): a refusal is reported to the server's audit right away.
    async fn send_checked<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let Some(memory) = self.chain.as_ref().filter(|_| self.session.is_some()) else {
            return self.send(request).await;
        };
        use agentkeys_proto::chain::{ChainPlace, HEADER_AUDIT_AT, HEADER_AUDIT_HEAD, HEADER_AUDIT_SEEN, parse_at};
        let before = memory.seen().map_err(ClientError::Memory)?;
        let request = match before {
            Some(place) => request.header(HEADER_AUDIT_SEEN, place.seq.to_string()),
            None => request,
        };
        let (status, headers, bytes) = self.exchange(request).await?;
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let head = text(HEADER_AUDIT_HEAD).and_then(ChainPlace::parse_header);
        // An error answered before the request reached the audit (a malformed request) has no
        // head; every answer that has one, and every success, is checked.
        if status.is_success() || head.is_some() {
            let at = text(HEADER_AUDIT_AT).and_then(parse_at);
            match memory.check(before, head, at) {
                Ok(accepted) => {
                    if let Some(report) = accepted {
                        self.report_unchecked(&report).await;
                    }
                }
                Err(refusal) => {
                    self.report_unchecked(&refusal.report()).await;
                    return Err(ClientError::Integrity(refusal));
                }
            }
        }
        self.decode(status, &bytes)
    }

    /// Reports a finding about the audit chain itself, best effort, without checking the answer
    /// against the chain it is about.
    async fn report_unchecked(&self, report: &agentkeys_proto::grant::IntegrityReport) {
        let body = serde_json::to_vec(report).expect("request types serialize");
        let _ = self.send::<()>(self.build_signed(Method::POST, "/v1/integrity-reports", body)).await;
    }

    fn decode<T: DeserializeOwned>(&self, status: reqwest::StatusCode, bytes: &[u8]) -> Result<T, ClientError> {
        if status.is_success() {
            let bytes: &[u8] = if bytes.is_empty() { b"null" } else { bytes };
            return serde_json::from_slice(bytes)
                .map_err(|e| ClientError::Protocol { url: self.base_url.clone(), reason: e.to_string() });
        }
        match serde_json::from_slice::<ErrorBody>(bytes) {
            Ok(body) => Err(ClientError::Api { status: status.as_u16(), detail: Box::new(body.error) }),
            // A gateway answering for a server it cannot reach.
            Err(_) if matches!(status.as_u16(), 502..=504) => Err(ClientError::Unreachable {
                url: self.base_url.clone(),
                reason: format!("a proxy answered HTTP {status}"),
            }),
            Err(_) => Err(ClientError::Protocol {
                url: self.base_url.clone(),
                reason: format!("HTTP {status} without an AgentKeys error body"),
            }),
        }
    }

    fn transport_error(&self, error: &reqwest::Error) -> ClientError {
        if let Some(problem) = TlsProblem::of(error) {
            return ClientError::Tls { url: self.base_url.clone(), problem };
        }
        // The innermost cause ("Connection refused (os error 111)") is the one a person can act on.
        let reason = if error.is_timeout() {
            "the request timed out".to_owned()
        } else {
            let mut innermost: &dyn std::error::Error = error;
            while let Some(inner) = innermost.source() {
                innermost = inner;
            }
            innermost.to_string()
        };
        ClientError::Unreachable { url: self.base_url.clone(), reason }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let body = body.unwrap_or_default();
        // Only the mutation carries it: the reads around it (look-ups, recipients) are not the
        // critical operation and their audit rows should not claim presence.
        let presence = self.presence.as_ref().filter(|_| method != Method::GET);
        // Only a mutation sent without presence may be sent again with it.
        let on_demand = self.on_demand.as_ref().filter(|_| presence.is_none() && method != Method::GET);
        let again = on_demand.map(|_| body.clone());
        let answer = self.call_with(presence, method.clone(), path_and_query, body).await;
        if let Err(ClientError::Api { detail, .. }) = &answer
            && detail.code == ErrorCode::PresenceRequired
            && detail.rule.is_some()
            && let (Some(OnDemand(source)), Some(body)) = (on_demand, again)
        {
            let request = format!("{method} {path_and_query}");
            let shown = source.presence_for(self, &request, detail).await?;
            return self.call_with(Some(&shown), method, path_and_query, body).await;
        }
        answer
    }

    /// Sends a request claiming `presence`.
    async fn call_with<T: DeserializeOwned>(
        &self,
        presence: Option<&Presence>,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        use agentkeys_proto::presence::QUERY_PARAM;
        let path_and_query = match presence {
            None => path_and_query.to_owned(),
            Some(Presence::Local(method)) => with_query_param(path_and_query, QUERY_PARAM, method),
            Some(Presence::Ceremony(host)) => {
                let id = self.ceremony_for(host.as_ref(), &method, path_and_query, &body).await?;
                with_query_param(path_and_query, QUERY_PARAM, &format!("webauthn:{id}"))
            }
        };
        self.send_checked(self.build_signed(method, &path_and_query, body)).await
    }

    /// A request of this session that claims no presence, whatever the client carries.
    async fn call_unattended<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        self.send_checked(self.build_signed(method, path_and_query, body.unwrap_or_default())).await
    }

    /// Opens a ceremony bound to the request about to be sent, has `host` show it and wait,
    /// and returns its id once the human completed it.
    async fn ceremony_for(
        &self,
        host: &dyn CeremonyHost,
        method: &Method,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<String, ClientError> {
        use sha2::Digest as _;
        let request = StartCeremonyRequest {
            method: method.as_str().to_owned(),
            path: path_and_query.to_owned(),
            body_digest: agentkeys_proto::b64::encode(sha2::Sha256::digest(body)),
            operation: host.operation().to_owned(),
        };
        let started = self.start_ceremony(&request).await?;
        host.wait(self, &started).await?;
        Ok(started.id)
    }

    /// Opens a ceremony for the request `request` describes (which claims no presence itself).
    pub async fn start_ceremony(&self, request: &StartCeremonyRequest) -> Result<CeremonyStarted, ClientError> {
        self.call_unattended(Method::POST, "/v1/presence/ceremonies", Self::json(request)).await
    }

    /// Where a ceremony stands, waiting up to `wait_s` seconds for it to leave `pending`.
    pub async fn ceremony_status(&self, id: &str, wait_s: u32) -> Result<CeremonyStatus, ClientError> {
        self.call_unattended(Method::GET, &format!("/v1/presence/ceremonies/{id}?wait_s={wait_s}"), None).await
    }

    /// Gives up on a pending ceremony.
    pub async fn cancel_ceremony(&self, id: &str) -> Result<(), ClientError> {
        self.call_unattended(Method::DELETE, &format!("/v1/presence/ceremonies/{id}"), None).await
    }

    /// Opens the enrollment of a presence key (critical): the ceremony to complete on its page.
    pub async fn enroll_presence_key(&self, request: &EnrollRequest) -> Result<CeremonyStarted, ClientError> {
        self.call(Method::POST, "/v1/presence/keys", Self::json(request)).await
    }

    pub async fn list_presence_keys(&self) -> Result<PresenceKeyList, ClientError> {
        self.call(Method::GET, "/v1/presence/keys", None).await
    }

    /// Removes a presence key by id or name (critical).
    pub async fn remove_presence_key(&self, key: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &format!("/v1/presence/keys/{key}"), None).await
    }

    /// Restricts enrollment to these attestation roots (critical); empty lifts the restriction.
    pub async fn set_attestation_roots(&self, request: &AttestationRootsRequest) -> Result<(), ClientError> {
        self.call(Method::PUT, "/v1/presence/attestation-roots", Self::json(request)).await
    }

    fn json<B: serde::Serialize>(body: &B) -> Option<Vec<u8>> {
        Some(serde_json::to_vec(body).expect("request types serialize"))
    }

    pub async fn create_account(&self, request: &CreateAccountRequest) -> Result<CreateAccountResponse, ClientError> {
        self.call(Method::POST, "/v1/accounts", Self::json(request)).await
    }

    pub async fn whoami(&self) -> Result<WhoAmIResponse, ClientError> {
        self.call(Method::GET, "/v1/session", None).await
    }

    /// `/v1/credentials/{service}`, with `?agent=` for an agent's private namespace. Service
    /// names and agent ids are validated to `[A-Za-z0-9._-]`, which needs no escaping.
    fn credential_path(service: &str, agent: Option<&str>) -> String {
        match agent {
            Some(agent) => format!("/v1/credentials/{service}?agent={agent}"),
            None => format!("/v1/credentials/{service}"),
        }
    }

    pub async fn put_credential(
        &self,
        service: &str,
        agent: Option<&str>,
        request: &PutCredentialRequest,
    ) -> Result<CredentialVersionResponse, ClientError> {
        self.call(Method::PUT, &Self::credential_path(service, agent), Self::json(request)).await
    }

    pub async fn get_credential(
        &self,
        service: &str,
        agent: Option<&str>,
    ) -> Result<SealedCredentialResponse, ClientError> {
        self.get_credential_for(service, agent, None).await
    }

    /// The newest version of `service`. An agent may say why it reads (`reason`): the owner sees
    /// it when the read needs an approval (a high-value credential).
    pub async fn get_credential_for(
        &self,
        service: &str,
        agent: Option<&str>,
        reason: Option<&str>,
    ) -> Result<SealedCredentialResponse, ClientError> {
        let Some(reason) = reason else {
            return self.call(Method::GET, &Self::credential_path(service, agent), None).await;
        };
        // Free text: form-encoded by the URL crate, as the server's query parser decodes it.
        let mut url = reqwest::Url::parse("http://query.invalid/").expect("a constant URL parses");
        {
            let mut query = url.query_pairs_mut();
            if let Some(agent) = agent {
                query.append_pair("agent", agent);
            }
            query.append_pair("reason", reason);
        }
        let path = format!("/v1/credentials/{service}?{}", url.query().unwrap_or_default());
        self.call(Method::GET, &path, None).await
    }

    pub async fn delete_credential(
        &self,
        service: &str,
        agent: Option<&str>,
    ) -> Result<CredentialVersionResponse, ClientError> {
        self.call(Method::DELETE, &Self::credential_path(service, agent), None).await
    }

    pub async fn recipients(&self, service: &str, agent: Option<&str>) -> Result<RecipientsResponse, ClientError> {
        let path = match agent {
            Some(agent) => format!("/v1/recipients?service={service}&agent={agent}"),
            None => format!("/v1/recipients?service={service}"),
        };
        self.call(Method::GET, &path, None).await
    }

    pub async fn account_settings(&self) -> Result<AccountSettings, ClientError> {
        self.call(Method::GET, "/v1/account/settings", None).await
    }

    /// Tells the server's audit what this client refused (or took with `--accept-rollback`).
    pub async fn report_integrity(&self, report: &agentkeys_proto::grant::IntegrityReport) -> Result<(), ClientError> {
        self.call_unattended(Method::POST, "/v1/integrity-reports", Self::json(report)).await
    }

    /// The account's statement log from number `from` on (one page).
    pub async fn list_statements(&self, from: u64) -> Result<agentkeys_proto::statement::StatementLog, ClientError> {
        self.call(Method::GET, &format!("/v1/account/statements?from={from}"), None).await
    }

    pub async fn put_account_settings(
        &self,
        settings: &agentkeys_proto::types::AccountSettingsChange,
    ) -> Result<(), ClientError> {
        self.call(Method::PUT, "/v1/account/settings", Self::json(settings)).await
    }

    pub async fn list_agents(&self) -> Result<AgentListResponse, ClientError> {
        self.call(Method::GET, "/v1/agents", None).await
    }

    pub async fn create_agent(&self, request: &CreateAgentRequest) -> Result<CreateAgentResponse, ClientError> {
        self.call(Method::POST, "/v1/agents", Self::json(request)).await
    }

    pub async fn change_scope(&self, agent_id: &str, request: &ScopeChangeRequest) -> Result<(), ClientError> {
        self.call(Method::POST, &format!("/v1/agents/{agent_id}/scope"), Self::json(request)).await
    }

    pub async fn change_tier(&self, agent_id: &str, request: &TierChangeRequest) -> Result<(), ClientError> {
        self.call(Method::POST, &format!("/v1/agents/{agent_id}/tier"), Self::json(request)).await
    }

    pub async fn add_alias(&self, agent_id: &str, request: &AliasRequest) -> Result<(), ClientError> {
        self.call(Method::POST, &format!("/v1/agents/{agent_id}/aliases"), Self::json(request)).await
    }

    pub async fn revoke_agent(
        &self,
        agent_id: &str,
        request: &agentkeys_proto::agents::RevokeRequest,
    ) -> Result<(), ClientError> {
        self.call(Method::POST, &format!("/v1/agents/{agent_id}/revoke"), Self::json(request)).await
    }

    pub async fn teardown_agent(
        &self,
        agent_id: &str,
        request: &agentkeys_proto::agents::RevokeRequest,
    ) -> Result<(), ClientError> {
        self.call(Method::POST, &format!("/v1/agents/{agent_id}/teardown"), Self::json(request)).await
    }

    pub async fn list_requests(&self) -> Result<RequestListResponse, ClientError> {
        self.call(Method::GET, "/v1/requests", None).await
    }

    /// The queue once it differs from the list whose digest is `changed_from`, held up to
    /// `wait_s` seconds (then the same list again).
    pub async fn list_requests_changed(
        &self,
        changed_from: &str,
        wait_s: u32,
    ) -> Result<RequestListResponse, ClientError> {
        let path = format!("/v1/requests?wait_s={wait_s}&changed_from={changed_from}");
        self.call(Method::GET, &path, None).await
    }

    pub async fn lookup_request(&self, code: &str) -> Result<PendingRequest, ClientError> {
        self.call(Method::GET, &format!("/v1/requests/{code}"), None).await
    }

    pub async fn approve_request(&self, code: &str, request: &ApproveRequest) -> Result<DecisionResponse, ClientError> {
        self.call(Method::POST, &format!("/v1/requests/{code}/approve"), Self::json(request)).await
    }

    /// Where this agent's own request stands, held up to `wait_s` seconds while it is pending.
    pub async fn request_decision(&self, code: &str, wait_s: u32) -> Result<DecisionResponse, ClientError> {
        self.call(Method::GET, &format!("/v1/requests/{code}/decision?wait_s={wait_s}"), None).await
    }

    pub async fn deny_request(&self, code: &str) -> Result<DecisionResponse, ClientError> {
        self.call(Method::POST, &format!("/v1/requests/{code}/deny"), Some(Vec::new())).await
    }

    /// An agent asks the account owner for a service or a tier.
    pub async fn ask(&self, request: &AgentAskRequest) -> Result<AgentAskResponse, ClientError> {
        self.call(Method::POST, "/v1/requests", Self::json(request)).await
    }

    /// Unauthenticated: a daemon opens a pairing request.
    pub async fn open_pairing(&self, request: &OpenPairingRequest) -> Result<OpenPairingResponse, ClientError> {
        self.call(Method::POST, "/v1/pairings", Self::json(request)).await
    }

    /// Unauthenticated but for the poll secret: where a pairing stands.
    pub async fn pairing_status(
        &self,
        pairing_id: &str,
        poll_secret: &str,
    ) -> Result<PairingStatusResponse, ClientError> {
        let request = self.http.get(format!("{}/v1/pairings/{pairing_id}", self.base_url)).bearer_auth(poll_secret);
        self.send(request).await
    }

    /// Unauthenticated but for the poll secret: reveal the OTP nonce of a claimed pairing.
    pub async fn reveal_pairing(
        &self,
        pairing_id: &str,
        poll_secret: &str,
        nonce: &[u8; 32],
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&RevealPairingRequest { nonce: agentkeys_proto::b64::encode(nonce) })
            .expect("request types serialize");
        let request = self
            .http
            .post(format!("{}/v1/pairings/{pairing_id}/reveal", self.base_url))
            .bearer_auth(poll_secret)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(request).await
    }

    /// The policy in force, or version `version`.
    pub async fn get_policy(
        &self,
        version: Option<u64>,
    ) -> Result<agentkeys_proto::policy::PolicyResponse, ClientError> {
        let path = match version {
            Some(version) => format!("/v1/policy?version={version}"),
            None => "/v1/policy".to_owned(),
        };
        self.call(Method::GET, &path, None).await
    }

    pub async fn set_policy(
        &self,
        request: &agentkeys_proto::policy::SetPolicyRequest,
    ) -> Result<agentkeys_proto::policy::SetPolicyResponse, ClientError> {
        self.call(Method::PUT, "/v1/policy", Self::json(request)).await
    }

    pub async fn explain(&self, seq: i64) -> Result<agentkeys_proto::policy::ExplainResponse, ClientError> {
        self.call(Method::GET, &format!("/v1/audit/{seq}/explain"), None).await
    }

    pub async fn list_devices(&self) -> Result<agentkeys_proto::devices::DeviceListResponse, ClientError> {
        self.call(Method::GET, "/v1/devices", None).await
    }

    pub async fn revoke_device(&self, device_id: &str) -> Result<(), ClientError> {
        self.call(Method::POST, &format!("/v1/devices/{device_id}/revoke"), None).await
    }

    pub async fn rotate_recovery_key(
        &self,
        request: &agentkeys_proto::devices::RotateRecoveryKeyRequest,
    ) -> Result<(), ClientError> {
        self.call(Method::PUT, "/v1/account/recovery-key", Self::json(request)).await
    }

    pub async fn set_recovery_delay(
        &self,
        request: &agentkeys_proto::devices::RecoveryDelayRequest,
    ) -> Result<(), ClientError> {
        self.call(Method::PUT, "/v1/account/recovery-delay", Self::json(request)).await
    }

    /// Unauthenticated but for the recovery key's signature inside: open a recovery.
    pub async fn open_recovery(
        &self,
        request: &agentkeys_proto::devices::OpenRecoveryRequest,
    ) -> Result<agentkeys_proto::devices::RecoveryStatusResponse, ClientError> {
        let body = serde_json::to_vec(request).expect("request types serialize");
        let request = self
            .http
            .post(format!("{}/v1/recoveries", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(request).await
    }

    /// Unauthenticated but for the new session's token: where a recovery stands.
    pub async fn recovery_status(
        &self,
        recovery_id: &str,
        token: &str,
    ) -> Result<agentkeys_proto::devices::RecoveryStatusResponse, ClientError> {
        let request = self.http.get(format!("{}/v1/recoveries/{recovery_id}", self.base_url)).bearer_auth(token);
        self.send(request).await
    }

    /// Unauthenticated but for the new session's token: complete a recovery past its delay.
    pub async fn complete_recovery(
        &self,
        recovery_id: &str,
        token: &str,
        request: &agentkeys_proto::devices::CompleteRecoveryRequest,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(request).expect("request types serialize");
        let request = self
            .http
            .post(format!("{}/v1/recoveries/{recovery_id}/complete", self.base_url))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(request).await
    }

    /// Unauthenticated: what a link code leads to.
    pub async fn link_info(&self, link_id: &str) -> Result<LinkInfoResponse, ClientError> {
        self.send(self.http.get(format!("{}/v1/links/{link_id}", self.base_url))).await
    }

    /// Signed by the link key inside the request: bind this device with a link code.
    pub async fn redeem_link(
        &self,
        link_id: &str,
        request: &RedeemLinkRequest,
    ) -> Result<AgentSessionResponse, ClientError> {
        let body = serde_json::to_vec(request).expect("request types serialize");
        let request = self
            .http
            .post(format!("{}/v1/links/{link_id}/redeem", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(request).await
    }

    pub async fn list_credentials(&self) -> Result<CredentialListResponse, ClientError> {
        self.call(Method::GET, "/v1/credentials", None).await
    }

    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditResponse, ClientError> {
        let mut path = String::from("/v1/audit");
        let mut sep = '?';
        let mut push = |key: &str, value: String| {
            path.push(sep);
            sep = '&';
            path.push_str(key);
            path.push('=');
            path.push_str(&value);
        };
        if let Some(since) = query.since_ms {
            push("since_ms", since.to_string());
        }
        if let Some(service) = &query.service {
            // Service names are validated to [A-Za-z0-9._-], which needs no escaping.
            push("service", service.clone());
        }
        if let Some(limit) = query.limit {
            push("limit", limit.to_string());
        }
        if let Some(agent) = &query.agent {
            push("agent", agent.clone());
        }
        self.call(Method::GET, &path, None).await
    }
}
