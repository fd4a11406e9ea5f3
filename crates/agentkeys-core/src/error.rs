//! The error both command-line programs end with: what went wrong, how to fix it, and the exit
//! code (PRODUCT.md §4). Every failure from this crate maps here; messages never contain a
//! secret.

use agentkeys_proto::ErrorCode;

use crate::ClientError;
use crate::account::CreateAccountError;
use crate::child::ChildError;
use crate::session::SessionError;
use crate::vault::VaultError;

pub use crate::exit;

#[derive(Debug)]
pub struct CommandError {
    pub code: Option<ErrorCode>,
    pub message: String,
    pub hint: Option<String>,
    pub exit_code: u8,
}

impl CommandError {
    pub fn new(exit_code: u8, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { code: None, message: message.into(), hint: Some(hint.into()), exit_code }
    }

    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message, hint)
    }
}

impl From<ClientError> for CommandError {
    fn from(error: ClientError) -> Self {
        Self {
            code: error.code(),
            hint: Some(error.hint()),
            exit_code: error.exit_code(),
            message: match &error {
                ClientError::Api { detail, .. } => detail.message.clone(),
                other => other.to_string(),
            },
        }
    }
}

impl From<ChildError> for CommandError {
    fn from(error: ChildError) -> Self {
        Self { code: None, message: error.message, hint: Some(error.hint), exit_code: error.exit_code }
    }
}

impl From<VaultError> for CommandError {
    fn from(error: VaultError) -> Self {
        match error {
            VaultError::Client(client) => client.into(),
            other => {
                Self { code: None, hint: Some(other.hint()), exit_code: other.exit_code(), message: other.to_string() }
            }
        }
    }
}

impl From<SessionError> for CommandError {
    fn from(error: SessionError) -> Self {
        let exit_code = match error {
            SessionError::InvalidId(_) | SessionError::BadMode(_) => exit::USAGE,
            SessionError::Io { .. }
            | SessionError::NoHome
            | SessionError::Keychain(_)
            | SessionError::KeychainAway { .. }
            | SessionError::PassphraseInput(_) => exit::ERROR,
            SessionError::LoosePermissions { .. }
            | SessionError::Corrupt { .. }
            | SessionError::PassphraseNeeded { .. } => exit::SESSION,
            // Like presence declined: the human did not show they hold the session.
            SessionError::WrongPassphrase { .. } | SessionError::PassphraseCancelled => exit::DECLINED,
        };
        // The session errors carry their fix in the message.
        Self { code: None, message: error.to_string(), hint: None, exit_code }
    }
}

impl From<CreateAccountError> for CommandError {
    fn from(error: CreateAccountError) -> Self {
        match error {
            CreateAccountError::Client(client) => client.into(),
            other => {
                Self::new(exit::ERROR, other.to_string(), "check that --server points at a genuine agentkeys-server")
            }
        }
    }
}

impl std::fmt::Display for CommandError {
    /// `CODE: message. Fix: hint`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(code) = self.code {
            write!(f, "{code}: ")?;
        }
        write!(f, "{}", self.message.trim_end_matches('.'))?;
        if let Some(hint) = &self.hint {
            write!(f, ". Fix: {hint}")?;
        }
        Ok(())
    }
}
