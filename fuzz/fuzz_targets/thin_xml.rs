#![no_main]
// See snapsite::fuzzing::thin_xml.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::fuzzing::thin_xml(data));
