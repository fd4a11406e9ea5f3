//! The master's side of the account's statement log (`agentkeys_proto::statement`,
//! docs/protocol.md "Account statements"): every decision about who may receive keys — a
//! service granted to an agent or taken back, a device revoked, an agent torn down — is signed by
//! the account key and sent with the change it belongs to, which the server appends in the
//! change's own transaction: the log and the change never part. Before it wraps a key to an agent, a
//! master reads the log from where its slot left off ([`sync`]), checks each new statement
//! (number, link to the one before, the account's signature) and folds it into its memory
//! ([`Verifier::fold`]); a log shorter than the slot's mark, or with another statement at it, is
//! `INTEGRITY` unless the user accepts a restored server.

use agentkeys_proto::b64;
use agentkeys_proto::statement::{
    AccountStatement, STATEMENTS_PAGE, Statement, StatementBody, StatementLog, statement_hash,
};

use crate::client::{ApiClient, ClientError};
use crate::crypto;
use crate::integrity::{IntegrityError, StatementMark, Verifier};
use crate::session::Session;

/// Why the log could not be read or a statement signed.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("INTEGRITY: {0}")]
    Integrity(IntegrityError),
    #[error("this is an agent session; only the account owner's session holds the account key")]
    NotMaster,
}

fn account_key(session: &Session) -> Result<&crypto::KeyPair, StatementError> {
    session.account.as_ref().ok_or(StatementError::NotMaster)
}

/// The most items one statement carries: longer lists are said in several.
const ITEMS_PER_STATEMENT: usize = 128;

/// Checks what the server returned after `mark`: the statement at the mark unchanged, then each
/// next one in order, linked to the one before, of this account and signed by its key. Returns
/// the new statements and the mark after the last.
pub fn check_log(
    account_id: &str,
    account_key: &[u8; 32],
    mark: StatementMark,
    head: u64,
    entries: &[AccountStatement],
) -> Result<(Vec<Statement>, StatementMark), IntegrityError> {
    if head < mark.seq {
        return Err(IntegrityError::StatementsShorter { seen: mark.seq, now: head });
    }
    let mut entries = entries.iter().peekable();
    let mut last = mark;
    if mark.seq > 0 {
        let at_mark = entries
            .next_if(|entry| entry.seq == mark.seq)
            .and_then(|entry| b64::decode(&entry.payload))
            .map(|payload| statement_hash(&payload));
        if at_mark != Some(mark.hash) {
            return Err(IntegrityError::StatementsForked { seen: mark.seq });
        }
    }
    let mut new = Vec::new();
    for entry in entries {
        let seq = last.seq + 1;
        let forged = |why| IntegrityError::StatementForged { seq, why };
        if entry.seq != seq {
            return Err(forged("the log skips or repeats a number"));
        }
        let payload = b64::decode(&entry.payload).ok_or_else(|| forged("its payload is not base64url"))?;
        let signature =
            b64::decode_array::<64>(&entry.signature).ok_or_else(|| forged("its signature is malformed"))?;
        let statement = Statement::parse(&payload).map_err(|_| forged("its payload is malformed"))?;
        if statement.account_id != account_id || statement.seq != seq {
            return Err(forged("it was signed for another account or another number"));
        }
        if statement.prev != last.hash {
            return Err(forged("it does not follow the statement before it"));
        }
        crypto::verify(account_key, &payload, &signature).map_err(|_| forged("its signature does not verify"))?;
        last = StatementMark { seq, hash: statement_hash(&payload) };
        new.push(statement);
    }
    if last.seq != head {
        return Err(IntegrityError::StatementForged {
            seq: last.seq + 1,
            why: "the log ends before the head it names",
        });
    }
    Ok((new, last))
}

