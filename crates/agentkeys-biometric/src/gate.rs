//! The policy and the order of backends: [`PresenceGate::require_presence`] is the one entry point.
//! The gate knows every platform's backends (it picks them); the backends know only
//! [`crate::backend`].

use std::time::Duration;

use crate::backend::{BackendError, PresenceBackend, PresenceMethod};
use crate::op::CriticalOp;

/// `AGENTKEYS_BIOMETRIC` / `biometric` in config.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Policy {
    /// Never ask (a warning says so, and the audit records `skipped`).
    Off,
    /// The best backend here, else the terminal (the default).
    Preferred,
    /// A biometric or OS backend, never the terminal.
    Required,
}

impl Policy {
    pub const ENV: &'static str = "AGENTKEYS_BIOMETRIC";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Preferred => "preferred",
            Self::Required => "required",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "off" => Some(Self::Off),
            "preferred" => Some(Self::Preferred),
            "required" => Some(Self::Required),
            _ => None,
        }
    }
}

/// Presence shown, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub method: PresenceMethod,
    /// Backends that stepped aside first, with why ("fprintd: no enrolled finger").
    pub passed_over: Vec<String>,
}

/// Why presence was not shown. Every case means: nothing was done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    #[error("presence declined: {0}")]
    Declined(String),
    #[error("no presence shown within {}s", .0.as_secs())]
    TimedOut(Duration),
    #[error("presence check cancelled")]
    Cancelled,
    #[error("no way to show presence here: {0}")]
    Unavailable(String),
    #[error("presence check failed: {0}")]
    Failed(String),
}

/// The backends of this machine in order, the terminal last, under a policy.
#[derive(Debug)]
pub struct PresenceGate {
    policy: Policy,
    timeout: Duration,
    backends: Vec<Box<dyn PresenceBackend>>,
    terminal: Option<Box<dyn PresenceBackend>>,
}

impl PresenceGate {
    /// A gate with no backends yet.
    pub fn new(policy: Policy, timeout: Duration) -> Self {
        Self { policy, timeout, backends: Vec::new(), terminal: None }
    }

    /// The platform's backends, best first: fprintd then polkit on Linux, LocalAuthentication on
    /// macOS, Windows Hello on Windows.
    pub fn system(policy: Policy, timeout: Duration) -> Self {
        let gate = Self::new(policy, timeout);
        #[cfg(target_os = "linux")]
        let gate = gate.with_backend(crate::fprintd::Fprintd::new()).with_backend(crate::polkit::Polkit::new());
        #[cfg(target_os = "macos")]
        let gate = gate.with_backend(crate::touchid::TouchId::new());
        #[cfg(target_os = "windows")]
        let gate = gate.with_backend(crate::windows_hello::WindowsHello::new());
        gate
    }

    pub fn with_backend(mut self, backend: impl PresenceBackend + 'static) -> Self {
        self.backends.push(Box::new(backend));
        self
    }

