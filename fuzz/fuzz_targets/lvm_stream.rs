#![no_main]
// See snapsite::testing::fuzzing::lvm_stream.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::lvm_stream(data));
