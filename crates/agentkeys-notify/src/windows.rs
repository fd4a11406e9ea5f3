//! A Windows toast (the Action Center), through WinRT. Unpackaged programs have no
//! AppUserModelID of their own, so the toast borrows PowerShell's, as such tools do.

use crate::notifier::{Notification, Notifier, NotifyError};

#[derive(Debug)]
pub struct Toast;

impl Notifier for Toast {
    fn name(&self) -> &'static str {
        "Windows toasts"
    }

    fn show(&self, notification: &Notification) -> Result<(), NotifyError> {
        use tauri_winrt_notification::Toast as WinToast;
        WinToast::new(WinToast::POWERSHELL_APP_ID)
            .title(&notification.summary)
            .text1(&notification.body)
            .show()
            .map_err(|e| NotifyError::Failed(e.to_string()))
    }
}
