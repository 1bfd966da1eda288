#![no_main]
// See snapsite::fuzzing::mountinfo.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::mountinfo(data));
