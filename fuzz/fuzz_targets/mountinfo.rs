#![no_main]
// See snapsite::testing::fuzzing::mountinfo.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::mountinfo(data));
