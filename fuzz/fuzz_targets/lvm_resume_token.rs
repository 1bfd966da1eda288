#![no_main]
// See snapsite::testing::fuzzing::lvm_resume_token.
libfuzzer_sys::fuzz_target!(|data: &[u8]| snapsite::testing::fuzzing::lvm_resume_token(data));
