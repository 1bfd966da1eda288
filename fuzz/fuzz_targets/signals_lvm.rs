#![no_main]
// See snapsite::testing::fuzzing::signals_lvm.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::signals_lvm(data));
