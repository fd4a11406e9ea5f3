//! All of the CLI's output goes through here: results to stdout (a table, a line, or JSON with
//! `--json`), notes and warnings to stderr (notes silenced by `-q`), errors in one format.

use std::io::{IsTerminal as _, Write as _};

use crate::error::CliError;

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

impl Output {
    /// Writes raw bytes to stdout (used by `read` for the value itself).
    pub fn bytes(&self, bytes: &[u8]) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(bytes).and_then(|()| stdout.flush()).map_err(|e| {
            CliError::new(
                crate::error::exit::ERROR,
                format!("cannot write to stdout: {e}"),
                "check where stdout is redirected",
            )
        })
    }

    /// A result line for people (not printed with `--json`).
    pub fn line(&self, text: impl AsRef<str>) -> Result<(), CliError> {
        if self.json {
            return Ok(());
        }
        self.bytes(format!("{}\n", text.as_ref()).as_bytes())
    }

    /// A JSON result (printed only with `--json`).
    pub fn json(&self, value: &impl serde::Serialize) -> Result<(), CliError> {
        if !self.json {
            return Ok(());
        }
        let mut text = serde_json::to_string_pretty(value).expect("outputs serialize");
        text.push('\n');
        self.bytes(text.as_bytes())
    }

    /// A confirmation or note on stderr; silenced by `-q` and `--json`.
    pub fn note(&self, text: impl AsRef<str>) {
        if !self.quiet && !self.json {
            eprintln!("{}", text.as_ref());
        }
    }

    /// A warning on stderr; always shown.
    pub fn warn(&self, text: impl AsRef<str>) {
        eprintln!("Warning: {}", text.as_ref());
    }

    /// Prints an error in the contract's format and returns its exit code.
    pub fn error(&self, error: &CliError) -> u8 {
        if self.json {
            let body = serde_json::json!({ "error": {
                "code": error.code.map(|c| c.as_str()),
                "message": error.message,
                "hint": error.hint,
                "exit_code": error.exit_code,
            }});
            eprintln!("{body}");
        } else {
            eprintln!("Error: {error}");
        }
        error.exit_code
    }
}

/// Renders rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
        let line: Vec<String> = cells.zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push_row(&mut header.iter().copied());
    for row in rows {
        push_row(&mut row.iter().map(String::as_str));
    }
    out.pop();
    out
}

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp to the second.
pub fn timestamp(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
