//! What every daemon command needs: which session slot to act as (the one `daemon-*` slot, or
//! `--session-id` when there are several), the session, a client, and the socket path.

use std::sync::Arc;

use agentkeys_core::ApiClient;
use agentkeys_core::client::Trust;
use agentkeys_core::error::{CommandError, exit};
use agentkeys_core::session::{DAEMON_SESSION_PREFIX, EncryptedFileStore, Session, SessionId, SessionStore};

use crate::cli::GlobalArgs;

/// How often a daemon's client rewrites the slot's audit head (`agentkeys_core::chain`).
const CHAIN_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Context {
    pub global: GlobalArgs,
    pub store: EncryptedFileStore,
    /// What the start-up hardening did and found (`status` shows it).
    pub hardening: agentkeys_core::harden::Report,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("session_id", &self.global.session_id).finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(global: GlobalArgs, hardening: agentkeys_core::harden::Report) -> Result<Self, CommandError> {
        Ok(Self { global, store: EncryptedFileStore::from_env()?, hardening })
    }

    /// The plaintext cache of a serving daemon (`--cache-ttl`).
    pub fn cache(&self, trail: &crate::trail::Trail) -> Arc<crate::credentials::Cache> {
        Arc::new(crate::credentials::Cache::new(std::time::Duration::from_secs(self.global.cache_ttl), trail.clone()))
    }

    /// What session `id` verified before (`seen.json` in its slot directory), to check answers
    /// against; `--accept-rollback` takes an older state once.
    pub fn verifier(&self, id: &SessionId) -> Arc<agentkeys_core::integrity::Verifier> {
        Arc::new(
            agentkeys_core::integrity::Verifier::open(&self.store.dir(id))
                .accepting_rollback(self.global.accept_rollback),
        )
    }

    /// The daemon's audit trail of session `id`, in its slot directory.
    pub fn trail(&self, id: &SessionId, session: &Session) -> crate::trail::Trail {
        crate::trail::Trail::new(self.store.dir(id), session.agent_id.clone().unwrap_or_default())
    }

    pub fn server_url(&self, session: Option<&Session>) -> String {
        agentkeys_core::client::resolve_server_url(self.global.server.as_deref(), session)
    }

    /// The slot to act as: `--session-id`, else the only `daemon-*` slot on this host.
    pub fn session_id(&self) -> Result<SessionId, CommandError> {
        if let Some(id) = &self.global.session_id {
            return Ok(SessionId::parse(id)?);
        }
        let mut ids = self.store.list(DAEMON_SESSION_PREFIX)?;
        match ids.len() {
            0 => Err(CommandError::new(
                exit::SESSION,
                "this machine has no agent session",
                "pair it with `agentkeys-daemon pair --label NAME`, or bind it with `agentkeys-daemon link CODE`",
            )),
            1 => Ok(ids.remove(0)),
            _ => Err(CommandError::usage(
                format!(
                    "several agent sessions on this machine: {}",
                    ids.iter().map(SessionId::as_str).collect::<Vec<_>>().join(", ")
                ),
                "pick one with --session-id (or AGENTKEYS_SESSION_ID)",
            )),
        }
    }

    /// The agent session to act as, or exit 3 with the fix.
    pub fn session(&self) -> Result<(SessionId, Arc<Session>), CommandError> {
        let id = self.session_id()?;
        let session = self.store.load(&id)?.ok_or_else(|| {
            CommandError::new(
                exit::SESSION,
                format!("there is no '{id}' session"),
                "pair this machine with `agentkeys-daemon pair --label NAME`",
            )
        })?;
        if session.agent_id.is_none() {
            return Err(CommandError::usage(
                format!("'{id}' is a master session, not an agent's"),
                "the daemon acts for agents; pass --session-id daemon-<agent id>",
            ));
        }
        Ok((id, Arc::new(session)))
    }

    /// An unauthenticated client for `server_url`, trusting as `--ca-cert` says; warns (once per
    /// process) when the URL sends requests in the clear to another machine.
    pub fn anonymous_client(&self, server_url: &str) -> Result<ApiClient, CommandError> {
        static WARNED: std::sync::Once = std::sync::Once::new();
        if let Some(warning) = agentkeys_core::client::plain_http_warning(server_url) {
            WARNED.call_once(|| tracing::warn!("{warning}"));
        }
        Ok(ApiClient::new(server_url, &Trust::ca_file(self.global.ca_cert.as_deref()))?)
    }

    pub fn client(&self) -> Result<(SessionId, ApiClient, Arc<Session>), CommandError> {
        let (id, session) = self.session()?;
        // `serve` and `mcp` answer many requests: the head is written at most once a second.
        let memory = agentkeys_core::chain::ChainMemory::open(&self.store.dir(&id), &session.account_id)
            .accepting_rollback(self.global.accept_rollback)
            .writing_at_most_every(CHAIN_WRITE_INTERVAL);
        let client = self
            .anonymous_client(&self.server_url(Some(&session)))?
            .with_session(session.clone())
            .with_chain_memory(Arc::new(memory));
        Ok((id, client, session))
    }
}
