//! Desktop notifications, so a request reaching `agentkeys listen` is seen while its terminal is
//! hidden. One trait, one backend per platform behind `cfg` (freedesktop Notifications on the
//! session bus on Linux, the Notification Center on macOS, a toast on Windows), and a notifier
//! that shows nothing where there is no desktop. A notification is best effort: the terminal
//! line `listen` prints is the record, so failing to show one is reported, never fatal.

#[cfg(target_os = "linux")]
mod freedesktop;
#[cfg(target_os = "macos")]
mod macos;
mod notifier;
#[cfg(target_os = "windows")]
mod windows;

pub use notifier::{Notification, Notifier, NotifyError, Silent};

/// The desktop's notifier; `Err` says why there is none (e.g. no session bus on a server).
pub fn desktop() -> Result<Box<dyn Notifier>, NotifyError> {
    #[cfg(target_os = "linux")]
    return freedesktop::Freedesktop::connect().map(|n| Box::new(n) as Box<dyn Notifier>);
    #[cfg(target_os = "macos")]
    return Ok(Box::new(macos::NotificationCenter));
    #[cfg(target_os = "windows")]
    return Ok(Box::new(windows::Toast));
    #[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
    Err(NotifyError::Unavailable("this platform has no supported notification centre".into()))
}
