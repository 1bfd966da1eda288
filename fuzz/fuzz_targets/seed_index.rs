#![no_main]
// See snapsite::testing::fuzzing::seed_index.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::seed_index(data));
