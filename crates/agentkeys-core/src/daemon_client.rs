//! The caller's side of the daemon socket's native protocol (`agentkeys_proto::daemon`): where a
//! session's daemon listens, `run` through it (our stdio passed over `SCM_RIGHTS`, signals
//! relayed, its exit status returned), and a credential as a descriptor. Blocking, std only, so a
//! runtime can call it from anywhere.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Write as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use agentkeys_proto::b64;
use agentkeys_proto::daemon::{FdProtection, PREAMBLE, RunControl, RunRequest, SocketReply, SocketRequest};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use zeroize::Zeroizing;

use crate::child::FORWARDED_SIGNALS;
use crate::error::{CommandError, exit};
use crate::paths;
use crate::session::SessionId;

/// The socket of a session's daemon: `--socket`/`AGENTKEYS_DAEMON_SOCKET`, else
/// `$XDG_RUNTIME_DIR/agentkeys/<id>.sock` (a per-user tmpfs), else `<AGENTKEYS_HOME>/run/<id>.sock`.
pub fn socket_path(id: &SessionId, explicit: Option<PathBuf>) -> Result<PathBuf, CommandError> {
    if let Some(path) =
        explicit.or_else(|| std::env::var_os("AGENTKEYS_DAEMON_SOCKET").filter(|v| !v.is_empty()).map(PathBuf::from))
    {
        return Ok(path);
    }
    let file = format!("{id}.sock");
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(runtime).join("agentkeys").join(file));
    }
    let home = paths::agentkeys_home()
        .ok_or_else(|| CommandError::new(exit::ERROR, "cannot find a home directory", "set AGENTKEYS_HOME"))?;
    Ok(home.join("run").join(file))
}

/// A connection to the daemon serving on `socket`, or `None` when none answers.
pub fn connect(socket: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket).ok()
}

fn lost(error: impl std::fmt::Display) -> CommandError {
    CommandError::new(
        exit::ERROR,
        format!("lost the connection to agentkeys-daemon: {error}"),
        "check that `agentkeys-daemon serve` is still running (its log says why it stopped)",
    )
}

/// Sends the preamble and one request line, with `fds` attached to the same message.
fn send_request(stream: &UnixStream, request: &SocketRequest, fds: &[BorrowedFd<'_>]) -> Result<(), CommandError> {
    let mut message = PREAMBLE.to_vec();
    serde_json::to_writer(&mut message, request).map_err(lost)?;
    message.push(b'\n');
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let rights = SendAncillaryMessage::ScmRights(fds);
    if !fds.is_empty() && !control.push(rights) {
        return Err(lost("too many descriptors"));
    }
    let sent = rustix::net::sendmsg(stream, &[std::io::IoSlice::new(&message)], &mut control, SendFlags::NOSIGNAL)
        .map_err(lost)?;
    // The descriptors went with the first byte; the rest (rare: a huge environment) follows.
    (&*stream).write_all(&message[sent..]).map_err(lost)
}

fn reply_error(code: Option<agentkeys_proto::ErrorCode>, message: String, fix: String, exit_code: u8) -> CommandError {
    CommandError { code, message, hint: Some(fix), exit_code }
}

/// Runs `argv` through the daemon on `stream`, with `bindings` (`VAR=service`) in its environment,
/// this process's stdio, working directory and environment; relays SIGINT, SIGTERM, SIGHUP and
/// SIGQUIT; returns the command's exit code (128+N for signal N). This process never sees a value.
pub fn run(
    stream: UnixStream,
    argv: &[OsString],
    bindings: &[(String, String)],
    (mask, reason): (bool, Option<&str>),
) -> Result<u8, CommandError> {
    let cwd = std::env::current_dir().map_err(|e| {
        CommandError::new(
            exit::ERROR,
            format!("cannot read the working directory: {e}"),
            "cd to a directory that exists",
        )
    })?;
    let environ = std::env::vars_os()
        .map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            b64::encode(entry)
        })
        .collect();
    let request = SocketRequest::Run(RunRequest {
        argv: argv.iter().map(|a| b64::encode(a.as_bytes())).collect(),
        cwd: b64::encode(cwd.as_os_str().as_bytes()),
        environ,
        env: bindings.iter().cloned().collect::<BTreeMap<_, _>>(),
        mask,
        reason: reason.map(str::to_owned),
    });
    // Installed before the command can start, so no signal falls between.
    let mut signals = signal_hook::iterator::Signals::new(FORWARDED_SIGNALS)
        .map_err(|e| CommandError::new(exit::ERROR, format!("cannot install signal handlers: {e}"), "retry"))?;
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    send_request(&stream, &request, &[stdin.as_fd(), stdout.as_fd(), stderr.as_fd()])?;
    let relay = stream.try_clone().map_err(lost)?;
    let handle = signals.handle();
    let relayer = std::thread::spawn(move || {
        // Our terminal's Ctrl-C reached us, not the command (it runs in the daemon's session):
        // every signal is passed on.
        for signal in signals.forever() {
            let mut line = serde_json::to_vec(&RunControl::Signal { signal }).unwrap_or_default();
            line.push(b'\n');
            if (&relay).write_all(&line).is_err() {
                return;
            }
        }
    });
    let result = read_exit(&stream);
    handle.close();
    let _ = relayer.join();
    result
}

