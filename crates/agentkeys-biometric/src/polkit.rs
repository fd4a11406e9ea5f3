//! Confirmation through polkit: `CheckAuthorization` of the action this project installs
//! (`org.agentkeys.approve`, `dist/polkit/org.agentkeys.policy`) for this process, with user
//! interaction allowed, so the desktop's authentication agent asks for the user's password. No
//! polkit, or the action not installed: unavailable. A timeout cancels the check.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use zbus::blocking::Proxy;
use zbus::zvariant::Value;

use crate::dbus::{announce, error_name, system_bus};
use crate::gate::{BackendError, PresenceBackend, PresenceMethod};
use crate::op::CriticalOp;

/// The polkit action of a critical AgentKeys operation.
pub const ACTION: &str = "org.agentkeys.approve";

const SERVICE: &str = "org.freedesktop.PolicyKit1";
const PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
const AUTHORITY: &str = "org.freedesktop.PolicyKit1.Authority";
/// `AllowUserInteraction`.
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

impl PresenceBackend for Polkit {
    fn method(&self) -> PresenceMethod {
        PresenceMethod::Polkit
    }

    fn verify(&self, op: &CriticalOp, timeout: Duration) -> Result<(), BackendError> {
        let started = Instant::now();
        let bus = system_bus(timeout)?;
        let authority = Proxy::new(&bus, SERVICE, PATH, AUTHORITY)
            .map_err(|e| BackendError::Unavailable(format!("no polkit ({})", error_name(&e))))?;
        let subject: Subject<'_> = (
            "unix-process",
            HashMap::from([
                ("pid", Value::U32(std::process::id())),
                ("start-time", Value::U64(start_time()?)),
                ("uid", Value::I32(rustix::process::getuid().as_raw() as i32)),
            ]),
        );
        let details: HashMap<&str, &str> = HashMap::from([("agentkeys.operation", op.text.as_str())]);
        let cancellation = format!("agentkeys-{}", std::process::id());
        announce(&format!("{}\nConfirm with your password in the authentication dialog (polkit).", op.text));
        let answer: Result<AuthorizationResult, zbus::Error> = authority
            .call("CheckAuthorization", &(subject, ACTION, details, ALLOW_USER_INTERACTION, cancellation.as_str()));
        match answer {
            Ok((true, _, _)) => Ok(()),
            Ok((false, true, _)) => Err(BackendError::Unavailable("no polkit authentication agent to ask".into())),
            Ok((false, false, _)) => Err(BackendError::Declined("polkit did not authorize it".into())),
            Err(error) => {
                let name = error_name(&error);
                if started.elapsed() >= timeout {
                    let _ = authority.call_method("CancelCheckAuthorization", &(cancellation.as_str(),));
                    return Err(BackendError::TimedOut);
                }
                match name.rsplit('.').next().unwrap_or_default() {
                    "ServiceUnknown" | "NameHasNoOwner" => {
                        Err(BackendError::Unavailable("polkit is not running".into()))
                    }
                    _ if name.contains("not registered") || name.contains("does not exist") => Err(
                        BackendError::Unavailable(format!("the polkit action {ACTION} is not installed (see README)")),
                    ),
                    _ => Err(BackendError::Failed(format!("polkit: {name}"))),
                }
            }
        }
    }
}
