//! The one integration-test binary: real servers, real databases, real binaries.
//!
//! * `anonymous` — traffic without a session: limits per source and in total, refusals counted
//!   not audited each, a real pairing through a flood, server-wide code guessing, hidden
//!   characters in text a human reads, `verify-audit` without a database.
//! * `backup` — `agentkeys-server backup` during a store burst, `restore`, and what each refuses.
//! * `devices` — master devices joined by pair code, a stolen one revoked, the account
//!   recovered with its recovery key past the delay, an agent's replacement machine.
//! * `storage` — the server's storage and auth behaviour through the real client, on SQLite and
//!   on PostgreSQL.
//! * `contract` — schemathesis against the OpenAPI document: unauthenticated, and signed as a
//!   real master and a real agent; zero failures.
//! * `cli` — the `agentkeys` binary end to end against a spawned server.
//! * `hostile` — a server that edits its database between requests: forged versions, a deleted
//!   newest version, an older database put back; every reader refuses them.
//! * `agents` — `agentkeys-daemon` and the master's agent commands: pairing, link codes, scope,
//!   revoke and teardown, and MCP through the official Python SDK.
//! * `run` — `agentkeys run`: exit codes, signals, masking.
//! * `mediated` — the daemon socket's native protocol: `run` through a `serve` daemon with the
//!   caller's stdio, credentials as descriptors, the protected-memory fallback, the idle cache.
//! * `residue` — scans the real processes' memory for a canary credential.
//! * `replicas` — several server processes on one database behaving as one.
//! * `keychain` — session keys in the real Secret Service, fallbacks, migration.
//! * `crash` — SIGKILL during a burst of stores loses nothing acknowledged.
//! * `hardening` — the daemon and the CLI not dumpable, no core, a tracer refused.
//! * `terminal` — prompts at a real pseudo-terminal (rexpect): the session passphrase.
//! * `tls` — the server over TLS: the demo flow over https, curl, each certificate error, the
//!   certificates the server refuses, reload on SIGHUP with a connection open.
//! * `presence` — presence gating: the policy matrix, silent commands, the terminal, and the
//!   real fprintd and polkit (dbusmock) on a private system bus.
//! * `policy` — rules narrowing scope: a time-window deny at two instants of the server's clock,
//!   `policy test`, bad files, weakening as critical, require_approval, rates, `explain`.
//! * `releases` — high-value credentials: releases approved per use or per time, wrapped to
//!   the asking device alone, refused once used up, out of time, or to anyone else.
//! * `webauthn` — presence keys the server verifies, in a real Chromium with its virtual
//!   authenticator: enrollment, real critical commands, every forged or tampered answer.

/// Declares each listed `async fn name(Backend)` as a test on SQLite and one on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(agentkeys_tests::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(agentkeys_tests::Backend::Postgres).await
                }
            )*
        }
    };
}

mod agents;
mod anonymous;
mod backup;
mod cli;
mod contract;
mod crash;
mod devices;
mod hardening;
mod hostile;
mod keychain;
mod listen;
mod mediated;
mod policy;
mod presence;
mod releases;
mod replicas;
mod residue;
mod run;
mod storage;
mod terminal;
mod tls;
mod webauthn;
