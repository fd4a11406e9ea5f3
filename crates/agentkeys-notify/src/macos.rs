//! The macOS Notification Center, through `osascript`'s `display notification`. The texts go in
//! as arguments of the script's `run` handler, never into the script's source, so an agent's
//! reason cannot change what runs.

use std::process::{Command, Stdio};

use crate::notifier::{Notification, Notifier, NotifyError};

const SCRIPT: [&str; 3] = [
    "on run argv",
    "display notification (item 2 of argv) with title \"AgentKeys\" subtitle (item 1 of argv)",
    "end run",
];

#[derive(Debug)]
pub struct NotificationCenter;

impl Notifier for NotificationCenter {
    fn name(&self) -> &'static str {
        "the Notification Center"
    }

    fn show(&self, notification: &Notification) -> Result<(), NotifyError> {
        let mut command = Command::new("/usr/bin/osascript");
        for line in SCRIPT {
            command.args(["-e", line]);
        }
        let status = command
            .arg(&notification.summary)
            .arg(&notification.body)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| NotifyError::Unavailable(format!("cannot run osascript ({e})")))?;
        if status.success() { Ok(()) } else { Err(NotifyError::Failed(format!("osascript exited with {status}"))) }
    }
}
