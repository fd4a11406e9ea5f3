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
}
