//! The MCP server (official SDK, `rmcp`): the tools an agent uses, with schemas and descriptions
//! written for a language model. The agent reads and asks; it never changes its own access or any
//! configuration. Failures are tool errors with a stable code and a one-line fix:
//! `DENIED`, `NOT_FOUND`, `RATE_LIMITED`, `REVOKED`, `APPROVAL_REQUIRED` (and `INVALID_INPUT`,
//! `UNAVAILABLE` for bad arguments and an unreachable server).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use agentkeys_core::mask::Masker;
use agentkeys_core::session::Session;

use crate::credentials::{self, Cache};
use crate::trail::{Event, Trail, Via};
use agentkeys_core::integrity::Verifier;
use agentkeys_core::vault::{self, Namespace, VaultError};
use agentkeys_core::{ApiClient, ClientError};
use agentkeys_proto::agents::{AgentAskRequest, MAX_DECISION_WAIT_S, RequestKind, RequestStatus, Tier};
use agentkeys_proto::types::AuditQuery;
use agentkeys_proto::{ErrorCode, b64};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, ProgressToken, RequestMetaObject,
    ServerCapabilities, ServerConfig,
};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt as _;

/// Most output the `run` tool returns per stream; the rest is cut (and says so).
const MAX_RUN_OUTPUT: usize = 256 * 1024;
/// The `run` tool's timeout when none is given, and the most it allows.
const DEFAULT_RUN_TIMEOUT_S: u64 = 60;
const MAX_RUN_TIMEOUT_S: u64 = 3600;
/// The longest a tool call waits for the owner's decision (`wait_s`).
const MAX_WAIT_S: u64 = 300;

/// A tool failure: a stable code, what happened, and the one-line fix.
#[derive(Debug, Clone)]
pub struct ToolFailure {
    pub code: &'static str,
    pub message: String,
    pub fix: String,
    /// With `APPROVAL_REQUIRED`: the request the human decides.
    pub request_code: Option<String>,
}

impl ToolFailure {
    fn new(code: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { code, message: message.into(), fix: fix.into(), request_code: None }
    }

    fn into_result(self) -> CallToolResult {
        let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
            "{}: {}. Fix: {}",
            self.code,
            self.message.trim_end_matches('.'),
            self.fix
        ))]);
        let mut error = json!({ "code": self.code, "message": self.message, "fix": self.fix });
        if let Some(request_code) = self.request_code {
            error["request_code"] = json!(request_code);
        }
        result.structured_content = Some(json!({ "error": error }));
        result
    }
}

/// The tool code for a server answer (the mapping the tests pin).
pub fn tool_code(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Denied => "DENIED",
        ErrorCode::NotFound => "NOT_FOUND",
        ErrorCode::RateLimited => "RATE_LIMITED",
        ErrorCode::Revoked | ErrorCode::SessionInvalid | ErrorCode::Unauthenticated | ErrorCode::SignatureInvalid => {
            "REVOKED"
        }
        ErrorCode::ApprovalRequired => "APPROVAL_REQUIRED",
        ErrorCode::BadRequest | ErrorCode::InvalidServiceName | ErrorCode::PayloadTooLarge => "INVALID_INPUT",
        _ => "UNAVAILABLE",
    }
}

impl From<ClientError> for ToolFailure {
    fn from(error: ClientError) -> Self {
        match &error {
            ClientError::Api { detail, .. } => {
                let mut fix = detail.hint.clone();
                if let Some(seconds) = detail.retry_after_s {
                    fix = format!("retry after {seconds}s; {fix}");
                }
                Self {
                    request_code: detail.request_code.clone(),
                    ..Self::new(tool_code(detail.code), detail.message.clone(), fix)
                }
            }
            other => Self::new("UNAVAILABLE", other.to_string(), other.hint()),
        }
    }
}

impl From<VaultError> for ToolFailure {
    fn from(error: VaultError) -> Self {
        match error {
            VaultError::Client(client) => client.into(),
            VaultError::InvalidName { .. } => Self::new("INVALID_INPUT", error.to_string(), error.hint()),
            other => Self::new("UNAVAILABLE", other.to_string(), other.hint()),
        }
    }
}

type ToolResult = Result<CallToolResult, ErrorData>;

fn ok_json(value: serde_json::Value) -> ToolResult {
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    Ok(result)
}

