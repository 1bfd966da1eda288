#![no_main]
// See snapsite::fuzzing::frame_raw.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::frame_raw(data));
