#![no_main]
// See snapsite::testing::fuzzing::zfs_begin.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::zfs_begin(data));
