//! What a reader checks before it trusts a server's answer (PRODUCT.md §2: the server can refuse
//! service, but can neither forge a credential nor roll a client's view back unseen).
//!
//! * **Grants** — every wrap of a data key carries its writer's signature
//!   ([`agentkeys_proto::grant`]); [`Verifier::check`] verifies the signing master device's
//!   certificate against the account key (the master's own, or the one an agent pinned when it
//!   joined) and the statement over the version, the ciphertext's digest and this reader.
//! * **Memory** — each session slot keeps, in `seen.json` beside its session, the highest version
//!   it verified of each credential; an older one is refused unless the user says the server was
//!   restored from a backup (`--accept-rollback`). A master's slot also remembers that its
//!   account's versions are all signed (a version without a grant is refused from then on instead
//!   of being signed as a first-wave leftover), and what the account's signed statement log
//!   ([`crate::statements`]) says: the devices revoked and the services granted each agent. It
//!   wraps a key to none outside them, whatever the server lists.
//!
//! Verified signer certificates are cached for the life of the verifier (a daemon's), so a read
//! costs one Ed25519 verification once the signer is known.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use agentkeys_proto::b64;
use agentkeys_proto::grant::{Grant, GrantStatement, IntegrityFinding, IntegrityReport, SignerDevice};
use agentkeys_proto::ids;
use agentkeys_proto::statement::{Statement, StatementBody};
use agentkeys_proto::types::SealedCredentialResponse;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::crypto;
use crate::session::{SEEN_FILE, Session, write_atomically};

/// A server answer that fails verification. Each message says what the server returned and
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error("the server returned '{service}' version {version} ({namespace}), which this account never wrote: {why}")]
    Forged { namespace: String, service: String, version: u64, why: &'static str },
    #[error(
        "the server returned '{service}' version {version} ({namespace}) unsigned: it was stored before versions \
         were signed, or the server made it up"
    )]
    Unsigned { namespace: String, service: String, version: u64 },
    #[error(
        "the server returned '{service}' version {version} ({namespace}), older than version {seen} this session \
         already verified: the server's data was rolled back, or a newer version was deleted"
    )]
    RolledBack { namespace: String, service: String, version: u64, seen: u64 },
    #[error("the server presents an account key that is not the one this session pinned when it joined")]
    AccountKey,
    #[error(
        "the server offers device {device_id} of agent {agent_id} as a recipient, but this master revoked it: refusing \
         to wrap a key to it"
    )]
    RevokedRecipient { agent_id: String, device_id: String },
    #[error(
        "the server's audit chain for this account ends at place {now}, but this session already saw place {seen}: \
         its history was cut short or an older database was put back"
    )]
    AuditShorter { seen: u64, now: u64 },
    #[error(
        "the server's audit chain for this account no longer has, at place {seen}, the row this session saw there: \
         its history was rewritten"
    )]
    AuditForked { seen: u64 },
    #[error("the server answered without its audit chain's head, which every signed answer carries")]
    AuditHeadMissing,
    #[error(
        "the server offers device {device_id} of agent {agent_id} as a recipient of '{service}', which this master never \
         granted that agent: refusing to wrap a key to it"
    )]
    OutOfScope { agent_id: String, device_id: String, service: String },
    #[error(
        "the server's statement log for this account ends at number {now}, but this master already read number \
         {seen}: a revocation or grant the account signed was dropped, or an older database was put back"
    )]
    StatementsShorter { seen: u64, now: u64 },
    #[error(
        "the server's statement log for this account no longer has, at number {seen}, the statement this master read \
         there: its history was rewritten"
    )]
    StatementsForked { seen: u64 },
    #[error("the server's statement log has, at number {seq}, a statement the account key never signed: {why}")]
    StatementForged { seq: u64, why: &'static str },
}

