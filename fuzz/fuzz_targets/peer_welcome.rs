#![no_main]
// See snapsite::fuzzing::peer_welcome.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::peer_welcome(data));
