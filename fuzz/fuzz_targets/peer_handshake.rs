#![no_main]
// See snapsite::fuzzing::peer_handshake.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::peer_handshake(data));