fn finish(outcome: Result<serde_json::Value, ToolFailure>) -> ToolResult {
    match outcome {
        Ok(value) => ok_json(value),
        Err(failure) => Ok(failure.into_result()),
    }
}

/// `get_credential` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct GetCredentialArgs {
    /// The service name exactly as `list_credentials` shows it, e.g. "openai" or "github.com".
    pub service: String,
    /// Why you need it, in one sentence: the human reads it when the credential is high-value and
    /// each use is approved.
    #[serde(default)]
    pub reason: Option<String>,
    /// When the human must approve this use (APPROVAL_REQUIRED): wait up to this many seconds
    /// (0 to 300) for the decision, with progress notifications, instead of returning at once.
    #[serde(default)]
    pub wait_s: Option<u64>,
}

/// `run` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunArgs {
    /// The program and its arguments, e.g. ["python3", "job.py", "--fast"]. Run directly, not through a shell.
    pub argv: Vec<String>,
    /// Environment variables to fill with credentials: {"VARIABLE_NAME": "service"}, e.g. {"OPENAI_API_KEY": "openai"}.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Kill the program after this many seconds (default 60, at most 3600).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Why the program needs the credentials, in one sentence: the human reads it when one is
    /// high-value and each use is approved.
    #[serde(default)]
    pub reason: Option<String>,
    /// When the human must approve a use (APPROVAL_REQUIRED): wait up to this many seconds (0 to
    /// 300) for the decision, with progress notifications, instead of returning at once.
    #[serde(default)]
    pub wait_s: Option<u64>,
}

/// `usage` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct UsageArgs {
    /// How far back to look, as a duration: "30m", "24h", "7d" (default "24h").
    #[serde(default)]
    pub since: Option<String>,
}

/// `request_access` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct RequestAccessArgs {
    /// The service you need, e.g. "stripe".
    pub service: String,
    /// Why, in one sentence the human will read before deciding.
    pub reason: String,
}

/// The tiers an agent can ask for.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TierArg {
    /// Names only.
    Safe,
    /// Read credentials in scope and run commands with them.
    Standard,
    /// Also store into its own namespace.
    Admin,
}

/// `request_tier` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct RequestTierArgs {
    /// The tier you need: "standard" to read credentials, "admin" to also store your own.
    pub tier: TierArg,
    /// Why, in one sentence the human will read before deciding.
    pub reason: String,
}

/// The MCP server of one agent session. Cheap to clone: one per connection, state shared.
#[derive(Clone)]
pub struct AgentKeysMcp {
    client: ApiClient,
    session: Arc<Session>,
    verifier: Arc<Verifier>,
    trail: Trail,
    cache: Arc<Cache>,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for AgentKeysMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKeysMcp").field("session", &self.session).finish_non_exhaustive()
    }
}

#[tool_router]
impl AgentKeysMcp {
    pub fn new(
        client: ApiClient,
        session: Arc<Session>,
        verifier: Arc<Verifier>,
        trail: Trail,
        cache: Arc<Cache>,
    ) -> Self {
        Self { client, session, verifier, trail, cache, tool_router: Self::tool_router() }
    }

