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
//!   of being signed as a first-wave leftover), the devices it revoked and the services it granted
//!   each agent: it wraps a key to none outside them, whatever the server lists.
//!
//! Verified signer certificates are cached for the life of the verifier (a daemon's), so a read
//! costs one Ed25519 verification once the signer is known.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use agentkeys_proto::b64;
use agentkeys_proto::grant::{Grant, GrantStatement, IntegrityFinding, IntegrityReport, SignerDevice};
use agentkeys_proto::ids;
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
            IntegrityError::RolledBack { .. }
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
            IntegrityError::RevokedRecipient { .. } => IntegrityReport {
                finding: IntegrityFinding::RevokedRecipient,
                namespace: None,
                service: None,
                version: None,
                seen: None,
            },
            IntegrityError::AuditShorter { seen, now } => IntegrityReport {
                finding: IntegrityFinding::AuditShorter,
                namespace: None,
                service: None,
                version: Some(*now),
                seen: Some(*seen),
            },
            IntegrityError::AuditForked { seen } => IntegrityReport {
                finding: IntegrityFinding::AuditForked,
                namespace: None,
                service: None,
                version: None,
                seen: Some(*seen),
            },
            IntegrityError::AuditHeadMissing => IntegrityReport {
                finding: IntegrityFinding::AuditForked,
                namespace: None,
                service: None,
                version: None,
                seen: None,
            },
            IntegrityError::AccountKey => IntegrityReport {
                finding: IntegrityFinding::AccountKey,
                namespace: None,
                service: None,
                version: None,
                seen: None,
            },
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
    /// Master slots: the device and link ids this master revoked (or tore down). It never wraps
    /// a key to one of them again, whatever the server lists.
    #[serde(default)]
    revoked: std::collections::BTreeSet<String>,
    /// Master slots: agent id → every vault service this master granted it (and did not take
    /// back). A superset of the true scope, so it never refuses a grant this master made; an agent
    /// it has no record of (made before this existed) is taken as the server lists it.
    #[serde(default)]
    scopes: BTreeMap<String, std::collections::BTreeSet<String>>,
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

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes in what another process of the same slot wrote meanwhile (the highest versions, every
    /// revocation and grant). Every change merges first, then changes, then writes, so two commands
    /// at once do not make the slot forget; merging only adds, so a lost race can leave a superset
    /// of grants, never a refusal of something this master did.
    fn merge(&self, seen: &mut Seen) {
        if let Some(on_disk) = self.path.as_deref().and_then(read_seen) {
            seen.all_signed |= on_disk.all_signed;
            for (key, version) in on_disk.versions {
                let known = seen.versions.entry(key).or_insert(version);
                *known = (*known).max(version);
            }
            seen.revoked.extend(on_disk.revoked);
            for (agent, services) in on_disk.scopes {
                seen.scopes.entry(agent).or_default().extend(services);
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
        self.remember(&sealed.namespace, &sealed.service, sealed.version)
    }

    /// Remembers that these devices and link codes were revoked by this master.
    pub fn revoked(&self, ids: impl IntoIterator<Item = String>) {
        let mut seen = self.seen();
        self.merge(&mut seen);
        let before = seen.revoked.len();
        seen.revoked.extend(ids);
        if seen.revoked.len() != before {
            self.write(&seen);
        }
    }

    /// Remembers services granted to an agent. An agent this slot has no record of starts from
    /// `known` (what the server lists for it now: the first view is trusted).
    pub fn granted(&self, agent_id: &str, services: &[String], known: &[String]) {
        let mut seen = self.seen();
        self.merge(&mut seen);
        let scope = seen.scopes.entry(agent_id.to_owned()).or_insert_with(|| known.iter().cloned().collect());
        scope.extend(services.iter().cloned());
        self.write(&seen);
    }

    /// Forgets an agent that was torn down: its private namespace's versions (a new agent of the
    /// same label starts them again at 1) and what it was granted.
    pub fn forget_agent(&self, agent_id: &str) {
        let mut seen = self.seen();
        self.merge(&mut seen);
        let prefix = format!("{}/", agentkeys_proto::agents::agent_namespace(agent_id));
        seen.versions.retain(|key, _| !key.starts_with(&prefix));
        seen.scopes.remove(agent_id);
        self.write(&seen);
    }

    /// Forgets services taken back from an agent.
    pub fn ungranted(&self, agent_id: &str, services: &[String]) {
        let mut seen = self.seen();
        self.merge(&mut seen);
        if let Some(scope) = seen.scopes.get_mut(agent_id) {
            scope.retain(|s| !services.contains(s));
            self.write(&seen);
        }
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
    pub fn wrote(&self, namespace: &str, service: &str, version: u64) {
        let _ = self.remember(namespace, service, version);
    }

    /// Refuses a version older than the one this slot verified; records a newer one.
    fn remember(&self, namespace: &str, service: &str, version: u64) -> Result<(), IntegrityError> {
        let key = format!("{namespace}/{service}");
        let mut seen = self.seen();
        // The steady state (the version it saw last time) touches no file.
        if seen.versions.get(&key) == Some(&version) {
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
        if version != known {
            seen.versions.insert(key, version);
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

    #[test]
    fn two_verifiers_of_one_slot_keep_what_either_learned() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Verifier::open(dir.path()), Verifier::open(dir.path()));
        a.wrote("vault", "openai", 3);
        b.wrote("vault", "github", 1);
        b.revoked(["dev_x".to_owned()]);
        a.granted("ag_1", &["openai".to_owned()], &[]);
        let fresh = Verifier::open(dir.path());
        assert!(fresh.remember("vault", "openai", 2).is_err(), "a's version survived b's write");
        assert!(fresh.remember("vault", "github", 1).is_ok());
        assert!(fresh.check_recipient("ag_1", "dev_x").is_err(), "b's revocation survived a's write");
        assert!(fresh.check_in_scope("ag_1", "dev_y", "github").is_err());
        assert!(fresh.check_in_scope("ag_1", "dev_y", "openai").is_ok());
        assert!(fresh.check_in_scope("ag_unknown", "dev_y", "github").is_ok(), "no record: taken as listed");
    }

    #[test]
    fn an_accepted_rollback_sticks_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        Verifier::open(dir.path()).wrote("vault", "openai", 5);
        let accepting = Verifier::open(dir.path()).accepting_rollback(true);
        assert!(accepting.remember("vault", "openai", 2).is_ok());
        assert_eq!(accepting.take_accepted().len(), 1);
        let after = Verifier::open(dir.path());
        assert!(after.remember("vault", "openai", 2).is_ok(), "version 2 is the new mark");
        assert!(after.remember("vault", "openai", 1).is_err());
    }
}
