//! `clientDataJSON` (WebAuthn §5.8.1): what the browser says it was asked, checked against what
//! the server asked. Fields beyond those checked are allowed (browsers add some), but the checked
//! ones must be exactly right.

use serde::Deserialize;

use crate::error::{WebauthnError, b64url};

/// Which ceremony the client data belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyType {
    Create,
    Get,
}

impl CeremonyType {
    pub fn as_str(self) -> &'static str {
        match self {
            CeremonyType::Create => "webauthn.create",
            CeremonyType::Get => "webauthn.get",
        }
    }
}

#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
    origin: String,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: Option<bool>,
    #[serde(rename = "topOrigin", default)]
    top_origin: Option<String>,
}

/// Longest client data accepted (a browser's is a few hundred bytes).
const MAX_LEN: usize = 4096;

pub(crate) fn check(json: &[u8], expected: CeremonyType, challenge: &[u8], origin: &str) -> Result<(), WebauthnError> {
    if json.len() > MAX_LEN {
        return Err(WebauthnError::ClientData(format!("it is over {MAX_LEN} bytes")));
    }
    let data: ClientData = serde_json::from_slice(json).map_err(|e| WebauthnError::ClientData(e.to_string()))?;
    if data.kind != expected.as_str() {
        return Err(WebauthnError::WrongType { expected: expected.as_str(), found: data.kind });
    }
    // The challenge is compared as the text the browser encoded: base64url without padding.
    if data.challenge != b64url(challenge) {
        return Err(WebauthnError::WrongChallenge);
    }
    if data.origin != origin {
        return Err(WebauthnError::WrongOrigin { expected: origin.to_owned(), found: data.origin });
    }
    if data.cross_origin == Some(true) || data.top_origin.is_some_and(|top| top != origin) {
        return Err(WebauthnError::CrossOrigin);
    }
    Ok(())
}