    #[tool(
        description = "Who you are to AgentKeys: your agent id and label, your tier (safe: names only; standard: \
                       read credentials in scope; admin: also store your own) and the services in your scope.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn whoami(&self) -> ToolResult {
        finish(
            async {
                let who = self.client.whoami().await?;
                let agent = who.agent.as_ref();
                Ok(json!({
                    "agent_id": agent.map(|a| a.agent_id.clone()),
                    "label": agent.map(|a| a.label.clone()),
                    "tier": agent.map(|a| a.tier),
                    "scope": agent.map(|a| a.scope.clone()).unwrap_or_default(),
                    "account_id": who.account_id,
                    "device_id": who.device_id,
                    "server": self.client.base_url(),
                }))
            }
            .await,
        )
    }

    #[tool(
        description = "Names of the credentials you may use (never values): your private ones and the shared ones in \
                       your scope. Use a name with get_credential, or as a value in run's env.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_credentials(&self) -> ToolResult {
        finish(
            async {
                let listed = self.client.list_credentials().await?;
                let names: Vec<_> = listed
                    .credentials
                    .iter()
                    .map(|c| json!({ "service": c.service, "private": c.namespace != "vault", "version": c.version }))
                    .collect();
                Ok(json!({ "credentials": names }))
            }
            .await,
        )
    }

    #[tool(
        description = "The value of one credential, e.g. an API key. Prefer `run` with env when you only need to pass \
                       the value to a program: then it never enters your context. Out of scope: DENIED (ask with \
                       request_access); unknown name: NOT_FOUND; too many reads: RATE_LIMITED; a high-value credential: \
                       APPROVAL_REQUIRED with a request_code the human approves (say why in reason; wait_s waits for the \
                       decision).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_credential(
        &self,
        Parameters(args): Parameters<GetCredentialArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> ToolResult {
        let waiting = match Waiting::new(args.wait_s, &meta, peer) {
            Ok(waiting) => waiting,
            Err(failure) => return Ok(failure.into_result()),
        };
        let opened = loop {
            match self.read_once(&args).await {
                Ok(opened) => break opened,
                Err(error) => {
                    if let Err(failure) = self.decided(&waiting, error).await {
                        return Ok(failure.into_result());
                    }
                }
            }
        };
        let value = opened.value;
        let text = match std::str::from_utf8(&value) {
            Ok(text) => json!({ "service": args.service, "value": text }),
            Err(_) => json!({ "service": args.service, "value_base64url": b64::encode(value.as_slice()) }),
        };
        drop(value);
        let result = ok_json(text);
        let ok = [(Event::Fetch, "ok"), (Event::Deliver, "ok"), (Event::Drop, "ok")];
        self.trail.record_all(&args.service, Via::Mcp, &ok);
        result
    }

    #[tool(
        description = "Run a program with credentials in its environment and return its exit code and output. \
                       Credential values are masked as ******** in the output. argv is run directly (no shell: \
                       for pipes, run [\"sh\", \"-c\", \"...\"]). stdin is empty. A high-value credential answers \
                       APPROVAL_REQUIRED with a request_code; wait_s waits for the human's decision.",
        annotations(read_only_hint = false, destructive_hint = true, open_world_hint = true)
    )]
    async fn run(
        &self,
        Parameters(args): Parameters<RunArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> ToolResult {
        let waiting = match Waiting::new(args.wait_s, &meta, peer) {
            Ok(waiting) => waiting,
            Err(failure) => return Ok(failure.into_result()),
        };
        finish(self.run_inner(args, &waiting).await)
    }

    #[tool(
        description = "Your own recent activity as AgentKeys recorded it: which credentials were fetched, when, and \
                       whether it was allowed, denied or rate limited. Never contains values.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn usage(&self, Parameters(args): Parameters<UsageArgs>) -> ToolResult {
        finish(
            async {
                let since = args.since.unwrap_or_else(|| "24h".into());
                let duration = humantime::parse_duration(&since).map_err(|e| {
                    ToolFailure::new(
                        "INVALID_INPUT",
                        format!("invalid since {since:?}: {e}"),
                        "use a duration like 30m, 24h or 7d",
                    )
                })?;
                let now_ms = agentkeys_core::client::unix_now_s() * 1000;
                let query = AuditQuery {
                    since_ms: Some(now_ms.saturating_sub(duration.as_millis().min(i64::MAX as u128) as i64)),
                    ..AuditQuery::default()
                };
                let audit = self.client.audit(&query).await?;
                Ok(json!({ "entries": audit.entries }))
            }
            .await,
        )
    }

    #[tool(
        description = "Ask the human who owns this account for access to a service you are DENIED. Returns a request \
                       code; the human approves or denies it. Until then get_credential answers APPROVAL_REQUIRED.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn request_access(&self, Parameters(args): Parameters<RequestAccessArgs>) -> ToolResult {
        let request =
            AgentAskRequest { kind: RequestKind::Access, service: Some(args.service), tier: None, reason: args.reason };
        finish(self.ask(request).await)
    }

    #[tool(
        description = "Ask the human who owns this account for a higher tier (e.g. standard to read credentials). \
                       Returns a request code for the human to approve.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn request_tier(&self, Parameters(args): Parameters<RequestTierArgs>) -> ToolResult {
        let tier = match args.tier {
            TierArg::Safe => Tier::Safe,
            TierArg::Standard => Tier::Standard,
            TierArg::Admin => Tier::Admin,
        };
        let request = AgentAskRequest { kind: RequestKind::Tier, service: None, tier: Some(tier), reason: args.reason };
        finish(self.ask(request).await)
    }
}

