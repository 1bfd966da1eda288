#![no_main]
// See snapsite::fuzzing::lvm_stream.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::lvm_stream(data));
