//! `agentkeys-server` as a library: the binary only parses arguments and calls [`run`].
//!
//! A request flows: [`app::router`] → a domain's route in [`domains`] → [`http::signed::Signed`]
//! (session via [`sessions`], signature) → the handler decides and builds its domain's op →
//! [`engine::writer`] applies the op and commits it with the nonce and the audit row in one
//! batched transaction → the op's typed output → the answer. [`db`] is the storage layer over
//! SQLite and PostgreSQL; [`error`] the one error type every layer answers with.

pub mod anonymous;
pub mod app;
pub mod backup;
pub mod clock;
pub mod config;
pub mod db;
pub mod domains;
pub mod engine;
pub mod error;
pub mod http;
pub mod metrics;
pub mod random;
pub mod sessions;
pub mod state;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

pub use app::router;
pub use config::{ServerArgs, ServerCommand};
pub use state::AppState;

/// Where the default SQLite database lives.
fn data_dir(args: &ServerArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.data_dir {
        return Ok(dir.clone());
    }
    let home = std::env::var_os("AGENTKEYS_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".agentkeys")))
        .context("cannot find a data directory: pass --data-dir or set AGENTKEYS_HOME")?;
    Ok(home.join("server"))
}

fn database_url(args: &ServerArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.database_url {
        return Ok(url.clone());
    }
    let dir = data_dir(args)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
    }
    Ok(db::sqlite_url_for(&dir))
}

/// The database `verify-audit` reads: one that exists. A missing SQLite file is an error (not
/// an empty chain that verifies), and nothing is created.
fn existing_database_url(args: &ServerArgs) -> anyhow::Result<String> {
    let url = match &args.database_url {
        Some(url) => url.clone(),
        None => db::sqlite_url_for(&data_dir(args)?),
    };
    if let Some(path) = db::sqlite_path(&url)
        && !path.is_file()
    {
        anyhow::bail!(
            "there is no database at {}: nothing to verify; pass the --data-dir (or --database-url) of the server \
             whose audit log to check",
            path.display()
        );
    }
    Ok(url)
}