/// Reads the account's log from the slot's mark, checks it and folds what is new. With
/// `--accept-rollback`, a shorter or rewritten log is read again from its start (reported), on
/// top of what the slot already allows: revocations it knew stay.
pub async fn sync(client: &ApiClient, session: &Session, verifier: &Verifier) -> Result<(), StatementError> {
    let account_key = account_key(session)?.public().sign;
    let mut mark = verifier.statement_mark();
    loop {
        let (head, entries) = read_from(client, mark.seq.max(1)).await?;
        match check_log(&session.account_id, &account_key, mark, head, &entries) {
            Ok((new, last)) => {
                if last != mark || !new.is_empty() {
                    verifier.fold(&new, last);
                }
                return Ok(());
            }
            Err(error @ (IntegrityError::StatementsShorter { .. } | IntegrityError::StatementsForked { .. }))
                if verifier.accepts_rollback() && mark.seq > 0 =>
            {
                let mut accepted = error.report();
                accepted.finding = agentkeys_proto::grant::IntegrityFinding::RollbackAccepted;
                let _ = client.report_integrity(&accepted).await;
                verifier.restart_statements();
                mark = StatementMark::default();
            }
            Err(error) => {
                let _ = client.report_integrity(&error.report()).await;
                return Err(StatementError::Integrity(error));
            }
        }
    }
}

/// Every statement from `from` to the head the first answer names, page by page. Statements past
/// that head (appended while it read) wait for the next read; a page that does not move forward
/// ends the reading, and `check_log` judges what came.
async fn read_from(client: &ApiClient, from: u64) -> Result<(u64, Vec<AccountStatement>), ClientError> {
    let StatementLog { head, mut statements } = client.list_statements(from).await?;
    statements.retain(|s| s.seq <= head);
    while statements.len() >= STATEMENTS_PAGE {
        let last = statements.last().map_or(from, |s| s.seq);
        if last >= head {
            break;
        }
        let mut page = client.list_statements(last + 1).await?.statements;
        page.retain(|s| s.seq > last && s.seq <= head);
        if page.is_empty() {
            break;
        }
        statements.extend(page);
    }
    Ok((head, statements))
}

/// The statements of one change, signed and numbered after the slot's mark: sent with the change
/// (the server appends them in its transaction) and folded into the slot once it was taken.
#[derive(Debug, Default)]
pub struct Prepared {
    statements: Vec<Statement>,
    wire: Vec<AccountStatement>,
    mark: StatementMark,
}

impl Prepared {
    /// What the change's request carries.
    pub fn wire(&self) -> Vec<AccountStatement> {
        self.wire.clone()
    }

    /// The server took the change, and its statements with it.
    pub fn taken(&self, verifier: &Verifier) {
        if !self.statements.is_empty() {
            verifier.fold(&self.statements, self.mark);
        }
    }
}

/// Signs `bodies` with the account key as the log's next statements after the slot's mark (read
/// the log first with [`sync`]).
pub fn sign(session: &Session, verifier: &Verifier, bodies: Vec<StatementBody>) -> Result<Prepared, StatementError> {
    let account = account_key(session)?;
    let mut prepared = Prepared { mark: verifier.statement_mark(), ..Prepared::default() };
    for body in bodies {
        let statement = Statement {
            account_id: session.account_id.clone(),
            seq: prepared.mark.seq + 1,
            prev: prepared.mark.hash,
            body,
        };
        let payload = statement.payload();
        prepared.wire.push(AccountStatement {
            seq: statement.seq,
            signature: b64::encode(account.sign(&payload)),
            payload: b64::encode(&payload),
        });
        prepared.mark = StatementMark { seq: statement.seq, hash: statement_hash(&payload) };
        prepared.statements.push(statement);
    }
    Ok(prepared)
}

/// That `agent_id` may receive those of `services` this master has not allowed it yet (for an
/// agent it has no record of, with what the server lists for it now, `known`: the first view).
/// An agent the slot has no record of gets a statement even when it is granted nothing (a new
/// agent with an empty scope): from then on it is held to its record, not taken as listed.
pub fn grant(verifier: &Verifier, agent_id: &str, services: &[String], known: &[String]) -> Vec<StatementBody> {
    let new = verifier.not_yet_granted(agent_id, services, known);
    if new.is_empty() && !verifier.knows_agent(agent_id) {
        return vec![StatementBody::Grant { agent_id: agent_id.to_owned(), services: Vec::new() }];
    }
    new.chunks(ITEMS_PER_STATEMENT)
        .map(|chunk| StatementBody::Grant { agent_id: agent_id.to_owned(), services: chunk.to_vec() })
        .collect()
}

