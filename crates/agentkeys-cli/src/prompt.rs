//! Questions to the human at the master. They are asked on the terminal only: with stdin not a
//! terminal a question is refused (exit 2) unless `--yes` answered it, so a script never hangs
//! and never confirms by accident. Presence gating (biometrics) builds on this later.

use std::io::BufRead as _;

use crate::context::Context;
use crate::error::CliError;
use crate::output::stdin_is_terminal;

/// Asks `question [y/N]`; `--yes` answers it. `what` names the operation in the errors.
pub fn confirm(ctx: &Context, what: &str, question: &str) -> Result<(), CliError> {
    if ctx.global.yes {
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
        Err(CliError::new(6, format!("declined: {what} did not happen, nothing was changed"), "answer y to go ahead"))
    }
}
