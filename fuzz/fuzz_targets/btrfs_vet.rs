#![no_main]
// See snapsite::fuzzing::btrfs_vet.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::btrfs_vet(data));
