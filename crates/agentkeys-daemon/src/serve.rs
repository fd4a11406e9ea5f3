//! `serve` and `mcp`: MCP on a Unix socket for any number of local clients, and MCP on stdio for
//! one client — bridged to the running `serve` daemon of the same session when there is one, so
//! every client of a session shares one daemon.
//!
//! The socket is 0600 in a 0700 directory, and each peer's uid (SO_PEERCRED) must be ours: the
//! file mode keeps other users out, the uid check keeps them out even where modes are ignored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentkeys_core::ApiClient;
use agentkeys_core::error::{CommandError, exit};
use agentkeys_core::integrity::Verifier;
use agentkeys_core::session::{Session, SessionId};
use rmcp::ServiceExt as _;
use tokio::net::{UnixListener, UnixStream};

use crate::credentials::Cache;
use crate::mcp::AgentKeysMcp;
use crate::socket::{self, Native, Opening};
use crate::trail::Trail;

fn io_error(action: &str, path: &Path, error: std::io::Error) -> CommandError {
    CommandError::new(
        exit::ERROR,
        format!("cannot {action} {}: {error}", path.display()),
        "check the path and its permissions",
    )
}

/// Binds the socket: refuses when another daemon answers on it, replaces a stale one.
async fn bind(path: &Path) -> Result<UnixListener, CommandError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path
        .parent()
        .ok_or_else(|| CommandError::usage("the socket path has no directory", "pass --socket DIR/NAME.sock"))?;
    // A directory made here is private; one that exists (say `/tmp` for `--socket /tmp/x.sock`)
    // is left as it is: the socket's own mode and the peer-uid check guard it.
    if !dir.as_os_str().is_empty() && !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_error("protect", dir, e))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(CommandError::new(
                exit::ERROR,
                format!("another daemon is already serving on {}", path.display()),
                "use that one (`agentkeys-daemon mcp` finds it), or stop it first",
            ));
        }
        std::fs::remove_file(path).map_err(|e| io_error("remove the stale socket", path, e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| io_error("listen on", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| io_error("protect", path, e))?;
    Ok(listener)
}

/// Serves MCP and the native protocol on the socket until SIGTERM or Ctrl-C; removes the socket
/// on the way out.
pub async fn serve(
    id: &SessionId,
    socket: PathBuf,
    client: ApiClient,
    session: Arc<Session>,
    (verifier, trail): (Arc<Verifier>, Trail),
    cache: Arc<Cache>,
) -> Result<u8, CommandError> {
    let listener = bind(&socket).await?;
    let uid = rustix::process::getuid().as_raw();
    cache.spawn_sweeper();
    let native = Native {
        client: client.clone(),
        session: session.clone(),
        verifier: verifier.clone(),
        trail: trail.clone(),
        cache: cache.clone(),
    };
    let server = AgentKeysMcp::new(client, session, verifier, trail, cache);
    tracing::info!("agentkeys-daemon serving {id} on {}", socket.display());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CommandError::new(exit::ERROR, format!("cannot watch signals: {e}"), "retry"))?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, say: wait instead of spinning on the same error.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                match stream.peer_cred() {
                    Ok(cred) if cred.uid() == uid => {}
                    Ok(cred) => {
                        tracing::warn!(peer_uid = cred.uid(), "refused a connection from another user");
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "refused a connection whose credentials cannot be read");
                        continue;
                    }
                }
                let (handler, native) = (server.clone(), native.clone());
                tokio::spawn(async move {
                    let opened = tokio::time::timeout(socket::OPENING_TIMEOUT, socket::open(&stream)).await;
                    match opened.unwrap_or(Ok(Opening::Closed)) {
                        Ok(Opening::Mcp(first)) => {
                            let (read, write) = stream.into_split();
                            let read = tokio::io::AsyncReadExt::chain(std::io::Cursor::new(first), read);
                            match handler.serve((read, write)).await {
                                Ok(running) => {
                                    let _ = running.waiting().await;
                                }
                                Err(error) => tracing::debug!(%error, "an MCP client left before initializing"),
                            }
                        }
                        Ok(Opening::Native { request, rest, fds }) => native.serve(stream, request, rest, fds).await,
                        Ok(Opening::Closed) => {}
                        Err(error) => tracing::debug!(%error, "a socket client left before its request"),
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("agentkeys-daemon stopped");
    Ok(0)
}

/// MCP on stdio: bridged byte for byte to the session's `serve` daemon when one answers on its
/// socket, else served here. Only protocol goes to stdout.
pub async fn stdio(
    socket: PathBuf,
    client: ApiClient,
    session: Arc<Session>,
    (verifier, trail): (Arc<Verifier>, Trail),
    cache: Arc<Cache>,
) -> Result<u8, CommandError> {
    if let Ok(stream) = UnixStream::connect(&socket).await {
        tracing::info!("bridging MCP on stdio to the daemon at {}", socket.display());
        let (mut from_daemon, mut to_daemon) = stream.into_split();
        let upstream = async {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut to_daemon).await;
            // The client closed its side; let the daemon see end of input.
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut to_daemon).await;
        };
        let downstream = async {
            let mut stdout = tokio::io::stdout();
            let _ = tokio::io::copy(&mut from_daemon, &mut stdout).await;
        };
        let (mut upstream, mut downstream) = (std::pin::pin!(upstream), std::pin::pin!(downstream));
        tokio::select! {
            // The client is done: wait for the daemon's last replies.
            () = &mut upstream => downstream.await,
            // The daemon went away: stop rather than leave the client hanging on its stdin.
            () = &mut downstream => {}
        }
        return Ok(0);
    }
    cache.spawn_sweeper();
    let running =
        AgentKeysMcp::new(client, session, verifier, trail, cache).serve(rmcp::transport::stdio()).await.map_err(
            |e| CommandError::new(exit::ERROR, format!("MCP initialization failed: {e}"), "check the MCP client"),
        )?;
    let _ = running.waiting().await;
    Ok(0)
}
