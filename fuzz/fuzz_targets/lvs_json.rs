#![no_main]
// See snapsite::fuzzing::lvs_json.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::lvs_json(data));
