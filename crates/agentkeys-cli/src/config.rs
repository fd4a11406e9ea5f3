//! `$AGENTKEYS_HOME/config.toml`: settings below flags and the environment in precedence.
//! Only what the CLI reads is accepted; an unknown key is an error, so a typo is not ignored.

use std::path::PathBuf;

use agentkeys_biometric::Policy;
use serde::{Deserialize, Serialize};

use crate::error::{CliError, exit};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `required`, `preferred` or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub biometric: Option<String>,
}

/// The parsed settings.
#[derive(Debug, Default)]
pub struct Config {
    pub biometric: Option<Policy>,
}

pub fn path() -> Option<PathBuf> {
    agentkeys_core::paths::agentkeys_home().map(|home| home.join("config.toml"))
}

impl ConfigFile {
    pub fn read() -> Result<Self, CliError> {
        let Some(path) = path() else { return Ok(Self::default()) };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(CliError::new(
                    exit::ERROR,
                    format!("cannot read {}: {e}", path.display()),
                    "check its permissions",
                ));
            }
        };
        toml::from_str(&text).map_err(|e| {
            CliError::usage(
                format!("{} is not valid: {}", path.display(), e.message()),
                "fix it (the only key is biometric = \"required\" | \"preferred\" | \"off\"), or remove it",
            )
        })
    }

    pub fn write(&self) -> Result<(), CliError> {
        let path =
            path().ok_or_else(|| CliError::new(exit::ERROR, "cannot find the AgentKeys home", "set AGENTKEYS_HOME"))?;
        let text = toml::to_string(self).expect("the config serializes");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                CliError::new(exit::ERROR, format!("cannot create {}: {e}", dir.display()), "check permissions")
            })?;
        }
        agentkeys_core::session::write_atomically(&path, text.as_bytes()).map_err(CliError::from)
    }
}

impl Config {
    pub fn load() -> Result<Self, CliError> {
        let file = ConfigFile::read()?;
        let biometric = match file.biometric.as_deref() {
            None => None,
            Some(text) => Some(Policy::parse(text).ok_or_else(|| {
                CliError::usage(
                    format!("config.toml: biometric = {text:?} is not a presence policy"),
                    "use required, preferred or off",
                )
            })?),
        };
        Ok(Self { biometric })
    }
}
