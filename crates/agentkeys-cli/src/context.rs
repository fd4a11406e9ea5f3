//! What every command needs: the output mode, the session store and slot, the server URL
//! (flag or environment, else the one saved in the session, else the default), and a client.

use std::sync::Arc;

use agentkeys_core::ApiClient;
use agentkeys_core::client::{PresenceOnDemand, Trust};
use agentkeys_core::session::{EncryptedFileStore, Session, SessionId, SessionStore as _};
use agentkeys_proto::agents::AgentSummary;

use crate::cli::GlobalArgs;
use crate::error::{CliError, exit};
use crate::output::Output;
use crate::prompt::TerminalPassphrase;

pub struct Context {
    pub global: GlobalArgs,
    pub out: Output,
    pub session_id: SessionId,
    pub store: EncryptedFileStore,
    /// What every master client asks when a policy rule requires presence mid-request.
    presence_on_demand: Option<Arc<dyn PresenceOnDemand>>,
    /// The plain-http warning is shown once per command.
    warned_plain_http: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("session_id", &self.session_id).finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(global: GlobalArgs) -> Result<Self, CliError> {
        let out = Output { json: global.json, quiet: global.quiet };
        let session_id = SessionId::parse(&global.session_id)?;
        let store = EncryptedFileStore::from_env()?.with_passphrase_prompt(Arc::new(TerminalPassphrase));
        Ok(Self { global, out, session_id, store, presence_on_demand: None, warned_plain_http: Default::default() })
    }

    /// A copy without the on-demand presence, for what must own one: that presence itself.
    pub fn fork(&self) -> Self {
        Self {
            global: self.global.clone(),
            out: self.out,
            session_id: self.session_id.clone(),
            store: self.store.clone(),
            presence_on_demand: None,
            warned_plain_http: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Every master client asks `source` when a policy rule requires presence mid-request.
    pub fn with_presence_on_demand(mut self, source: Arc<dyn PresenceOnDemand>) -> Self {
        self.presence_on_demand = Some(source);
        self
    }

    /// The server to talk to for `session` (or for a new account when there is none).
    pub fn server_url(&self, session: Option<&Session>) -> String {
        agentkeys_core::client::resolve_server_url(self.global.server.as_deref(), session)
    }

    /// The saved session, or exit 3 with the fix.
    pub fn session(&self) -> Result<Arc<Session>, CliError> {
        match self.store.load(&self.session_id)? {
            Some(session) => Ok(Arc::new(session)),
            None => Err(CliError::new(
                exit::SESSION,
                format!("not initialized: there is no '{}' session", self.session_id),
                "run `agentkeys init` to create an account and this master device",
            )),
        }
    }

    /// Finds `<agent>` by id, label or alias, or exits 5 listing what exists.
    pub async fn resolve_agent(&self, client: &ApiClient, name: &str) -> Result<AgentSummary, CliError> {
        let agents = client.list_agents().await?.agents;
        if let Some(agent) = agentkeys_core::agents::resolve(&agents, name) {
            return Ok(agent.clone());
        }
        let known: Vec<&str> = agents.iter().map(|a| a.label.as_str()).collect();
        Err(CliError::new(
            exit::NOT_FOUND,
            format!("no agent named '{name}' (by id, label or alias)"),
            if known.is_empty() {
                "there are no agents yet: pair one with `agentkeys-daemon pair` or `agentkeys agent create LABEL`"
                    .to_owned()
            } else {
                format!("known agents: {}; see `agentkeys agents`", known.join(", "))
            },
        ))
    }

    /// An unauthenticated client for `server_url`, trusting as `--ca-cert` says; warns once when
    /// the URL sends requests in the clear to another machine.
    pub fn anonymous_client(&self, server_url: &str) -> Result<ApiClient, CliError> {
        if let Some(warning) = agentkeys_core::client::plain_http_warning(server_url)
            && !self.warned_plain_http.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.out.warn(warning);
        }
        let trust = Trust::ca_file(self.global.ca_cert.as_deref());
        Ok(ApiClient::new(server_url, &trust)?)
    }

    /// A client signing as `session`, checking each answer's audit head against the slot's memory.
    pub fn client_for(&self, session: Arc<Session>) -> Result<ApiClient, CliError> {
        let memory = agentkeys_core::chain::ChainMemory::open(&self.store.dir(&self.session_id), &session.account_id)
            .accepting_rollback(self.global.accept_rollback);
        let client = self
            .anonymous_client(&self.server_url(Some(&session)))?
            .with_session(session)
            .with_chain_memory(Arc::new(memory));
        Ok(match &self.presence_on_demand {
            Some(source) => client.with_presence_on_demand(source.clone()),
            None => client,
        })
    }

    /// A signing client for the saved session.
    pub fn client(&self) -> Result<(ApiClient, Arc<Session>), CliError> {
        let session = self.session()?;
        Ok((self.client_for(session.clone())?, session))
    }

    /// What this slot verified before (`seen.json`), to check the server's answers against.
    pub fn verifier(&self) -> agentkeys_core::integrity::Verifier {
        agentkeys_core::integrity::Verifier::open(&self.store.dir(&self.session_id))
            .accepting_rollback(self.global.accept_rollback)
    }

    /// A signing client, the session and its verifier, for commands that read or wrap credentials.
    /// A master's first such command after upgrading signs the first wave's unsigned versions
    /// again (stored anew, same values), and says so.
    pub async fn vault_client(
        &self,
    ) -> Result<(ApiClient, Arc<Session>, agentkeys_core::integrity::Verifier), CliError> {
        let (client, session) = self.client()?;
        let verifier = self.verifier();
        let signed =
            agentkeys_core::vault::sign_first_wave(&client, &session, &verifier, &mut agentkeys_core::OsRandom).await?;
        if !signed.is_empty() {
            self.out.warn(format!(
                "signed {} credential(s) stored before versions were signed, as new versions with the same values: {} \
                 (agents refuse unsigned versions)",
                signed.len(),
                signed.join(", ")
            ));
        }
        Ok((client, session, verifier))
    }
}