/// How long a tool call may wait for the owner's decision on a use that needs one, and whom to
/// tell meanwhile.
struct Waiting {
    deadline: Option<tokio::time::Instant>,
    started: tokio::time::Instant,
    total_s: u64,
    progress: Option<(ProgressToken, Peer<RoleServer>)>,
}

impl Waiting {
    fn new(wait_s: Option<u64>, meta: &RequestMetaObject, peer: Peer<RoleServer>) -> Result<Self, ToolFailure> {
        let wait_s = wait_s.unwrap_or(0);
        if wait_s > MAX_WAIT_S {
            return Err(ToolFailure::new(
                "INVALID_INPUT",
                format!("wait_s is {wait_s}; it is at most {MAX_WAIT_S} seconds"),
                "pass wait_s from 0 to 300, or call again once the human decided",
            ));
        }
        let started = tokio::time::Instant::now();
        Ok(Self {
            deadline: (wait_s > 0).then(|| started + Duration::from_secs(wait_s)),
            started,
            total_s: wait_s,
            progress: meta.get_progress_token().map(|token| (token, peer)),
        })
    }
}

impl AgentKeysMcp {
    /// One read of `get_credential`, recorded in the trail when refused.
    async fn read_once(&self, args: &GetCredentialArgs) -> Result<vault::Opened, VaultError> {
        let read = vault::read_for(
            &self.client,
            &self.session,
            &self.verifier,
            Namespace::Vault,
            &args.service,
            args.reason.as_deref(),
        )
        .await;
        if let Err(error) = &read {
            self.trail.record_read(&args.service, Via::Mcp, Err(error.code()));
        }
        read
    }

