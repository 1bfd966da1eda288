#![no_main]
// See snapsite::testing::fuzzing::manifest.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::manifest(data));
