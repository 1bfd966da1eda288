#![no_main]
// See snapsite::testing::fuzzing::zfs_output.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::zfs_output(data));
