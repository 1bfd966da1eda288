#![no_main]
// See snapsite::fuzzing::dmsetup.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::dmsetup(data));
