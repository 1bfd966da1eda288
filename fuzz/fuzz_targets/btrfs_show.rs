#![no_main]
// See snapsite::fuzzing::btrfs_show.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::btrfs_show(data));
