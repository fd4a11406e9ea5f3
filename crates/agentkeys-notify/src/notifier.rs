//! What every backend implements: a notification's texts, the trait, its error, and the notifier
//! that shows nothing.

/// What a notification says. Both texts are shown as plain text (no markup is interpreted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub summary: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// No notification service here (no session bus, no desktop).
    #[error("no desktop notifications here: {0}")]
    Unavailable(String),
    #[error("the notification was not shown: {0}")]
    Failed(String),
}

/// Shows notifications on this machine's desktop.
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// What shows them, for messages ("freedesktop notifications").
    fn name(&self) -> &'static str;
    fn show(&self, notification: &Notification) -> Result<(), NotifyError>;
}

/// Shows nothing: for `--no-notify`, and where [`desktop`] found no service.
#[derive(Debug, Default)]
pub struct Silent;

impl Notifier for Silent {
    fn name(&self) -> &'static str {
        "none"
    }

    fn show(&self, _: &Notification) -> Result<(), NotifyError> {
        Ok(())
    }
}
