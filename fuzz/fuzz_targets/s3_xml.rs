#![no_main]
// See snapsite::testing::fuzzing::s3_xml.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::s3_xml(data));
