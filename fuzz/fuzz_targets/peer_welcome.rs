#![no_main]
// See snapsite::testing::fuzzing::peer_welcome.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::peer_welcome(data));
