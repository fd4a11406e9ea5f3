//! The daemon's side of the socket's native protocol (`agentkeys_proto::daemon`): telling it from
//! MCP by the first bytes, receiving the caller's descriptors, running a command for the caller,
//! and delivering a credential as a descriptor.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::ffi::OsStringExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use agentkeys_core::child::{self, Caller, ChildSpec};
use agentkeys_core::session::Session;
use agentkeys_core::vault::{self, Namespace};
use agentkeys_core::{ApiClient, secret_mem};
use agentkeys_proto::b64;
use agentkeys_proto::daemon::{
    FdProtection, MAX_REQUEST_BYTES, PREAMBLE, RunControl, RunRequest, SocketReply, SocketRequest,
};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage};
use tokio::io::Interest;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use crate::credentials::{self, Cache};
use crate::trail::{Event, Trail, Via};

/// What a connection turned out to speak.
#[derive(Debug)]
pub enum Opening {
    /// MCP: the bytes read so far belong to its first message.
    Mcp(Vec<u8>),
    /// The native protocol: the request line, what came after it, and the descriptors.
    Native { request: Vec<u8>, rest: Vec<u8>, fds: Vec<OwnedFd> },
    /// The caller left (or sent too much) before saying anything useful.
    Closed,
}

/// The most descriptors a request may carry (`run`: stdin, stdout, stderr).
const MAX_FDS: usize = 3;
/// How long a caller may take to say what it wants.
pub const OPENING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest control line a `run` caller may send.
const MAX_CONTROL_LINE: u64 = 4096;

