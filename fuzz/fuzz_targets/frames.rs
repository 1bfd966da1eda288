#![no_main]
// See snapsite::fuzzing::frames.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::frames(data));
