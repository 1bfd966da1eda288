#![no_main]
// See snapsite::testing::fuzzing::btrfs_show.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::btrfs_show(data));
