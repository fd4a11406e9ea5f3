//! Whether a FIDO security key (a roaming authenticator: YubiKey, SoloKey, Nitrokey…) is plugged
//! in, so that `agentkeys init` can offer to enroll it as the presence key (PRODUCT.md §2,
//! issue 14). On Linux a FIDO device is a hidraw device whose HID report descriptor declares the
//! FIDO Alliance usage page, 0xF1D0 (FIDO CTAP HID specification, "HID report descriptor"). The
//! descriptor comes from the device, so its parser takes any bytes: it reads HID short and long
//! items (HID 1.11 §6.2.2) and never indexes past the end.
//!
//! The sysfs root is a parameter so tests give a fake tree; the real one is `/sys`.

use std::path::Path;

/// The FIDO Alliance HID usage page.
pub const FIDO_USAGE_PAGE: u32 = 0xF1D0;

/// A FIDO device found under `class/hidraw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FidoDevice {
    /// `hidraw0`, …: the node is `/dev/<name>`.
    pub hidraw: String,
    /// The device's name as the kernel reports it (`HID_NAME` of its `uevent`), when it does.
    pub name: Option<String>,
}

/// Whether a HID report descriptor declares the FIDO usage page.
pub fn declares_fido_usage_page(descriptor: &[u8]) -> bool {
    let mut rest = descriptor;
    while let Some((&prefix, after)) = rest.split_first() {
        if prefix == 0xFE {
            // A long item: data size, tag, then the data; it never carries a usage page.
            let Some((&size, after)) = after.split_first() else { return false };
            let skip = 1 + usize::from(size);
            if after.len() < skip {
                return false;
            }
            rest = &after[skip..];
            continue;
        }
        let size = match prefix & 0x03 {
            3 => 4,
            n => usize::from(n),
        };
        if after.len() < size {
            return false;
        }
        let (data, after) = after.split_at(size);
        // A global item (type 1) with tag 0 is Usage Page; its data is little-endian.
        if prefix & 0xFC == 0x04 {
            let value = data.iter().rev().fold(0u32, |value, &byte| (value << 8) | u32::from(byte));
            if value == FIDO_USAGE_PAGE {
                return true;
            }
        }
        rest = after;
    }
    false
}

/// The FIDO devices under `sysfs_root` (`/sys` on a real machine), in name order. A device
/// whose descriptor cannot be read (permissions, unplugged meanwhile) is skipped.
pub fn fido_devices(sysfs_root: &Path) -> Vec<FidoDevice> {
    let Ok(entries) = std::fs::read_dir(sysfs_root.join("class/hidraw")) else { return Vec::new() };
    let mut found: Vec<FidoDevice> = entries
        .flatten()
        .filter_map(|entry| {
            let hidraw = entry.file_name().to_str()?.to_owned();
            let device = entry.path().join("device");
            let descriptor = std::fs::read(device.join("report_descriptor")).ok()?;
            declares_fido_usage_page(&descriptor).then(|| FidoDevice { name: hid_name(&device), hidraw })
        })
        .collect();
    found.sort_by(|a, b| a.hidraw.cmp(&b.hidraw));
    found
}

fn hid_name(device: &Path) -> Option<String> {
    let uevent = std::fs::read_to_string(device.join("uevent")).ok()?;
    uevent.lines().find_map(|line| line.strip_prefix("HID_NAME=")).map(str::to_owned).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of a YubiKey 5's FIDO interface descriptor: Usage Page (0xF1D0), Usage (CTAPHID),
    /// Collection (Application), then the input and output reports.
    const YUBIKEY_FIDO: &[u8] = &[
        0x06, 0xD0, 0xF1, 0x09, 0x01, 0xA1, 0x01, 0x09, 0x20, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08, 0x95, 0x40,
        0x81, 0x02, 0x09, 0x21, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08, 0x95, 0x40, 0x91, 0x02, 0xC0,
    ];
    /// A keyboard: Usage Page (Generic Desktop), Usage (Keyboard), Collection, Usage Page (Keys).
    const KEYBOARD: &[u8] = &[0x05, 0x01, 0x09, 0x06, 0xA1, 0x01, 0x05, 0x07, 0x19, 0xE0, 0x29, 0xE7, 0xC0];

    #[test]
    fn the_fido_usage_page_is_found_in_any_item_form_and_nothing_else_passes() {
        assert!(declares_fido_usage_page(YUBIKEY_FIDO));
        assert!(!declares_fido_usage_page(KEYBOARD));
        // The same page as a 4-byte item, after a long item and a keyboard's items.
        let mut mixed = KEYBOARD.to_vec();
        mixed.extend_from_slice(&[0xFE, 0x02, 0x10, 0xD0, 0xF1]);
        mixed.extend_from_slice(&[0x07, 0xD0, 0xF1, 0x00, 0x00]);
        assert!(declares_fido_usage_page(&mixed));
        // 0xF1D0 as a Usage (a local item), or hidden in a long item's data, is not the page.
        assert!(!declares_fido_usage_page(&[0x0A, 0xD0, 0xF1]));
        assert!(!declares_fido_usage_page(&[0xFE, 0x02, 0x10, 0xD0, 0xF1]));
        // Cut anywhere, or a long item claiming more than there is: no panic, no device.
        for cut in 0..3 {
            assert!(!declares_fido_usage_page(&YUBIKEY_FIDO[..cut]));
        }
        assert!(!declares_fido_usage_page(&[0xFE, 0xFF, 0x10]));
        assert!(!declares_fido_usage_page(&[0x07, 0xD0]));
    }

    #[test]
    fn devices_are_read_from_a_sysfs_tree() {
        let root = tempfile::tempdir().unwrap();
        let add = |name: &str, descriptor: &[u8], uevent: Option<&str>| {
            let device = root.path().join("class/hidraw").join(name).join("device");
            std::fs::create_dir_all(&device).unwrap();
            std::fs::write(device.join("report_descriptor"), descriptor).unwrap();
            if let Some(uevent) = uevent {
                std::fs::write(device.join("uevent"), uevent).unwrap();
            }
        };
        add(
            "hidraw2",
            YUBIKEY_FIDO,
            Some("DRIVER=hid-generic\nHID_ID=0003:00001050:00000407\nHID_NAME=Yubico YubiKey OTP+FIDO+CCID\n"),
        );
        add("hidraw0", KEYBOARD, Some("HID_NAME=Some Keyboard\n"));
        add("hidraw1", YUBIKEY_FIDO, None);
        // A node without a readable descriptor is skipped.
        std::fs::create_dir_all(root.path().join("class/hidraw/hidraw3")).unwrap();
        assert_eq!(
            fido_devices(root.path()),
            vec![
                FidoDevice { hidraw: "hidraw1".into(), name: None },
                FidoDevice { hidraw: "hidraw2".into(), name: Some("Yubico YubiKey OTP+FIDO+CCID".into()) },
            ]
        );
        assert_eq!(fido_devices(&root.path().join("missing")), vec![]);
    }
}