/// A running server's state plus the writer's thread, for callers that serve it themselves.
pub async fn start(database_url: &str, clock: clock::Clock) -> anyhow::Result<(AppState, std::thread::JoinHandle<()>)> {
    let db = db::Db::connect(database_url).await?;
    let metrics = metrics::Metrics::default();
    let policies: Arc<domains::policy::ops::Policies> = Arc::default();
    let hooks = engine::writer::Hooks {
        presence: Arc::new(domains::presence::ops::PresenceKeys),
        rules: Arc::new(domains::policy::ops::OwnerPolicy(policies.clone())),
        maintenance: vec![
            Arc::new(engine::ratelimit::ForgetIdleBuckets),
            Arc::new(anonymous::Forget),
            Arc::new(domains::requests::ops::Prune),
            Arc::new(domains::links::ops::Prune),
            Arc::new(domains::presence::ops::Prune),
            Arc::new(domains::releases::ops::Prune),
        ],
    };
    let (writer, writer_task) = engine::writer::Writer::spawn(db.clone(), clock.clone(), metrics.clone(), hooks)?;
    let state = AppState {
        db,
        writer,
        clock,
        random: random::Random::system(),
        public_url: String::new(),
        metrics,
        sessions: sessions::SessionCache::default(),
        ceremony_events: Arc::default(),
        request_events: Arc::default(),
        policies,
        limits: state::Limits::default(),
    };
    Ok((state, writer_task))
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Serves `app` over TLS until SIGTERM or Ctrl-C (then finishes in-flight requests for up to
/// 10 s); SIGHUP reloads the certificate and key.
async fn serve_tls(
    listener: std::net::TcpListener,
    app: axum::Router,
    files: tls::TlsFiles,
    config: Arc<rustls::ServerConfig>,
) -> anyhow::Result<()> {
    let rustls = axum_server::tls_rustls::RustlsConfig::from_config(config);
    tokio::spawn(reload_on_sighup(Some((files, rustls.clone()))));
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    // TCP_NODELAY: a TLS record and its ACK must not wait out Nagle against a delayed ACK (40 ms).
    let acceptor =
        axum_server::tls_rustls::RustlsAcceptor::new(rustls).acceptor(axum_server::accept::NoDelayAcceptor::new());
    axum_server::from_tcp(listener)?.acceptor(acceptor).handle(handle).serve(app.into_make_service()).await?;
    Ok(())
}

/// On each SIGHUP, reads the TLS files again: new handshakes get the new certificate, open
/// connections keep theirs, and files that do not make a usable pair leave the old one in place.
/// Without TLS, a SIGHUP is logged and otherwise ignored (its default would stop the server).
async fn reload_on_sighup(tls: Option<(tls::TlsFiles, axum_server::tls_rustls::RustlsConfig)>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot watch for SIGHUP: the TLS certificate will not be reloaded");
        return;
    };
    while hangups.recv().await.is_some() {
        match &tls {
            None => tracing::info!("SIGHUP: no TLS certificate to reload (the server speaks plain HTTP)"),
            Some((files, rustls)) => match tls::server_config(files) {
                Ok(config) => {
                    rustls.reload_from_config(config);
                    tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                }
                Err(error) => {
                    tracing::error!(%error, "TLS certificate not reloaded: the server goes on with the previous one")
                }
            },
        }
    }
}

fn describe(checked: &backup::Checked) -> String {
    format!(
        "{} audit rows, head {}, {} account chain(s); integrity and audit chain verified",
        checked.rows, checked.head_hex, checked.accounts
    )
}

/// Prints a command's outcome: its line on stdout, or the error and exit 1.
#[allow(clippy::print_stdout, reason = "backup and restore print their result")]
fn report(outcome: anyhow::Result<String>) -> std::process::ExitCode {
    match outcome {
        Ok(line) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the command line.
#[allow(clippy::print_stdout, reason = "openapi and verify-audit print their result")]
pub async fn run(args: ServerArgs) -> anyhow::Result<std::process::ExitCode> {
    match args.command.clone().unwrap_or(ServerCommand::Serve) {
        ServerCommand::Openapi => {
            println!("{}", app::openapi_json());
            Ok(std::process::ExitCode::SUCCESS)
        }
        ServerCommand::VerifyAudit => {
            let url = match existing_database_url(&args) {
                Ok(url) => url,
                Err(error) => {
                    eprintln!("Error: {error:#}");
                    return Ok(std::process::ExitCode::FAILURE);
                }
            };
            let db = db::Db::connect(&url).await?;
            match engine::audit::verify_chain(&db.reads).await {
                Ok(report) => {
                    println!(
                        "audit chain intact: {} rows, head {}; {} account chain(s) intact",
                        report.rows,
                        hex::encode(&report.head_hash),
                        report.accounts
                    );
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("Error: {error}");
                    Ok(std::process::ExitCode::FAILURE)
                }
            }
        }
        ServerCommand::Backup { to, force } => {
            let done = async { backup::backup(&existing_database_url(&args)?, &to, force).await }.await;
            Ok(report(done.map(|checked| format!("backup written to {}: {}", to.display(), describe(&checked)))))
        }
        ServerCommand::Restore { from, force } => {
            let done = async {
                let dir =
                    args.data_dir.as_deref().context("restore needs --data-dir DIR: the directory to restore into")?;
                backup::restore(&from, dir, force).await.map(|checked| (dir.to_path_buf(), checked))
            }
            .await;
            Ok(report(done.map(|(dir, checked)| {
                format!("restored {} into {}: {}", from.display(), dir.display(), describe(&checked))
            })))
        }
        ServerCommand::Serve => {
            let tls = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(tls::TlsFiles { cert: cert.clone(), key: key.clone() }),
                _ => None,
            };
            // A certificate that cannot be served stops the start, before anything listens.
            let tls_config = tls.as_ref().map(tls::server_config).transpose()?;
            let url = database_url(&args)?;
            let (mut state, writer_task) = start(&url, clock::Clock::system()).await?;
            state.limits.agent_reads =
                engine::ratelimit::RateLimit::per_second(args.agent_read_burst, args.agent_read_rate);
            state.limits.anonymous = anonymous::AnonymousLimits {
                per_source: engine::ratelimit::RateLimit::every(
                    args.anonymous_burst,
                    Duration::from_secs(60) / args.anonymous_per_minute,
                ),
            };
            let listener = std::net::TcpListener::bind(&args.listen)
                .with_context(|| format!("cannot listen on {}: pass another --listen address", args.listen))?;
            listener.set_nonblocking(true)?;
            let addr = listener.local_addr()?;
            state.public_url = tls::public_url(args.public_url.as_deref(), addr, tls.is_some())?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!(
                database = %db::redact_url(&url),
                public_url = %state.public_url,
                "agentkeys-server listening on {scheme}://{addr}"
            );
            let app = router(state);
            match (tls, tls_config) {
                (Some(files), Some(config)) => serve_tls(listener, app, files, config).await?,
                _ => {
                    tokio::spawn(reload_on_sighup(None));
                    use axum::serve::ListenerExt as _;
                    let listener = tokio::net::TcpListener::from_std(listener)?.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
                }
            }
            // Every handle to the writer is gone with the router; let it finish its last batch.
            let finished = tokio::task::spawn_blocking(move || writer_task.join());
            if tokio::time::timeout(Duration::from_secs(10), finished).await.is_err() {
                tracing::warn!("the writer did not finish within 10 s");
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