impl IntegrityError {
    pub fn hint(&self) -> String {
        match self {
            IntegrityError::Forged { .. } | IntegrityError::AccountKey => {
                "do not use this server's answers: check --server, tell whoever runs it that its data was changed, and \
                 have the account owner store the credential again"
                    .into()
            }
            IntegrityError::Unsigned { service, .. } => format!(
                "the account owner re-signs it by storing it again (`agentkeys store {service}`), or by reading it once \
                 on the master with `agentkeys read {service}` right after upgrading"
            ),
            IntegrityError::OutOfScope { agent_id, service, .. } => format!(
                "the server's database was changed to widen a scope; nothing was stored. If you meant to grant it, run \
                 `agentkeys scope {agent_id} --add {service}`; otherwise check who can write to the server's database"
            ),
            IntegrityError::RevokedRecipient { agent_id, .. } => format!(
                "the server's database was changed to bring a revoked device back; nothing was stored. Revoke the \
                 agent again (`agentkeys revoke {agent_id}`) and check who can write to the server's database"
            ),
            IntegrityError::StatementForged { .. } => {
                "nothing was wrapped: do not trust this server's account state, and check who can write to its database"
                    .into()
            }
            IntegrityError::RolledBack { .. }
            | IntegrityError::StatementsShorter { .. }
            | IntegrityError::StatementsForked { .. }
            | IntegrityError::AuditShorter { .. }
            | IntegrityError::AuditForked { .. }
            | IntegrityError::AuditHeadMissing => {
                "if the server was restored from a backup on purpose, pass --accept-rollback once (it is audited); \
                 otherwise treat the server as compromised"
                    .into()
            }
        }
    }

    /// What the server's audit is told about this refusal.
    pub fn report(&self) -> IntegrityReport {
        let credential = |finding, namespace: &str, service: &str, version, seen| IntegrityReport {
            finding,
            namespace: Some(namespace.to_owned()),
            service: Some(service.to_owned()),
            version: Some(version),
            seen,
        };
        // A finding about no credential: at most the numbers it compared.
        let counted =
            |finding, version, seen| IntegrityReport { finding, namespace: None, service: None, version, seen };
        match self {
            IntegrityError::Forged { namespace, service, version, .. } => {
                credential(IntegrityFinding::Forged, namespace, service, *version, None)
            }
            IntegrityError::Unsigned { namespace, service, version } => {
                credential(IntegrityFinding::Unsigned, namespace, service, *version, None)
            }
            IntegrityError::RolledBack { namespace, service, version, seen } => {
                credential(IntegrityFinding::RolledBack, namespace, service, *version, Some(*seen))
            }
            IntegrityError::OutOfScope { service, .. } => IntegrityReport {
                finding: IntegrityFinding::OutOfScope,
                namespace: Some(agentkeys_proto::types::VAULT_NAMESPACE.to_owned()),
                service: Some(service.clone()),
                version: None,
                seen: None,
            },
            IntegrityError::RevokedRecipient { .. } => counted(IntegrityFinding::RevokedRecipient, None, None),
            IntegrityError::AuditShorter { seen, now } => {
                counted(IntegrityFinding::AuditShorter, Some(*now), Some(*seen))
            }
            IntegrityError::AuditForked { seen } => counted(IntegrityFinding::AuditForked, None, Some(*seen)),
            IntegrityError::AuditHeadMissing => counted(IntegrityFinding::AuditForked, None, None),
            IntegrityError::StatementsShorter { seen, now } => {
                counted(IntegrityFinding::StatementsShorter, Some(*now), Some(*seen))
            }
            IntegrityError::StatementsForked { seen } => counted(IntegrityFinding::StatementsForked, None, Some(*seen)),
            IntegrityError::StatementForged { seq, .. } => counted(IntegrityFinding::StatementForged, Some(*seq), None),
            IntegrityError::AccountKey => counted(IntegrityFinding::AccountKey, None, None),
        }
    }
}

/// SHA-256 of a sealed value as stored: what every grant of its version signs.
pub fn ciphertext_digest(ciphertext: &[u8]) -> [u8; 32] {
    Sha256::digest(ciphertext).into()
}

/// Signs a grant of one version to `recipient` with this master device's key.
pub fn sign_grant(session: &Session, statement: &GrantStatement<'_>) -> Grant {
    Grant {
        recipient: statement.recipient.to_owned(),
        signer: session.device_id.clone(),
        signature: b64::encode(session.device.sign(&statement.payload())),
    }
}