    /// After a refusal: `Ok` once the owner approved the request it names, so the call tries
    /// again; else the failure the tool returns (the refusal itself when it needs no approval, the
    /// call waits for none, or the time ran out; the denial).
    async fn decided(&self, waiting: &Waiting, error: VaultError) -> Result<(), ToolFailure> {
        let code = match &error {
            VaultError::Client(ClientError::Api { detail, .. }) if detail.code == ErrorCode::ApprovalRequired => {
                detail.request_code.clone()
            }
            _ => None,
        };
        let refused = ToolFailure::from(error);
        let (Some(code), Some(deadline)) = (code, waiting.deadline) else { return Err(refused) };
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Some((token, peer)) = &waiting.progress {
                let elapsed = waiting.started.elapsed().as_secs_f64();
                let note = ProgressNotificationParam::new(token.clone(), elapsed)
                    .with_total(waiting.total_s as f64)
                    .with_message(format!("waiting for the account owner to run: agentkeys approve {code}"));
                // A client that went away cannot be told; the wait ends with the call anyway.
                let _ = peer.notify_progress(note).await;
            }
            let wait_s = left.as_secs().min(u64::from(MAX_DECISION_WAIT_S)) as u32;
            let decided = self.client.request_decision(&code, wait_s).await.map_err(ToolFailure::from)?;
            match decided.status {
                RequestStatus::Approved => return Ok(()),
                RequestStatus::Denied => {
                    return Err(ToolFailure::new(
                        "DENIED",
                        format!("the account owner denied request {code}"),
                        "do without it, or ask the human why; another call opens a new request",
                    ));
                }
                RequestStatus::Expired => return Err(refused),
                RequestStatus::Pending if wait_s == 0 => return Err(refused),
                RequestStatus::Pending => {}
            }
        }
    }

    /// Opens a request for the account owner to decide; the agent gets its code.
    async fn ask(&self, request: AgentAskRequest) -> Result<serde_json::Value, ToolFailure> {
        let asked = self.client.ask(&request).await?;
        Ok(json!({
            "code": asked.code,
            "expires_at_ms": asked.expires_at_ms,
            "next": format!("the account owner decides with: agentkeys approve {}", asked.code),
        }))
    }

    async fn run_inner(&self, args: RunArgs, waiting: &Waiting) -> Result<serde_json::Value, ToolFailure> {
        let Some((program, rest)) = args.argv.split_first() else {
            return Err(ToolFailure::new("INVALID_INPUT", "argv is empty", "pass the program and its arguments"));
        };
        let specs: Vec<String> = args.env.iter().map(|(var, service)| format!("{var}={service}")).collect();
        let bindings = agentkeys_core::child::parse_bindings(&specs)
            .map_err(|e| ToolFailure::new("INVALID_INPUT", e.message, e.hint))?;
        let open = || {
            credentials::open_for_run(
                &self.client,
                &self.session,
                &self.verifier,
                (&self.trail, Some(&self.cache)),
                bindings.clone(),
                args.reason.as_deref(),
            )
        };
        let (values, services) = loop {
            match open().await {
                Ok(opened) => break opened,
                Err(error) => self.decided(waiting, error).await?,
            }
        };
        let timeout = Duration::from_secs(args.timeout_s.unwrap_or(DEFAULT_RUN_TIMEOUT_S).clamp(1, MAX_RUN_TIMEOUT_S));
        let mut command = std::process::Command::new(program);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout ends the program and everything it started
            // (each holds the credentials in its environment).
            .process_group(0);
        let rest: Vec<std::ffi::OsString> = rest.iter().map(Into::into).collect();
        let plain: Vec<_> = std::env::vars_os().collect();
        if let Err(error) =
            agentkeys_core::exec::with_secret_env(&mut command, program.as_ref(), &rest, &plain, &values, false)
        {
            self.cache.done(&services);
            let failure = agentkeys_core::child::prepare_error(program.as_ref(), error);
            return Err(ToolFailure::new("INVALID_INPUT", failure.message, failure.hint));
        }
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let spawned = command.spawn();
        drop(command);
        let mut child = spawned.map_err(|e| {
            self.cache.done(&services);
            ToolFailure::new("INVALID_INPUT", format!("cannot start {program}: {e}"), "check the program name and PATH")
        })?;
        for service in &services {
            self.trail.record(Event::Deliver, service, Via::Run, "ok");
        }
        let group = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32));
        let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let finished = tokio::time::timeout(timeout, async {
            tokio::join!(read_capped(stdout.as_mut(), &mut out), read_capped(stderr.as_mut(), &mut err));
            child.wait().await.ok()
        })
        .await;
        let (status, timed_out) = match finished {
            Ok(status) => (status, false),
            Err(_) => {
                if let Some(group) = group {
                    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                }
                (child.wait().await.ok(), true)
            }
        };
        let masker_values: Vec<&[u8]> = values.values().collect();
        let longest = masker_values.iter().map(|v| v.len()).max().unwrap_or(0);
        let masked = |mut bytes: Vec<u8>| {
            // Cut output is cut a value's length early, so no value is left half-printed (and so
            // unmasked) at the cut.
            let truncated = bytes.len() > MAX_RUN_OUTPUT;
            if truncated {
                bytes.truncate(MAX_RUN_OUTPUT.saturating_sub(longest));
            }
            let mut masker = Masker::new(masker_values.iter().copied());
            let mut masked = Vec::with_capacity(bytes.len());
            masker.push(&bytes, &mut masked);
            masker.finish(&mut masked);
            (String::from_utf8_lossy(&masked).into_owned(), truncated)
        };
        let (stdout_text, stdout_truncated) = masked(std::mem::take(&mut out));
        let (stderr_text, stderr_truncated) = masked(std::mem::take(&mut err));
        // Kept until here only to mask the output; now they go (or wait in the cache).
        drop(masker_values);
        drop(values);
        self.cache.done(&services);
        if self.cache.ttl().is_zero() {
            for service in &services {
                self.trail.record(Event::Drop, service, Via::Run, "ok");
            }
        }
        let exit_code = status.map(|s| {
            use std::os::unix::process::ExitStatusExt as _;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
        });
        Ok(json!({
            "exit_code": exit_code,
            "timed_out": timed_out,
            "stdout": stdout_text,
            "stderr": stderr_text,
            "truncated": stdout_truncated || stderr_truncated,
        }))
    }
}

/// Reads a child's stream, keeping at most [`MAX_RUN_OUTPUT`] bytes (plus one, to tell that it
/// was cut) and draining the rest, so a chatty program neither fills the daemon's memory nor
/// blocks on a full pipe.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(stream: Option<&mut R>, into: &mut Vec<u8>) {
    let Some(stream) = stream else { return };
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = (MAX_RUN_OUTPUT + 1).saturating_sub(into.len());
                into.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for AgentKeysMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("agentkeys-daemon", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "AgentKeys gives you the API keys and tokens the account owner granted you. Call list_credentials to \
                 see names, then prefer run with env to pass a credential to a program without seeing it; use \
                 get_credential only when you must hold the value. If a tool answers DENIED, ask with \
                 request_access and tell the human the returned code.",
            )
    }
}
