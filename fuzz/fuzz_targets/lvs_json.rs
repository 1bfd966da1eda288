#![no_main]
// See snapsite::testing::fuzzing::lvs_json.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::lvs_json(data));
