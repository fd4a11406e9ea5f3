//! A HID report descriptor as a plugged-in device hands it to the kernel (read from sysfs to
//! find FIDO security keys): any bytes, no panic; a descriptor that declares the FIDO usage page
//! still does with more items after it.
#![no_main]

use agentkeys_biometric::fido_hid::declares_fido_usage_page;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if declares_fido_usage_page(data) {
        let mut longer = data.to_vec();
        longer.extend_from_slice(&[0x05, 0x01, 0x09, 0x06]);
        assert!(declares_fido_usage_page(&longer));
    }
});