/// The account signing key a session trusts: the master's own; an agent's pinned one; for an
/// agent session saved before keys were pinned, `relayed` if it derives the session's account id.
pub fn account_sign_key(session: &Session, relayed: &str) -> Result<[u8; 32], IntegrityError> {
    if let Some(account) = &session.account {
        return Ok(account.public().sign);
    }
    if let Some(pinned) = session.account_sign_public {
        return Ok(pinned);
    }
    b64::decode_array::<32>(relayed)
        .filter(|key| ids::account_id(key) == session.account_id)
        .ok_or(IntegrityError::AccountKey)
}

/// What a slot remembers between commands.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Seen {
    format: u32,
    /// Master slots: every version of this account is signed (set at `init`, or once the first
    /// wave's versions were signed again), so an unsigned one is refused.
    #[serde(default)]
    all_signed: bool,
    /// `namespace/service` → the highest version verified.
    #[serde(default)]
    versions: BTreeMap<String, u64>,
    /// Master slots: the device and link ids the account revoked (or tore down), from its
    /// statement log. It never wraps a key to one of them again, whatever the server lists.
    #[serde(default)]
    revoked: std::collections::BTreeSet<String>,
    /// Master slots: agent id → every vault service the account's statement log granted it (and
    /// did not take back). Merging slots' writes keeps a superset, so it never refuses a grant
    /// this account made; an agent it has no record of (made before this existed) is taken as the
    /// server lists it the first time it is granted something.
    #[serde(default)]
    scopes: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Master slots: the last statement of the account's log folded into the two above.
    #[serde(default)]
    statements: StatementMark,
    /// `namespace/service` → the newest version verified high-value. Kept when the credential is
    /// removed (the server's removal marker keeps the mark too), so a server that hides the
    /// credential cannot have this slot's next plain `store` clear the mark.
    #[serde(default)]
    high_value: BTreeMap<String, u64>,
    /// `namespace/service` → the newest version verified without the mark (it clears the above
    /// when newer).
    #[serde(default)]
    plain: BTreeMap<String, u64>,
}

/// Where a slot is in its account's statement log: the number and payload hash of the last
/// statement it folded (0 and zeros before the first).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementMark {
    pub seq: u64,
    #[serde(with = "hex_hash")]
    pub hash: [u8; 32],
}

/// A hash as lowercase hex in `seen.json`.
mod hex_hash {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hash: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut hash = [0; 32];
        hex::decode_to_slice(&text, &mut hash).map_err(serde::de::Error::custom)?;
        Ok(hash)
    }
}

const SEEN_FORMAT: u32 = 1;

/// The slot's `seen.json`; `None` when missing or unreadable.
fn read_seen(path: &Path) -> Option<Seen> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<Seen>(&bytes).ok().filter(|seen| seen.format == SEEN_FORMAT)
}

/// Checks what the server returns for one session, and remembers what it verified.
#[derive(Debug)]
pub struct Verifier {
    path: Option<PathBuf>,
    seen: Mutex<Seen>,
    /// Master devices whose certificate verified: device id → signing key.
    signers: Mutex<HashMap<String, [u8; 32]>>,
    accept_rollback: bool,
    /// Older versions taken under `--accept-rollback`, to be reported to the audit.
    accepted: Mutex<Vec<IntegrityReport>>,
}

impl Verifier {
    /// A verifier that remembers in `slot_dir/seen.json`. A missing or unreadable file starts
    /// empty: the slot then trusts what it first sees (docs/security.md, "first view").
    pub fn open(slot_dir: &Path) -> Self {
        let path = slot_dir.join(SEEN_FILE);
        let seen = read_seen(&path).unwrap_or_default();
        Self::new(Some(path), seen)
    }

    /// A verifier that remembers nothing past its life (tests, one-off tools).
    pub fn in_memory() -> Self {
        Self::new(None, Seen::default())
    }

    fn new(path: Option<PathBuf>, seen: Seen) -> Self {
        Self {
            path,
            seen: Mutex::new(seen),
            signers: Mutex::default(),
            accept_rollback: false,
            accepted: Mutex::default(),
        }
    }

    /// Takes an older version than was seen as the server's new truth (a restore from backup).
    pub fn accepting_rollback(mut self, accept: bool) -> Self {
        self.accept_rollback = accept;
        self
    }

