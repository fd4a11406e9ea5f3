//! Confirmation through polkit: `CheckAuthorization` of the action this project installs
//! (`org.agentkeys.approve`, `dist/polkit/org.agentkeys.policy`) for this process.
//!
//! Two calls, so "polkit cannot ask here" is told apart from "the human said no": first without
//! user interaction — `(false, false)` means the user could not obtain it at all (action not
//! allowed for this session, e.g. over SSH), so the backend is unavailable and the next one is
//! asked; `(false, true)` means authenticating would grant it — then with interaction allowed,
//! so the desktop's authentication agent asks for the user's password, and only now is a refusal
//! the human's answer. No polkit, the action not installed, or polkit refusing this caller:
//! unavailable. A timeout cancels the check.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use zbus::blocking::Proxy;
use zbus::zvariant::Value;

use crate::backend::{BackendError, PresenceBackend, PresenceMethod};
use crate::dbus::{announce, error_parts, system_bus};
use crate::op::CriticalOp;

/// The polkit action of a critical AgentKeys operation.
pub const ACTION: &str = "org.agentkeys.approve";

const SERVICE: &str = "org.freedesktop.PolicyKit1";
const PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
const AUTHORITY: &str = "org.freedesktop.PolicyKit1.Authority";
const NO_INTERACTION: u32 = 0;
const ALLOW_USER_INTERACTION: u32 = 1;

/// The polkit backend.
#[derive(Debug, Default)]
pub struct Polkit;

impl Polkit {
    pub fn new() -> Self {
        Self
    }
}

/// This process's start time in clock ticks since boot (`/proc/self/stat` field 22): polkit
/// identifies a process by pid and start time, so a recycled pid is not mistaken for us.
fn start_time() -> Result<u64, BackendError> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| BackendError::Failed(e.to_string()))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    after
        .split_whitespace()
        .nth(19)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| BackendError::Failed("cannot read this process's start time".into()))
}

type Subject<'a> = (&'a str, HashMap<&'a str, Value<'a>>);
type AuthorizationResult = (bool, bool, HashMap<String, String>);

/// What a failed `CheckAuthorization` means for the gate, from the D-Bus error's name and text.
fn classify(name: &str, description: &str) -> BackendError {
    let short = name.rsplit('.').next().unwrap_or_default();
    match short {
        "ServiceUnknown" | "NameHasNoOwner" => BackendError::Unavailable("polkit is not running".into()),
        // polkitd refuses some callers (and details from untrusted ones) outright.
        "NotAuthorized" => BackendError::Unavailable(format!("polkit does not take this caller ({description})")),
        _ if description.contains("not registered") => {
            BackendError::Unavailable(format!("the polkit action {ACTION} is not installed (see README: Presence)"))
        }
        _ => BackendError::Failed(format!("polkit: {name}: {description}")),
    }
}

impl PresenceBackend for Polkit {
    fn method(&self) -> PresenceMethod {
        PresenceMethod::Polkit
    }

    fn verify(&self, op: &CriticalOp, timeout: Duration) -> Result<(), BackendError> {
        let started = Instant::now();
        let bus = system_bus(timeout)?;
        let authority = Proxy::new(&bus, SERVICE, PATH, AUTHORITY).map_err(|e| {
            let (name, description) = error_parts(&e);
            classify(&name, &description)
        })?;
        let start_time = start_time()?;
        let uid = rustix::process::getuid().as_raw();
        let cancellation = format!("agentkeys-{}", std::process::id());
        let check = |flags: u32| -> Result<AuthorizationResult, BackendError> {
            let subject: Subject<'_> = (
                "unix-process",
                HashMap::from([
                    ("pid", Value::U32(std::process::id())),
                    ("start-time", Value::U64(start_time)),
                    ("uid", Value::I32(uid as i32)),
                ]),
            );
            // No details: polkitd accepts them only from trusted callers; the operation is shown
            // by `announce` instead.
            let details: HashMap<&str, &str> = HashMap::new();
            authority.call("CheckAuthorization", &(subject, ACTION, details, flags, cancellation.as_str())).map_err(
                |error| {
                    if started.elapsed() >= timeout {
                        let _ = authority.call_method("CancelCheckAuthorization", &(cancellation.as_str(),));
                        return BackendError::TimedOut;
                    }
                    let (name, description) = error_parts(&error);
                    classify(&name, &description)
                },
            )
        };
        match check(NO_INTERACTION)? {
            // Granted without asking: an administrator's rule says so for this user.
            (true, _, _) => return Ok(()),
            (false, false, _) => {
                return Err(BackendError::Unavailable("polkit does not allow this action in this session".into()));
            }
            (false, true, _) => {}
        }
        announce(&format!("{}\nConfirm with your password in the authentication dialog (polkit).", op.text));
        match check(ALLOW_USER_INTERACTION)? {
            (true, _, _) => Ok(()),
            (false, true, _) => Err(BackendError::Unavailable("no polkit authentication agent to ask".into())),
            (false, false, _) => Err(BackendError::Declined("polkit did not authorize it".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polkit_errors_sort_into_unavailable_and_failed() {
        for (name, description) in [
            ("org.freedesktop.DBus.Error.ServiceUnknown", ""),
            ("org.freedesktop.PolicyKit1.Error.NotAuthorized", "Only trusted callers can pass details"),
            ("org.freedesktop.PolicyKit1.Error.Failed", "Action org.agentkeys.approve is not registered"),
        ] {
            assert!(matches!(classify(name, description), BackendError::Unavailable(_)), "{name}: {description}");
        }
        assert!(matches!(
            classify("org.freedesktop.PolicyKit1.Error.Failed", "something else"),
            BackendError::Failed(reason) if reason.contains("something else")
        ));
    }
}
