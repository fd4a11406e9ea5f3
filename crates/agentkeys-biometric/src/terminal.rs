//! The terminal fallback: the operation is shown on `/dev/tty`, and the human answers with the
//! master session's passphrase when it has one, else by typing a confirmation of the operation
//! (`revoke build-bot`), not just `y`. Never from a pipe: without a controlling terminal this
//! backend is unavailable.

use std::time::{Duration, Instant};

use secrecy::SecretString;

use crate::backend::{BackendError, PresenceBackend, PresenceMethod};
use crate::op::CriticalOp;
use crate::tty::{Tty, TtyError};

/// Checks a passphrase against the master session (true when it opens it).
pub type PassphraseCheck = Box<dyn Fn(&SecretString) -> Result<bool, String> + Send + Sync>;

/// Passphrase tries before the check is declined.
pub const ATTEMPTS: u32 = 3;

/// Presence by the terminal.
pub struct Terminal {
    passphrase: Option<PassphraseCheck>,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal").field("passphrase", &self.passphrase.is_some()).finish()
    }
}

impl Terminal {
    /// A typed confirmation of the operation.
    pub fn typed() -> Self {
        Self { passphrase: None }
    }

    /// The session passphrase, checked by `check`.
    pub fn passphrase(check: PassphraseCheck) -> Self {
        Self { passphrase: Some(check) }
    }
}

fn tty_error(error: TtyError) -> BackendError {
    match error {
        TtyError::NoTerminal => BackendError::Unavailable("no terminal".into()),
        TtyError::Cancelled => BackendError::Cancelled,
        TtyError::TimedOut => BackendError::TimedOut,
        other => BackendError::Failed(other.to_string()),
    }
}

impl PresenceBackend for Terminal {
    fn method(&self) -> PresenceMethod {
        PresenceMethod::Prompt
    }

    fn verify(&self, op: &CriticalOp, timeout: Duration) -> Result<(), BackendError> {
        // One deadline for the whole check, however many tries it takes.
        let deadline = Instant::now() + timeout;
        let mut tty = Tty::open().map_err(tty_error)?.with_timeout(timeout);
        tty.say(&format!("\r\n  {}\r\n\r\n", op.text)).map_err(tty_error)?;
        match self.passphrase.as_ref().filter(|_| op.allows_passphrase) {
            Some(check) => {
                for attempt in 0..ATTEMPTS {
                    let prompt = if attempt == 0 { "Passphrase to confirm: " } else { "Wrong passphrase, try again: " };
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(BackendError::TimedOut);
                    }
                    tty.set_timeout(left);
                    let answer = tty.read_secret(prompt).map_err(tty_error)?;
                    if check(&answer).map_err(BackendError::Failed)? {
                        return Ok(());
                    }
                }
                Err(BackendError::Declined(format!("wrong passphrase ({ATTEMPTS} attempts)")))
            }
            None => {
                let answer = tty.read_line(&format!("Type \"{}\" to confirm: ", op.confirmation)).map_err(tty_error)?;
                if answer.trim() == op.confirmation {
                    Ok(())
                } else {
                    Err(BackendError::Declined(format!("the typed confirmation was not \"{}\"", op.confirmation)))
                }
            }
        }
    }
}