/// Reads until the first bytes say which protocol this is (and, for the native one, until the
/// whole request line is in). Descriptors are received with `recvmsg`; a plain read would drop
/// them. A caller that sends more than [`MAX_FDS`] descriptors, or more than
/// [`MAX_REQUEST_BYTES`], is dropped (its descriptors closed): the daemon's descriptor table is
/// not the caller's to fill.
pub async fn open(stream: &UnixStream) -> std::io::Result<Opening> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0;
    let mut scanned = PREAMBLE.len();
    let mut fds = Vec::new();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    loop {
        let head = &buf[..len];
        if !head.is_empty() && !PREAMBLE.starts_with(&head[..head.len().min(PREAMBLE.len())]) {
            buf.truncate(len);
            return Ok(Opening::Mcp(buf));
        }
        if len > scanned {
            if let Some(at) = head[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + at;
                let (request, rest) = (buf[PREAMBLE.len()..end].to_vec(), buf[end + 1..len].to_vec());
                return Ok(Opening::Native { request, rest, fds });
            }
            scanned = len;
        }
        if len == buf.len() {
            if buf.len() >= MAX_REQUEST_BYTES {
                return Ok(Opening::Closed);
            }
            buf.resize((buf.len() * 2).min(MAX_REQUEST_BYTES), 0);
        }
        stream.readable().await?;
        let received = stream.try_io(Interest::READABLE, || {
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = rustix::net::recvmsg(
                stream.as_fd(),
                &mut [IoSliceMut::new(&mut buf[len..])],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )?;
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            Ok((received.bytes, received.flags.contains(rustix::net::ReturnFlags::CTRUNC)))
        });
        match received {
            Ok((0, _)) => return Ok(Opening::Closed),
            // More descriptors than any request carries: refuse the caller.
            Ok((_, truncated)) if truncated || fds.len() > MAX_FDS => return Ok(Opening::Closed),
            Ok((n, _)) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One native connection's state: what the daemon serves with.
#[derive(Debug, Clone)]
pub struct Native {
    pub client: ApiClient,
    pub session: Arc<Session>,
    pub verifier: Arc<agentkeys_core::integrity::Verifier>,
    pub trail: Trail,
    pub cache: Arc<Cache>,
}

fn error_reply(code: Option<agentkeys_proto::ErrorCode>, message: String, fix: String, exit_code: u8) -> SocketReply {
    SocketReply::Error { code, message, fix, exit_code }
}

fn vault_error_reply(error: vault::VaultError) -> SocketReply {
    error_reply(error.code(), error.to_string(), error.hint(), error.exit_code())
}

async fn write_reply(stream: &mut UnixStream, reply: &SocketReply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

impl Native {
    /// Serves one request; the connection closes when this returns.
    pub async fn serve(&self, mut stream: UnixStream, request: Vec<u8>, rest: Vec<u8>, fds: Vec<OwnedFd>) {
        let request = match serde_json::from_slice::<SocketRequest>(&request) {
            Ok(request) => request,
            Err(error) => {
                let reply = error_reply(
                    Some(agentkeys_proto::ErrorCode::BadRequest),
                    format!("not a valid request: {error}"),
                    "see docs/protocol.md, \"Daemon socket\"".into(),
                    agentkeys_core::error::exit::USAGE,
                );
                let _ = write_reply(&mut stream, &reply).await;
                return;
            }
        };
        let outcome = match request {
            SocketRequest::GetCredential { service } => self.deliver_fd(&mut stream, &service).await,
            SocketRequest::Run(run) => self.run(&mut stream, run, rest, fds).await,
        };
        if let Err(error) = outcome {
            tracing::debug!(%error, "a socket caller went away mid-answer");
        }
    }

    /// `get_credential` by descriptor: opened, copied into a credential descriptor, sent, and the
    /// heap copy wiped; the daemon keeps nothing.
    async fn deliver_fd(&self, stream: &mut UnixStream, service: &str) -> std::io::Result<()> {
        let read = vault::read(&self.client, &self.session, &self.verifier, Namespace::Vault, service).await;
        self.trail.record_read(service, Via::Fd, read.as_ref().map(|_| ()).map_err(|e| e.code()));
        let plaintext = match read {
            Ok(plaintext) => plaintext,
            Err(error) => return write_reply(stream, &vault_error_reply(error)).await,
        };
        let made = secret_mem::credential_fd(&plaintext);
        let length = plaintext.len() as u64;
        drop(plaintext);
        let (fd, protection) = match made {
            Ok(made) => made,
            Err(error) => {
                let reply = vault_error_reply(vault::VaultError::SecretMemory(error));
                return write_reply(stream, &reply).await;
            }
        };
        let protection = match protection {
            secret_mem::Protection::Secret => FdProtection::MemfdSecret,
            secret_mem::Protection::Reduced => FdProtection::SealedMemfd,
        };
        let reply = SocketReply::Credential { service: service.to_owned(), length, protection };
        let mut line = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let sent = send_with_fd(stream, &line, &fd).await;
        drop(fd);
        let outcome = if sent.is_ok() { "ok" } else { "caller gone" };
        self.trail.record_all(service, Via::Fd, &[(Event::Deliver, outcome), (Event::Drop, "ok")]);
        sent
    }

    /// `run` for the caller: its stdio, cwd and environment; its signals relayed; its exit code
    /// returned. The values are only ever in secret memory here and in the child's environment.
    async fn run(
        &self,
        stream: &mut UnixStream,
        request: RunRequest,
        rest: Vec<u8>,
        fds: Vec<OwnedFd>,
    ) -> std::io::Result<()> {
        let bad = |message: String| {
            error_reply(
                Some(agentkeys_proto::ErrorCode::BadRequest),
                message,
                "see docs/protocol.md, \"Daemon socket\"".into(),
                agentkeys_core::error::exit::USAGE,
            )
        };
        let [stdin, stdout, stderr]: [OwnedFd; 3] = match fds.try_into() {
            Ok(stdio) => stdio,
            Err(_) => {
                return write_reply(stream, &bad("run needs exactly 3 descriptors: stdin, stdout, stderr".into()))
                    .await;
            }
        };
        let decode = |field: &str| b64::decode(field).map(std::ffi::OsString::from_vec);
        let argv: Option<Vec<_>> = request.argv.iter().map(|a| decode(a)).collect();
        let environ: Option<Vec<_>> = request
            .environ
            .iter()
            .map(|entry| {
                let entry = b64::decode(entry)?;
                let at = entry.iter().position(|&b| b == b'=')?;
                Some((
                    std::ffi::OsString::from_vec(entry[..at].to_vec()),
                    std::ffi::OsString::from_vec(entry[at + 1..].to_vec()),
                ))
            })
            .collect();
        let (Some(argv), Some(environ), Some(cwd)) = (argv, environ, decode(&request.cwd)) else {
            return write_reply(stream, &bad("argv, environ and cwd must be base64url (environ as KEY=VALUE)".into()))
                .await;
        };
        let specs: Vec<String> = request.env.iter().map(|(var, service)| format!("{var}={service}")).collect();
        let bindings = match child::parse_bindings(&specs) {
            Ok(bindings) => bindings,
            Err(error) => {
                return write_reply(stream, &error_reply(None, error.message, error.hint, error.exit_code)).await;
            }
        };
        let (values, services) = match credentials::open_for_run(
            &self.client,
            &self.session,
            &self.verifier,
            (&self.trail, Some(&self.cache)),
            bindings,
            request.reason.as_deref(),
        )
        .await
        {
            Ok(opened) => opened,
            Err(error) => return write_reply(stream, &vault_error_reply(error)).await,
        };
        let (signal_tx, signal_rx) = std::sync::mpsc::channel();
        let caller = Caller { stdin, stdout, stderr, cwd: PathBuf::from(cwd), environ, signals: signal_rx };
        let spec = ChildSpec { argv, env: values, mask: request.mask };
        let (reader, mut writer) = stream.split();
        let mut task = tokio::task::spawn_blocking(move || child::run_for(spec, caller));
        let mut control = BufReader::new(tokio::io::AsyncReadExt::chain(std::io::Cursor::new(rest), reader));
        let mut line = Vec::new();
        let result = loop {
            line.clear();
            let mut limited = tokio::io::AsyncReadExt::take(&mut control, MAX_CONTROL_LINE);
            let next = limited.read_until(b'\n', &mut line);
            tokio::select! {
                finished = &mut task => break finished,
                read = next => match read {
                    Ok(n) if n > 0 && line.ends_with(b"\n") => {
                        if let Ok(RunControl::Signal { signal }) = serde_json::from_slice(&line) {
                            let _ = signal_tx.send(signal);
                        }
                    }
                    // The caller is gone (or sent a line no caller sends): hang up on its
                    // command, as its terminal would.
                    _ => {
                        let _ = signal_tx.send(rustix::process::Signal::HUP.as_raw());
                        break (&mut task).await;
                    }
                },
            }
        };
        drop(signal_tx);
        self.cache.done(&services);
        let outcome = match &result {
            Ok(Ok(_)) => "ok",
            _ => "not started",
        };
        let mut events = vec![(Event::Deliver, outcome)];
        if self.cache.ttl().is_zero() {
            events.push((Event::Drop, "ok"));
        }
        for service in &services {
            self.trail.record_all(service, Via::Run, &events);
        }
        let reply = match result {
            Ok(Ok(exit_code)) => SocketReply::Exit { exit_code },
            Ok(Err(error)) => error_reply(None, error.message, error.hint, error.exit_code),
            Err(error) => error_reply(None, format!("the run task failed: {error}"), "retry".into(), 1),
        };
        let mut line = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
        line.push(b'\n');
        writer.write_all(&line).await
    }
}

/// Writes `line` with `fd` attached to its first byte.
async fn send_with_fd(stream: &UnixStream, line: &[u8], fd: &OwnedFd) -> std::io::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let fds = [fd.as_fd()];
    let mut sent = 0;
    while sent < line.len() {
        stream.writable().await?;
        let result = stream.try_io(Interest::WRITABLE, || {
            let mut control = SendAncillaryBuffer::new(&mut space);
            if sent == 0 {
                control.push(SendAncillaryMessage::ScmRights(&fds));
            }
            Ok(rustix::net::sendmsg(
                stream.as_fd(),
                &[std::io::IoSlice::new(&line[sent..])],
                &mut control,
                rustix::net::SendFlags::NOSIGNAL,
            )?)
        });
        match result {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
