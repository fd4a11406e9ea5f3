//! Binary fields travel as unpadded base64url strings; these two helpers are the only encoder and
//! decoder either side uses, so the alphabet can never drift between them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url; `None` for anything else (padding, `+`, `/`, whitespace).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Decodes a field that must be exactly `N` bytes long.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode(text)?.try_into().ok()
}

/// The pattern of exactly `n` bytes in unpadded base64url: four characters per three bytes, and
/// a last character that leaves the bits past the end zero (which [`decode`] requires).
#[cfg(feature = "openapi")]
pub fn exact_pattern(n: usize) -> String {
    let whole = n / 3 * 4;
    match n % 3 {
        0 => format!("^[A-Za-z0-9_-]{{{whole}}}$"),
        1 => format!("^[A-Za-z0-9_-]{{{}}}[AQgw]$", whole + 1),
        _ => format!("^[A-Za-z0-9_-]{{{}}}[AEIMQUYcgkosw048]$", whole + 2),
    }
}

/// Schemas of fixed-size binary fields for the OpenAPI document (the wire carries a string
/// checked by [`decode_array`]): `#[schema(value_type = b64::Bytes32)]` on the field.
#[cfg(feature = "openapi")]
macro_rules! exact_bytes {
    ($($name:ident = $n:literal: $what:literal),* $(,)?) => {$(
        #[doc = concat!("Exactly ", stringify!($n), " bytes, unpadded base64url: ", $what, ".")]
        #[derive(Debug)]
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(exact_pattern($n)))
                    .description(Some(concat!(stringify!($n), " bytes, unpadded base64url (", $what, ")")))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    )*};
}

#[cfg(feature = "openapi")]
exact_bytes! {
    Bytes32 = 32: "a public key or a hash",
    Bytes64 = 64: "an Ed25519 signature",
    Bytes81 = 81: "a data key wrapped to an X25519 key",
    Bytes113 = 113: "an account key wrapped to an X25519 key",
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_rejects_padding() {
        let bytes = [0u8, 1, 250, 255];
        let text = super::encode(bytes);
        assert_eq!(text, "AAH6_w");
        assert_eq!(super::decode(&text).unwrap(), bytes);
        assert!(super::decode("AAH6_w==").is_none());
        assert_eq!(super::decode_array::<4>(&text), Some(bytes));
        assert_eq!(super::decode_array::<5>(&text), None);
    }

    /// The patterns the OpenAPI document states, for each remainder of a length divided by three.
    #[cfg(feature = "openapi")]
    #[test]
    fn exact_patterns() {
        assert_eq!(super::exact_pattern(32), "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$");
        assert_eq!(super::exact_pattern(64), "^[A-Za-z0-9_-]{85}[AQgw]$");
        assert_eq!(super::exact_pattern(81), "^[A-Za-z0-9_-]{108}$");
        // The last character of each remainder is what the encoder writes for trailing zero bits.
        assert!(super::encode([0xffu8; 32]).ends_with('8') && super::encode([0xffu8; 64]).ends_with('w'));
    }
}
