//! What the Linux backends share: a system-bus connection whose calls time out, D-Bus error
//! names, a Ctrl-C flag, and where to tell the human what to do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Once};
use std::time::Duration;

use crate::backend::BackendError;

/// A system-bus connection (`DBUS_SYSTEM_BUS_ADDRESS` when set) whose method calls give up after
/// `timeout`; no bus means the backend is unavailable.
pub fn system_bus(timeout: Duration) -> Result<zbus::blocking::Connection, BackendError> {
    zbus::blocking::connection::Builder::system()
        .and_then(|builder| builder.method_timeout(timeout).build())
        .map_err(|e| BackendError::Unavailable(format!("no system bus ({e})")))
}

/// The D-Bus error name of a failed call (`net.reactivated.Fprint.Error.NoEnrolledPrints`), or
/// the error's text.
pub fn error_name(error: &zbus::Error) -> String {
    error_parts(error).0
}

/// The D-Bus error name and its description ("Action org.agentkeys.approve is not registered").
pub fn error_parts(error: &zbus::Error) -> (String, String) {
    match error {
        zbus::Error::MethodError(name, detail, _) => (name.to_string(), detail.clone().unwrap_or_default()),
        other => (error_text(other), String::new()),
    }
}

fn error_text(error: &zbus::Error) -> String {
    match error {
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            zbus::fdo::Error::ServiceUnknown(_) => "org.freedesktop.DBus.Error.ServiceUnknown".to_owned(),
            zbus::fdo::Error::NoReply(_) => "org.freedesktop.DBus.Error.NoReply".to_owned(),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

/// Set while a check waits, by SIGINT (Ctrl-C) and SIGTERM: the backend stops and releases
/// what it claimed instead of dying with the device held. When it is dropped the signals do what
/// they did before (terminate): signal-hook keeps its process-wide handler after the last action
/// is unregistered, so a conditional "perform the default" action, armed outside checks, stands in.
pub struct Interrupted {
    flag: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

/// True outside a check: SIGINT and SIGTERM then terminate, as if nobody had handled them.
static DEFAULT_ACTION: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(true)));
const SIGNALS: [i32; 2] = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];

impl Interrupted {
    pub fn watch() -> Self {
        static ARM: Once = Once::new();
        ARM.call_once(|| {
            for signal in SIGNALS {
                let _ = signal_hook::flag::register_conditional_default(signal, DEFAULT_ACTION.clone());
            }
        });
        DEFAULT_ACTION.store(false, Ordering::SeqCst);
        let flag = Arc::new(AtomicBool::new(false));
        let ids =
            SIGNALS.into_iter().filter_map(|signal| signal_hook::flag::register(signal, flag.clone()).ok()).collect();
        Self { flag, ids }
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl Drop for Interrupted {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        DEFAULT_ACTION.store(true, Ordering::SeqCst);
    }
}

/// Tells the human what to do: on the terminal when there is one, else on stderr.
pub fn announce(text: &str) {
    let shown = crate::tty::Tty::open().and_then(|mut tty| tty.say(&format!("{}\r\n", text.replace('\n', "\r\n"))));
    if shown.is_err() {
        eprintln!("{text}");
    }
}
