//! Questions to the human at the master. y/N questions read stdin and are asked only when it is
//! a terminal: otherwise they are refused (exit 2) unless `--yes` answered them, so a script never
//! hangs and never confirms by accident. Passphrases are read from `/dev/tty` only (never stdin),
//! like the presence checks of `crate::presence`.

use std::io::BufRead as _;

use agentkeys_biometric::tty::{Tty, TtyError};
use agentkeys_core::session::{PassphrasePrompt, SessionError, SessionId};
use secrecy::{ExposeSecret as _, SecretString};

use crate::error::{CliError, exit};
use crate::output::stdin_is_terminal;

/// Asks `question [y/N]`; `yes` (`--yes`) answers it. `what` names the operation in the errors.
pub fn confirm(yes: bool, what: &str, question: &str) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !stdin_is_terminal() {
        return Err(CliError::usage(
            format!("{what} needs confirmation, but stdin is not a terminal"),
            "run it in a terminal, or add --yes",
        ));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::new(
            exit::DECLINED,
            format!("declined: {what} did not happen, nothing was changed"),
            "answer y to go ahead",
        ))
    }
}

fn passphrase_error(error: TtyError, id: &SessionId) -> SessionError {
    match error {
        TtyError::NoTerminal => SessionError::PassphraseNeeded { id: id.to_string() },
        TtyError::Cancelled => SessionError::PassphraseCancelled,
        other => SessionError::PassphraseInput(other.to_string()),
    }
}

/// Asks for a passphrase-sealed session's passphrase on the controlling terminal.
#[derive(Debug)]
pub struct TerminalPassphrase;

impl PassphrasePrompt for TerminalPassphrase {
    fn ask(&self, id: &SessionId, again: bool) -> Result<SecretString, SessionError> {
        let mut tty = Tty::open().map_err(|e| passphrase_error(e, id))?;
        let prompt = if again {
            "Wrong passphrase, try again: ".to_owned()
        } else {
            format!("Passphrase for the AgentKeys '{id}' session: ")
        };
        tty.read_secret(&prompt).map_err(|e| passphrase_error(e, id))
    }
}

/// The shortest passphrase `init --passphrase` accepts.
pub const PASSPHRASE_MIN_CHARS: usize = 8;

/// Asks for a new passphrase twice on the terminal (`init --passphrase`).
pub fn new_passphrase(id: &SessionId) -> Result<SecretString, CliError> {
    let mut tty = Tty::open().map_err(|_| {
        CliError::usage("--passphrase needs a terminal to ask on", "run `agentkeys init --passphrase` in a terminal")
    })?;
    for _ in 0..3 {
        let first = tty
            .read_secret(&format!("New passphrase for the '{id}' session: "))
            .map_err(|e| passphrase_error(e, id))?;
        if first.expose_secret().chars().count() < PASSPHRASE_MIN_CHARS {
            tty.say(&format!("Too short: use at least {PASSPHRASE_MIN_CHARS} characters.\r\n"))
                .map_err(|e| passphrase_error(e, id))?;
            continue;
        }
        let second = tty.read_secret("Repeat it: ").map_err(|e| passphrase_error(e, id))?;
        if first.expose_secret() == second.expose_secret() {
            return Ok(first);
        }
        tty.say("The two differ; once more.\r\n").map_err(|e| passphrase_error(e, id))?;
    }
    Err(CliError::new(
        exit::DECLINED,
        "no passphrase was set: three tries did not give two matching ones of the minimum length",
        format!("run `agentkeys init --passphrase` again; use at least {PASSPHRASE_MIN_CHARS} characters"),
    ))
}