    /// The last resort under [`Policy::Preferred`].
    pub fn with_terminal(mut self, terminal: impl PresenceBackend + 'static) -> Self {
        self.terminal = Some(Box::new(terminal));
        self
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Shows `op` and waits for the human's presence by the best available backend.
    pub fn require_presence(&self, op: &CriticalOp) -> Result<Presence, PresenceError> {
        if self.policy == Policy::Off {
            return Ok(Presence { method: PresenceMethod::Skipped, passed_over: Vec::new() });
        }
        let mut passed_over = Vec::new();
        for backend in &self.backends {
            match self.ask(backend.as_ref(), op, &mut passed_over)? {
                Some(presence) => return Ok(presence),
                None => continue,
            }
        }
        let why = if passed_over.is_empty() { "no backend on this system".to_owned() } else { passed_over.join("; ") };
        if self.policy == Policy::Required {
            return Err(PresenceError::Unavailable(format!(
                "{} is required and none answered ({why})",
                "biometric or OS presence"
            )));
        }
        if let Some(terminal) = &self.terminal
            && let Some(presence) = self.ask(terminal.as_ref(), op, &mut passed_over)?
        {
            return Ok(presence);
        }
        Err(PresenceError::Unavailable(passed_over.join("; ")))
    }

    fn ask(
        &self,
        backend: &dyn PresenceBackend,
        op: &CriticalOp,
        passed_over: &mut Vec<String>,
    ) -> Result<Option<Presence>, PresenceError> {
        match backend.verify(op, self.timeout) {
            Ok(()) => Ok(Some(Presence { method: backend.method(), passed_over: passed_over.clone() })),
            Err(BackendError::Unavailable(reason)) => {
                passed_over.push(format!("{}: {reason}", backend.method().as_str()));
                Ok(None)
            }
            Err(BackendError::Declined(reason)) => Err(PresenceError::Declined(reason)),
            Err(BackendError::TimedOut) => Err(PresenceError::TimedOut(self.timeout)),
            Err(BackendError::Cancelled) => Err(PresenceError::Cancelled),
            Err(BackendError::Failed(reason)) => Err(PresenceError::Failed(reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for a backend in the policy tests; the real backends are tested end to end.
    #[derive(Debug)]
    struct Scripted(PresenceMethod, Result<(), BackendError>);

    impl PresenceBackend for Scripted {
        fn method(&self) -> PresenceMethod {
            self.0
        }
        fn verify(&self, _op: &CriticalOp, _timeout: Duration) -> Result<(), BackendError> {
            self.1.clone()
        }
    }

    fn op() -> CriticalOp {
        CriticalOp::revoke("build-bot")
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_backend_present_answers_and_a_refusal_never_falls_through() {
        let gate = PresenceGate::new(Policy::Preferred, T)
            .with_backend(Scripted(PresenceMethod::Fprintd, Err(BackendError::Unavailable("no reader".into()))))
            .with_backend(Scripted(PresenceMethod::Polkit, Ok(())))
            .with_terminal(Scripted(PresenceMethod::Prompt, Ok(())));
        let presence = gate.require_presence(&op()).unwrap();
        assert_eq!(presence.method, PresenceMethod::Polkit);
        assert_eq!(presence.passed_over, vec!["fprintd: no reader".to_owned()]);

        let gate = PresenceGate::new(Policy::Preferred, T)
            .with_backend(Scripted(PresenceMethod::Fprintd, Err(BackendError::Declined("no match".into()))))
            .with_terminal(Scripted(PresenceMethod::Prompt, Ok(())));
        assert_eq!(gate.require_presence(&op()), Err(PresenceError::Declined("no match".into())));
        let gate = PresenceGate::new(Policy::Preferred, T)
            .with_backend(Scripted(PresenceMethod::TouchId, Err(BackendError::TimedOut)))
            .with_terminal(Scripted(PresenceMethod::Prompt, Ok(())));
        assert_eq!(gate.require_presence(&op()), Err(PresenceError::TimedOut(T)));
    }

    #[test]
    fn policies_off_required_and_preferred() {
        let unavailable = || Scripted(PresenceMethod::Fprintd, Err(BackendError::Unavailable("no reader".into())));
        let off = PresenceGate::new(Policy::Off, T).with_backend(Scripted(PresenceMethod::Fprintd, Ok(())));
        assert_eq!(off.require_presence(&op()).unwrap().method, PresenceMethod::Skipped);
        let required = PresenceGate::new(Policy::Required, T)
            .with_backend(unavailable())
            .with_terminal(Scripted(PresenceMethod::Prompt, Ok(())));
        assert!(
            matches!(required.require_presence(&op()), Err(PresenceError::Unavailable(why)) if why.contains("no reader"))
        );
        let preferred = PresenceGate::new(Policy::Preferred, T)
            .with_backend(unavailable())
            .with_terminal(Scripted(PresenceMethod::Prompt, Ok(())));
        assert_eq!(preferred.require_presence(&op()).unwrap().method, PresenceMethod::Prompt);
        let nothing = PresenceGate::new(Policy::Preferred, T)
            .with_backend(unavailable())
            .with_terminal(Scripted(PresenceMethod::Prompt, Err(BackendError::Unavailable("no terminal".into()))));
        assert_eq!(
            nothing.require_presence(&op()),
            Err(PresenceError::Unavailable("fprintd: no reader; prompt: no terminal".into()))
        );
        assert!(Policy::Off < Policy::Preferred && Policy::Preferred < Policy::Required);
    }
}
