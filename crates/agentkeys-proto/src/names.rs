//! The one rule for service names, checked by the CLI before it sends and by the server before it
//! stores, so a name that would be awkward in a shell, a path or a log line never enters a vault.

/// Allowed service names, as a regular expression for messages and docs.
pub const SERVICE_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

/// Longest service name, in bytes.
pub const SERVICE_NAME_MAX: usize = 64;

/// Agent ids (`ag_…`), as a regular expression: the service-name rule with the `ag_` prefix.
pub const AGENT_ID_PATTERN: &str = "^ag_[A-Za-z0-9._-]{0,61}$";

/// Schemas of names for the OpenAPI document (the wire carries a plain string checked by
/// [`validate_service_name`]): `#[schema(value_type = names::ServiceName)]` on the field.
#[cfg(feature = "openapi")]
macro_rules! name_schemas {
    ($($name:ident = $pattern:expr, $what:literal;)*) => {$(
        #[doc = concat!("The OpenAPI schema of ", $what, ".")]
        #[derive(Debug)]
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some($pattern))
                    .description(Some($what))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    )*};
}

#[cfg(feature = "openapi")]
name_schemas! {
    ServiceName = SERVICE_NAME_PATTERN, "a service name";
    AgentName = SERVICE_NAME_PATTERN, "an agent's label (the service-name rule), or its id";
    AgentId = AGENT_ID_PATTERN, "an agent id";
    KeyName = SERVICE_NAME_PATTERN, "a presence key's name (the service-name rule)";
}

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

/// Whether a person reading `c` could be misled by it: a control character (C0, C1), a Unicode
/// format character (category Cf: bidi overrides and isolates like U+202E, zero-width characters
/// like U+200B and U+FEFF, tag characters) or a line or paragraph separator. Such characters make
/// a label or a reason show something other than what it is.
pub fn is_hidden_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Why a text a human reads was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidText {
    Empty,
    TooLong { max_chars: usize },
    Hidden { position: usize, code_point: u32 },
}

impl std::fmt::Display for InvalidText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidText::Empty => f.write_str("it is empty"),
            InvalidText::TooLong { max_chars } => write!(f, "it is longer than {max_chars} characters"),
            InvalidText::Hidden { position, code_point } => write!(
                f,
                "character {position} is U+{code_point:04X}, a control or invisible formatting character \
                 (bidi override, zero-width, separator), which could make it read as something else"
            ),
        }
    }
}

impl std::error::Error for InvalidText {}

/// Text a human reads when deciding — a device label, an agent's reason — is 1 to `max_chars`
/// characters, not only whitespace, with no [`is_hidden_char`].
pub fn validate_display_text(text: &str, max_chars: usize) -> Result<(), InvalidText> {
    if text.trim().is_empty() {
        return Err(InvalidText::Empty);
    }
    if text.chars().count() > max_chars {
        return Err(InvalidText::TooLong { max_chars });
    }
    match text.chars().enumerate().find(|(_, c)| is_hidden_char(*c)) {
        Some((position, c)) => Err(InvalidText::Hidden { position: position + 1, code_point: u32::from(c) }),
        None => Ok(()),
    }
}

/// `text` with every [`is_hidden_char`] shown as `\u{…}`, for printing text stored before the
/// rule (or by another server) safely on a terminal.
pub fn escape_hidden(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_hidden_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| if is_hidden_char(c) { format!("\\u{{{:04x}}}", u32::from(c)) } else { c.to_string() })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::{escape_hidden, validate_display_text, validate_service_name};

    #[test]
    fn display_text_refuses_bidi_zero_width_and_controls() {
        for ok in ["laptop", "Alice’s MacBook", "needs openai for the nightly build 🚀", "ü ñ 中文"] {
            assert_eq!(validate_display_text(ok, 64), Ok(()), "{ok}");
        }
        for bad in [
            "evil\u{202e}txt.exe",
            "a\u{200b}b",
            "\u{feff}bom",
            "tab\tin",
            "line\u{2028}sep",
            "x\u{e0041}tag",
            "\u{2066}iso",
        ] {
            assert!(validate_display_text(bad, 64).is_err(), "{bad:?}");
        }
        assert!(validate_display_text("   ", 64).is_err());
        assert!(validate_display_text(&"é".repeat(65), 64).is_err());
        assert_eq!(validate_display_text(&"é".repeat(64), 64), Ok(()));
        assert_eq!(escape_hidden("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(escape_hidden("plain"), "plain");
    }

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
