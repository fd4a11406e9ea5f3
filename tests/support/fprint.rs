//! A real fprintd for tests: a private system bus (`dbus-daemon`), python-dbusmock's `polkitd`
//! template as the polkit authority, and Debian's fprintd with libfprint's `virtual_device`
//! driver, whose unix socket takes scan commands. One rig per test, torn down on drop.
//!
//! Virtual device protocol (libfprint 1.94): one command per connection, no newline, the driver
//! closes the connection when done (`SCAN <print id>`, `SET_KEEP_ALIVE 1`, …). Enrolment takes
//! five scans of the same id. The socket appears at the first `Claim` and, without
//! `SET_KEEP_ALIVE 1`, refuses connections after `Release`. A `SCAN` with no operation running is
//! queued for the next one.
//!
//! fprintd: a claim belongs to its D-Bus connection and ends with it (so a test claims, enrols
//! and releases over one connection); `VerifyStop` and `Release` during a verification emit a
//! `verify-no-match` that must not be read as the human's answer; a verification with no scan
//! waits forever (the client's timeout ends it); `STATE_DIRECTORY` keeps prints in the rig;
//! without `--no-timeout` it exits 30 s after the last release. D-Bus errors: no prints
//! `net.reactivated.Fprint.Error.NoEnrolledPrints`, polkit refusing
//! `…Error.PermissionDenied` (from `ListEnrolledFingers`/`VerifyStart`; `Claim` only when both
//! verify and enroll are refused), claimed elsewhere `…Error.AlreadyInUse`.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zbus::blocking::{Connection, Proxy};
use zbus::zvariant::OwnedObjectPath;

use crate::bus::{Bus, private_bus, wait_for_name};

pub const FPRINTD: &str = "/usr/libexec/fprintd";
/// python-dbusmock lives in Debian's Python, not a venv's.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";
pub const ACTION_VERIFY: &str = "net.reactivated.fprint.device.verify";
pub const ACTION_ENROLL: &str = "net.reactivated.fprint.device.enroll";
pub const ACTION_AGENTKEYS: &str = "org.agentkeys.approve";
/// The print id enrolled by [`FprintRig::start`]; any other id does not match.
pub const ENROLLED: &str = "agentkeys-test-finger";

const POLKIT: &str = "org.freedesktop.PolicyKit1";
const POLKIT_PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
const MOCK: &str = "org.freedesktop.DBus.Mock";

#[derive(Debug)]
pub struct FprintRig {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    /// `DBUS_SYSTEM_BUS_ADDRESS` for the programs under test.
    pub bus: String,
}

/// Whether the machine has what the rig needs; under CI=true a missing part is a failure.
pub fn available() -> bool {
    let present = [FPRINTD, SYSTEM_PYTHON].iter().all(|p| Path::new(p).exists())
        && Command::new(SYSTEM_PYTHON).args(["-c", "import dbusmock"]).status().is_ok_and(|s| s.success())
        && Command::new("dbus-daemon").arg("--version").output().is_ok();
    crate::present_or_skip(present, "no fprintd, dbus-daemon or python3-dbusmock (scripts/test.sh installs them)")
}

impl FprintRig {
    /// Starts the bus, the polkit mock and fprintd, and enrols [`ENROLLED`] for this user.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("rig dir");
        let config = dir.path().join("bus.conf");
        std::fs::write(&config, bus_config(&dir.path().join("system_bus_socket"))).unwrap();
        let (daemon, bus) = private_bus(&[&format!("--config-file={}", config.display())]);
        let mut children = vec![daemon];
        children.push(
            Command::new(SYSTEM_PYTHON)
                .args(["-m", "dbusmock", "--system", "--template", "polkitd"])
                .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 -m dbusmock"),
        );
        wait_for_name(Bus::System, &bus, POLKIT);
        let mut rig = Self { dir, children, bus };
        rig.polkit_allow(&[ACTION_VERIFY, ACTION_ENROLL]);
        let state = rig.dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        rig.children.push(
            Command::new(FPRINTD)
                .arg("--no-timeout")
                .env("DBUS_SYSTEM_BUS_ADDRESS", &rig.bus)
                .env("STATE_DIRECTORY", &state)
                .env("FP_VIRTUAL_DEVICE", rig.socket())
                .env("FP_DRIVERS_WHITELIST", "virtual_device")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("fprintd"),
        );
        wait_for_name(Bus::System, &rig.bus, "net.reactivated.Fprint");
        rig.enroll();
        rig
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("virtual-device.sock")
    }

    fn connect(&self) -> Connection {
        zbus::blocking::connection::Builder::address(self.bus.as_str()).unwrap().build().expect("private system bus")
    }

    fn polkit(&self, method: &str, body: &(impl serde::Serialize + zbus::zvariant::DynamicType)) {
        let bus = self.connect();
        Proxy::new(&bus, POLKIT, POLKIT_PATH, MOCK).unwrap().call_method(method, body).expect(method);
    }

    /// Exactly these polkit actions are allowed (none: every check is denied).
    pub fn polkit_allow(&self, actions: &[&str]) {
        self.polkit("SetAllowed", &(actions.to_vec(),));
    }

    /// `CheckAuthorization` of these actions never answers.
    pub fn polkit_hang(&self, actions: &[&str]) {
        self.polkit("SimulateHangActions", &(actions.to_vec(),));
    }

    /// Sends one command to the virtual device and waits for the driver to close the connection.
    pub fn device_command(&self, command: &str) {
        let mut stream = UnixStream::connect(self.socket()).expect("the virtual device socket");
        stream.write_all(command.as_bytes()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }

    /// A finger on the reader.
    pub fn scan(&self, print_id: &str) {
        self.device_command(&format!("SCAN {print_id}"));
    }

    fn device<'a>(&self, bus: &'a Connection) -> Proxy<'a> {
        let manager = Proxy::new(
            bus,
            "net.reactivated.Fprint",
            "/net/reactivated/Fprint/Manager",
            "net.reactivated.Fprint.Manager",
        )
        .unwrap();
        let path: OwnedObjectPath = manager.call("GetDefaultDevice", &()).expect("a virtual reader");
        Proxy::new(bus, "net.reactivated.Fprint", path, "net.reactivated.Fprint.Device").unwrap()
    }

    /// Whether another client can claim the reader now (it was released).
    pub fn claimable(&self) -> bool {
        let bus = self.connect();
        let device = self.device(&bus);
        let claimed = device.call_method("Claim", &("",)).is_ok();
        if claimed {
            device.call_method("Release", &()).unwrap();
        }
        claimed
    }

    /// Enrols [`ENROLLED`] as the right index finger of this user, over one connection (a claim
    /// ends with its client), and keeps the device socket alive between claims.
    fn enroll(&self) {
        let bus = self.connect();
        let device = self.device(&bus);
        device.call_method("Claim", &("",)).expect("Claim");
        let statuses = device.receive_signal("EnrollStatus").unwrap();
        device.call_method("EnrollStart", &("right-index-finger",)).expect("EnrollStart");
        self.device_command("SET_KEEP_ALIVE 1");
        for _ in 0..5 {
            self.scan(ENROLLED);
        }
        for message in statuses {
            let (result, done): (String, bool) = message.body().deserialize().unwrap();
            if done {
                assert_eq!(result, "enroll-completed");
                break;
            }
        }
        device.call_method("Release", &()).expect("Release");
    }
}

impl Drop for FprintRig {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}
