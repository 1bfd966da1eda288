#![no_main]
// See snapsite::testing::fuzzing::archive_index.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::archive_index(data));
