#![no_main]
// See snapsite::fuzzing::manifest.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::manifest(data));
