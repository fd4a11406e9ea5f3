//! Account statements: the master's decisions about who may receive keys, signed by the account
//! key and kept by the server as one numbered, hash-linked log per account (docs/protocol.md,
//! "Account statements"). A grant ([`crate::grant`]) says who a key was wrapped to; a statement
//! says who the account allows: which services each agent may receive, and which devices and
//! link codes were revoked or torn down. A master folds the log into its own memory before it
//! wraps a key, so a device the log revokes or a service it never granted gets nothing whatever
//! the server's tables say; it remembers the number and hash of the last statement it folded, so
//! a server that drops or rewrites one is caught by every master that saw it. A second master
//! device learns the account's decisions from the same log.
//!
//! This module is the byte format, its strict parser (the server's bytes are untrusted) and the
//! wire types; signing and folding are the clients' (`agentkeys_core::statements`).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

const DOMAIN: &[u8] = b"agentkeys-statement-v1\0";

/// The largest payload a server accepts or a client parses.
pub const MAX_STATEMENT_BYTES: usize = 16 * 1024;

/// The most ids or services one statement names.
pub const MAX_STATEMENT_ITEMS: usize = 256;

/// The most statements one `GET /v1/account/statements` answer carries; a client asks again from
/// the next number.
pub const STATEMENTS_PAGE: usize = 256;

/// The longest id a statement names (agent, device and link ids are far shorter).
const MAX_ID_BYTES: usize = 64;

/// What the account decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementBody {
    /// The agent's devices may receive these vault services (added to what it had).
    Grant { agent_id: String, services: Vec<String> },
    /// The agent's devices may no longer receive these services.
    Ungrant { agent_id: String, services: Vec<String> },
    /// These devices and link codes of the agent never receive a key again.
    Revoke { agent_id: String, ids: Vec<String> },
    /// The agent is gone: these devices and link codes are revoked, its grants and its private
    /// namespace forgotten (a new agent of the same label starts afresh).
    Teardown { agent_id: String, ids: Vec<String> },
}

impl StatementBody {
    fn kind(&self) -> u8 {
        match self {
            StatementBody::Grant { .. } => 1,
            StatementBody::Ungrant { .. } => 2,
            StatementBody::Revoke { .. } => 3,
            StatementBody::Teardown { .. } => 4,
        }
    }

    fn parts(&self) -> (&str, &[String]) {
        match self {
            StatementBody::Grant { agent_id, services } | StatementBody::Ungrant { agent_id, services } => {
                (agent_id, services)
            }
            StatementBody::Revoke { agent_id, ids } | StatementBody::Teardown { agent_id, ids } => (agent_id, ids),
        }
    }

    /// The agent the statement is about.
    pub fn agent_id(&self) -> &str {
        self.parts().0
    }
}

/// One statement of an account's log:
///
/// ```text
/// "agentkeys-statement-v1" || 0x00
///   || u16be(len(account_id)) || account_id || u64be(seq) || prev (32 bytes)
///   || u8(kind: 1 grant, 2 ungrant, 3 revoke, 4 teardown)
///   || u16be(len(agent_id)) || agent_id || u16be(count) || count × (u16be(len(item)) || item)
/// ```
///
/// `seq` counts from 1; `prev` is [`statement_hash`] of statement `seq - 1`'s payload (32 zero
/// bytes for the first). Items are services for grant and ungrant, device and link ids for
/// revoke and teardown: 1 to 256 of them, or none for a grant (the record of an agent granted no
/// service yet). The account key signs the payload (Ed25519).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub account_id: String,
    pub seq: u64,
    pub prev: [u8; 32],
    pub body: StatementBody,
}

/// Why a payload is not a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedStatement(pub &'static str);

impl std::fmt::Display for MalformedStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not an account statement: {}", self.0)
    }
}

impl std::error::Error for MalformedStatement {}

impl Statement {
    /// The signed bytes.
    pub fn payload(&self) -> Vec<u8> {
        let (agent_id, items) = self.body.parts();
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(DOMAIN);
        push_str(&mut out, &self.account_id);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.prev);
        out.push(self.body.kind());
        push_str(&mut out, agent_id);
        let count = u16::try_from(items.len()).expect("at most MAX_STATEMENT_ITEMS items");
        out.extend_from_slice(&count.to_be_bytes());
        for item in items {
            push_str(&mut out, item);
        }
        out
    }

    /// Parses a payload strictly: every field in bounds, every name well-formed, nothing after
    /// the last item. The parse of what a server returns, and of what a master sends it.
    pub fn parse(payload: &[u8]) -> Result<Self, MalformedStatement> {
        if payload.len() > MAX_STATEMENT_BYTES {
            return Err(MalformedStatement("longer than 16 KiB"));
        }
        let mut input = Reader(payload);
        if input.take(DOMAIN.len())? != DOMAIN {
            return Err(MalformedStatement("it does not start with agentkeys-statement-v1"));
        }
        let account_id = input.id("account id")?;
        let seq = u64::from_be_bytes(input.array::<8>()?);
        if seq == 0 || i64::try_from(seq).is_err() {
            return Err(MalformedStatement("its number is not between 1 and 2^63 - 1"));
        }
        let prev = input.array::<32>()?;
        let kind = input.array::<1>()?[0];
        let agent_id = input.id("agent id")?;
        let count = usize::from(u16::from_be_bytes(input.array::<2>()?));
        // Only a grant may name nothing: it starts the record of an agent granted no service.
        if (count == 0 && kind != 1) || count > MAX_STATEMENT_ITEMS {
            return Err(MalformedStatement("it names no items (only a grant may), or more than 256"));
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            let item = match kind {
                1 | 2 => {
                    let service = input.str()?;
                    crate::names::validate_service_name(service)
                        .map_err(|_| MalformedStatement("it names an invalid service"))?;
                    service
                }
                _ => input.id("device or link id")?,
            };
            items.push(item.to_owned());
        }
        if !input.0.is_empty() {
            return Err(MalformedStatement("bytes follow its last item"));
        }
        let agent_id = agent_id.to_owned();
        let body = match kind {
            1 => StatementBody::Grant { agent_id, services: items },
            2 => StatementBody::Ungrant { agent_id, services: items },
            3 => StatementBody::Revoke { agent_id, ids: items },
            4 => StatementBody::Teardown { agent_id, ids: items },
            _ => return Err(MalformedStatement("its kind is unknown")),
        };
        Ok(Statement { account_id: account_id.to_owned(), seq, prev, body })
    }
}

