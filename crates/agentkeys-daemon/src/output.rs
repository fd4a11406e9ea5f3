//! Results on stdout, as JSON or text; logs and errors go to stderr.

use agentkeys_core::error::CommandError;

/// Prints a JSON result on stdout.
#[allow(clippy::print_stdout, reason = "results go to stdout")]
pub fn print_json(value: &serde_json::Value) -> Result<(), CommandError> {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON serializes"));
    Ok(())
}

/// Prints a text result on stdout as it is.
#[allow(clippy::print_stdout, reason = "results go to stdout")]
pub fn print_text(text: &str) {
    print!("{text}");
}
