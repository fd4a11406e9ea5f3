//! A secret on the wire (a session token the server returns once): serialized as a plain string,
//! because that is what the wire carries, but never printed by `Debug`, never `Clone`, and zeroized
//! when dropped. Every secret field of a wire type uses it, and a test here keeps it so.

use zeroize::Zeroizing;

/// A secret string of a wire type.
pub struct WireSecret(Zeroizing<String>);

impl WireSecret {
    pub fn new(secret: String) -> Self {
        Self(Zeroizing::new(secret))
    }

    /// The secret itself, at the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WireSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireSecret(..)")
    }
}

impl serde::Serialize for WireSecret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for WireSecret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wire_secret_round_trips_and_never_prints() {
        let secret: WireSecret = serde_json::from_str("\"akt_secret\"").unwrap();
        assert_eq!(secret.expose(), "akt_secret");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"akt_secret\"");
        assert_eq!(format!("{secret:?}"), "WireSecret(..)");
    }

    // A lint the compiler cannot give: no wire type holds a secret in a plain `String` or
    // `Vec<u8>` (it would outlive its use unzeroized, and print in `Debug`). A field whose name
    // says it is a secret must use `WireSecret`; names that only look like one are listed with why.
    const SECRET_WORDS: [&str; 7] = ["token", "secret", "password", "passphrase", "plaintext", "otp", "private"];

    /// Names that contain a secret word but hold no secret.
    const NOT_SECRETS: [(&str, &str); 1] = [("token_hash", "the SHA-256 of a token: what the server keeps instead")];

    const PLAIN_TYPES: [&str; 4] = ["String", "Option<String>", "Vec<u8>", "Option<Vec<u8>>"];

    #[test]
    fn no_wire_type_keeps_a_secret_in_a_plain_string() {
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut offenders = Vec::new();
        let mut fields_seen = 0;
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (number, line) in text.lines().enumerate() {
                let Some(field) = line.trim().strip_prefix("pub ") else { continue };
                let Some((name, ty)) = field.split_once(": ") else { continue };
                if name.contains(' ') || name.contains('(') {
                    continue;
                }
                fields_seen += 1;
                let ty = ty.trim_end_matches(',').trim();
                let secret_named = SECRET_WORDS.iter().any(|word| name.contains(word));
                let allowed = NOT_SECRETS.iter().any(|(allowed, _why)| *allowed == name);
                if secret_named && !allowed && PLAIN_TYPES.contains(&ty) {
                    offenders.push(format!("{}:{}: {name}: {ty}", path.display(), number + 1));
                }
            }
        }
        assert!(fields_seen > 50, "the scan found the wire types' fields ({fields_seen})");
        assert!(offenders.is_empty(), "secrets in plain types (use WireSecret): {offenders:#?}");
    }
}
