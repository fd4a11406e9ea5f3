//! The one rule for service names, checked by the CLI before it sends and by the server before it
//! stores, so a name that would be awkward in a shell, a path or a log line never enters a vault.

/// Allowed service names, as a regular expression for messages and docs.
pub const SERVICE_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

/// Longest service name, in bytes.
pub const SERVICE_NAME_MAX: usize = 64;

/// Why a service name was refused; `Display` names the pattern so the user can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidServiceName {
    reason: &'static str,
}

impl std::fmt::Display for InvalidServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; service names must match {SERVICE_NAME_PATTERN}", self.reason)
    }
}

impl std::error::Error for InvalidServiceName {}

/// Checks a service name against [`SERVICE_NAME_PATTERN`].
pub fn validate_service_name(name: &str) -> Result<(), InvalidServiceName> {
    let refuse = |reason| Err(InvalidServiceName { reason });
    let Some(first) = name.bytes().next() else {
        return refuse("the service name is empty");
    };
    if name.len() > SERVICE_NAME_MAX {
        return refuse("the service name is longer than 64 characters");
    }
    if !first.is_ascii_alphanumeric() {
        return refuse("the service name must start with a letter or digit");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return refuse("the service name contains a character other than letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_service_name;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["openai", "github.com", "aws_prod-2", "A", &"x".repeat(64)] {
            assert!(validate_service_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn refuses_spaces_slashes_controls_and_traversal() {
        for name in ["", "open ai", "a/b", "..", ".hidden", "-x", "tab\there", "nul\0", "é", &"x".repeat(65)] {
            let err = validate_service_name(name).unwrap_err();
            assert!(err.to_string().contains("must match"), "{name}: {err}");
        }
    }
}
