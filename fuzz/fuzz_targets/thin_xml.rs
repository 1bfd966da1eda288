#![no_main]
// See snapsite::testing::fuzzing::thin_xml.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::thin_xml(data));
