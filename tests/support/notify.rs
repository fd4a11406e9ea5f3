//! A real notification daemon for tests: a private session bus (`dbus-daemon --session`) with
//! python-dbusmock's `notification_daemon` template on it, whose mock records each `Notify` call
//! (read back with `org.freedesktop.DBus.Mock.GetMethodCalls`). One rig per test.

use std::process::{Child, Command, Stdio};

use zbus::blocking::Proxy;
use zbus::zvariant::OwnedValue;

use crate::bus::{Bus, private_bus, wait_for_name};
use crate::fprint::SYSTEM_PYTHON;

const NOTIFICATIONS: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";

#[derive(Debug)]
pub struct NotificationRig {
    children: Vec<Child>,
    /// `DBUS_SESSION_BUS_ADDRESS` for the programs under test.
    pub bus: String,
}

/// A notification as the daemon received it.
#[derive(Debug, Clone)]
pub struct Shown {
    pub app_name: String,
    pub summary: String,
    pub body: String,
}

/// Whether the machine has what the rig needs; under CI=true a missing part is a failure.
pub fn available() -> bool {
    let present = Command::new(SYSTEM_PYTHON).args(["-c", "import dbusmock"]).status().is_ok_and(|s| s.success())
        && Command::new("dbus-daemon").arg("--version").output().is_ok();
    crate::present_or_skip(present, "no dbus-daemon or python3-dbusmock (scripts/test.sh installs them)")
}

impl NotificationRig {
    pub fn start() -> Self {
        let (daemon, bus) = private_bus(&["--session"]);
        let mut children = vec![daemon];
        children.push(
            Command::new(SYSTEM_PYTHON)
                .args(["-m", "dbusmock", "--session", "--template", "notification_daemon"])
                .env("DBUS_SESSION_BUS_ADDRESS", &bus)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 -m dbusmock"),
        );
        wait_for_name(Bus::Session, &bus, NOTIFICATIONS);
        NotificationRig { children, bus }
    }

    /// Every notification shown so far, oldest first.
    pub fn shown(&self) -> Vec<Shown> {
        let bus = zbus::blocking::connection::Builder::address(self.bus.as_str()).unwrap().build().unwrap();
        let mock = Proxy::new(&bus, NOTIFICATIONS, PATH, "org.freedesktop.DBus.Mock").unwrap();
        let calls: Vec<(u64, Vec<OwnedValue>)> = mock.call("GetMethodCalls", &("Notify",)).expect("GetMethodCalls");
        let text = |value: &OwnedValue| String::try_from(value.try_clone().unwrap()).expect("a string argument");
        calls
            .iter()
            .map(|(_, args)| Shown { app_name: text(&args[0]), summary: text(&args[3]), body: text(&args[4]) })
            .collect()
    }
}

impl Drop for NotificationRig {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