/// That `agent_id` may no longer receive those of `services` it was allowed.
pub fn ungrant(verifier: &Verifier, agent_id: &str, services: &[String]) -> Vec<StatementBody> {
    let held = verifier.granted_of(agent_id, services);
    held.chunks(ITEMS_PER_STATEMENT)
        .map(|chunk| StatementBody::Ungrant { agent_id: agent_id.to_owned(), services: chunk.to_vec() })
        .collect()
}

/// That these devices and link codes of `agent_id` never receive a key again; with `teardown`,
/// that the agent is gone (said even when it has no device: it also forgets the agent's grants).
pub fn revoke(verifier: &Verifier, agent_id: &str, ids: &[String], teardown: bool) -> Vec<StatementBody> {
    if !teardown && verifier.all_revoked(ids) {
        return Vec::new();
    }
    let mut chunks: Vec<Vec<String>> = ids.chunks(ITEMS_PER_STATEMENT).map(<[String]>::to_vec).collect();
    if chunks.is_empty() {
        // A statement names at least one item: an agent without devices is named by itself.
        chunks.push(vec![agent_id.to_owned()]);
    }
    chunks
        .into_iter()
        .map(|ids| match teardown {
            true => StatementBody::Teardown { agent_id: agent_id.to_owned(), ids },
            false => StatementBody::Revoke { agent_id: agent_id.to_owned(), ids },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPair;
    use crate::random::SeededRandom;

    struct Log {
        key: KeyPair,
        entries: Vec<AccountStatement>,
        hash: [u8; 32],
    }

    impl Log {
        fn new() -> Self {
            Self { key: KeyPair::generate(&mut SeededRandom::new(b"statements")), entries: Vec::new(), hash: [0; 32] }
        }

        fn push(&mut self, body: StatementBody) {
            let seq = self.entries.len() as u64 + 1;
            let statement = Statement { account_id: "acct_1".into(), seq, prev: self.hash, body };
            let payload = statement.payload();
            self.hash = statement_hash(&payload);
            self.entries.push(AccountStatement {
                seq,
                signature: b64::encode(self.key.sign(&payload)),
                payload: b64::encode(&payload),
            });
        }

        fn check(&self, mark: StatementMark) -> Result<(Vec<Statement>, StatementMark), IntegrityError> {
            let from = usize::try_from(mark.seq.max(1) - 1).unwrap();
            let head = self.entries.len() as u64;
            check_log("acct_1", &self.key.public().sign, mark, head, &self.entries[from..])
        }
    }

    fn revoke(id: &str) -> StatementBody {
        StatementBody::Revoke { agent_id: "ag_1".into(), ids: vec![id.into()] }
    }

    #[test]
    fn a_log_is_read_on_from_the_mark_and_every_change_to_it_is_caught() {
        let mut log = Log::new();
        log.push(StatementBody::Grant { agent_id: "ag_1".into(), services: vec!["openai".into()] });
        log.push(revoke("dev_a"));
        let (all, mark) = log.check(StatementMark::default()).unwrap();
        assert_eq!((all.len(), mark.seq), (2, 2));
        log.push(revoke("dev_b"));
        let (new, after) = log.check(mark).unwrap();
        assert_eq!((new.len(), after.seq), (1, 3));

        let (key, head) = (log.key.public().sign, 3);
        // The server drops the newest statement.
        assert_eq!(
            check_log("acct_1", &key, after, 2, &[]),
            Err(IntegrityError::StatementsShorter { seen: 3, now: 2 })
        );
        // Or changes the one this master read last.
        let mut rewritten = log.entries.clone();
        rewritten[2] = log.entries[1].clone();
        assert_eq!(
            check_log("acct_1", &key, after, head, &rewritten[2..]),
            Err(IntegrityError::StatementsForked { seen: 3 })
        );
        // Or writes a statement of its own.
        let mut forged = log.entries.clone();
        forged[2].signature = forged[1].signature.clone();
        assert!(matches!(
            check_log("acct_1", &key, mark, head, &forged[1..]),
            Err(IntegrityError::StatementForged { seq: 3, .. })
        ));
        // Or names a head it does not deliver.
        assert!(matches!(
            check_log("acct_1", &key, mark, 4, &log.entries[1..]),
            Err(IntegrityError::StatementForged { seq: 4, .. })
        ));
        // A statement of another account is refused even when signed.
        assert!(matches!(
            check_log("acct_2", &key, StatementMark::default(), 3, &log.entries),
            Err(IntegrityError::StatementForged { seq: 1, .. })
        ));
    }

    #[test]
    fn folding_a_log_gives_a_new_slot_what_the_account_decided() {
        let mut log = Log::new();
        log.push(StatementBody::Grant { agent_id: "ag_1".into(), services: vec!["openai".into(), "github".into()] });
        log.push(StatementBody::Ungrant { agent_id: "ag_1".into(), services: vec!["github".into()] });
        log.push(revoke("dev_a"));
        let (statements, mark) = log.check(StatementMark::default()).unwrap();
        let verifier = Verifier::in_memory();
        verifier.fold(&statements, mark);
        assert!(verifier.check_in_scope("ag_1", "dev_b", "openai").is_ok());
        assert!(verifier.check_in_scope("ag_1", "dev_b", "github").is_err());
        assert!(verifier.check_recipient("ag_1", "dev_a").is_err());
        assert_eq!(verifier.statement_mark(), mark);
        log.push(StatementBody::Teardown { agent_id: "ag_1".into(), ids: vec!["dev_b".into()] });
        let (statements, mark) = log.check(mark).unwrap();
        verifier.fold(&statements, mark);
        assert!(verifier.check_recipient("ag_1", "dev_b").is_err());
        // A device the server hid from the teardown gets nothing later: the agent's record is
        // empty, not gone (which would take it as the server lists it).
        assert!(verifier.check_in_scope("ag_1", "dev_hidden", "openai").is_err());
    }

    #[test]
    fn an_agent_granted_nothing_still_gets_a_record() {
        let verifier = Verifier::in_memory();
        assert_eq!(
            grant(&verifier, "ag_new", &[], &[]),
            vec![StatementBody::Grant { agent_id: "ag_new".into(), services: vec![] }]
        );
        let mut log = Log::new();
        log.push(grant(&verifier, "ag_new", &[], &[]).remove(0));
        let (statements, mark) = log.check(StatementMark::default()).unwrap();
        verifier.fold(&statements, mark);
        assert!(verifier.check_in_scope("ag_new", "dev_a", "openai").is_err(), "held to its empty record");
        assert!(grant(&verifier, "ag_new", &[], &[]).is_empty(), "a known agent granted nothing says nothing");
    }

    #[test]
    fn a_restored_log_without_an_ungrant_does_not_grant_again() {
        let mut log = Log::new();
        log.push(StatementBody::Grant { agent_id: "ag_1".into(), services: vec!["openai".into()] });
        let verifier = Verifier::in_memory();
        let (statements, mark) = log.check(StatementMark::default()).unwrap();
        verifier.fold(&statements, mark);
        log.push(StatementBody::Ungrant { agent_id: "ag_1".into(), services: vec!["openai".into()] });
        log.push(revoke("dev_a"));
        let (statements, mark) = log.check(mark).unwrap();
        verifier.fold(&statements, mark);
        // The server is restored to a copy with the first statement only; the user accepts it.
        verifier.restart_statements();
        let restored = Log { entries: log.entries[..1].to_vec(), hash: [0; 32], key: log.key };
        let (statements, mark) = restored.check(StatementMark::default()).unwrap();
        verifier.fold(&statements, mark);
        assert!(verifier.check_recipient("ag_1", "dev_a").is_err(), "the revocation it saw stays");
        assert!(verifier.check_in_scope("ag_1", "dev_b", "openai").is_ok(), "the restored log's grant");
    }
}
