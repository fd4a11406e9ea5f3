//! The daemon socket's native protocol, for callers that need what MCP cannot carry: file
//! descriptors. `agentkeys run` and `agentkeys-daemon run` pass their stdin, stdout and stderr to
//! a running `serve` daemon so the command runs there and the caller never holds a credential;
//! an agentkeys-managed runtime asks for a credential as a descriptor (`memfd_secret`) instead of
//! bytes in a JSON response. Documented in docs/protocol.md "Daemon socket".
//!
//! The same socket speaks MCP: a connection whose first bytes are [`PREAMBLE`] speaks this
//! protocol, any other speaks MCP. After the preamble the caller sends one JSON line, a
//! [`SocketRequest`], with its descriptors (`SCM_RIGHTS`) attached to the same `sendmsg`. The
//! daemon answers with [`SocketReply`] lines; a `run` caller may send [`RunControl`] lines
//! meanwhile. Byte strings that need not be UTF-8 (argv, environment, paths) travel as unpadded
//! base64url.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// What a connection speaking this protocol starts with.
pub const PREAMBLE: &[u8] = b"AGENTKEYS/1\n";
/// The longest request line the daemon reads.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum SocketRequest {
    /// Run a command for the caller, with its stdin, stdout and stderr attached (3 descriptors).
    Run(RunRequest),
    /// One credential as a descriptor (answered by [`SocketReply::Credential`] with 1 attached).
    GetCredential { service: String },
}

/// `run`: everything the child needs from the caller besides its stdio.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The program and its arguments, base64url each.
    pub argv: Vec<String>,
    /// The caller's working directory, base64url.
    pub cwd: String,
    /// The caller's environment, `KEY=VALUE` base64url each.
    pub environ: Vec<String>,
    /// Credentials to inject: variable → service.
    pub env: BTreeMap<String, String>,
    /// Mask credential values in the command's output.
    pub mask: bool,
    /// Why the command needs the credentials: shown to the account owner when one is high-value
    /// and its use waits for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// From the caller during a `run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RunControl {
    /// Deliver this signal (its number) to the command's process group.
    Signal { signal: i32 },
}

/// How a descriptor's memory is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdProtection {
    /// A `memfd_secret` file: map it to read it.
    MemfdSecret,
    /// A sealed `memfd` (the kernel lacks `memfd_secret`): map or read it.
    SealedMemfd,
}

/// From the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SocketReply {
    /// The credential is in the attached descriptor, `length` bytes long.
    Credential { service: String, length: u64, protection: FdProtection },
    /// The command ended with this exit code (128+N when killed by signal N).
    Exit { exit_code: u8 },
    /// Nothing was run or delivered: why, and the fix.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<ErrorCode>,
        message: String,
        fix: String,
        exit_code: u8,
    },
}
