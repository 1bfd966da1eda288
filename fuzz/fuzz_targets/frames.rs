#![no_main]
// See snapsite::testing::fuzzing::frames.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::frames(data));