    /// Whether the user said the server was restored from a backup (`--accept-rollback`).
    pub fn accepts_rollback(&self) -> bool {
        self.accept_rollback
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes in what another process of the same slot wrote meanwhile (the highest versions, every
    /// revocation, and the grants of whichever read further in the statement log). Every change
    /// merges first, then changes, then writes, so two commands at once do not make the slot
    /// forget. Grants are a function of the log: the side with the later mark folded everything
    /// the other did, ungrants and teardowns included, so its grants win; at the same mark they are
    /// the same but for first views, which are joined.
    fn merge(&self, seen: &mut Seen) {
        if let Some(on_disk) = self.path.as_deref().and_then(read_seen) {
            seen.all_signed |= on_disk.all_signed;
            for (key, version) in on_disk.versions {
                let known = seen.versions.entry(key).or_insert(version);
                *known = (*known).max(version);
            }
            seen.revoked.extend(on_disk.revoked);
            for (marks, on_disk) in [(&mut seen.high_value, on_disk.high_value), (&mut seen.plain, on_disk.plain)] {
                for (key, version) in on_disk {
                    let known = marks.entry(key).or_insert(version);
                    *known = (*known).max(version);
                }
            }
            match on_disk.statements.seq.cmp(&seen.statements.seq) {
                std::cmp::Ordering::Greater => {
                    seen.scopes = on_disk.scopes;
                    seen.statements = on_disk.statements;
                }
                std::cmp::Ordering::Equal => {
                    for (agent, services) in on_disk.scopes {
                        seen.scopes.entry(agent).or_default().extend(services);
                    }
                }
                std::cmp::Ordering::Less => {}
            }
        }
    }

    fn write(&self, seen: &Seen) {
        let Some(path) = &self.path else { return };
        let bytes = serde_json::to_vec(&Seen { format: SEEN_FORMAT, ..seen.clone() }).expect("plain data");
        // A slot without its directory (a session that was never saved) has nothing to remember
        // into. A failed write costs only memory: the next command trusts what it sees first.
        if path.parent().is_some_and(Path::is_dir) {
            let _ = write_atomically(path, &bytes);
        }
    }

    /// Whether this master slot already knows every version of its account is signed.
    pub fn all_signed(&self) -> bool {
        self.seen().all_signed
    }

    /// Forgets what the slot saw (its account was replaced) and records that every version of the
    /// new account is signed.
    pub fn start_fresh(&self) {
        let mut seen = self.seen();
        *seen = Seen { format: SEEN_FORMAT, all_signed: true, ..Seen::default() };
        self.write(&seen);
    }

    /// Records that every version of the account is signed from now on.
    pub fn mark_all_signed(&self) {
        let mut seen = self.seen();
        self.merge(&mut seen);
        if !seen.all_signed {
            seen.all_signed = true;
            self.write(&seen);
        }
    }

    /// Checks a sealed answer: signed by a master device of this account for this reader, over
    /// exactly this ciphertext, and not older than what this slot verified before. Records the
    /// version when it is newer.
    pub fn check(
        &self,
        session: &Session,
        sealed: &SealedCredentialResponse,
        ciphertext: &[u8],
    ) -> Result<(), IntegrityError> {
        let forged = |why| IntegrityError::Forged {
            namespace: sealed.namespace.clone(),
            service: sealed.service.clone(),
            version: sealed.version,
            why,
        };
        let Some(grant) = &sealed.grant else {
            return Err(IntegrityError::Unsigned {
                namespace: sealed.namespace.clone(),
                service: sealed.service.clone(),
                version: sealed.version,
            });
        };
        let Some(signer) = &sealed.signer else {
            return Err(forged("its signer is not a master device of this account"));
        };
        let account_key = account_sign_key(session, &sealed.account_sign_public)?;
        let signer_key = self
            .signer_key(session, &account_key, signer)
            .ok_or_else(|| forged("its signer is not a master device this account certified"))?;
        if grant.signer != signer.device_id {
            return Err(forged("its grant names another signer"));
        }
        let readers: [Option<&str>; 2] = match &session.account {
            Some(_) => [Some(session.account_id.as_str()), None],
            None => [Some(session.device_id.as_str()), session.link_id.as_deref()],
        };
        if !readers.contains(&Some(grant.recipient.as_str())) {
            return Err(forged("its key was granted to someone else"));
        }
        let digest = ciphertext_digest(ciphertext);
        let statement = GrantStatement {
            account_id: &session.account_id,
            namespace: &sealed.namespace,
            service: &sealed.service,
            version: sealed.version,
            ciphertext_sha256: &digest,
            flags: sealed.flags,
            recipient: &grant.recipient,
        };
        let signature = b64::decode_array::<64>(&grant.signature).ok_or_else(|| forged("its grant is malformed"))?;
        crypto::verify(&signer_key, &statement.payload(), &signature)
            .map_err(|_| forged("its signature does not verify"))?;
        let high_value = sealed.flags & agentkeys_proto::grant::FLAG_HIGH_VALUE != 0;
        self.remember(&sealed.namespace, &sealed.service, sealed.version, high_value)
    }

    /// Whether the newest version of the credential this slot verified or wrote was high-value
    /// (also after it was removed).
    pub fn remembered_high_value(&self, namespace: &str, service: &str) -> bool {
        let key = format!("{namespace}/{service}");
        let mut seen = self.seen();
        self.merge(&mut seen);
        seen.high_value.get(&key).is_some_and(|marked| seen.plain.get(&key).is_none_or(|plain| marked > plain))
    }

    /// The last statement of the account's log this slot folded.
    pub fn statement_mark(&self) -> StatementMark {
        let mut seen = self.seen();
        self.merge(&mut seen);
        seen.statements
    }

    /// Folds checked statements of the account's log, in order, into what this master allows,
    /// and moves the mark to `mark` (the last of them).
    pub fn fold(&self, statements: &[Statement], mark: StatementMark) {
        let mut seen = self.seen();
        self.merge(&mut seen);
        let folded = seen.statements.seq;
        for statement in statements.iter().filter(|s| s.seq > folded) {
            match &statement.body {
                StatementBody::Grant { agent_id, services } => {
                    seen.scopes.entry(agent_id.clone()).or_default().extend(services.iter().cloned());
                }
                StatementBody::Ungrant { agent_id, services } => {
                    if let Some(scope) = seen.scopes.get_mut(agent_id) {
                        scope.retain(|s| !services.contains(s));
                    }
                }
                StatementBody::Revoke { ids, .. } => seen.revoked.extend(ids.iter().cloned()),
                StatementBody::Teardown { agent_id, ids } => {
                    seen.revoked.extend(ids.iter().cloned());
                    let prefix = format!("{}/", agentkeys_proto::agents::agent_namespace(agent_id));
                    seen.versions.retain(|key, _| !key.starts_with(&prefix));
                    // An empty record, not none: a device the server hid from the teardown and
                    // shows again later is then out of scope for everything, not taken as listed.
                    seen.scopes.insert(agent_id.clone(), std::collections::BTreeSet::new());
                }
            }
        }
        if mark.seq >= seen.statements.seq {
            seen.statements = mark;
        }
        self.write(&seen);
    }

    /// Forgets where this slot was in the statement log (the user accepted a restored server):
    /// the next read folds the whole log again. Revocations the slot saw stay; grants are the
    /// restored log's (an ungrant it lost must not come back as a grant).
    pub fn restart_statements(&self) {
        let mut seen = self.seen();
        self.merge(&mut seen);
        seen.statements = StatementMark::default();
        seen.scopes.clear();
        self.write(&seen);
    }

    /// Of `services`, those this master has not yet allowed `agent_id`; for an agent it has no
    /// record of, also `known` (what the server lists for it now: the first view is trusted).
    pub fn not_yet_granted(&self, agent_id: &str, services: &[String], known: &[String]) -> Vec<String> {
        let mut seen = self.seen();
        self.merge(&mut seen);
        let mut wanted: std::collections::BTreeSet<&String> = services.iter().collect();
        match seen.scopes.get(agent_id) {
            Some(scope) => wanted.retain(|s| !scope.contains(*s)),
            None => wanted.extend(known),
        }
        wanted.into_iter().cloned().collect()
    }

    /// Whether this slot has a record of what `agent_id` may receive.
    pub fn knows_agent(&self, agent_id: &str) -> bool {
        self.seen().scopes.contains_key(agent_id)
    }

    /// Of `services`, those this master allows `agent_id` now.
    pub fn granted_of(&self, agent_id: &str, services: &[String]) -> Vec<String> {
        let seen = self.seen();
        let scope = seen.scopes.get(agent_id);
        services.iter().filter(|s| scope.is_some_and(|scope| scope.contains(*s))).cloned().collect()
    }

    /// Whether this master revoked every one of `ids` already.
    pub fn all_revoked(&self, ids: &[String]) -> bool {
        let seen = self.seen();
        ids.iter().all(|id| seen.revoked.contains(id))
    }

    /// Refuses a vault recipient whose agent this master never granted `service`.
    pub fn check_in_scope(&self, agent_id: &str, device_id: &str, service: &str) -> Result<(), IntegrityError> {
        match self.seen().scopes.get(agent_id) {
            Some(scope) if !scope.contains(service) => Err(IntegrityError::OutOfScope {
                agent_id: agent_id.to_owned(),
                device_id: device_id.to_owned(),
                service: service.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses a recipient this master revoked, whatever the server says about it now.
    pub fn check_recipient(&self, agent_id: &str, device_id: &str) -> Result<(), IntegrityError> {
        if self.seen().revoked.contains(device_id) {
            return Err(IntegrityError::RevokedRecipient {
                agent_id: agent_id.to_owned(),
                device_id: device_id.to_owned(),
            });
        }
        Ok(())
    }

    /// The rollbacks taken under `--accept-rollback` since the last call, for the audit.
    pub fn take_accepted(&self) -> Vec<IntegrityReport> {
        std::mem::take(&mut *self.accepted.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Records a version this session wrote itself.
    pub fn wrote(&self, namespace: &str, service: &str, version: u64, high_value: bool) {
        let _ = self.remember(namespace, service, version, high_value);
    }

    /// Refuses a version older than the one this slot verified; records a newer one, and its mark.
    fn remember(&self, namespace: &str, service: &str, version: u64, high_value: bool) -> Result<(), IntegrityError> {
        let key = format!("{namespace}/{service}");
        let mut seen = self.seen();
        let marks = |seen: &Seen| match high_value {
            true => seen.high_value.get(&key) == Some(&version),
            false => seen.plain.get(&key) == Some(&version) || !seen.high_value.contains_key(&key),
        };
        // The steady state (the version it saw last time) touches no file.
        if seen.versions.get(&key) == Some(&version) && marks(&seen) {
            return Ok(());
        }
        self.merge(&mut seen);
        let known = seen.versions.get(&key).copied().unwrap_or(0);
        if version < known && !self.accept_rollback {
            return Err(IntegrityError::RolledBack {
                namespace: namespace.to_owned(),
                service: service.to_owned(),
                version,
                seen: known,
            });
        }
        if version < known {
            self.accepted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(IntegrityReport {
                finding: IntegrityFinding::RollbackAccepted,
                namespace: Some(namespace.to_owned()),
                service: Some(service.to_owned()),
                version: Some(version),
                seen: Some(known),
            });
        }
        let marked = marks(&seen);
        if version != known || !marked {
            // An accepted rollback moves the version back: the mark of the version taken goes with it.
            seen.versions.insert(key.clone(), version);
            let marks: &mut Seen = &mut seen;
            let (into, other) = match high_value {
                true => (&mut marks.high_value, &mut marks.plain),
                false => (&mut marks.plain, &mut marks.high_value),
            };
            let newest = into.entry(key.clone()).or_insert(version);
            *newest = (*newest).max(version);
            if other.get(&key).is_some_and(|v| *v > version) {
                other.insert(key, version.saturating_sub(1));
            }
            self.write(&seen);
        }
        Ok(())
    }

    /// The signing key of a master device whose certificate chains to `account_key`.
    fn signer_key(&self, session: &Session, account_key: &[u8; 32], signer: &SignerDevice) -> Option<[u8; 32]> {
        let sign = b64::decode_array::<32>(&signer.sign_public)?;
        let mut signers = self.signers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if signers.get(&signer.device_id) == Some(&sign) {
            return Some(sign);
        }
        let kx = b64::decode_array::<32>(&signer.kx_public)?;
        let certificate = b64::decode_array::<64>(&signer.certificate)?;
        let payload = ids::device_certificate_payload(&session.account_id, &sign, &kx, &signer.label);
        let valid = ids::device_id(&sign) == signer.device_id
            && ids::account_id(account_key) == session.account_id
            && crypto::verify(account_key, &payload, &certificate).is_ok();
        if !valid {
            return None;
        }
        signers.insert(signer.device_id.clone(), sign);
        Some(sign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The high-value mark a slot saw outlives the credential's removal (so a plain store after a
    /// hidden or removed credential keeps it), is cleared only by a newer unmarked version, and
    /// is shared by every verifier of the slot.
    #[test]
    fn a_slot_remembers_the_newest_high_value_mark() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Verifier::open(dir.path()), Verifier::open(dir.path()));
        assert!(!a.remembered_high_value("vault", "prod"), "nothing seen: no mark");
        a.wrote("vault", "prod", 1, false);
        assert!(!b.remembered_high_value("vault", "prod"));
        a.wrote("vault", "prod", 2, true);
        assert!(b.remembered_high_value("vault", "prod"), "the other verifier of the slot sees it");
        assert!(Verifier::open(dir.path()).remembered_high_value("vault", "prod"), "and so does a later one");
        b.wrote("vault", "prod", 3, false);
        assert!(!a.remembered_high_value("vault", "prod"), "a newer unmarked version clears it");
        a.wrote("vault", "prod", 4, true);
        assert!(a.remembered_high_value("vault", "prod"));
        assert!(!a.remembered_high_value("agent:ag_1", "prod"), "per namespace");
    }

    #[test]
    fn two_verifiers_of_one_slot_keep_what_either_learned() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Verifier::open(dir.path()), Verifier::open(dir.path()));
        a.wrote("vault", "openai", 3, false);
        b.wrote("vault", "github", 1, false);
        let statement = |seq, body| Statement { account_id: "acct_1".into(), seq, prev: [0; 32], body };
        let revoke = statement(1, StatementBody::Revoke { agent_id: "ag_1".into(), ids: vec!["dev_x".into()] });
        b.fold(&[revoke], StatementMark { seq: 1, hash: [1; 32] });
        let grant = statement(2, StatementBody::Grant { agent_id: "ag_1".into(), services: vec!["openai".into()] });
        a.fold(&[grant], StatementMark { seq: 2, hash: [2; 32] });
        let fresh = Verifier::open(dir.path());
        assert!(fresh.remember("vault", "openai", 2, false).is_err(), "a's version survived b's write");
        assert!(fresh.remember("vault", "github", 1, false).is_ok());
        assert!(fresh.check_recipient("ag_1", "dev_x").is_err(), "b's revocation survived a's write");
        assert!(fresh.check_in_scope("ag_1", "dev_y", "github").is_err());
        assert!(fresh.check_in_scope("ag_1", "dev_y", "openai").is_ok());
        assert!(fresh.check_in_scope("ag_unknown", "dev_y", "github").is_ok(), "no record: taken as listed");
    }

    #[test]
    fn the_slot_that_read_further_in_the_log_decides_the_grants() {
        let dir = tempfile::tempdir().unwrap();
        let statement = |seq, body| Statement { account_id: "acct_1".into(), seq, prev: [0; 32], body };
        let grant = statement(1, StatementBody::Grant { agent_id: "ag_1".into(), services: vec!["x".into()] });
        Verifier::open(dir.path()).fold(&[grant], StatementMark { seq: 1, hash: [1; 32] });
        let (behind, ahead) = (Verifier::open(dir.path()), Verifier::open(dir.path()));
        let ungrant = statement(2, StatementBody::Ungrant { agent_id: "ag_1".into(), services: vec!["x".into()] });
        ahead.fold(&[ungrant], StatementMark { seq: 2, hash: [2; 32] });
        // `behind` still holds the grant in memory; merging the later mark takes the ungrant.
        assert_eq!(behind.statement_mark().seq, 2);
        assert!(behind.check_in_scope("ag_1", "dev_y", "x").is_err(), "the ungrant another process folded holds");
    }

    #[test]
    fn an_accepted_rollback_sticks_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        Verifier::open(dir.path()).wrote("vault", "openai", 5, false);
        let accepting = Verifier::open(dir.path()).accepting_rollback(true);
        assert!(accepting.remember("vault", "openai", 2, false).is_ok());
        assert_eq!(accepting.take_accepted().len(), 1);
        let after = Verifier::open(dir.path());
        assert!(after.remember("vault", "openai", 2, false).is_ok(), "version 2 is the new mark");
        assert!(after.remember("vault", "openai", 1, false).is_err());
    }
}
