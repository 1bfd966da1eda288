#![no_main]
// See snapsite::testing::fuzzing::control_msg.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::control_msg(data));
