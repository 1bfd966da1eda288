#![no_main]
// See snapsite::fuzzing::seed_index.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::seed_index(data));
