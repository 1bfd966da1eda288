#![no_main]
// See snapsite::fuzzing::zfs_output.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::zfs_output(data));
