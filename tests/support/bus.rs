//! Private D-Bus buses for the rigs: a `dbus-daemon` of the test's own, and waiting until a
//! service has taken its name on it (the service's readiness signal).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

/// Which bus a rig stands in for: the programs under test find it by this bus's variable.
#[derive(Debug, Clone, Copy)]
pub enum Bus {
    System,
    Session,
}

impl Bus {
    pub fn env(self) -> &'static str {
        match self {
            Bus::System => "DBUS_SYSTEM_BUS_ADDRESS",
            Bus::Session => "DBUS_SESSION_BUS_ADDRESS",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Bus::System => "--system",
            Bus::Session => "--session",
        }
    }
}

/// Starts `dbus-daemon ARGS --nofork --print-address` and returns it with its address (the
/// address line is its readiness signal).
pub fn private_bus(args: &[&str]) -> (Child, String) {
    let mut daemon = Command::new("dbus-daemon")
        .args(args)
        .args(["--nofork", "--print-address"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon");
    let mut address = String::new();
    BufReader::new(daemon.stdout.take().unwrap()).read_line(&mut address).unwrap();
    let address = address.trim().to_owned();
    assert!(address.starts_with("unix:"), "dbus-daemon printed {address:?}");
    (daemon, address)
}

/// Waits (at most 15 s) until `name` is owned on the bus at `address`.
pub fn wait_for_name(bus: Bus, address: &str, name: &str) {
    let ok = Command::new("gdbus")
        .args(["wait", bus.flag(), "--timeout", "15", name])
        .env(bus.env(), address)
        .status()
        .expect("gdbus (libglib2.0-bin)");
    assert!(ok.success(), "{name} did not appear on the private bus");
}