/// The hash that links the next statement to this one: SHA-256 of its payload.
pub fn statement_hash(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

fn push_str(out: &mut Vec<u8>, part: &str) {
    let len = u16::try_from(part.len()).expect("names are far shorter than 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(part.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MalformedStatement> {
        if self.0.len() < n {
            return Err(MalformedStatement("it ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MalformedStatement> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn str(&mut self) -> Result<&'a str, MalformedStatement> {
        let len = usize::from(u16::from_be_bytes(self.array::<2>()?));
        std::str::from_utf8(self.take(len)?).map_err(|_| MalformedStatement("a name is not UTF-8"))
    }

    /// An id: 1 to 64 ASCII letters, digits, `_`, `-` or `.`.
    fn id(&mut self, what: &'static str) -> Result<&'a str, MalformedStatement> {
        let id = self.str()?;
        let valid = (1..=MAX_ID_BYTES).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid {
            return Err(MalformedStatement(match what {
                "account id" => "its account id is malformed",
                "agent id" => "its agent id is malformed",
                _ => "it names a malformed device or link id",
            }));
        }
        Ok(id)
    }
}

/// A statement as it travels: its number (which the server orders the log by), its payload and
/// the account key's signature over it, both base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccountStatement {
    #[serde(deserialize_with = "crate::number::whole")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 9223372036854775807_i64))]
    pub seq: u64,
    /// [`Statement::payload`], at most 16 KiB (base64url).
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$",
            min_length = 1,
            max_length = 21846
        )
    )]
    pub payload: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::b64::Bytes64))]
    pub signature: String,
}

/// `GET /v1/account/statements`: the log's last number, and the statements from `from` on (at
/// most [`STATEMENTS_PAGE`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StatementLog {
    /// The number of the log's last statement; 0 when it has none.
    pub head: u64,
    pub statements: Vec<AccountStatement>,
}

/// Query of `GET /v1/account/statements`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct StatementsQuery {
    /// The first number wanted (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 9223372036854775807_i64))]
    pub from: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Statement {
        Statement {
            account_id: "acct_1".into(),
            seq: 2,
            prev: [9; 32],
            body: StatementBody::Grant { agent_id: "ag_1".into(), services: vec!["openai".into(), "github".into()] },
        }
    }

    #[test]
    fn a_payload_parses_back_to_its_statement() {
        for body in [
            grant().body,
            StatementBody::Ungrant { agent_id: "ag_1".into(), services: vec!["openai".into()] },
            StatementBody::Revoke { agent_id: "ag_1".into(), ids: vec!["dev_a".into(), "lnk_b".into()] },
            StatementBody::Teardown { agent_id: "ag_1".into(), ids: vec!["dev_a".into()] },
            StatementBody::Grant { agent_id: "ag_1".into(), services: vec![] },
        ] {
            let statement = Statement { body, ..grant() };
            assert_eq!(Statement::parse(&statement.payload()), Ok(statement));
        }
    }

    #[test]
    fn a_changed_or_extended_payload_is_refused() {
        let payload = grant().payload();
        assert!(payload.starts_with(b"agentkeys-statement-v1\0\0\x06acct_1\0\0\0\0\0\0\0\x02"));
        let mut longer = payload.clone();
        longer.push(0);
        assert!(Statement::parse(&longer).is_err());
        for cut in 0..payload.len() {
            assert!(Statement::parse(&payload[..cut]).is_err(), "cut at {cut}");
        }
        let mut kind = payload.clone();
        kind[DOMAIN.len() + 2 + 6 + 8 + 32] = 9;
        assert_eq!(Statement::parse(&kind), Err(MalformedStatement("its kind is unknown")));
        let zero = Statement { seq: 0, ..grant() };
        assert!(Statement::parse(&zero.payload()).is_err());
        let revokes_nothing =
            Statement { body: StatementBody::Revoke { agent_id: "ag_1".into(), ids: vec![] }, ..grant() };
        assert!(Statement::parse(&revokes_nothing.payload()).is_err(), "only a grant may name nothing");
        let bad_service = Statement {
            body: StatementBody::Grant { agent_id: "ag_1".into(), services: vec!["no spaces".into()] },
            ..grant()
        };
        assert!(Statement::parse(&bad_service.payload()).is_err());
    }
}
