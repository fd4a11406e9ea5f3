//! A fingerprint through fprintd on the system bus: `GetDefaultDevice`, `Claim`,
//! `VerifyStart("any")`, the `VerifyStatus` signal, `VerifyStop`, `Release` — released on every
//! path (match, no match, timeout, Ctrl-C, error). No reader, no enrolled finger, no fprintd, or
//! polkit refusing fprintd's own action: unavailable, and the next backend is asked.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use zbus::blocking::{Connection, Proxy};
use zbus::zvariant::OwnedObjectPath;

use crate::backend::{BackendError, PresenceBackend, PresenceMethod};
use crate::dbus::{Interrupted, announce, error_name, system_bus};
use crate::op::CriticalOp;

const SERVICE: &str = "net.reactivated.Fprint";
const MANAGER_PATH: &str = "/net/reactivated/Fprint/Manager";
const MANAGER: &str = "net.reactivated.Fprint.Manager";
const DEVICE: &str = "net.reactivated.Fprint.Device";

/// How often a waiting check looks at Ctrl-C.
const TICK: Duration = Duration::from_millis(100);

/// The fprintd backend.
#[derive(Debug, Default)]
pub struct Fprintd;

impl Fprintd {
    pub fn new() -> Self {
        Self
    }
}

/// Sorts fprintd's refusals: absent or not allowed here → unavailable; anything else failed.
fn classify(step: &str, error: &zbus::Error) -> BackendError {
    let name = error_name(error);
    let reason = match name.rsplit('.').next().unwrap_or_default() {
        "ServiceUnknown" | "NameHasNoOwner" => "fprintd is not running".to_owned(),
        "NoSuchDevice" => "no fingerprint reader".to_owned(),
        "NoEnrolledPrints" => "no enrolled finger (enrol one with fprintd-enroll)".to_owned(),
        "PermissionDenied" => "polkit does not allow fprintd here".to_owned(),
        "AlreadyInUse" => "the reader is in use by another program".to_owned(),
        _ => return BackendError::Failed(format!("fprintd {step}: {name}")),
    };
    BackendError::Unavailable(reason)
}

/// Releases the claimed device when dropped, stopping a verification first if one runs.
struct Claimed<'a> {
    device: &'a Proxy<'a>,
    verifying: bool,
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        if self.verifying {
            let _ = self.device.call_method("VerifyStop", &());
        }
        let _ = self.device.call_method("Release", &());
    }
}

impl PresenceBackend for Fprintd {
    fn method(&self) -> PresenceMethod {
        PresenceMethod::Fprintd
    }

    fn verify(&self, op: &CriticalOp, timeout: Duration) -> Result<(), BackendError> {
        let deadline = Instant::now() + timeout;
        // Each call is short; only the wait for a finger takes the whole timeout.
        let bus: Connection = system_bus(Duration::from_secs(5).min(timeout))?;
        let manager = Proxy::new(&bus, SERVICE, MANAGER_PATH, MANAGER).map_err(|e| classify("manager", &e))?;
        let path: OwnedObjectPath =
            manager.call("GetDefaultDevice", &()).map_err(|e| classify("GetDefaultDevice", &e))?;
        let device = Proxy::new(&bus, SERVICE, path, DEVICE).map_err(|e| classify("device", &e))?;
        let fingers: Vec<String> =
            device.call("ListEnrolledFingers", &("",)).map_err(|e| classify("ListEnrolledFingers", &e))?;
        if fingers.is_empty() {
            return Err(BackendError::Unavailable("no enrolled finger (enrol one with fprintd-enroll)".into()));
        }
        device.call_method("Claim", &("",)).map_err(|e| classify("Claim", &e))?;
        let mut claimed = Claimed { device: &device, verifying: false };
        let interrupted = Interrupted::watch();
        // Subscribe before starting, so a quick scan's result is not missed.
        let statuses = device.receive_signal("VerifyStatus").map_err(|e| classify("VerifyStatus", &e))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for message in statuses {
                let Ok((result, done)) = message.body().deserialize::<(String, bool)>() else { continue };
                if tx.send((result, done)).is_err() {
                    break;
                }
            }
        });
        device.call_method("VerifyStart", &("any",)).map_err(|e| classify("VerifyStart", &e))?;
        claimed.verifying = true;
        announce(&format!(
            "{}\nTouch the fingerprint reader to confirm (fprintd), or press Ctrl-C to cancel.",
            op.text
        ));
        loop {
            if interrupted.is_set() {
                return Err(BackendError::Cancelled);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BackendError::TimedOut);
            }
            let (result, done) = match rx.recv_timeout(left.min(TICK)) {
                Ok(status) => status,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(BackendError::Failed("fprintd went away during the scan".into()));
                }
            };
            match result.as_str() {
                "verify-match" => return Ok(()),
                "verify-no-match" => return Err(BackendError::Declined("the finger did not match".into())),
                _ if !done => announce("Scan again (the reader asked for another try)."),
                "verify-disconnected" => return Err(BackendError::Failed("the reader was disconnected".into())),
                other => return Err(BackendError::Failed(format!("fprintd: {other}"))),
            }
        }
    }
}
