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
use agentkeys_proto::agents::{AgentAskRequest, RequestKind, Tier};
use agentkeys_proto::types::AuditQuery;
use agentkeys_proto::{ErrorCode, b64};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt as _;

/// Most output the `run` tool returns per stream; the rest is cut (and says so).
const MAX_RUN_OUTPUT: usize = 256 * 1024;
/// The `run` tool's timeout when none is given, and the most it allows.
const DEFAULT_RUN_TIMEOUT_S: u64 = 60;
const MAX_RUN_TIMEOUT_S: u64 = 3600;

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
                       APPROVAL_REQUIRED with a request_code the human approves (say why in reason), then call again.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_credential(&self, Parameters(args): Parameters<GetCredentialArgs>) -> ToolResult {
        let read = vault::read_for(
            &self.client,
            &self.session,
            &self.verifier,
            Namespace::Vault,
            &args.service,
            args.reason.as_deref(),
        )
        .await;
        match read {
            Ok(opened) => {
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
            Err(error) => {
                self.trail.record_read(&args.service, Via::Mcp, Err(error.code()));
                Ok(ToolFailure::from(error).into_result())
            }
        }
    }

    #[tool(
        description = "Run a program with credentials in its environment and return its exit code and output. \
                       Credential values are masked as ******** in the output. argv is run directly (no shell: \
                       for pipes, run [\"sh\", \"-c\", \"...\"]). stdin is empty.",
        annotations(read_only_hint = false, destructive_hint = true, open_world_hint = true)
    )]
    async fn run(&self, Parameters(args): Parameters<RunArgs>) -> ToolResult {
        finish(self.run_inner(args).await)
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

impl AgentKeysMcp {
    /// Opens a request for the account owner to decide; the agent gets its code.
    async fn ask(&self, request: AgentAskRequest) -> Result<serde_json::Value, ToolFailure> {
        let asked = self.client.ask(&request).await?;
        Ok(json!({
            "code": asked.code,
            "expires_at_ms": asked.expires_at_ms,
            "next": format!("the account owner decides with: agentkeys approve {}", asked.code),
        }))
    }

    async fn run_inner(&self, args: RunArgs) -> Result<serde_json::Value, ToolFailure> {
        let Some((program, rest)) = args.argv.split_first() else {
            return Err(ToolFailure::new("INVALID_INPUT", "argv is empty", "pass the program and its arguments"));
        };
        let specs: Vec<String> = args.env.iter().map(|(var, service)| format!("{var}={service}")).collect();
        let bindings = agentkeys_core::child::parse_bindings(&specs)
            .map_err(|e| ToolFailure::new("INVALID_INPUT", e.message, e.hint))?;
        let (values, services) = credentials::open_for_run(
            &self.client,
            &self.session,
            &self.verifier,
            (&self.trail, Some(&self.cache)),
            bindings,
            args.reason.as_deref(),
        )
        .await?;
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