fn read_exit(stream: &UnixStream) -> Result<u8, CommandError> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(lost)? == 0 {
        return Err(lost("it closed the connection before the command finished"));
    }
    match serde_json::from_str::<SocketReply>(&line).map_err(lost)? {
        SocketReply::Exit { exit_code } => Ok(exit_code),
        SocketReply::Error { code, message, fix, exit_code } => Err(reply_error(code, message, fix, exit_code)),
        SocketReply::Credential { .. } => Err(lost("it answered a run with a credential")),
    }
}

/// A credential delivered as a descriptor: read it once with [`CredentialFd::read`], or pass the
/// descriptor on to the process that needs it.
#[derive(Debug)]
pub struct CredentialFd {
    pub fd: OwnedFd,
    pub length: u64,
    pub protection: FdProtection,
}

impl CredentialFd {
    /// The value (the descriptor is closed).
    pub fn read(self) -> std::io::Result<Zeroizing<Vec<u8>>> {
        crate::secret_mem::read_credential_fd(self.fd)
    }
}

/// Asks the daemon on `socket` for `service` as a descriptor.
pub fn get_credential_fd(socket: &Path, service: &str) -> Result<CredentialFd, CommandError> {
    let stream = connect(socket).ok_or_else(|| {
        CommandError::new(
            exit::UNREACHABLE,
            format!("no agentkeys-daemon is serving on {}", socket.display()),
            "start it with `agentkeys-daemon serve`",
        )
    })?;
    send_request(&stream, &SocketRequest::GetCredential { service: service.to_owned() }, &[])?;
    // The reply's first bytes carry the descriptor: receive them with recvmsg, not read.
    let mut buf = vec![0u8; 4096];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut fd = None;
    let mut len = 0;
    while !buf[..len].contains(&b'\n') {
        if len == buf.len() {
            return Err(lost("its reply is too long"));
        }
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = rustix::net::recvmsg(
            &stream,
            &mut [std::io::IoSliceMut::new(&mut buf[len..])],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(lost)?;
        if received.bytes == 0 {
            return Err(lost("it closed the connection without an answer"));
        }
        len += received.bytes;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for received in fds {
                    fd.get_or_insert(received);
                }
            }
        }
    }
    let line = buf[..len].split(|&b| b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<SocketReply>(line).map_err(lost)? {
        SocketReply::Credential { length, protection, .. } => {
            let fd = fd.ok_or_else(|| lost("its answer carried no descriptor"))?;
            Ok(CredentialFd { fd, length, protection })
        }
        SocketReply::Error { code, message, fix, exit_code } => Err(reply_error(code, message, fix, exit_code)),
        SocketReply::Exit { .. } => Err(lost("it answered a credential request with an exit code")),
    }
}
