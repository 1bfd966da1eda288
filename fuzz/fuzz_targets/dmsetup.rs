#![no_main]
// See snapsite::testing::fuzzing::dmsetup.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::dmsetup(data));
