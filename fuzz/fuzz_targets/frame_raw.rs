#![no_main]
// See snapsite::testing::fuzzing::frame_raw.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::frame_raw(data));
