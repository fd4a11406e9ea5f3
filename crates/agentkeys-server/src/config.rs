//! The server's command line: each flag defined once, here, with its environment variable.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// agentkeys-server: stores credentials it cannot read.
#[derive(Debug, Clone, Parser)]
#[command(name = "agentkeys-server", version, about, long_about = None)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is logged).
    #[arg(long, env = "AGENTKEYS_LISTEN", default_value = "127.0.0.1:8090", global = true)]
    pub listen: String,

    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB. Default: SQLite in the data dir.
    #[arg(long, env = "AGENTKEYS_DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory for the default SQLite database. Default: $AGENTKEYS_HOME/server or ~/.agentkeys/server.
    #[arg(long, env = "AGENTKEYS_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Serve TLS with this certificate chain (PEM, the server's certificate first); needs
    /// --tls-key. Both files are read again on SIGHUP.
    #[arg(long, env = "AGENTKEYS_TLS_CERT", global = true, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "AGENTKEYS_TLS_KEY", global = true, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The origin clients and browsers reach this server at (https://HOST[:PORT]), when it is not
    /// the listening address (a proxy, a name). Default: the listening address.
    #[arg(long, env = "AGENTKEYS_PUBLIC_URL", global = true, value_name = "URL")]
    pub public_url: Option<String>,

    /// Credential reads each agent may burst to, shared by every replica.
    #[arg(long, env = "AGENTKEYS_AGENT_READ_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub agent_read_burst: u32,

    /// Credential reads per second each agent earns back (the sustained rate).
    #[arg(long, env = "AGENTKEYS_AGENT_READ_RATE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub agent_read_rate: u32,

    /// Requests without a session (account creation, pairing, link codes, unauthenticated
    /// requests to signed routes) one source address may burst to, per kind; the whole server
    /// takes ten times as many. Shared by every replica.
    #[arg(long, env = "AGENTKEYS_ANONYMOUS_BURST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub anonymous_burst: u32,

    /// Such requests per minute one source earns back, per kind (the whole server: ten times as many).
    #[arg(long, env = "AGENTKEYS_ANONYMOUS_PER_MINUTE", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub anonymous_per_minute: u32,

    #[command(subcommand)]
    pub command: Option<ServerCommand>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ServerCommand {
    /// Serve the API (the default).
    Serve,
    /// Check the audit log's hash chain and exit: 0 when intact, 1 when broken.
    VerifyAudit,
    /// Print the OpenAPI document and exit.
    Openapi,
    /// Write a consistent snapshot of the SQLite database to FILE while the server keeps serving
    /// (checked before it is put in place; PostgreSQL: pg_dump).
    Backup {
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Put a backup in place as the database of --data-dir (checked first; refused when the
    /// directory holds anything, without --force). Stop the server on that directory first.
    Restore {
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Replace what the data directory holds.
        #[arg(long)]
        force: bool,
    },
}
