//! Windows: Windows Hello through `UserConsentVerifier` — face, fingerprint or PIN, whatever the
//! user set up — with the operation as the message of the system dialog. The WinRT calls block,
//! so they run on a thread the check stops waiting for at the timeout (the dialog then answers
//! into nothing; the operation has already been refused).

use std::sync::mpsc;
use std::time::Duration;

use windows::Security::Credentials::UI::{
    UserConsentVerificationResult, UserConsentVerifier, UserConsentVerifierAvailability,
};
use windows::core::HSTRING;

use crate::backend::{BackendError, PresenceBackend, PresenceMethod};
use crate::op::CriticalOp;

/// The Windows Hello backend.
#[derive(Debug, Default)]
pub struct WindowsHello;

impl WindowsHello {
    pub fn new() -> Self {
        Self
    }
}

fn ask(message: String) -> Result<(), BackendError> {
    let failed = |e: windows::core::Error| BackendError::Failed(format!("Windows Hello: {e}"));
    let availability = UserConsentVerifier::CheckAvailabilityAsync().and_then(|a| a.join()).map_err(failed)?;
    if availability != UserConsentVerifierAvailability::Available {
        return Err(BackendError::Unavailable(format!("Windows Hello is not set up here ({availability:?})")));
    }
    let result = UserConsentVerifier::RequestVerificationAsync(&HSTRING::from(message))
        .and_then(|r| r.join())
        .map_err(failed)?;
    match result {
        UserConsentVerificationResult::Verified => Ok(()),
        UserConsentVerificationResult::Canceled => Err(BackendError::Cancelled),
        UserConsentVerificationResult::RetriesExhausted => Err(BackendError::Declined("too many failed tries".into())),
        UserConsentVerificationResult::DeviceNotPresent | UserConsentVerificationResult::NotConfiguredForUser => {
            Err(BackendError::Unavailable("Windows Hello is not set up for this user".into()))
        }
        other => Err(BackendError::Failed(format!("Windows Hello: {other:?}"))),
    }
}

impl PresenceBackend for WindowsHello {
    fn method(&self) -> PresenceMethod {
        PresenceMethod::WindowsHello
    }

    fn verify(&self, op: &CriticalOp, timeout: Duration) -> Result<(), BackendError> {
        let (tx, rx) = mpsc::channel();
        let message = op.text.clone();
        std::thread::spawn(move || {
            let _ = tx.send(ask(message));
        });
        rx.recv_timeout(timeout).unwrap_or(Err(BackendError::TimedOut))
    }
}
