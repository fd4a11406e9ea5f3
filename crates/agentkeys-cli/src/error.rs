//! The CLI's error is the one the daemon shares: see [`agentkeys_core::error`].

pub use agentkeys_core::error::{CommandError as CliError, exit};
