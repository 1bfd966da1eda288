#![no_main]
// See snapsite::testing::fuzzing::peer_handshake.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::peer_handshake(data));
