//! macOS: LocalAuthentication's `deviceOwnerAuthentication` policy — Touch ID, or the login
//! password when there is no sensor or it is locked out — with the operation as the reason shown
//! in the system dialog. A timeout invalidates the context, which dismisses the dialog.
//!
//! This is the one place with `unsafe`: calls into the Objective-C framework through the objc2
//! bindings, each of which is unsafe only because the compiler cannot check the framework.
#![allow(unsafe_code)]

use std::sync::mpsc;
use std::time::Duration;

use block2::RcBlock;
use objc2::runtime::Bool;
use objc2_foundation::{NSError, NSString};
use objc2_local_authentication::{LAContext, LAError, LAPolicy};

use crate::backend::{BackendError, PresenceBackend, PresenceMethod};
use crate::op::CriticalOp;

/// The Touch ID / login password backend.
#[derive(Debug, Default)]
pub struct TouchId;

impl TouchId {
    pub fn new() -> Self {
        Self
    }
}

/// What LocalAuthentication's error code means for the gate.
fn classify(code: isize) -> BackendError {
    match LAError(code) {
        LAError::UserCancel | LAError::SystemCancel | LAError::AppCancel => BackendError::Cancelled,
        LAError::AuthenticationFailed => BackendError::Declined("authentication failed".into()),
        LAError::PasscodeNotSet | LAError::NotInteractive => {
            BackendError::Unavailable(format!("LocalAuthentication cannot ask here (code {code})"))
        }
        other => BackendError::Failed(format!("LocalAuthentication error {}", other.0)),
    }
}

impl PresenceBackend for TouchId {
    fn method(&self) -> PresenceMethod {
        PresenceMethod::TouchId
    }

    fn verify(&self, op: &CriticalOp, timeout: Duration) -> Result<(), BackendError> {
        let policy = LAPolicy::DeviceOwnerAuthentication;
        // SAFETY: a fresh context, used from this thread and the framework's reply queue only.
        let context = unsafe { LAContext::new() };
        // SAFETY: a plain query of the context.
        if let Err(error) = unsafe { context.canEvaluatePolicy_error(policy) } {
            return Err(BackendError::Unavailable(format!("no Touch ID or password here (code {})", error.code())));
        }
        let (tx, rx) = mpsc::channel();
        let reply = RcBlock::new(move |success: Bool, error: *mut NSError| {
            // SAFETY: the framework passes a valid NSError or null, alive for the call.
            let code = unsafe { error.as_ref() }.map(|e| e.code()).unwrap_or(0);
            let _ = tx.send(if success.as_bool() { Ok(()) } else { Err(classify(code)) });
        });
        let reason = NSString::from_str(&op.text);
        // SAFETY: the block is retained by the framework until it has replied.
        unsafe { context.evaluatePolicy_localizedReason_reply(policy, &reason, &reply) };
        match rx.recv_timeout(timeout) {
            Ok(outcome) => outcome,
            Err(_) => {
                // SAFETY: invalidating dismisses the dialog; the reply then arrives and is dropped.
                unsafe { context.invalidate() };
                Err(BackendError::TimedOut)
            }
        }
    }
}
