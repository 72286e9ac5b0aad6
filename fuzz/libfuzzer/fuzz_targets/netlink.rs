#![no_main]
// cargo-fuzz entry for accel_fuzz's `netlink` target (see accel_fuzz's docs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| accel_fuzz::netlink(data));
