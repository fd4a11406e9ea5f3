//! Where AgentKeys keeps its files: `$AGENTKEYS_HOME`, else `~/.agentkeys` (PRODUCT.md §4).

use std::path::PathBuf;

/// Environment variable that overrides the home directory.
pub const HOME_ENV: &str = "AGENTKEYS_HOME";

/// The AgentKeys home directory; `None` when neither `AGENTKEYS_HOME` nor `HOME` is set.
pub fn agentkeys_home() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|home| PathBuf::from(home).join(".agentkeys"))
}
