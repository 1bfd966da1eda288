#![no_main]
// See snapsite::fuzzing::control_msg.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::control_msg(data));
